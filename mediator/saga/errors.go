package saga

import (
	"errors"
	"fmt"
	"strings"

	"github.com/google/uuid"

	"github.com/gocqrs/cqrs/internal/panics"
)

// Sentinel errors; match them with errors.Is.
var (
	// ErrInvalidDefinition is matched by every problem New finds in a
	// definition or in the options.
	ErrInvalidDefinition = errors.New("saga: invalid definition")
	// ErrNotRegistered: Execute, Stream or Load was given a definition the
	// orchestrator was not built with.
	ErrNotRegistered = errors.New("saga: definition not registered")
	// ErrNoMediator: a step built by [Send] ran on an orchestrator with no
	// mediator.
	ErrNoMediator = errors.New("saga: no mediator configured")
	// ErrNoDispatcher: a step returned events and the orchestrator has
	// neither a Dispatcher nor a mediator to dispatch them with.
	ErrNoDispatcher = errors.New("saga: no event dispatcher configured")

	// ErrExists: Create was given the ID of an existing saga.
	ErrExists = errors.New("saga: saga already exists")
	// ErrNotFound: no saga has the ID.
	ErrNotFound = errors.New("saga: saga not found")
	// ErrConflict is matched by a *[ConflictError]: a write based on a
	// version that is no longer current.
	ErrConflict = errors.New("saga: version conflict")
	// ErrLeaseLost: the caller does not hold the saga's lease (another
	// owner claimed it, or it was released, or the saga ended).
	ErrLeaseLost = errors.New("saga: lease not held")
	// ErrLeased: Resume was asked for a saga another driver holds under a
	// live lease.
	ErrLeased = errors.New("saga: saga is leased by another driver")
	// ErrNotResumable: Resume was asked for a saga that ended well.
	ErrNotResumable = errors.New("saga: saga cannot be resumed")
	// ErrInvalidArgument is matched by errors about invalid arguments to a
	// store method.
	ErrInvalidArgument = errors.New("saga: invalid argument")

	// ErrInterrupted: the driver stopped before the saga ended (its context
	// was cancelled, its lease was lost, the store failed, or a stream's
	// consumer stopped). The saga is left running or compensating, and a
	// recoverer will take it over; nothing was compensated because of the
	// interruption.
	ErrInterrupted = errors.New("saga: interrupted; the saga will be recovered")
	// ErrCompensated is matched by an *[Error] whose saga failed and was
	// fully compensated.
	ErrCompensated = errors.New("saga: failed and compensated")
	// ErrCompensationFailed is matched by an *[Error] whose saga stopped on
	// a compensation that failed on every attempt (status Failed).
	ErrCompensationFailed = errors.New("saga: compensation failed")
	// ErrHalted is matched by an *[Error] whose saga recovery gave up on
	// (status Halted).
	ErrHalted = errors.New("saga: halted by recovery")
	// ErrAttemptsExhausted is the reason recorded when a saga is halted
	// because it reached the recovery attempt limit.
	ErrAttemptsExhausted = errors.New("saga: recovery attempts exhausted")
)

// PanicError is a panic recovered from an action or a compensation; it is
// the same type as mediator.PanicError.
type PanicError = panics.Error

// ConflictError reports a write refused because the saga's version was no
// longer the one the writer read: someone else (a recoverer, an operator)
// wrote it since. It matches [ErrConflict].
type ConflictError struct {
	// ID is the saga.
	ID uuid.UUID
	// Version is the version the writer expected.
	Version int64
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("saga: version conflict on saga %s: version %d is no longer current", e.ID, e.Version)
}

// Unwrap returns [ErrConflict].
func (e *ConflictError) Unwrap() error { return ErrConflict }

// StepError is one failure of one invocation of a step's action or
// compensation.
type StepError struct {
	// Step and Index name the step.
	Step  string
	Index int
	// Phase is forward or compensation.
	Phase Phase
	// Fallback reports that the step's fallback failed (forward), or the
	// fallback's compensation.
	Fallback bool
	// Attempt is the attempt that failed, from 1.
	Attempt int
	// Err is the error. For failures recorded by another process (read
	// back from the step log on recovery), it is a plain error with the
	// recorded text.
	Err error
}

