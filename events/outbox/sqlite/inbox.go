package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/gocqrs/cqrs/events/inbox"
	"github.com/gocqrs/cqrs/events/outbox"
)

// InboxOptions configures an [Inbox].
type InboxOptions struct {
	// Table is the inbox table (default [DefaultInboxTable]): a letter or
	// underscore followed by up to 47 letters, digits or underscores, not
	// starting with "sqlite_". Its index is named after it.
	Table string
	// Clock tells the store the time (default outbox.SystemClock()).
	Clock outbox.Clock
}

// Inbox is an [inbox.Store] in a table of a SQLite database, written in
// the transaction of [DB.InTx] carried by the context: a record commits
// with the consumer's writes, and with the rows its handlers add to an
// outbox [Store] of the same DB. It implements [outbox.Transactor] (its
// DB's). It is safe for concurrent use, by several processes.
//
// Since SQLite has one writer at a time and [DB.InTx] takes the write lock
// when it begins, a transaction that records an event has no concurrent
// writer: a concurrent delivery of the same event begins its transaction
// once the first one has ended, and finds its record if it committed.
type Inbox struct {
	db    *DB
	table string
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
	if err := validTable("Table", opts.Table); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if opts.Clock == nil {
		opts.Clock = outbox.SystemClock()
	}
	q := inboxQueries{
		record: `INSERT INTO "cqrs_inbox" (consumer, event_id, recorded_at) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING`,
		seen:   `SELECT EXISTS (SELECT 1 FROM "cqrs_inbox" WHERE consumer = ?1 AND event_id = ?2)`,
		purge: `DELETE FROM "cqrs_inbox" WHERE (consumer, event_id) IN (
	SELECT consumer, event_id FROM "cqrs_inbox" WHERE recorded_at < ?1 ORDER BY recorded_at LIMIT ?2)`,
	}
	for _, p := range []*string{&q.record, &q.seen, &q.purge} {
		*p = rename(*p, DefaultInboxTable, opts.Table)
	}
	return &Inbox{db: db, table: opts.Table, clock: opts.Clock, q: q}, nil
}

// Table returns the inbox's table name.
func (i *Inbox) Table() string { return i.table }

// EnsureSchema creates the inbox table and its index if they do not exist
// (see [InboxSchema]), in a write transaction, as [Store.EnsureSchema]
// does.
func (i *Inbox) EnsureSchema(ctx context.Context) error {
	return i.db.ensureSchema(ctx, ddl("schema/inbox.sql", DefaultInboxTable, i.table))
}

// InTx is the inbox's [DB.InTx].
func (i *Inbox) InTx(ctx context.Context, fn func(ctx context.Context) error) error {
	return i.db.InTx(ctx, fn)
}

// Record implements [inbox.Store] with INSERT … ON CONFLICT DO NOTHING in
// the transaction ctx carries.
func (i *Inbox) Record(ctx context.Context, consumer string, id uuid.UUID) (bool, error) {
	st, err := i.db.txOf(ctx)
	if err != nil {
		return false, err
	}
	if err := inbox.ValidateRecord(consumer, id); err != nil {
		return false, err
	}
	if err := ctx.Err(); err != nil {
		return false, err
	}
	var first bool
	err = st.do(nil, func(tx *sql.Tx) error {
		res, err := i.db.exec(ctx, tx, i.q.record, consumer, id.String(), micros(i.clock.Now()))
		if err != nil {
			return fmt.Errorf("sqlite: inbox record: %w", err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return fmt.Errorf("sqlite: inbox record: %w", err)
		}
		first = n == 1
		return nil
	})
	return first, err
}

// Seen implements [inbox.Store]. It reads committed records, outside any
// transaction ctx carries.
func (i *Inbox) Seen(ctx context.Context, consumer string, id uuid.UUID) (bool, error) {
	var seen bool
	if err := i.db.sql.QueryRowContext(ctx, i.q.seen, consumer, id.String()).Scan(&seen); err != nil {
		return false, fmt.Errorf("sqlite: inbox seen: %w", err)
	}
	return seen, nil
}

// Purge implements [inbox.Store] in a write transaction of its own.
func (i *Inbox) Purge(ctx context.Context, before time.Time, limit int) (int64, error) {
	if err := outbox.ValidateLimit(limit); err != nil {
		return 0, err
	}
	var n int64
	err := i.db.inOwnTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, i.q.purge, micros(before), limit)
		if err == nil {
			n, err = res.RowsAffected()
		}
		if err != nil {
			return fmt.Errorf("sqlite: inbox purge: %w", err)
		}
		return nil
	})
	return n, err
}
