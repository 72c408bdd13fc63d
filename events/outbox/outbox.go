package outbox

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/gocqrs/cqrs/events/wire"
)

// State is where a row is in its life. The numeric values are persisted by
// SQL stores (a smallint column) and never change.
type State int8

const (
	// Pending rows wait to be sent: due now, waiting for their next attempt
	// after a failure, or leased to a relay that is sending them.
	Pending State = 1
	// Sent rows were acknowledged by the [Sender]. They are kept until
	// deleted by retention ([Admin.DeleteSent]).
	Sent State = 2
	// Dead rows failed [RelayConfig.MaxAttempts] times, or failed with a
	// permanent error. They are never sent again unless requeued, and they
	// hold back every later row with the same key until requeued or
	// deleted.
	Dead State = 3
)

// String returns "pending", "sent" or "dead".
func (s State) String() string {
	switch s {
	case Pending:
		return "pending"
	case Sent:
		return "sent"
	case Dead:
		return "dead"
	default:
		return fmt.Sprintf("State(%d)", int8(s))
	}
}

// Row is an envelope in the outbox together with its delivery state.
type Row struct {
	// Envelope is the event, exactly as it was added.
	Envelope wire.Envelope
	// Seq is the row's position in commit order: positive, unique, and
	// increasing in the order rows were committed (within one transaction,
	// in the order they were added). Per-key order is Seq order. A store
	// never gives a Seq to two rows, even after retention deleted one.
	Seq int64
	// State is pending, sent or dead.
	State State
	// Attempts counts the failed sends recorded with MarkFailed since the
	// row was added or last requeued.
	Attempts int
	// LastError is the error of the last failed send, or "".
	LastError string
	// AddedAt is the store's clock reading when the row was added. Stores
	// may truncate times to their precision (microseconds for the SQL
	// stores).
	AddedAt time.Time
	// NextAttemptAt is the earliest time the row may be claimed again.
	NextAttemptAt time.Time
	// LeaseOwner is the owner that last claimed the row, or "" when it is
	// not leased. The owner may mark the row until another owner claims it.
	LeaseOwner string
	// LeaseUntil is when the lease expires; after it the row may be claimed
	// by another owner. Zero when the row is not leased.
	LeaseUntil time.Time
	// SentAt is when the row was marked sent; zero unless State is Sent.
	SentAt time.Time
}

// Failure is a failed send, recorded by [Claimer.MarkFailed].
type Failure struct {
	// ID is the envelope's ID.
	ID uuid.UUID
	// Error describes the failure; it is stored as the row's LastError.
	Error string
	// Delay is how long the row waits before it may be claimed again: its
	// NextAttemptAt becomes the store's now plus Delay. Ignored when Dead.
	Delay time.Duration
	// Dead moves the row to the Dead state instead of retrying it.
	Dead bool
}

// Stats describes the rows of an outbox at one moment.
type Stats struct {
	// Pending counts pending rows, leased ones included.
	Pending int64
	// Leased counts pending rows under an unexpired lease: rows being sent.
	Leased int64
	// Sent counts sent rows not yet deleted by retention.
	Sent int64
	// Dead counts dead rows.
	Dead int64
	// OldestPending is the AddedAt of the oldest pending row; zero when
	// there is none.
	OldestPending time.Time
	// Lag is the age of the oldest pending row (now minus OldestPending), or
	// 0 when there is none: how far behind the relays are.
	Lag time.Duration
}

// Adder adds envelopes to the outbox. The mediator's outbox publisher needs
// nothing else.
type Adder interface {
	// Add writes envs, in order, in the transaction carried by ctx (placed
	// there by the store's [Transactor]). The rows become visible to Claim
	// and Admin only when that transaction commits; if it rolls back, they
	// never existed. Without a transaction in ctx Add returns an error
	// matching [ErrNoTx] and writes nothing: the outbox never commits on its
	// own, so an event cannot leave without the writes it describes. With a
	// transaction that has already ended, it returns one matching
	// [ErrTxDone].
	//
	// Every envelope must have a non-zero ID and a non-empty Name; otherwise
	// Add returns an error matching [ErrInvalidEnvelope] and adds none of
	// envs. An envelope whose ID is already in the outbox (in any state, or
	// added earlier in the same transaction) is skipped without error: the
	// first one added wins. The store copies envs; the caller may reuse
	// them.
	//
	// Add may be called from several goroutines at once with the same
	// transaction (the mediator may publish in parallel).
	Add(ctx context.Context, envs ...wire.Envelope) error
}

