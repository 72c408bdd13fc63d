package inbox

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/gocqrs/cqrs/events/outbox"
)

// Store remembers which events each consumer has processed. A Store is safe
// for concurrent use, by several processes.
type Store interface {
	// Record records that consumer processed the event id, in the
	// transaction carried by ctx (placed there by the database's
	// outbox.Transactor), and reports whether this is the first record of
	// (consumer, id). The record becomes durable, and visible to other
	// transactions, when that transaction commits; if it rolls back, the
	// record never existed.
	//
	// If another open transaction has recorded the same (consumer, id),
	// Record waits until it ends: it then returns false if that transaction
	// committed, or records and returns true if it rolled back. So of
	// several concurrent deliveries of one event, exactly one sees true
	// and commits. Record called twice in one transaction returns false the
	// second time.
	//
	// Without a transaction in ctx it returns an error matching
	// outbox.ErrNoTx; with a transaction that has ended, outbox.ErrTxDone;
	// with an empty consumer or a zero id, outbox.ErrInvalidArgument.
	Record(ctx context.Context, consumer string, id uuid.UUID) (first bool, err error)
	// Seen reports whether a committed record of (consumer, id) exists.
	Seen(ctx context.Context, consumer string, id uuid.UUID) (bool, error)
	// Purge deletes up to limit committed records made before before,
	// oldest first, and returns how many it deleted. An event redelivered
	// after its record was purged is processed again: keep records longer
	// than the longest redelivery delay of the transport.
	Purge(ctx context.Context, before time.Time, limit int) (int64, error)
}

// ValidateRecord checks the arguments of [Store.Record]; each problem
// matches outbox.ErrInvalidArgument.
func ValidateRecord(consumer string, id uuid.UUID) error {
	var errs []error
	if consumer == "" {
		errs = append(errs, fmt.Errorf("%w: empty consumer name", outbox.ErrInvalidArgument))
	}
	if id == uuid.Nil {
		errs = append(errs, fmt.Errorf("%w: zero event id", outbox.ErrInvalidArgument))
	}
	return errors.Join(errs...)
}

// Deduplicator applies an event's effects at most once per consumer: it
// runs the consumer's work in one transaction with the inbox record, so
// the record commits if and only if the work does.
type Deduplicator struct {
	// Consumer names the consumer: records are kept per consumer, so two
	// consumers of one event each process it once.
	Consumer string
	// Store keeps the records.
	Store Store
	// Transactor opens the transaction shared by the record and fn's
	// writes: the Transactor of the database Store writes to.
	Transactor outbox.Transactor
}

// Process runs fn, in a transaction, unless the event id was already
// processed by d.Consumer, and reports whether it was a duplicate.
//
//   - First delivery: fn runs with a ctx carrying the transaction; if it
//     returns nil, its writes and the record commit together and Process
//     returns (false, nil). If it returns an error, both roll back and
//     Process returns (false, err): a redelivery will run fn again.
//   - Redelivery of a committed event: fn does not run; Process returns
//     (true, nil). The caller acknowledges the message.
//
// Effects of fn outside the transaction (an e-mail, an HTTP call) are not
// covered: a crash after them and before the commit repeats them.
func (d Deduplicator) Process(ctx context.Context, id uuid.UUID, fn func(ctx context.Context) error) (duplicate bool, err error) {
	if err := ValidateRecord(d.Consumer, id); err != nil {
		return false, err
	}
	err = d.Transactor.InTx(ctx, func(ctx context.Context) error {
		first, err := d.Store.Record(ctx, d.Consumer, id)
		if err != nil {
			return err
		}
		if !first {
			duplicate = true
			return nil
		}
		return fn(ctx)
	})
	if err != nil {
		return false, err
	}
	return duplicate, nil
}
