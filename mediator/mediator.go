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
	handlers *typeid.Table[any] // *registry.Request[Req, Res] by typeid.Of[Req]
	engine   *engine.Engine
	events   EventMediator
	wiring   wiring

	// Every Send reads the mediator: 128 bytes, line-aligned, shares no
	// cache line with an object another goroutine writes (see
	// registry.Request).
	_ [48]byte
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
	p, err := build(c, reqs, evs, cfg)
	if err != nil {
		return nil, err
	}
	return &RequestMediator{
		handlers: p.handlers,
		engine:   p.engine,
		events:   EventMediator{engine: p.engine},
		wiring:   newWiring(p.desc, p.engine, cfg),
	}, nil
}

// NewEventMediator resolves every handler bound in evs from c and returns an
// EventMediator, reporting every problem at once. Most programs call
// bootstrap.Events instead.
func NewEventMediator(c di.Container, evs *events.Map, cfg Config) (*EventMediator, error) {
	p, err := build(c, nil, evs, cfg)
	if err != nil {
		return nil, err
	}
	return &EventMediator{engine: p.engine}, nil
}

// parts is what every mediator is made of.
type parts struct {
	handlers *typeid.Table[any]              // by typeid.Of[Req]
	desc     map[reflect.Type]registry.Built // for diagrams
	engine   *engine.Engine
}

// build validates cfg and builds the request pipelines and the engine,
// reporting every problem at once.
func build(c di.Container, reqs *requests.Map, evs *events.Map, cfg Config) (parts, error) {
	var errs []error
	if err := cfg.Validate(); err != nil {
		errs = append(errs, err)
	}
	// Request handlers are built before event handlers; their pipelines
	// reach the engine, built next, through eng.
	var eng *engine.Engine
	handlers, desc, err := resolveRequests(c, reqs, &eng, cfg)
	errs = append(errs, err)
	eng, err = newEngine(c, evs, cfg)
	errs = append(errs, err)
	return parts{handlers: handlers, desc: desc, engine: eng}, errors.Join(errs...)
}

func resolveRequests(c di.Container, reqs *requests.Map, eng **engine.Engine, cfg Config) (*typeid.Table[any], map[reflect.Type]registry.Built, error) {
	handlers := map[typeid.ID]any{}
	if reqs == nil {
		return typeid.NewTable(handlers), nil, nil
	}
	global := make([]any, len(cfg.Middleware))
	for i, mw := range cfg.Middleware {
		global[i] = mw
	}
	stream := make([]any, len(cfg.StreamMiddleware))
	for i, mw := range cfg.StreamMiddleware {
		stream[i] = mw
	}
	dispatch := func(ctx context.Context, evs []any) error { return (*eng).Dispatch(ctx, evs) }
	var capture func(context.Context, func(context.Context) ([]any, error)) (context.Context, []any, error)
	if cfg.Capture != nil {
		capture = cfg.Capture.Capture
	}
	byType, err := (*registry.Requests)(reqs).Resolve(c, global, stream, dispatch, capture)
	for t, b := range byType {
		handlers[typeid.OfType(t)] = b.Value
	}
	return typeid.NewTable(handlers), byType, err
}

