package mediator

import (
	"context"
	"errors"
	"fmt"
	"reflect"

	"github.com/gocqrs/cqrs/di"
	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/internal/engine"
	"github.com/gocqrs/cqrs/internal/registry"
	"github.com/gocqrs/cqrs/internal/typeid"
	"github.com/gocqrs/cqrs/requests"
)

// RequestMediator sends each request to its one handler and dispatches the
// events the handler emitted before returning the response. Build one with
// package bootstrap (or [New]); use it with [Send]. It is safe for concurrent
// use and immutable once built.
type RequestMediator struct {
	handlers map[typeid.ID]any // *registry.Request[Req, Res] by typeid.Of[Req]
	engine   *engine.Engine
	events   EventMediator
}

// EventMediator dispatches events received from outside the process (for
// instance by a broker consumer) to their in-process handlers, with the same
// fan-out settings and error semantics as [Send]. It is safe for concurrent
// use.
type EventMediator struct {
	engine *engine.Engine
}

// New resolves every handler bound in reqs and evs from c and returns a
// mediator. It reports every problem at once: invalid configuration, binding
// errors, constructors that fail or miss a dependency. c may be nil when
// every handler was bound as a value. Most programs call bootstrap.Bootstrap
// instead.
func New(c di.Container, reqs *requests.Map, evs *events.Map, cfg Config) (*RequestMediator, error) {
	var errs []error
	if err := cfg.Validate(); err != nil {
		errs = append(errs, err)
	}
	handlers, err := resolveRequests(c, reqs)
	errs = append(errs, err)
	eng, err := newEngine(c, evs, cfg)
	errs = append(errs, err)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &RequestMediator{handlers: handlers, engine: eng, events: EventMediator{engine: eng}}, nil
}

// NewEventMediator resolves every handler bound in evs from c and returns an
// EventMediator, reporting every problem at once. Most programs call
// bootstrap.Events instead.
func NewEventMediator(c di.Container, evs *events.Map, cfg Config) (*EventMediator, error) {
	var errs []error
	if err := cfg.Validate(); err != nil {
		errs = append(errs, err)
	}
	eng, err := newEngine(c, evs, cfg)
	errs = append(errs, err)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &EventMediator{engine: eng}, nil
}

func resolveRequests(c di.Container, reqs *requests.Map) (map[typeid.ID]any, error) {
	handlers := map[typeid.ID]any{}
	if reqs == nil {
		return handlers, nil
	}
	byType, err := (*registry.Requests)(reqs).Resolve(c)
	for t, h := range byType {
		handlers[typeid.OfType(t)] = h
	}
	return handlers, err
}

func newEngine(c di.Container, evs *events.Map, cfg Config) (*engine.Engine, error) {
	var routes map[reflect.Type][]registry.EventHandler
	var err error
	if evs != nil {
		routes, err = (*registry.Events)(evs).Resolve(c)
	}
	return engine.New(routes, engine.Options{
		Concurrent:       cfg.ConcurrentEventHandleEnable,
		Limit:            cfg.MaxConcurrentEventHandlers,
		ParallelHandlers: cfg.EventHandlerOrder == Parallel,
		FailFast:         cfg.FailFast,
		MaxDepth:         cfg.MaxEventDepth,
		GlobalLimit:      cfg.MediatorWideLimit,
		Publisher:        cfg.Publisher,
		Logger:           cfg.Logger,
	}), err
}

// Events returns an EventMediator that shares this mediator's event handlers,
// settings and mediator-wide limit.
func (m *RequestMediator) Events() *EventMediator {
	if m == nil {
		return nil
	}
	return &m.events
}

// Send sends req to the handler bound to its type and returns the handler's
// response, typed: the response type comes from the request's
// requests.Returns marker.
//
//	id, err := mediator.Send(ctx, m, PlaceOrder{Item: "book"}) // id is an OrderID
//
// Send returns only when every event the handler emitted, and every
// follow-up, has been dispatched (see the package documentation). The
// outcomes:
//
//   - the handler fails: its error, the zero response, no event dispatched;
//     if it panicked, an error wrapping a *PanicError (use errors.As);
//   - it succeeds and every event is handled: the response and nil;
//   - it succeeds and the fan-out is not fully successful: the response and
//     a *DispatchError (Failures lists what failed; Interrupted is ctx's
//     error if ctx was done before every invocation started);
//   - no handler is bound to the request's type: ErrHandlerNotFound;
//   - ctx is already done: its error, and the handler is not called.
//
// Requests are routed by their static type: a request held in an interface
// variable is looked up under the interface type.
func Send[Req requests.Request[Res], Res any](ctx context.Context, m *RequestMediator, req Req) (Res, error) {
	var zero Res
	if m == nil {
		return zero, ErrNilMediator
	}
	if ctx == nil {
		return zero, ErrNilContext
	}
	b, ok := m.handlers[typeid.Of[Req]()]
	if !ok {
		return zero, fmt.Errorf("%w for request %v", ErrHandlerNotFound, reflect.TypeFor[Req]())
	}
	h, ok := b.(*registry.Request[Req, Res])
	if !ok {
		return zero, fmt.Errorf("%w for request %v returning %v", ErrHandlerNotFound, reflect.TypeFor[Req](), reflect.TypeFor[Res]())
	}
	if h.Nilable && registry.IsNil(req) {
		return zero, fmt.Errorf("%w of type %v", ErrNilRequest, reflect.TypeFor[Req]())
	}
	if err := ctx.Err(); err != nil {
		return zero, err
	}
	res, evs, err := call(ctx, h, req)
	if err != nil {
		return zero, err
	}
	if len(evs) == 0 {
		return res, nil
	}
	return res, m.engine.Dispatch(ctx, evs)
}

func call[Req, Res any](ctx context.Context, h *registry.Request[Req, Res], req Req) (res Res, evs []any, err error) {
	defer func() {
		if v := recover(); v != nil {
			var zero Res
			res, evs, err = zero, nil, fmt.Errorf("request %v: handler %s: %w", reflect.TypeFor[Req](), h.Name, engine.NewPanicError(v))
		}
	}()
	return h.Handle(ctx, req)
}

// Send dispatches event, received from outside the process, to the handlers
// bound to its type, then dispatches their follow-ups, and returns when all
// are done. The event itself is not published again even if it is a
// notification event; notification follow-ups go to the Publisher.
//
// It returns nil, or ErrHandlerNotFound when no handler is bound to the
// event's type (a routing mistake a consumer should see), ErrNilEvent, or a
// *DispatchError as described for [Send].
func (m *EventMediator) Send(ctx context.Context, event events.Event) error {
	if m == nil || m.engine == nil {
		return ErrNilMediator
	}
	if ctx == nil {
		return ErrNilContext
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return m.engine.DispatchIncoming(ctx, event)
}
