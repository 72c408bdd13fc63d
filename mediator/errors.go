package mediator

import (
	"errors"

	"github.com/gocqrs/cqrs/internal/engine"
)

// Sentinel errors; match them with errors.Is.
var (
	// ErrHandlerNotFound: no handler is bound to the request type, or, for
	// EventMediator.Send, to the event type.
	ErrHandlerNotFound = engine.ErrHandlerNotFound
	// ErrNilRequest: Send was given a nil request (a nil pointer, map...).
	ErrNilRequest = errors.New("nil request")
	// ErrNilContext: a nil context.Context was passed.
	ErrNilContext = errors.New("nil context")
	// ErrNilMediator: a method or Send was called on a nil mediator.
	ErrNilMediator = errors.New("nil mediator")
	// ErrNilEvent: a handler emitted a nil event, or EventMediator.Send got
	// one.
	ErrNilEvent = engine.ErrNilEvent
	// ErrNoPublisher: a notification event was emitted and no Publisher is
	// configured. It is never dropped silently.
	ErrNoPublisher = engine.ErrNoPublisher
	// ErrMaxDepth: a follow-up event was nested deeper than
	// Config.MaxEventDepth and was not dispatched.
	ErrMaxDepth = engine.ErrMaxDepth
	// ErrGoexit: an event handler (or publisher) running on a worker
	// goroutine of a parallel fan-out ended that goroutine with
	// runtime.Goexit (as t.FailNow does in a test). It is reported like a
	// failure of that invocation.
	ErrGoexit = engine.ErrGoexit
	// ErrInvalidConfig: a Config field is out of range.
	ErrInvalidConfig = errors.New("invalid mediator configuration")
)

// DispatchError reports an event fan-out that did not fully succeed: one or
// more handlers failed, or some were never started because the context was
// cancelled (Interrupted) or fail-fast stopped the fan-out. When Send returns
// a *DispatchError the response is valid: the request handler succeeded.
//
// Unwrap returns every failure, so errors.As finds each *HandlerError and
// errors.Is finds each handler's own error and the context's error.
type DispatchError = engine.DispatchError

// HandlerError reports one failed event-handler invocation, naming the event
// type and the handler. Err is the handler's error, or a *PanicError.
type HandlerError = engine.HandlerError

// PanicError is a panic recovered from a request handler, an event handler
// or a publisher. Value is the panic value and Stack the panicking
// goroutine's stack; when Value is an error, Unwrap returns it.
type PanicError = engine.PanicError

// DepthError reports a follow-up event refused because it is nested deeper
// than Config.MaxEventDepth. It matches ErrMaxDepth.
type DepthError = engine.DepthError
