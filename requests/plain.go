package requests

import (
	"context"

	"github.com/gocqrs/cqrs/events"
)

// PlainHandler handles requests of type Req whose handling emits no events:
// queries, and commands whose effects are not announced. It is the shape of
// most existing Go handlers:
//
//	func (h *GetOrder) Handle(ctx context.Context, q GetOrder) (Order, error)
//
// [Bind] accepts a constructor of a PlainHandler as it does one of a
// [Handler]; [Plain] turns a built one into a Handler for [BindHandler],
// [BindFallbackHandlers] or anything else that takes a Handler. A plain
// handler bound directly costs nothing more than a Handler on the path of
// Send.
type PlainHandler[Req Request[Res], Res any] interface {
	Handle(ctx context.Context, req Req) (Res, error)
}

// PlainHandlerFunc adapts a function to a [PlainHandler].
type PlainHandlerFunc[Req Request[Res], Res any] func(ctx context.Context, req Req) (Res, error)

// Handle calls f(ctx, req).
func (f PlainHandlerFunc[Req, Res]) Handle(ctx context.Context, req Req) (Res, error) {
	return f(ctx, req)
}

// Plain returns h as a [Handler] that emits no events. When it is bound
// without typed middleware, the mediator calls h directly.
func Plain[Req Request[Res], Res any](h PlainHandler[Req, Res]) Handler[Req, Res] {
	return plain[Req, Res]{h}
}

type plain[Req Request[Res], Res any] struct{ h PlainHandler[Req, Res] }

func (p plain[Req, Res]) Handle(ctx context.Context, req Req) (Res, []events.Event, error) {
	res, err := p.h.Handle(ctx, req)
	return res, nil, err
}

// HandlerValue returns the wrapped handler, which names it in errors and
// diagrams.
func (p plain[Req, Res]) HandlerValue() any { return p.h }

// Func returns f as a [HandlerFunc], with both type arguments inferred from
// f's signature:
//
//	requests.BindHandler(r, requests.Func(func(ctx context.Context, q GetPrice) (Price, []events.Event, error) {...}))
func Func[Req Request[Res], Res any](f func(ctx context.Context, req Req) (Res, []events.Event, error)) HandlerFunc[Req, Res] {
	return f
}

// PlainFunc returns f as a [Handler] that emits no events, with both type
// arguments inferred from f's signature:
//
//	requests.BindHandler(r, requests.PlainFunc(func(ctx context.Context, q GetPrice) (Price, error) {...}))
func PlainFunc[Req Request[Res], Res any](f func(ctx context.Context, req Req) (Res, error)) Handler[Req, Res] {
	return Plain[Req, Res](PlainHandlerFunc[Req, Res](f))
}