func (e *StepError) Error() string {
	what := "step"
	if e.Phase == Compensation {
		what = "compensation of step"
	}
	fb := ""
	if e.Fallback {
		fb = " (fallback)"
	}
	att := ""
	if e.Attempt > 1 {
		att = fmt.Sprintf(", attempt %d", e.Attempt)
	}
	return fmt.Sprintf("%s %q%s%s: %v", what, e.Step, fb, att, e.Err)
}

// Unwrap returns Err.
func (e *StepError) Unwrap() error { return e.Err }

// Error reports a saga that did not complete: it failed and was
// compensated (Status Compensated, matching [ErrCompensated]), or stopped
// on a compensation that kept failing (Failed, [ErrCompensationFailed]),
// or was halted by recovery (Halted, [ErrHalted]). Errors keeps every
// error, in the order they happened: the step failure that started the
// compensation, then each failed compensation attempt, then, for a halted
// saga, why it was halted. Unwrap returns them all, so errors.Is and
// errors.As see each step's own error.
type Error struct {
	// SagaID and Saga identify the saga.
	SagaID uuid.UUID
	Saga   string
	// Status is how it ended: Compensated, Failed or Halted.
	Status Status
	// FailedStep names the step whose failure started the compensation
	// ("" when the saga was halted before any step failed).
	FailedStep string
	// Pending names the completed steps left uncompensated, in the order
	// they would be compensated (empty unless Status is Failed or Halted).
	Pending []string
	// Errors lists every failure.
	Errors []*StepError
	// Reason is why the saga was halted (nil unless Status is Halted).
	Reason error
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "saga %s %s ", e.Saga, e.SagaID)
	switch e.Status {
	case Compensated:
		b.WriteString("failed and was compensated")
	case Failed:
		b.WriteString("failed and a compensation kept failing; it needs attention")
	case Halted:
		fmt.Fprintf(&b, "was halted by recovery (%v); it needs attention", e.Reason)
	default:
		fmt.Fprintf(&b, "ended %v", e.Status)
	}
	if len(e.Pending) > 0 {
		fmt.Fprintf(&b, "; not compensated: %s", strings.Join(e.Pending, ", "))
	}
	for _, se := range e.Errors {
		b.WriteString("; ")
		b.WriteString(se.Error())
	}
	return b.String()
}

// Unwrap returns every step error and the halt reason.
func (e *Error) Unwrap() []error {
	out := make([]error, 0, len(e.Errors)+1)
	for _, se := range e.Errors {
		out = append(out, se)
	}
	if e.Reason != nil {
		out = append(out, e.Reason)
	}
	return out
}

// Is matches the sentinel of the saga's status: [ErrCompensated],
// [ErrCompensationFailed] or [ErrHalted].
func (e *Error) Is(target error) bool {
	switch target {
	case ErrCompensated:
		return e.Status == Compensated
	case ErrCompensationFailed:
		return e.Status == Failed
	case ErrHalted:
		return e.Status == Halted
	}
	return false
}

// Expected marks err, returned by a step's action, as an outcome the
// business expects (a payment declined, an item out of stock) rather than
// a fault. The saga compensates exactly as for any other failure, and err
// reaches the caller the same way (errors.Is and errors.As see through the
// mark); only the logs differ: the step and the saga's end are logged at
// Info instead of Warn, so that a run of declined payments does not look
// like an incident. A compensation that then fails is logged as before.
// Expected(nil) is nil.
func Expected(err error) error {
	if err == nil {
		return nil
	}
	return &ExpectedError{Err: err}
}

// ExpectedError is an error marked by [Expected].
type ExpectedError struct {
	Err error
}

func (e *ExpectedError) Error() string { return e.Err.Error() }

// Unwrap returns Err.
func (e *ExpectedError) Unwrap() error { return e.Err }

// IsExpected reports whether err, or an error it wraps, was marked by
// [Expected].
func IsExpected(err error) bool {
	var e *ExpectedError
	return errors.As(err, &e)
}
