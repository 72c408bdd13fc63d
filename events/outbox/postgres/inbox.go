package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/gocqrs/cqrs/events/inbox"
	"github.com/gocqrs/cqrs/events/outbox"
)

// InboxOptions configures an [Inbox].
type InboxOptions struct {
	// Table is the inbox table (default [DefaultInboxTable]): "name" or
	// "schema.name", as [StoreOptions.Table].
	Table string
	// Clock tells the inbox the time of its records (default
	// outbox.SystemClock()).
	Clock outbox.Clock
}

// Inbox is an [inbox.Store] in a table of a PostgreSQL database: Record
// inserts (consumer, event id) with INSERT … ON CONFLICT DO NOTHING in the
// transaction the context carries, so a record commits with the
// consumer's own writes. It implements [outbox.Transactor] (its DB's). It
// is safe for concurrent use, by any number of processes.
//
// The transaction must be READ COMMITTED (the default of [DB.InTx]): under
// REPEATABLE READ or SERIALIZABLE, a Record that meets a record committed
// after the transaction's snapshot fails with a serialization error
// instead of reporting a duplicate.
type Inbox struct {
	db    *DB
	table table
	clock outbox.Clock
	q     inboxQueries
}

var (
	_ inbox.Store       = (*Inbox)(nil)
	_ outbox.Transactor = (*Inbox)(nil)
)

type inboxQueries struct {
	record, seen, purge string
}

// NewInbox returns the inbox store of db in opts.Table. It reports every
// problem with its arguments at once, each matching [ErrInvalidOptions].
// Create the table with [Inbox.EnsureSchema] or a migration tool
// ([SchemaFS], [InboxSchema]).
func NewInbox(db *DB, opts InboxOptions) (*Inbox, error) {
	var errs []error
	if db == nil {
		errs = append(errs, fmt.Errorf("%w: nil *DB", ErrInvalidOptions))
	}
	if opts.Table == "" {
		opts.Table = DefaultInboxTable
	}
	t, err := parseTable("Table", opts.Table)
	if err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if opts.Clock == nil {
		opts.Clock = outbox.SystemClock()
	}
	id := t.ident()
	return &Inbox{
		db:    db,
		table: t,
		clock: opts.Clock,
		q: inboxQueries{
			record: `INSERT INTO ` + id + ` (consumer, event_id, recorded_at) VALUES ($1, $2, $3)
ON CONFLICT (consumer, event_id) DO NOTHING`,
			seen: `SELECT EXISTS (SELECT 1 FROM ` + id + ` WHERE consumer = $1 AND event_id = $2)`,
			purge: `DELETE FROM ` + id + ` WHERE (consumer, event_id) IN (
	SELECT consumer, event_id FROM ` + id + ` WHERE recorded_at < $1
	ORDER BY recorded_at LIMIT $2
	FOR UPDATE SKIP LOCKED)`,
		},
	}, nil
}

// Table returns the inbox's table name, as given in its options.
func (i *Inbox) Table() string { return i.table.String() }

// EnsureSchema creates the inbox's table, its index and its schema if they
// do not exist (see [InboxSchema]). Processes that call it at once run it
// one after the other, under an advisory lock.
func (i *Inbox) EnsureSchema(ctx context.Context) error {
	return i.db.ensureSchema(ctx, ddl("schema/inbox.sql", DefaultInboxTable, i.table))
}

// InTx is the inbox's [DB.InTx].
func (i *Inbox) InTx(ctx context.Context, fn func(ctx context.Context) error) error {
	return i.db.InTx(ctx, fn)
}

// Record implements [inbox.Store]. When another open transaction has
// inserted the same record, PostgreSQL makes the INSERT wait for it: the
// record is a duplicate if that transaction commits, and is inserted if it
// rolls back.
func (i *Inbox) Record(ctx context.Context, consumer string, id uuid.UUID) (bool, error) {
	if !hasTx(ctx) {
		return false, outbox.ErrNoTx
	}
	if err := inbox.ValidateRecord(consumer, id); err != nil {
		return false, err
	}
	if err := ctx.Err(); err != nil {
		return false, err
	}
	if !validText(consumer) {
		return false, fmt.Errorf("%w: consumer name is not valid UTF-8 without NUL bytes", outbox.ErrInvalidArgument)
	}
	var n int64
	err := do(ctx, func(q querier) error {
		var err error
		n, err = q.exec(ctx, i.q.record, consumer, pgUUID(id), i.clock.Now())
		return err
	})
	if err != nil {
		return false, fmt.Errorf("postgres: record in inbox %s: %w", i.table, err)
	}
	return n == 1, nil
}

// Seen implements [inbox.Store].
func (i *Inbox) Seen(ctx context.Context, consumer string, id uuid.UUID) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	if !validText(consumer) {
		return false, nil
	}
	var seen bool
	err := i.db.q().query(ctx, i.q.seen, []any{consumer, pgUUID(id)}, func(scan func(...any) error) error {
		return scan(&seen)
	})
	if err != nil {
		return false, fmt.Errorf("postgres: look up inbox %s: %w", i.table, err)
	}
	return seen, nil
}

// Purge implements [inbox.Store]. Concurrent calls skip each other's
// records.
func (i *Inbox) Purge(ctx context.Context, before time.Time, limit int) (int64, error) {
	if err := outbox.ValidateLimit(limit); err != nil {
		return 0, err
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	n, err := i.db.q().exec(ctx, i.q.purge, before, limit)
	if err != nil {
		return 0, fmt.Errorf("postgres: purge inbox %s: %w", i.table, err)
	}
	return n, nil
}