// Claimer is what a relay uses to move rows out of the outbox. Every method
// is atomic: it applies to all the rows it reports, or to none.
type Claimer interface {
	// Claim leases up to limit due pending rows to owner for the duration
	// lease and returns them in Seq order. A row is due when its
	// NextAttemptAt is not after now and it is not under another unexpired
	// lease. A row is returned only if every earlier row (lower Seq) with
	// the same non-empty Key is sent, or is returned by this same call
	// before it; so an earlier row of the key that is waiting for a retry,
	// leased by anyone or dead holds the later rows back. Rows with an empty
	// Key have no such constraint.
	//
	// Concurrent claims never return the same row while its lease is valid,
	// and never return rows of one key to two owners at once. Claim returns
	// no rows (and a nil error) when none is due. It returns an error
	// matching [ErrInvalidArgument] if owner is empty, limit < 1 or
	// lease <= 0.
	Claim(ctx context.Context, owner string, limit int, lease time.Duration) ([]Row, error)
	// MarkSent moves the rows to Sent and clears their lease. It applies
	// only to pending rows whose LeaseOwner is owner (the lease may have
	// expired, as long as no other owner has claimed the row since). It
	// applies to those and returns a *[LeaseError] listing the others.
	MarkSent(ctx context.Context, owner string, ids ...uuid.UUID) error
	// MarkFailed records failed sends under the same lease rule as
	// MarkSent: Attempts+1, LastError = Error, lease cleared, and either
	// NextAttemptAt = now + Delay, or State = Dead when Dead is set. It
	// returns an error matching [ErrInvalidArgument] for a zero ID or a
	// negative Delay, and applies nothing in that case.
	MarkFailed(ctx context.Context, owner string, failures ...Failure) error
	// Release clears the lease of rows owner holds, without counting an
	// attempt and without changing NextAttemptAt, so they can be claimed
	// again at once. Same lease rule and error as MarkSent.
	Release(ctx context.Context, owner string, ids ...uuid.UUID) error
}

// Admin inspects and repairs an outbox. None of its methods needs a lease.
type Admin interface {
	// Get returns the row of the envelope id, or an error matching
	// [ErrNotFound].
	Get(ctx context.Context, id uuid.UUID) (Row, error)
	// Stats counts rows by state and measures the lag.
	Stats(ctx context.Context) (Stats, error)
	// ListDead returns up to limit dead rows with Seq > afterSeq, in Seq
	// order: pass the last Seq returned to read the next page.
	ListDead(ctx context.Context, afterSeq int64, limit int) ([]Row, error)
	// Requeue moves the given dead rows back to Pending, due now, with
	// Attempts reset to 0 (LastError is kept), and returns how many it
	// moved. IDs of rows that are not dead are ignored.
	Requeue(ctx context.Context, ids ...uuid.UUID) (int64, error)
	// RequeueAllDead requeues every dead row, as Requeue does.
	RequeueAllDead(ctx context.Context) (int64, error)
	// DeleteDead deletes the given dead rows, releasing the keys they held,
	// and returns how many it deleted. IDs of rows that are not dead are
	// ignored.
	DeleteDead(ctx context.Context, ids ...uuid.UUID) (int64, error)
	// DeleteSent deletes up to limit sent rows whose SentAt is before
	// before, and returns how many it deleted; when more rows qualify,
	// which go first is the store's choice. Once deleted, an envelope ID
	// may be added again.
	DeleteSent(ctx context.Context, before time.Time, limit int) (int64, error)
}

// Store is a transactional outbox: the rows, the relay's operations on
// them, and administration. A Store is safe for concurrent use, by several
// relays in several processes.
type Store interface {
	Adder
	Claimer
	Admin
}

// Notifier is implemented by stores (or companions of stores) that can
// signal commits, so a relay wakes within milliseconds of one instead of
// waiting for its next poll. The memory store signals in process;
// PostgreSQL can use LISTEN/NOTIFY.
type Notifier interface {
	// Watch calls wake once it is watching, then again after every commit
	// that added rows, and possibly at other times (a spurious wake only
	// costs a claim). wake must not block; Watch never calls it
	// concurrently with itself. Watch returns nil once ctx is done, or
	// earlier with an error if it can no longer watch (the caller may
	// retry).
	Watch(ctx context.Context, wake func()) error
}

// Clock tells the time. Every store and the relay take one, so that time
// can be controlled in tests; SQL stores read the time from it, never from
// the database server.
type Clock interface {
	Now() time.Time
}

// ClockFunc adapts a function to a [Clock].
type ClockFunc func() time.Time

// Now calls f().
func (f ClockFunc) Now() time.Time { return f() }

// SystemClock returns the [Clock] of the system: time.Now in UTC.
func SystemClock() Clock {
	return ClockFunc(func() time.Time { return time.Now().UTC() })
}
