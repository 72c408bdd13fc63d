package middleware

import (
	"context"
	"time"

	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/requests"
)

// Timeout gives every request, stream and event-handler invocation a context
// that is cancelled after the duration. For a request or a stream the
// duration covers the handler and the dispatch of its events (global
// middleware wraps the whole Send); for an event handler, that invocation.
// The handler must honour its context: the timeout cancels, it does not
// abandon a handler that ignores ctx. The error is the handler's, typically
// wrapping context.DeadlineExceeded. A zero or negative Timeout does
// nothing.
type Timeout time.Duration

var (
	_ requests.Middleware       = Timeout(0)
	_ requests.StreamMiddleware = Timeout(0)
	_ events.Middleware         = Timeout(0)
)

// WrapRequest implements requests.Middleware.
func (t Timeout) WrapRequest(_ requests.Info, next requests.AnyHandlerFunc) requests.AnyHandlerFunc {
	if t <= 0 {
		return next
	}
	return func(ctx context.Context, req any) (any, error) {
		ctx, cancel := context.WithTimeout(ctx, time.Duration(t))
		defer cancel()
		return next(ctx, req)
	}
}

// WrapStream implements requests.StreamMiddleware: the whole stream must
// end within the duration.
func (t Timeout) WrapStream(_ requests.Info, next requests.AnyStreamFunc) requests.AnyStreamFunc {
	if t <= 0 {
		return next
	}
	return func(ctx context.Context, req any, yield func(any, error) bool) error {
		ctx, cancel := context.WithTimeout(ctx, time.Duration(t))
		defer cancel()
		return next(ctx, req, yield)
	}
}

// WrapEvent implements events.Middleware.
func (t Timeout) WrapEvent(_ events.Invocation, next events.InvocationFunc) events.InvocationFunc {
	if t <= 0 {
		return next
	}
	return func(ctx context.Context, ev events.Event) ([]events.Event, error) {
		ctx, cancel := context.WithTimeout(ctx, time.Duration(t))
		defer cancel()
		return next(ctx, ev)
	}
}
