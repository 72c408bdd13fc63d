package engine

import (
	"errors"
	"fmt"
	"reflect"
	"strings"

	"github.com/gocqrs/cqrs/internal/panics"
)

// Sentinels; package mediator re-exports them.
var (
	ErrHandlerNotFound = errors.New("no handler bound")
	ErrNilEvent        = errors.New("nil event")
	ErrNoPublisher     = errors.New("notification event emitted but no publisher is configured")
	ErrMaxDepth        = errors.New("follow-up events nested deeper than the maximum depth")
	ErrGoexit          = errors.New("handler ended its goroutine (runtime.Goexit)")
)

// HandlerError reports one failed event-handler invocation (or a failed
// publish of a notification event).
type HandlerError struct {
	// EventType is the dynamic type of the event; nil for a nil event.
	EventType reflect.Type
	// Event is the event being handled.
	Event any
	// Handler names the handler ("publisher" for a notification publish).
	Handler string
	// Err is what the handler returned, or a *PanicError.
	Err error
}

func (e *HandlerError) Error() string {
	return fmt.Sprintf("event %v: handler %s: %v", e.EventType, e.Handler, e.Err)
}

func (e *HandlerError) Unwrap() error { return e.Err }

// PanicError is a panic recovered from a handler.
type PanicError = panics.Error

// NewPanicError captures the current stack; call it from the deferred
// function that recovered v.
func NewPanicError(v any) *PanicError { return panics.New(v) }

// DepthError reports a follow-up event that was not dispatched because it is
// nested deeper than the configured maximum.
type DepthError struct {
	EventType reflect.Type
	Event     any
	// Depth is the event's depth: 1 for events emitted by a request handler
	// (or received by an EventMediator), 2 for their follow-ups, and so on.
	// A dispatch started from inside an event handler (a nested Send, an
	// EventMediator.Send, a publisher delivering in process) continues the
	// numbering of that handler's events.
	Depth int
	// Max is the configured maximum depth.
	Max int
}

func (e *DepthError) Error() string {
	return fmt.Sprintf("event %v at depth %d: maximum is %d", e.EventType, e.Depth, e.Max)
}

func (e *DepthError) Unwrap() error { return ErrMaxDepth }

// DispatchError reports an event fan-out that did not fully succeed. The
// response it accompanies is valid: the request handler succeeded.
type DispatchError struct {
	// Failures holds a *HandlerError or *DepthError per failure, in the
	// order they were observed.
	Failures []error
	// NotStarted counts the invocations (handler calls and publications)
	// that were never started because the caller's context was done or, in
	// fail-fast mode, an earlier invocation failed.
	NotStarted int
	// Interrupted is the caller's context error when the fan-out stopped
	// early because that context was done, joined with the context's cause
	// (context.Cause) when one was given, so errors.Is finds both; it is
	// nil when every invocation started. It is the reliable test for "the caller cancelled": in
	// fail-fast mode, handlers cancelled because of another failure may
	// themselves report context.Canceled among Failures.
	Interrupted error
}

func (e *DispatchError) Error() string {
	var b strings.Builder
	b.WriteString("event dispatch: ")
	if len(e.Failures) > 0 {
		fmt.Fprintf(&b, "%d failure(s)", len(e.Failures))
	}
	if e.NotStarted > 0 {
		if len(e.Failures) > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%d invocation(s) not started", e.NotStarted)
	}
	if e.Interrupted != nil {
		fmt.Fprintf(&b, " (interrupted: %v)", e.Interrupted)
	}
	for _, f := range e.Failures {
		b.WriteString("\n\t")
		b.WriteString(f.Error())
	}
	return b.String()
}

// Unwrap returns every failure and the interruption cause, so errors.Is and
// errors.As reach each of them.
func (e *DispatchError) Unwrap() []error {
	if e.Interrupted == nil {
		return e.Failures
	}
	return append(append([]error(nil), e.Failures...), e.Interrupted)
}
