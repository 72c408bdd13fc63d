package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/gocqrs/cqrs/events/outbox"
	"github.com/gocqrs/cqrs/events/wire"
)

// StoreOptions configures a [Store].
type StoreOptions struct {
	// Table is the outbox table (default [DefaultOutboxTable]): "name" or
	// "schema.name", each part a letter or underscore followed by up to 47
	// letters, digits or underscores. Names are quoted, so their case is
	// kept.
	Table string
	// Channel is the channel of the NOTIFY that Add sends, and that
	// [Store.Watch] listens to (default: the table name, with "_" for
	// "."). Stores and relays of one table must agree on it.
	Channel string
	// NoNotify stops Add from sending a NOTIFY: relays then find new rows
	// only by polling. Every commit that sent a NOTIFY takes a lock shared
	// by the whole database cluster while it queues the notification,
	// which serialises such commits: set NoNotify when the write rate
	// matters more than the relay's latency.
	NoNotify bool
	// Clock tells the store the time (default outbox.SystemClock()). The
	// store reads the time only from it, never from the database server;
	// give the relay the same clock.
	Clock outbox.Clock
}

// Store is an [outbox.Store] in a table of a PostgreSQL database. Add
// writes in the transaction the context carries (see [DB.InTx]); the other
// methods each run one statement on the pool, outside any transaction.
// It implements [outbox.Transactor] (its DB's) and [outbox.Notifier]
// (LISTEN/NOTIFY). It is safe for concurrent use, and any number of
// processes may use one table.
type Store struct {
	db      *DB
	table   table
	channel string
	notify  bool
	clock   outbox.Clock
	q       storeQueries
}

var (
	_ outbox.Store      = (*Store)(nil)
	_ outbox.Transactor = (*Store)(nil)
	_ outbox.Notifier   = (*Store)(nil)
)

