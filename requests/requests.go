package requests

import (
	"context"
	"fmt"
	"reflect"

	"github.com/gocqrs/cqrs/di"
	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/internal/registry"
)

// Request is implemented by every request type whose handler answers with a
// Res. A request type gets it by embedding [Returns]:
//
//	type PlaceOrder struct {
//		requests.Returns[OrderID]
//		Item string
//	}
//
// The marker costs no memory and lets mediator.Send infer the response type
// from the request, so call sites need neither type arguments nor assertions.
// Embed it as the first field: a zero-size field at the end of a struct
// adds padding (8 bytes on 64-bit platforms).
//
// The marker's method is promoted to both PlaceOrder and *PlaceOrder, so
// both are requests, and they are different request types: Send routes by
// the exact static type, and a handler bound for *PlaceOrder does not answer
// a PlaceOrder (Send says so in its ErrHandlerNotFound error). Bind and send
// the same one.
type Request[Res any] interface {
	responseType() Res
}

// Returns marks a request type as answered by a Res; embed it. It has no
// fields and adds nothing to the size of the request when it is embedded
// first.
type Returns[Res any] struct{}

func (Returns[Res]) responseType() (r Res) { return r }

// Unit is the response of a request that answers with nothing but success or
// failure, typically a command: embed Returns[Unit].
type Unit struct{}

// Handler handles requests of type Req and answers with a Res. Exactly one
// handler is bound to each request type.
//
// Handle returns the events the request produced. The mediator dispatches them
// after Handle returns and before the caller gets the response, and only if
// err is nil. Returning events, rather than recording them on the handler,
// keeps handlers stateless: one handler value serves every concurrent request.
// It also makes handlers trivial to unit-test, since the emitted events are
// part of the result.
type Handler[Req Request[Res], Res any] interface {
	Handle(ctx context.Context, req Req) (Res, []events.Event, error)
}

// HandlerFunc adapts a function to a [Handler].
type HandlerFunc[Req Request[Res], Res any] func(ctx context.Context, req Req) (Res, []events.Event, error)

// Handle calls f(ctx, req).
func (f HandlerFunc[Req, Res]) Handle(ctx context.Context, req Req) (Res, []events.Event, error) {
	return f(ctx, req)
}

// ErrDuplicateBinding is matched by the bootstrap error reporting a request
// type bound twice (or a handler bound twice to one event type).
var ErrDuplicateBinding = registry.ErrDuplicate

// Map binds each request type to its one handler. Commands and queries share
// one Map. Requests are matched by exact static type: a handler bound to
// PlaceOrder does not receive *PlaceOrder.
//
// Binding never fails on the spot: problems (a second binding for a type, a
// constructor of the wrong shape) are recorded and reported, all at once, by
// bootstrap. The zero Map is empty and ready to use. A Map is not safe for
// concurrent use; it is filled once, at start-up.
type Map registry.Requests

// Bind binds Req to the handler built by ctor, a constructor whose parameters
// are resolved from the container at bootstrap and whose first result
// implements [Handler][Req, Res] (an optional second result is an error). The
// handler is built once and shared by every request. The response type is
// inferred from Req:
//
//	requests.Bind[PlaceOrder](r, NewPlaceOrderHandler)
//
// The constructor may instead build a [PlainHandler], whose Handle returns
// (Res, error): it is bound as [Plain] would wrap it.
func Bind[Req Request[Res], Res any](m *Map, ctor any) {
	if di.CheckConstructor(ctor, reflect.TypeFor[Handler[Req, Res]]()) != nil &&
		di.CheckConstructor(ctor, reflect.TypeFor[PlainHandler[Req, Res]]()) == nil {
		bindConstructor(m, reflect.TypeFor[Req](), "handler", false, ctor, func(h PlainHandler[Req, Res], p registry.Pipeline) (registry.Built, error) {
			return buildHandler(Plain(h), p)
		})
		return
	}
	bindConstructor(m, reflect.TypeFor[Req](), "handler", false, ctor, buildHandler[Req, Res])
}

// BindHandler binds Req to h, an already built handler.
func BindHandler[Req Request[Res], Res any](m *Map, h Handler[Req, Res]) {
	bindValue(m, reflect.TypeFor[Req](), "handler", false, h, buildHandler[Req, Res])
}

func buildHandler[Req Request[Res], Res any](h Handler[Req, Res], p registry.Pipeline) (registry.Built, error) {
	return build(h, "handler", []any{h}, p)
}

// bindConstructor records the binding of t to the H built by ctor at
// bootstrap, then wrapped by b; stream marks a stream handler.
func bindConstructor[H any](m *Map, t reflect.Type, what string, stream bool, ctor any, b func(H, registry.Pipeline) (registry.Built, error)) {
	r := reg(m)
	if err := di.CheckConstructor(ctor, reflect.TypeFor[H]()); err != nil {
		r.Fail(fmt.Errorf("requests: bind %s for %v: %w", what, t, err))
		return
	}
	r.Add(registry.RequestEntry{
		Type:   t,
		Source: what + " constructor " + di.FuncName(ctor),
		Stream: stream,
		Build: func(c di.Container, p registry.Pipeline) (registry.Built, error) {
			h, err := di.Construct[H](c, ctor)
			if err != nil {
				return registry.Built{}, err
			}
			return b(h, p)
		},
	})
}

// bindValue records the binding of t to h, wrapped by b at bootstrap.
func bindValue[H any](m *Map, t reflect.Type, what string, stream bool, h H, b func(H, registry.Pipeline) (registry.Built, error)) {
	r := reg(m)
	if registry.IsNil(h) {
		r.Fail(fmt.Errorf("requests: bind %s for %v: nil handler", what, t))
		return
	}
	r.Add(registry.RequestEntry{
		Type:   t,
		Source: fmt.Sprintf("%s %T", what, h),
		Stream: stream,
		Build:  func(_ di.Container, p registry.Pipeline) (registry.Built, error) { return b(h, p) },
	})
}

// Len reports how many request types are bound.
func (m *Map) Len() int { return reg(m).Len() }

func reg(m *Map) *registry.Requests {
	if m == nil {
		panic("requests: Bind on a nil *requests.Map")
	}
	return (*registry.Requests)(m)
}

// build wraps h, made of the handlers hs (one, or the links of a chain...),
// in its middleware and describes it.
func build[Req Request[Res], Res any](h Handler[Req, Res], kind string, hs []any, p registry.Pipeline) (registry.Built, error) {
	b := registry.Built{Kind: kind}
	for _, v := range hs {
		b.Handlers = append(b.Handlers, registry.HandlerName(v))
		b.Emits = append(b.Emits, emitted(v)...)
	}
	registry.Distinct(b.Handlers)
	info := Info{Request: reflect.TypeFor[Req](), Response: reflect.TypeFor[Res](), Handler: b.Handlers[0]}
	f, names, err := wrap(h, info, p)
	if err != nil {
		return registry.Built{}, err
	}
	b.Middleware = names
	r := &registry.Request[Req, Res]{
		Name:      info.Handler,
		Handle:    f,
		Nilable:   registry.Nilable(info.Request),
		PanicSite: globalSite(names[:len(p.Global)]),
	}
	if _, isPlain := h.(plain[Req, Res]); !isPlain && len(p.Global) == 0 && len(p.Typed) == 0 && p.Capture == nil {
		r.Direct, r.Dispatch = h, p.Dispatch
	}
	b.Value = r
	return b, nil
}
