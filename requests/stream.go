package requests

import (
	"context"
	"reflect"

	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/internal/registry"
)

// StreamHandler handles a request of type Req by producing a sequence of Res
// items, for long-running requests that report as they go (imports,
// progress, token streams).
//
// Stream calls yield once per item, in order, with the events produced for
// that item; the mediator dispatches those events before the consumer
// receives the item. When yield returns false the consumer has stopped (or
// its context is done): Stream must return promptly and must not call yield
// again. The events Stream returns are dispatched after the last item,
// before the stream ends, unless err is non-nil or the consumer stopped
// early. A non-nil err ends the stream with that error; items already
// delivered stay delivered.
//
// This is the body of an iter.Seq2 with events attached: a handler is
// written as a plain loop, needs no goroutine or channel, and keeps no state
// between calls, so one handler serves every concurrent stream.
type StreamHandler[Req Request[Res], Res any] interface {
	Stream(ctx context.Context, req Req, yield func(item Res, evs []events.Event) bool) ([]events.Event, error)
}

// StreamHandlerFunc adapts a function to a [StreamHandler].
type StreamHandlerFunc[Req Request[Res], Res any] func(ctx context.Context, req Req, yield func(Res, []events.Event) bool) ([]events.Event, error)

// Stream calls f(ctx, req, yield).
func (f StreamHandlerFunc[Req, Res]) Stream(ctx context.Context, req Req, yield func(Res, []events.Event) bool) ([]events.Event, error) {
	return f(ctx, req, yield)
}

// BindStream binds Req to the stream handler built by ctor, as [Bind] does
// for a [Handler]. A request type has one binding in a Map: a plain handler
// or a stream handler.
func BindStream[Req Request[Res], Res any](m *Map, ctor any) {
	bindConstructor(m, reflect.TypeFor[Req](), "stream handler", true, ctor, buildStream[Req, Res])
}

// BindStreamHandler binds Req to h, an already built stream handler.
func BindStreamHandler[Req Request[Res], Res any](m *Map, h StreamHandler[Req, Res]) {
	bindValue(m, reflect.TypeFor[Req](), "stream handler", true, h, buildStream[Req, Res])
}

func buildStream[Req Request[Res], Res any](h StreamHandler[Req, Res], p registry.Pipeline) (registry.Built, error) {
	name := registry.HandlerName(h)
	info := Info{Request: reflect.TypeFor[Req](), Response: reflect.TypeFor[Res](), Handler: name, Stream: true}
	f, names, err := wrapStream(h.Stream, info, p)
	if err != nil {
		return registry.Built{}, err
	}
	v := &registry.Stream[Req, Res]{
		Name:    name,
		Stream:  f,
		Nilable: registry.Nilable(info.Request),
	}
	if len(p.Global) == 0 && len(p.Typed) == 0 {
		v.Direct, v.Dispatch = h, p.Dispatch
	}
	return registry.Built{
		Kind:       "stream",
		Handlers:   []string{name},
		Emits:      emitted(h),
		Middleware: names,
		Value:      v,
	}, nil
}