// NewStore returns the outbox store of db in opts.Table. It reports every
// problem with its arguments at once, each matching [ErrInvalidOptions].
// Create the table with [Store.EnsureSchema] or a migration tool
// ([SchemaFS], [OutboxSchema]).
func NewStore(db *DB, opts StoreOptions) (*Store, error) {
	var errs []error
	if db == nil {
		errs = append(errs, fmt.Errorf("%w: nil *DB", ErrInvalidOptions))
	}
	if opts.Table == "" {
		opts.Table = DefaultOutboxTable
	}
	t, err := parseTable("Table", opts.Table)
	if err != nil {
		errs = append(errs, err)
	}
	derived := ""
	if opts.Channel == "" && err == nil {
		opts.Channel = strings.ReplaceAll(t.String(), ".", "_")
		derived = " (derived from Table: set Channel)"
	}
	if err == nil && (len(opts.Channel) > 63 || !channelName(opts.Channel)) {
		errs = append(errs, fmt.Errorf("%w: Channel %q%s must be a letter or underscore followed by up to 62 letters, digits or underscores",
			ErrInvalidOptions, opts.Channel, derived))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if opts.Clock == nil {
		opts.Clock = outbox.SystemClock()
	}
	return &Store{
		db:      db,
		table:   t,
		channel: opts.Channel,
		notify:  !opts.NoNotify,
		clock:   opts.Clock,
		q:       newStoreQueries(t.ident()),
	}, nil
}

// channelName reports whether s is a valid channel name: an identifier of
// letters, digits and underscores, not starting with a digit.
func channelName(s string) bool {
	if s == "" || (s[0] >= '0' && s[0] <= '9') {
		return false
	}
	for _, c := range []byte(s) {
		if c != '_' && (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}

// Table returns the store's table name, as given in its options.
func (s *Store) Table() string { return s.table.String() }

// Channel returns the store's NOTIFY channel.
func (s *Store) Channel() string { return s.channel }

// EnsureSchema creates the store's table, its indexes and its schema if
// they do not exist (see [OutboxSchema]). Processes that call it at once
// run it one after the other, under an advisory lock.
func (s *Store) EnsureSchema(ctx context.Context) error {
	return s.db.ensureSchema(ctx, ddl("schema/outbox.sql", DefaultOutboxTable, s.table))
}

// InTx is the store's [DB.InTx].
func (s *Store) InTx(ctx context.Context, fn func(ctx context.Context) error) error {
	return s.db.InTx(ctx, fn)
}

// The columns of a row, in the order scanRow reads them.
const rowColumns = `seq, event_id, name, topic, partition_key, event_time, correlation_id, causation_id,
	content_type, headers, payload, state, attempts, last_error, added_at, next_attempt_at,
	lease_owner, lease_until, sent_at`

// storeQueries are the statements of a Store, for its table.
type storeQueries struct {
	// addOne and addMany insert one envelope, or several in the order
	// given (the identity is drawn in that order), skipping duplicates;
	// with notify set they also send a NOTIFY (delivered by PostgreSQL
	// when the transaction commits) if they added a row.
	addOne, addMany [2]string // [0] without NOTIFY, [1] with
	claim, markSent, markFailed, release, get, stats, listDead,
	requeue, requeueAll, deleteDead, deleteSent string
}

// notifyCTE is a common table expression n that sends a notification on
// channel $N when the CTE r returned a row; selecting from r LEFT JOIN n
// runs it.
const notifyCTE = `n AS (SELECT pg_notify(%s, '') FROM (SELECT 1 FROM r LIMIT 1) AS one)`

const (
	insertColumns = `event_id, name, topic, partition_key, event_time, correlation_id, causation_id,
	content_type, headers, payload, added_at, next_attempt_at`
	insertOne = `INSERT INTO {T} (` + insertColumns + `)
VALUES ($2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $1, $1)
ON CONFLICT (event_id) DO NOTHING`
	insertMany = `INSERT INTO {T} (` + insertColumns + `)
SELECT u.event_id, u.name, u.topic, u.partition_key, u.event_time, u.correlation_id, u.causation_id,
	u.content_type, u.headers, u.payload, $1, $1
FROM unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::timestamptz[], $7::text[], $8::text[],
	$9::text[], $10::jsonb[], $11::bytea[]) WITH ORDINALITY
	AS u(event_id, name, topic, partition_key, event_time, correlation_id, causation_id,
		content_type, headers, payload, ord)
ORDER BY u.ord
ON CONFLICT (event_id) DO NOTHING`
	// withNotify wraps an INSERT: it sends a NOTIFY on channel $12 if the
	// INSERT added a row.
	withNotify = `WITH r AS (%s
RETURNING 1)
SELECT pg_notify($12, '') FROM (SELECT 1 FROM r LIMIT 1) AS one`
)

func newStoreQueries(t string) storeQueries {
	r := strings.NewReplacer("{T}", t, "{ROW}", rowColumns)
	q := func(s string) string { return r.Replace(s) }
	notify := func(param string) string { return fmt.Sprintf(notifyCTE, param) }
	return storeQueries{
		addOne:  [2]string{q(insertOne), q(fmt.Sprintf(withNotify, insertOne))},
		addMany: [2]string{q(insertMany), q(fmt.Sprintf(withNotify, insertMany))},

		// One round trip, atomic with respect to every other claim:
		//
		// cand: the first $2 due, unleased pending rows, in seq order, whose
		// key is empty or whose key's first unsent row (its head) is the
		// row itself or is due and unleased, locked with SKIP LOCKED (rows
		// another claim or a mark is writing are skipped). Locking
		// re-checks a row that changed since the statement's snapshot and
		// drops it if it no longer qualifies. The head test is a cheap
		// filter (one index probe); chain and keep make the rule exact.
		//
		// chain, keep: a keyed row is kept only if its key's unsent rows
		// before it are all in cand, i.e. locked by this statement and
		// due and unleased: the unsent row just before each candidate
		// (one probe of the key index) must be the candidate before it in
		// cand, from the head on. A skipped, leased, waiting or dead row
		// therefore holds back the later rows of its key: two claims never
		// take rows of one key at once, and a row is never taken past an
		// earlier row of its key.
		//
		// The UPDATE leases the kept rows (re-checking that they are still
		// pending and unleased) and returns them, sorted by seq.
		claim: q(`WITH cand AS (
	SELECT o.seq, o.partition_key
	FROM {T} AS o
	WHERE o.state = 1
		AND o.next_attempt_at <= $1
		AND (o.lease_until IS NULL OR o.lease_until <= $1)
		AND (o.partition_key = '' OR (
			SELECT h.seq = o.seq
				OR (h.state = 1 AND h.next_attempt_at <= $1 AND (h.lease_until IS NULL OR h.lease_until <= $1))
			FROM {T} AS h
			WHERE h.partition_key = o.partition_key AND h.partition_key <> '' AND h.state IN (1, 3)
			ORDER BY h.partition_key, h.seq
			LIMIT 1))
	ORDER BY o.seq
	LIMIT $2
	FOR UPDATE OF o SKIP LOCKED
), chain AS (
	SELECT c.seq, c.partition_key,
		c.partition_key = '' OR (
			SELECT p.seq FROM {T} AS p
			WHERE p.partition_key = c.partition_key AND p.partition_key <> '' AND p.state IN (1, 3)
				AND p.seq < c.seq
			ORDER BY p.partition_key DESC, p.seq DESC
			LIMIT 1
		) IS NOT DISTINCT FROM lag(c.seq) OVER (PARTITION BY c.partition_key ORDER BY c.seq) AS linked
	FROM cand AS c
), keep AS (
	SELECT z.seq FROM (
		SELECT seq, bool_and(linked) OVER (PARTITION BY partition_key ORDER BY seq) AS ok FROM chain
	) AS z
	WHERE z.ok
), claimed AS (
	UPDATE {T} AS o SET lease_owner = $3, lease_until = $4
	WHERE o.seq = ANY (ARRAY(SELECT seq FROM keep))
		AND o.state = 1 AND (o.lease_until IS NULL OR o.lease_until <= $1)
	RETURNING o.seq, o.event_id, o.name, o.topic, o.partition_key, o.event_time, o.correlation_id,
		o.causation_id, o.content_type, o.headers, o.payload, o.state, o.attempts, o.last_error,
		o.added_at, o.next_attempt_at, o.lease_owner, o.lease_until, o.sent_at
)
SELECT {ROW} FROM claimed ORDER BY seq`),

		markSent: q(`UPDATE {T} SET state = 2, sent_at = $3, lease_owner = NULL, lease_until = NULL
WHERE event_id = ANY($2::uuid[]) AND state = 1 AND lease_owner = $1
RETURNING event_id`),

		markFailed: q(`UPDATE {T} AS o SET
	attempts = o.attempts + 1,
	last_error = f.err,
	lease_owner = NULL,
	lease_until = NULL,
	state = CASE WHEN f.dead THEN 3 ELSE 1 END,
	next_attempt_at = CASE WHEN f.dead THEN o.next_attempt_at ELSE f.next_at END
FROM unnest($2::uuid[], $3::text[], $4::timestamptz[], $5::boolean[]) AS f(id, err, next_at, dead)
WHERE o.event_id = f.id AND o.state = 1 AND o.lease_owner = $1
RETURNING o.event_id`),

		release: q(`WITH r AS (
	UPDATE {T} SET lease_owner = NULL, lease_until = NULL
	WHERE event_id = ANY($2::uuid[]) AND state = 1 AND lease_owner = $1
	RETURNING event_id
), ` + notify("$3") + `
SELECT r.event_id FROM r LEFT JOIN n ON true`),

		get: q(`SELECT {ROW} FROM {T} WHERE event_id = $1`),

		stats: q(`SELECT
	count(*) FILTER (WHERE state = 1),
	count(*) FILTER (WHERE state = 1 AND lease_until > $1),
	count(*) FILTER (WHERE state = 2),
	count(*) FILTER (WHERE state = 3),
	min(added_at) FILTER (WHERE state = 1)
FROM {T}`),

		listDead: q(`SELECT {ROW} FROM {T} WHERE state = 3 AND seq > $1 ORDER BY seq LIMIT $2`),

		requeue: q(`WITH r AS (
	UPDATE {T} SET state = 1, attempts = 0, next_attempt_at = $1, lease_owner = NULL, lease_until = NULL
	WHERE event_id = ANY($2::uuid[]) AND state = 3
	RETURNING 1
), ` + notify("$3") + `
SELECT count(*) FROM r LEFT JOIN n ON true`),

		requeueAll: q(`WITH r AS (
	UPDATE {T} SET state = 1, attempts = 0, next_attempt_at = $1, lease_owner = NULL, lease_until = NULL
	WHERE state = 3
	RETURNING 1
), ` + notify("$2") + `
SELECT count(*) FROM r LEFT JOIN n ON true`),

		deleteDead: q(`WITH r AS (
	DELETE FROM {T} WHERE event_id = ANY($1::uuid[]) AND state = 3
	RETURNING 1
), ` + notify("$2") + `
SELECT count(*) FROM r LEFT JOIN n ON true`),

		// The victims are chosen once, in a CTE: under IN, PostgreSQL may
		// run a locking subquery once per deleted row and delete more than
		// the limit.
		deleteSent: q(`WITH victims AS (
	SELECT event_id FROM {T} WHERE state = 2 AND sent_at < $1
	ORDER BY sent_at LIMIT $2
	FOR UPDATE SKIP LOCKED)
DELETE FROM {T} t USING victims v WHERE t.event_id = v.event_id`),
	}
}

// Add implements [outbox.Adder]: one INSERT of every envelope, in the
// transaction ctx carries, which also sends a NOTIFY on the store's
// channel (delivered by PostgreSQL when the transaction commits). Text
// fields must be valid UTF-8 without NUL bytes, which PostgreSQL cannot
// store; timestamps are kept to the microsecond.
func (s *Store) Add(ctx context.Context, envs ...wire.Envelope) error {
	if !hasTx(ctx) {
		return outbox.ErrNoTx
	}
	if err := outbox.ValidateEnvelopes(envs); err != nil {
		return err
	}
	if err := validateText(envs); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if len(envs) == 0 {
		return do(ctx, func(querier) error { return nil })
	}
	query, args, err := s.insertArgs(s.clock.Now(), envs)
	if err != nil {
		return err
	}
	return do(ctx, func(q querier) error {
		if _, err := q.exec(ctx, query, args...); err != nil {
			return fmt.Errorf("postgres: add to outbox %s: %w", s.table, err)
		}
		return nil
	})
}

// insertArgs returns the statement that adds envs and its arguments: one
// row of values for one envelope, arrays for several.
func (s *Store) insertArgs(now time.Time, envs []wire.Envelope) (string, []any, error) {
	notify := 0
	if s.notify {
		notify = 1
	}
	n := len(envs)
	var (
		ids      = make([]uuid.UUID, n)
		names    = make([]string, n)
		topics   = make([]string, n)
		keys     = make([]string, n)
		times    = make([]*time.Time, n)
		corrs    = make([]string, n)
		causes   = make([]string, n)
		types    = make([]string, n)
		headers  = make([][]byte, n)
		payloads = make([][]byte, n)
	)
	for i := range envs {
		e := &envs[i]
		ids[i], names[i], topics[i], keys[i] = e.ID, e.Name, e.Topic, e.Key
		if !e.Timestamp.IsZero() {
			times[i] = &e.Timestamp
		}
		corrs[i], causes[i], types[i] = e.CorrelationID, e.CausationID, e.ContentType
		if len(e.Headers) > 0 {
			h, err := json.Marshal(e.Headers)
			if err != nil {
				return "", nil, fmt.Errorf("%w: envelope %d (%s): headers: %w", outbox.ErrInvalidEnvelope, i, e.ID, err)
			}
			headers[i] = h
		}
		payloads[i] = e.Payload
	}
	var (
		query string
		args  []any
	)
	if n == 1 {
		query = s.q.addOne[notify]
		args = []any{now, pgUUID(ids[0]), names[0], topics[0], keys[0], times[0], corrs[0], causes[0], types[0], headers[0], payloads[0]}
	} else {
		query = s.q.addMany[notify]
		args = []any{now, pgUUIDs(ids), names, topics, keys, times, corrs, causes, types, headers, payloads}
	}
	if s.notify {
		args = append(args, s.channel)
	}
	return query, args, nil
}

// validateText reports the text fields PostgreSQL cannot store (invalid
// UTF-8, NUL bytes), each matching outbox.ErrInvalidEnvelope.
func validateText(envs []wire.Envelope) error {
	var errs []error
	check := func(i int, e *wire.Envelope, field, s string) {
		if !validText(s) {
			errs = append(errs, fmt.Errorf("%w: envelope %d (%s): %s is not valid UTF-8 without NUL bytes", outbox.ErrInvalidEnvelope, i, e.ID, field))
		}
	}
	for i := range envs {
		e := &envs[i]
		check(i, e, "Name", e.Name)
		check(i, e, "Topic", e.Topic)
		check(i, e, "Key", e.Key)
		check(i, e, "CorrelationID", e.CorrelationID)
		check(i, e, "CausationID", e.CausationID)
		check(i, e, "ContentType", e.ContentType)
		for k, v := range e.Headers {
			check(i, e, fmt.Sprintf("header %q", k), k+v)
		}
	}
	return errors.Join(errs...)
}

// validText reports whether PostgreSQL can store s as text: valid UTF-8
// without NUL bytes.
func validText(s string) bool {
	return utf8.ValidString(s) && strings.IndexByte(s, 0) < 0
}

// scanRow reads the columns of rowColumns.
func scanRow(scan func(dest ...any) error) (outbox.Row, error) {
	var (
		r                             outbox.Row
		eventTime, leaseUntil, sentAt *time.Time
		leaseOwner                    *string
		headers                       []byte
		state, attempts               int64
		addedAt, nextAttemptAt        time.Time
		id                            pgtype.UUID // read natively by pgx, from text by database/sql
	)
	e := &r.Envelope
	err := scan(&r.Seq, &id, &e.Name, &e.Topic, &e.Key, &eventTime, &e.CorrelationID, &e.CausationID,
		&e.ContentType, &headers, &e.Payload, &state, &attempts, &r.LastError, &addedAt, &nextAttemptAt,
		&leaseOwner, &leaseUntil, &sentAt)
	if err != nil {
		return r, err
	}
	e.ID = id.Bytes
	if eventTime != nil {
		e.Timestamp = eventTime.UTC()
	}
	if len(headers) > 0 {
		if err := json.Unmarshal(headers, &e.Headers); err != nil {
			return r, fmt.Errorf("postgres: row %d: headers: %w", r.Seq, err)
		}
		if len(e.Headers) == 0 {
			e.Headers = nil
		}
	}
	r.State, r.Attempts = outbox.State(state), int(attempts)
	r.AddedAt, r.NextAttemptAt = addedAt.UTC(), nextAttemptAt.UTC()
	if leaseOwner != nil {
		r.LeaseOwner = *leaseOwner
	}
	if leaseUntil != nil {
		r.LeaseUntil = leaseUntil.UTC()
	}
	if sentAt != nil {
		r.SentAt = sentAt.UTC()
	}
	return r, nil
}

func (s *Store) rows(ctx context.Context, op, query string, args ...any) ([]outbox.Row, error) {
	var out []outbox.Row
	err := s.db.q().query(ctx, query, args, func(scan func(...any) error) error {
		r, err := scanRow(scan)
		if err != nil {
			return err
		}
		out = append(out, r)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: %s %s: %w", op, s.table, err)
	}
	return out, nil
}

// Claim implements [outbox.Claimer] in one statement (one round trip): see
// the package documentation for how it keeps per-key order with several
// claimers at once.
func (s *Store) Claim(ctx context.Context, owner string, limit int, lease time.Duration) ([]outbox.Row, error) {
	if err := outbox.ValidateClaim(owner, limit, lease); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	now := s.clock.Now()
	return s.rows(ctx, "claim from", s.q.claim, now, limit, owner, now.Add(lease))
}

// held runs a mark that returns the event_id of every row it applied to,
// and returns a *outbox.LeaseError for the ids it did not apply to.
func (s *Store) held(ctx context.Context, op, query, owner string, ids []uuid.UUID, args ...any) error {
	applied := make(map[uuid.UUID]struct{}, len(ids))
	err := s.db.q().query(ctx, query, args, func(scan func(...any) error) error {
		var id pgtype.UUID
		if err := scan(&id); err != nil {
			return err
		}
		applied[id.Bytes] = struct{}{}
		return nil
	})
	if err != nil {
		return fmt.Errorf("postgres: %s in %s: %w", op, s.table, err)
	}
	return leaseErr(owner, ids, applied)
}

func leaseErr(owner string, ids []uuid.UUID, applied map[uuid.UUID]struct{}) error {
	var lost []uuid.UUID
	for _, id := range ids {
		if _, ok := applied[id]; !ok {
			lost = append(lost, id)
		}
	}
	if len(lost) == 0 {
		return nil
	}
	return &outbox.LeaseError{Owner: owner, IDs: lost}
}

// MarkSent implements [outbox.Claimer].
func (s *Store) MarkSent(ctx context.Context, owner string, ids ...uuid.UUID) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if len(ids) == 0 {
		return nil
	}
	return s.held(ctx, "mark sent", s.q.markSent, owner, ids, owner, pgUUIDs(ids), s.clock.Now())
}

// MarkFailed implements [outbox.Claimer]. The error text is stored with
// invalid UTF-8 and NUL bytes replaced, which PostgreSQL cannot store.
func (s *Store) MarkFailed(ctx context.Context, owner string, failures ...outbox.Failure) error {
	if err := outbox.ValidateFailures(failures); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if len(failures) == 0 {
		return nil
	}
	now := s.clock.Now()
	var (
		seen  = make(map[uuid.UUID]struct{}, len(failures))
		ids   = make([]uuid.UUID, 0, len(failures))
		texts = make([]string, 0, len(failures))
		nexts = make([]time.Time, 0, len(failures))
		dead  = make([]bool, 0, len(failures))
		dups  []uuid.UUID
	)
	for _, f := range failures {
		if _, dup := seen[f.ID]; dup {
			// The first failure of a row clears its lease: the others no
			// longer hold it, as with the memory store.
			dups = append(dups, f.ID)
			continue
		}
		seen[f.ID] = struct{}{}
		ids = append(ids, f.ID)
		texts = append(texts, cleanText(f.Error))
		nexts = append(nexts, now.Add(f.Delay))
		dead = append(dead, f.Dead)
	}
	err := s.held(ctx, "mark failed", s.q.markFailed, owner, ids, owner, pgUUIDs(ids), texts, nexts, dead)
	if len(dups) == 0 {
		return err
	}
	var le *outbox.LeaseError
	if err != nil && !errors.As(err, &le) {
		return err
	}
	if le == nil {
		le = &outbox.LeaseError{Owner: owner}
	}
	le.IDs = append(le.IDs, dups...)
	return le
}

// cleanText makes s storable as PostgreSQL text.
func cleanText(s string) string {
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
}

// Release implements [outbox.Claimer]. It sends a NOTIFY when it released
// rows, since they may be claimed at once.
func (s *Store) Release(ctx context.Context, owner string, ids ...uuid.UUID) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if len(ids) == 0 {
		return nil
	}
	return s.held(ctx, "release", s.q.release, owner, ids, owner, pgUUIDs(ids), s.channel)
}

// Get implements [outbox.Admin].
func (s *Store) Get(ctx context.Context, id uuid.UUID) (outbox.Row, error) {
	if err := ctx.Err(); err != nil {
		return outbox.Row{}, err
	}
	rows, err := s.rows(ctx, "get from", s.q.get, id)
	if err != nil {
		return outbox.Row{}, err
	}
	if len(rows) == 0 {
		return outbox.Row{}, fmt.Errorf("%w: %s", outbox.ErrNotFound, id)
	}
	return rows[0], nil
}

// Stats implements [outbox.Admin]. It scans the table: call it at a
// monitoring pace, not per event.
func (s *Store) Stats(ctx context.Context) (outbox.Stats, error) {
	if err := ctx.Err(); err != nil {
		return outbox.Stats{}, err
	}
	now := s.clock.Now()
	var (
		st     outbox.Stats
		oldest *time.Time
	)
	err := s.db.q().query(ctx, s.q.stats, []any{now}, func(scan func(...any) error) error {
		return scan(&st.Pending, &st.Leased, &st.Sent, &st.Dead, &oldest)
	})
	if err != nil {
		return outbox.Stats{}, fmt.Errorf("postgres: stats of %s: %w", s.table, err)
	}
	if oldest != nil {
		st.OldestPending = oldest.UTC()
		st.Lag = max(now.Sub(st.OldestPending), 0)
	}
	return st, nil
}

// ListDead implements [outbox.Admin].
func (s *Store) ListDead(ctx context.Context, afterSeq int64, limit int) ([]outbox.Row, error) {
	if err := outbox.ValidateLimit(limit); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return s.rows(ctx, "list dead rows of", s.q.listDead, afterSeq, limit)
}

// count runs a statement that returns one count.
func (s *Store) count(ctx context.Context, op, query string, args ...any) (int64, error) {
	var n int64
	err := s.db.q().query(ctx, query, args, func(scan func(...any) error) error { return scan(&n) })
	if err != nil {
		return 0, fmt.Errorf("postgres: %s in %s: %w", op, s.table, err)
	}
	return n, nil
}

// Requeue implements [outbox.Admin]. It sends a NOTIFY when it requeued
// rows.
func (s *Store) Requeue(ctx context.Context, ids ...uuid.UUID) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if len(ids) == 0 {
		return 0, nil
	}
	return s.count(ctx, "requeue", s.q.requeue, s.clock.Now(), pgUUIDs(ids), s.channel)
}

// RequeueAllDead implements [outbox.Admin]. It sends a NOTIFY when it
// requeued rows.
func (s *Store) RequeueAllDead(ctx context.Context) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	return s.count(ctx, "requeue all dead", s.q.requeueAll, s.clock.Now(), s.channel)
}

// DeleteDead implements [outbox.Admin]. It sends a NOTIFY when it deleted
// rows, since the rows they held back may now be claimed.
func (s *Store) DeleteDead(ctx context.Context, ids ...uuid.UUID) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if len(ids) == 0 {
		return 0, nil
	}
	return s.count(ctx, "delete dead", s.q.deleteDead, pgUUIDs(ids), s.channel)
}

// DeleteSent implements [outbox.Admin]: the rows sent longest ago go
// first. Concurrent calls (several relays) skip each other's rows.
func (s *Store) DeleteSent(ctx context.Context, before time.Time, limit int) (int64, error) {
	if err := outbox.ValidateLimit(limit); err != nil {
		return 0, err
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	n, err := s.db.q().exec(ctx, s.q.deleteSent, before, limit)
	if err != nil {
		return 0, fmt.Errorf("postgres: delete sent rows of %s: %w", s.table, err)
	}
	return n, nil
}
