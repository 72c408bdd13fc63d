package events

import (
	"context"
	"reflect"
)

// Invocation describes one event handler to middleware: the event type and
// the handler. Middleware receives it once per (event type, handler) pair,
// when the chain is built at bootstrap.
type Invocation struct {
	// EventType is the type the handler is bound to.
	EventType reflect.Type
	// Handler names the handler.
	Handler string
}

// InvocationFunc is one event-handler invocation as middleware sees it.
type InvocationFunc func(ctx context.Context, event Event) ([]Event, error)

// Middleware wraps every event-handler invocation. WrapEvent is called once
// per (event type, handler) at bootstrap and returns the function that
// replaces next. It runs inside the fan-out: under the concurrency limit, on
// the goroutine that runs the handler, and a panic in it is recovered like a
// handler's. Events are already values of type any, so event middleware
// allocates nothing of its own per call.
type Middleware interface {
	WrapEvent(inv Invocation, next InvocationFunc) InvocationFunc
}

// MiddlewareFunc adapts a function to a [Middleware].
type MiddlewareFunc func(inv Invocation, next InvocationFunc) InvocationFunc

// WrapEvent calls f(inv, next).
func (f MiddlewareFunc) WrapEvent(inv Invocation, next InvocationFunc) InvocationFunc {
	return f(inv, next)
}

// Declarer is implemented by handlers that declare the event types they may
// emit (a request handler) or return as follow-ups (an event handler). It is
// optional; wiring diagrams use it to draw the edges from handlers to
// events.
type Declarer interface {
	EmittedEvents() []reflect.Type
}