func newEngine(c di.Container, evs *events.Map, cfg Config) (*engine.Engine, error) {
	var routes map[reflect.Type][]registry.EventHandler
	var err error
	if evs != nil {
		routes, err = (*registry.Events)(evs).Resolve(c)
	}
	// Wrap every handler in the event middleware, once; the first
	// registered is the outermost.
	for t, hs := range routes {
		for i := range hs {
			inv := events.Invocation{EventType: t, Handler: hs[i].Name}
			call := events.InvocationFunc(hs[i].Call)
			for j := len(cfg.EventMiddleware) - 1; j >= 0; j-- {
				if call = cfg.EventMiddleware[j].WrapEvent(inv, call); call == nil {
					err = errors.Join(err, fmt.Errorf("event middleware %T returned a nil handler for %s", cfg.EventMiddleware[j], hs[i].Name))
					call = hs[i].Call
					break
				}
			}
			hs[i].Call = call
		}
	}
	return engine.New(routes, engine.Options{
		Concurrent:       cfg.ConcurrentEventHandleEnable,
		Limit:            cfg.MaxConcurrentEventHandlers,
		ParallelHandlers: cfg.EventHandlerOrder == Parallel,
		FailFast:         cfg.FailFast,
		MaxDepth:         cfg.MaxEventDepth,
		GlobalLimit:      cfg.MediatorWideLimit,
		Publisher:        cfg.publisher(),
		PublishOnly:      cfg.Capture != nil,
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

// Dispatch dispatches evs and their follow-ups exactly as the events a
// request handler returned are dispatched by Send: with the same engine,
// settings, Publisher (the outbox, with Config.Capture) and error semantics.
// It returns nil or a *DispatchError, or ErrNilMediator / ErrNilContext /
// ctx's error. Code that produces events outside a request handler, such as
// a saga step or a scheduled job, uses it.
func (m *RequestMediator) Dispatch(ctx context.Context, evs ...events.Event) error {
	if m == nil || m.engine == nil {
		return ErrNilMediator
	}
	if ctx == nil {
		return ErrNilContext
	}
	if err := engine.CtxErr(ctx); err != nil {
		return err
	}
	return m.engine.Dispatch(ctx, evs)
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
func Send[Req requests.Request[Res], Res any](ctx context.Context, m *RequestMediator, req Req) (res Res, err error) {
	var zero Res
	if m == nil {
		return zero, ErrNilMediator
	}
	if ctx == nil {
		return zero, ErrNilContext
	}
	// The same lookup as lookupStream, written out: a generic helper shared
	// by both measured slower on this path.
	b, ok := m.handlers.Get(typeid.Of[Req]())
	if !ok {
		return zero, m.notFound(reflect.TypeFor[Req]())
	}
	h, ok := b.(*registry.Request[Req, Res])
	if !ok {
		return zero, otherResponse[Req, Res]()
	}
	if h.Nilable && registry.IsNil(req) {
		return zero, nilRequest[Req]()
	}
	if ctx.Err() != nil {
		return zero, engine.CtxErr(ctx)
	}
	// The pipeline runs here rather than in a function of its own, which
	// saves a call; a panic in a handler or a middleware becomes an error.
	// recover is called only when the pipeline did not return, which saves
	// a call into the runtime per Send.
	returned := false
	defer func() {
		if returned {
			return
		}
		if v := recover(); v != nil {
			res, err = zero, panicked[Req](h, v)
		}
	}()
	if d := h.Direct; d != nil {
		var evs []any
		res, evs, err = d.Handle(ctx, req)
		switch {
		case err != nil:
			res = zero
		case len(evs) > 0:
			err = h.Dispatch(ctx, evs)
		}
		returned = true
		return res, err
	}
	res, err = h.Handle(ctx, req)
	returned = true
	return res, err
}

// otherResponse is the error of Send for a request type whose handler
// answers with another response type. The errors of Send are built out of
// line: its frame is smaller and its common path spills fewer registers.
func otherResponse[Req, Res any]() error {
	return fmt.Errorf("%w for request %v returning %v", ErrHandlerNotFound, reflect.TypeFor[Req](), reflect.TypeFor[Res]())
}

// nilRequest is the error of Send for a nil request.
func nilRequest[Req any]() error {
	return fmt.Errorf("%w of type %v", ErrNilRequest, reflect.TypeFor[Req]())
}

// notFound is the error for a request type with no handler. Requests are
// routed by their exact static type, and the Returns marker makes both T
// and *T requests, so a handler bound to one is named when the other is
// sent.
func (m *RequestMediator) notFound(t reflect.Type) error {
	other := reflect.PointerTo(t)
	if t.Kind() == reflect.Pointer {
		other = t.Elem()
	}
	if _, ok := m.handlers.Get(typeid.OfType(other)); ok {
		return fmt.Errorf("%w for request %v (a handler is bound for %v: send a %v, or bind %v)", ErrHandlerNotFound, t, other, other, t)
	}
	return fmt.Errorf("%w for request %v", ErrHandlerNotFound, t)
}

// panicked is the error of Send for a panic v raised in the pipeline of h.
// A panic that is not marked as the handler's came from the global
// middleware, when there is some (h.PanicSite).
func panicked[Req, Res any](h *registry.Request[Req, Res], v any) error {
	site, pe := "handler "+h.Name, (*engine.PanicError)(nil)
	if p, ok := v.(*engine.PanicError); ok && p.Site != "" {
		site, pe = p.Site, p
	} else {
		pe = engine.NewPanicError(v)
		if h.PanicSite != "" {
			site = h.PanicSite
		}
	}
	return fmt.Errorf("request %v: %s: %w", reflect.TypeFor[Req](), site, pe)
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
	if ctx.Err() != nil {
		return engine.CtxErr(ctx)
	}
	return m.engine.DispatchIncoming(ctx, event)
}
