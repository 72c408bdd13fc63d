package mediator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/internal/registry"
	"github.com/gocqrs/cqrs/requests"
)

// HandlerOrder says how the handlers bound to one event run.
type HandlerOrder int

const (
	// Serial runs the handlers of one event one after the other, in bind
	// order (the default). Different events may still run in parallel.
	Serial HandlerOrder = iota
	// Parallel runs the handlers of one event concurrently, each as its own
	// unit of work under the concurrency limit.
	Parallel
)

func (o HandlerOrder) String() string {
	switch o {
	case Serial:
		return "serial"
	case Parallel:
		return "parallel"
	default:
		return fmt.Sprintf("HandlerOrder(%d)", int(o))
	}
}

// Default values, from python-cqrs's RequestMediator, except MaxEventDepth,
// which it lacks.
const (
	DefaultMaxConcurrentEventHandlers = 1
	DefaultMaxEventDepth              = 16
)

// Config holds the fan-out settings of a mediator. Start from
// [DefaultConfig]: its zero value is not valid.
type Config struct {
	// MaxConcurrentEventHandlers bounds how many event-handler invocations
	// run at once within one Send (default 1). Each Send has its own bound;
	// see MediatorWideLimit for a bound shared by all Sends. Raising it runs
	// different events in parallel; the handlers of one event still run one
	// after the other unless EventHandlerOrder is Parallel.
	MaxConcurrentEventHandlers int
	// ConcurrentEventHandleEnable runs event handlers in parallel, up to
	// MaxConcurrentEventHandlers (default true). When false, events run one
	// by one in emission order, follow-ups breadth first.
	ConcurrentEventHandleEnable bool
	// EventHandlerOrder says how the handlers of one event run (default
	// Serial).
	EventHandlerOrder HandlerOrder
	// FailFast stops the fan-out at the first failure: events not started
	// are not started and running handlers see their context cancelled.
	// The default (false) runs every handler and reports every failure.
	FailFast bool
	// MaxEventDepth bounds follow-up nesting (default 16): events emitted by
	// a request handler have depth 1, their follow-ups depth 2, and so on.
	// A deeper event is refused with a *DepthError.
	MaxEventDepth int
	// MediatorWideLimit, if positive, bounds the event-handler invocations
	// running at once across every concurrent Send of the mediator
	// (default 0: no such bound). Waiting for a slot honours the context.
	MediatorWideLimit int
	// Publisher receives notification events (default none: emitting one is
	// an error; with Capture set, Capture when it is a Publisher).
	Publisher events.Publisher
	// Capture, when set, makes notification events leave through a
	// transactional outbox: each request handler that can emit events (a
	// requests.Handler; a requests.PlainHandler cannot) runs in a
	// transaction Capture begins and carries in its context, the
	// notification events it returns are written to the outbox in that
	// transaction before it commits, and only then are its other events
	// dispatched in process, with the same lineage. If the handler fails,
	// or the transaction does not commit, nothing is written and nothing is
	// dispatched. Notification events emitted later by event handlers go to
	// the Publisher (by default Capture itself, when it implements
	// events.Publisher). With Capture, notification events leave only
	// through the outbox: handlers bound to a notification type are not
	// called by the Send that emitted it; they receive it from the relay,
	// as an incoming event (EventMediator.Send), like any other consumer.
	// Stream handlers are not captured. Package events/outbox provides one
	// (outbox.NewCapture).
	Capture Capturer
	// Logger receives warnings, e.g. about events with no handler (default
	// slog.Default()).
	Logger *slog.Logger
	// Middleware wraps every request handler, the first outermost, outside
	// any typed middleware (requests.Use).
	Middleware []requests.Middleware
	// StreamMiddleware wraps every stream handler, the first outermost.
	StreamMiddleware []requests.StreamMiddleware
	// EventMiddleware wraps every event-handler invocation, the first
	// outermost.
	EventMiddleware []events.Middleware
}

// Capturer runs request handlers in a transaction and writes the
// notification events they return to a transactional outbox in it; see
// Config.Capture.
type Capturer interface {
	// Capture begins a transaction, calls handle with a context carrying it
	// and the lineage of the events (events.EnsureLineage), writes the
	// notification events among those handle returned to the outbox in the
	// transaction, commits, and returns a context carrying the lineage (not
	// the transaction) and the remaining events, in order. If handle fails,
	// Capture rolls back and returns its error as is.
	Capture(ctx context.Context, handle func(ctx context.Context) ([]events.Event, error)) (context.Context, []events.Event, error)
}

// publisher returns the Publisher the engine uses.
func (c Config) publisher() events.Publisher {
	if c.Publisher != nil {
		return c.Publisher
	}
	if p, ok := c.Capture.(events.Publisher); ok {
		return p
	}
	return nil
}

// DefaultConfig returns the defaults of a RequestMediator and an
// EventMediator: one event handler at a time per Send, concurrency enabled
// (so raising MaxConcurrentEventHandlers is enough to go parallel), serial
// handlers per event, collect every failure, depth 16.
func DefaultConfig() Config {
	return Config{
		MaxConcurrentEventHandlers:  DefaultMaxConcurrentEventHandlers,
		ConcurrentEventHandleEnable: true,
		EventHandlerOrder:           Serial,
		MaxEventDepth:               DefaultMaxEventDepth,
	}
}

// Validate reports every invalid field at once; each problem matches
// ErrInvalidConfig.
func (c Config) Validate() error {
	var errs []error
	if c.MaxConcurrentEventHandlers < 1 {
		errs = append(errs, fmt.Errorf("%w: MaxConcurrentEventHandlers must be at least 1, got %d", ErrInvalidConfig, c.MaxConcurrentEventHandlers))
	}
	if c.MaxEventDepth < 1 {
		errs = append(errs, fmt.Errorf("%w: MaxEventDepth must be at least 1, got %d", ErrInvalidConfig, c.MaxEventDepth))
	}
	if c.MediatorWideLimit < 0 {
		errs = append(errs, fmt.Errorf("%w: MediatorWideLimit must be 0 (none) or positive, got %d", ErrInvalidConfig, c.MediatorWideLimit))
	}
	for i, mw := range c.Middleware {
		if registry.IsNil(mw) {
			errs = append(errs, fmt.Errorf("%w: Middleware[%d] is nil", ErrInvalidConfig, i))
		}
	}
	for i, mw := range c.StreamMiddleware {
		if registry.IsNil(mw) {
			errs = append(errs, fmt.Errorf("%w: StreamMiddleware[%d] is nil", ErrInvalidConfig, i))
		}
	}
	for i, mw := range c.EventMiddleware {
		if registry.IsNil(mw) {
			errs = append(errs, fmt.Errorf("%w: EventMiddleware[%d] is nil", ErrInvalidConfig, i))
		}
	}
	if c.Capture != nil && registry.IsNil(c.Capture) {
		errs = append(errs, fmt.Errorf("%w: Capture is a nil %T", ErrInvalidConfig, c.Capture))
	}
	if c.Publisher != nil && registry.IsNil(c.Publisher) {
		errs = append(errs, fmt.Errorf("%w: Publisher is a nil %T", ErrInvalidConfig, c.Publisher))
	}
	if c.EventHandlerOrder != Serial && c.EventHandlerOrder != Parallel {
		errs = append(errs, fmt.Errorf("%w: unknown EventHandlerOrder %v", ErrInvalidConfig, c.EventHandlerOrder))
	}
	return errors.Join(errs...)
}
