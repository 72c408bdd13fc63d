package outbox

import (
	"errors"
	"fmt"
	"strings"

	"github.com/google/uuid"

	"github.com/gocqrs/cqrs/internal/panics"
)

var (
	// ErrNoTx is returned by operations that must run inside a transaction
	// (Add, inbox records) when ctx carries none.
	ErrNoTx = errors.New("outbox: no transaction in context")
	// ErrTxDone is returned when ctx carries a transaction that has already
	// committed or rolled back.
	ErrTxDone = errors.New("outbox: transaction already committed or rolled back")
	// ErrInvalidEnvelope is matched by errors about envelopes Add refused.
	ErrInvalidEnvelope = errors.New("outbox: invalid envelope")
	// ErrInvalidArgument is matched by errors about invalid arguments to a
	// store method (an empty owner, a limit below 1, ...).
	ErrInvalidArgument = errors.New("outbox: invalid argument")
	// ErrLeaseLost is matched by a *[LeaseError]: the caller does not hold
	// the lease of some rows (it expired and another owner claimed them,
	// they were never claimed by it, or they no longer exist).
	ErrLeaseLost = errors.New("outbox: lease not held")
	// ErrNotFound is returned by Get for an unknown ID.
	ErrNotFound = errors.New("outbox: row not found")
	// ErrInvalidConfig is matched by every problem [RelayConfig.Validate]
	// reports.
	ErrInvalidConfig = errors.New("outbox: invalid relay configuration")
	// ErrRelayRunning is returned by [Relay.Run] when the relay is already
	// running.
	ErrRelayRunning = errors.New("outbox: relay already running")
	// ErrNotAttempted is the error a [Sender] reports for a record it did
	// not try because an earlier record of the same batch with the same Key
	// failed.
	ErrNotAttempted = errors.New("outbox: not attempted: an earlier record with the same key failed")
	// ErrPermanent is matched by a *[PermanentError]: a record that can
	// never be sent. The relay moves it to Dead at once.
	ErrPermanent = errors.New("outbox: permanent failure")
)

// PanicError is a panic recovered from a [Sender] or a delivery function;
// it is the same type as mediator.PanicError.
type PanicError = panics.Error

// LeaseError reports the rows a MarkSent, MarkFailed or Release did not
// apply to, because owner did not hold their lease. It matches
// [ErrLeaseLost].
type LeaseError struct {
	// Owner is the owner that asked.
	Owner string
	// IDs are the rows the call did not apply to, in the order given.
	IDs []uuid.UUID
}

func (e *LeaseError) Error() string {
	ids := make([]string, 0, min(len(e.IDs), 3))
	for _, id := range e.IDs[:min(len(e.IDs), 3)] {
		ids = append(ids, id.String())
	}
	more := ""
	if len(e.IDs) > 3 {
		more = fmt.Sprintf(" and %d more", len(e.IDs)-3)
	}
	return fmt.Sprintf("outbox: owner %q does not hold the lease of %d row(s): %s%s",
		e.Owner, len(e.IDs), strings.Join(ids, ", "), more)
}

// Unwrap returns [ErrLeaseLost].
func (e *LeaseError) Unwrap() error { return ErrLeaseLost }

// BatchError is what a [Sender] returns when some records of a batch were
// sent and others were not. Errs has one entry per record of the batch, in
// batch order: nil for a record the transport acknowledged, its error
// otherwise.
type BatchError struct {
	Errs []error
}

// Failed counts the records that were not sent.
func (e *BatchError) Failed() int {
	n := 0
	for _, err := range e.Errs {
		if err != nil {
			n++
		}
	}
	return n
}

func (e *BatchError) Error() string {
	for i, err := range e.Errs {
		if err != nil {
			return fmt.Sprintf("outbox: %d of %d records not sent; record %d: %v", e.Failed(), len(e.Errs), i, err)
		}
	}
	return fmt.Sprintf("outbox: 0 of %d records not sent", len(e.Errs))
}

// Unwrap returns the errors of the failed records, so errors.Is and
// errors.As see them.
func (e *BatchError) Unwrap() []error {
	var out []error
	for _, err := range e.Errs {
		if err != nil {
			out = append(out, err)
		}
	}
	return out
}

// PermanentError marks a send failure that retrying cannot fix (a record
// the broker will always refuse, a topic that does not exist). It matches
// [ErrPermanent] and unwraps to the cause.
type PermanentError struct {
	Err error
}

// Permanent wraps err in a *[PermanentError]; it returns nil if err is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &PermanentError{Err: err}
}

func (e *PermanentError) Error() string { return "permanent: " + e.Err.Error() }

// Unwrap returns the cause.
func (e *PermanentError) Unwrap() error { return e.Err }

// Is reports whether target is [ErrPermanent].
func (e *PermanentError) Is(target error) bool { return target == ErrPermanent }
