package requests

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"

	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/internal/panics"
	"github.com/gocqrs/cqrs/internal/registry"
)

// ErrMiddlewareType is matched by the error returned when a global middleware
// passes a request of another type to the next handler, or answers with a
// response of another type than the request's.
var ErrMiddlewareType = errors.New("requests: middleware changed the type of a request or response")

// Info describes a request binding to middleware. Middleware receives it
// once per request type, when the chain is built at bootstrap, and may
// return next unchanged for request types it does not care about, which
// then cost nothing.
type Info struct {
	// Request and Response are the request type and its response (item)
	// type.
	Request, Response reflect.Type
	// Handler names the handler (for a chain, the chain; for a fallback,
	// the primary).
	Handler string
	// Stream is true for a stream handler.
	Stream bool
}

// AnyHandlerFunc is the untyped view of the handling of a request that
// global middleware wraps: everything after it, down to the handler and the
// dispatch of the handler's events.
type AnyHandlerFunc func(ctx context.Context, req any) (any, error)

// Middleware wraps the handling of every request type (global middleware).
// WrapRequest is called once per request type at bootstrap and returns the
// function that replaces next: it may read or replace the request, call next
// or not (short-circuit), and replace the response or the error.
//
// Global middleware wraps the whole of Send: next returns only after the
// handler has run and its events have been dispatched, with what Send's
// caller would get (the response, and nil, the handler's error, or a
// *DispatchError that accompanies a valid response). Spans and timings taken
// around next therefore cover the fan-out, and the context passed to next
// is the one event handlers receive. To see or change a handler's events
// before they are dispatched, use [TypedMiddleware].
//
// The request and the response travel as any, which costs an allocation each
// for values that do not fit in a pointer; TypedMiddleware has no such cost.
type Middleware interface {
	WrapRequest(info Info, next AnyHandlerFunc) AnyHandlerFunc
}

// MiddlewareFunc adapts a function to a [Middleware].
type MiddlewareFunc func(info Info, next AnyHandlerFunc) AnyHandlerFunc

// WrapRequest calls f(info, next).
func (f MiddlewareFunc) WrapRequest(info Info, next AnyHandlerFunc) AnyHandlerFunc {
	return f(info, next)
}

// AnyStreamFunc is the untyped view of a stream that global stream middleware
// wraps. Each item is yielded after its events were dispatched, with the
// error of that dispatch (nil, or a *DispatchError); the returned error is
// the handler's, that of the dispatch of its late events, or the context's
// when the stream was cancelled.
type AnyStreamFunc func(ctx context.Context, req any, yield func(item any, err error) bool) error

// StreamMiddleware wraps every stream (global stream middleware). WrapStream
// is called once per request type at bootstrap. The returned function runs
// around the whole stream, and sees each item by wrapping yield.
type StreamMiddleware interface {
	WrapStream(info Info, next AnyStreamFunc) AnyStreamFunc
}

// StreamMiddlewareFunc adapts a function to a [StreamMiddleware].
type StreamMiddlewareFunc func(info Info, next AnyStreamFunc) AnyStreamFunc

// WrapStream calls f(info, next).
func (f StreamMiddlewareFunc) WrapStream(info Info, next AnyStreamFunc) AnyStreamFunc {
	return f(info, next)
}

// TypedMiddleware wraps the handler of one request type, with no any and no
// allocation of its own: it is applied once, at bootstrap.
type TypedMiddleware[Req Request[Res], Res any] func(next HandlerFunc[Req, Res]) HandlerFunc[Req, Res]

// TypedStreamMiddleware wraps the stream handler of one request type.
type TypedStreamMiddleware[Req Request[Res], Res any] func(next StreamHandlerFunc[Req, Res]) StreamHandlerFunc[Req, Res]

// Use adds typed middleware around the handler bound to Req. The order of
// a chain, outermost first: global middleware in registration order, then
// typed middleware in the order Use added it, then the handler.
func Use[Req Request[Res], Res any](m *Map, mws ...TypedMiddleware[Req, Res]) {
	use(m, reflect.TypeFor[Req](), "Use", mws)
}

// UseStream adds typed stream middleware around the stream handler bound to
// Req, in the same order as [Use].
func UseStream[Req Request[Res], Res any](m *Map, mws ...TypedStreamMiddleware[Req, Res]) {
	use(m, reflect.TypeFor[Req](), "UseStream", mws)
}

// use records typed middleware for t; the pipeline checks its kind when it
// is built.
func use[M any](m *Map, t reflect.Type, fn string, mws []M) {
	r := reg(m)
	for i, mw := range mws {
		if registry.IsNil(mw) {
			r.Fail(fmt.Errorf("requests: %s for %v: middleware %d is nil", fn, t, i))
			continue
		}
		r.Use(t, mw)
	}
}

// wrap builds the pipeline of a handler: global middleware, then typed
// middleware, then h, whose events are dispatched with p.Dispatch.
func wrap[Req Request[Res], Res any](handler Handler[Req, Res], info Info, p registry.Pipeline) (func(context.Context, Req) (Res, error), []string, error) {
	names := middlewareNames(p)
	h := handler
	if len(p.Typed) > 0 {
		f := HandlerFunc[Req, Res](handler.Handle)
		for i := len(p.Typed) - 1; i >= 0; i-- {
			mw, ok := p.Typed[i].(TypedMiddleware[Req, Res])
			if !ok {
				return nil, nil, fmt.Errorf("middleware %d added with Use for %v is a %T, not a TypedMiddleware for this handler", i, info.Request, p.Typed[i])
			}
			if f = mw(f); f == nil {
				return nil, nil, fmt.Errorf("typed middleware %d for %v returned a nil handler", i, info.Request)
			}
		}
		h = f
	}
	dispatch := p.Dispatch
	// The handler is called through its interface: one dynamic call, no
	// method-value wrapper. A plain handler, which emits nothing, is called
	// directly, without its adapter.
	var core func(ctx context.Context, req Req) (Res, error)
	if ph, ok := h.(plain[Req, Res]); ok {
		inner := ph.h
		core = func(ctx context.Context, req Req) (Res, error) { return inner.Handle(ctx, req) }
	} else if capture := p.Capture; capture != nil {
		// Transactional capture: the handler runs in a transaction, its
		// notification events are written to the outbox in it, and the
		// others are dispatched once it has committed.
		core = func(ctx context.Context, req Req) (Res, error) {
			var res Res
			ctx, evs, err := capture(ctx, func(ctx context.Context) ([]any, error) {
				r, evs, err := h.Handle(ctx, req)
				res = r
				return evs, err
			})
			if err != nil {
				var zero Res
				return zero, err
			}
			if len(evs) == 0 {
				return res, nil
			}
			return res, dispatch(ctx, evs)
		}
	} else {
		core = func(ctx context.Context, req Req) (Res, error) {
			res, evs, err := h.Handle(ctx, req)
			if err != nil {
				var zero Res
				return zero, err
			}
			if len(evs) == 0 {
				return res, nil
			}
			return res, dispatch(ctx, evs)
		}
	}
	if len(p.Global) == 0 {
		return core, names, nil
	}
	// With global middleware, a panic of the handler is raised again as a
	// *PanicError naming the handler, so that a panic that reaches the
	// mediator otherwise came from the global middleware (PanicSite). One
	// recover at the handler, not one per layer: a deferred recover per
	// layer doubled the cost of three global middleware. A middleware that
	// recovers panics sees that *PanicError.
	handlerSite := "handler " + info.Handler
	next := AnyHandlerFunc(func(ctx context.Context, req any) (_ any, err error) {
		r, ok := req.(Req)
		if !ok {
			return nil, fmt.Errorf("%w: %v handler given a %T", ErrMiddlewareType, info.Request, req)
		}
		defer func() {
			if v := recover(); v != nil {
				panic(panics.At(handlerSite, v))
			}
		}()
		res, err := core(ctx, r)
		return res, err
	})
	for i := len(p.Global) - 1; i >= 0; i-- {
		mw, ok := p.Global[i].(Middleware)
		if !ok {
			return nil, nil, fmt.Errorf("global middleware %d is a %T, not a requests.Middleware", i, p.Global[i])
		}
		if next = mw.WrapRequest(info, next); next == nil {
			return nil, nil, fmt.Errorf("middleware %T returned a nil handler for %v", mw, info.Request)
		}
	}

	return func(ctx context.Context, req Req) (Res, error) {
		out, err := next(ctx, req)
		res, ok := out.(Res)
		if !ok && out != nil {
			var zero Res
			return zero, fmt.Errorf("%w: %v answered with a %T, not a %v", ErrMiddlewareType, info.Request, out, info.Response)
		}
		return res, err
	}, names, nil
}

// wrapStream builds the pipeline of a stream handler, as wrap does: each
// item's events are dispatched before the item goes up the chain, and the
// late events after the handler returns, unless the consumer stopped.
func wrapStream[Req Request[Res], Res any](h StreamHandlerFunc[Req, Res], info Info, p registry.Pipeline) (func(context.Context, Req, func(Res, error) bool) error, []string, error) {
	names := middlewareNames(p)
	for i := len(p.Typed) - 1; i >= 0; i-- {
		mw, ok := p.Typed[i].(TypedStreamMiddleware[Req, Res])
		if !ok {
			return nil, nil, fmt.Errorf("middleware %d added for %v is a %T, not a TypedStreamMiddleware for this stream handler", i, info.Request, p.Typed[i])
		}
		if h = mw(h); h == nil {
			return nil, nil, fmt.Errorf("typed stream middleware %d for %v returned a nil handler", i, info.Request)
		}
	}
	dispatch := p.Dispatch
	core := func(ctx context.Context, req Req, yield func(Res, error) bool) error {
		stopped := false
		var cancelled error
		late, err := h(ctx, req, func(item Res, evs []events.Event) bool {
			if stopped {
				return false
			}
			if cerr := ctx.Err(); cerr != nil {
				// Nothing produced after cancellation is dispatched or
				// delivered: the stream ends with the cancellation, which
				// is not an item.
				stopped, cancelled = true, cerr
				return false
			}
			var derr error
			if len(evs) > 0 {
				derr = dispatch(ctx, evs)
			}
			if !yield(item, derr) {
				stopped = true
				return false
			}
			return true
		})
		if cancelled != nil {
			return cancelled
		}
		if err != nil || stopped || len(late) == 0 {
			return err
		}
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
		return dispatch(ctx, late)
	}
	if len(p.Global) == 0 {
		return core, names, nil
	}
	next := AnyStreamFunc(func(ctx context.Context, req any, yield func(any, error) bool) error {
		r, ok := req.(Req)
		if !ok {
			return fmt.Errorf("%w: %v stream handler given a %T", ErrMiddlewareType, info.Request, req)
		}
		return core(ctx, r, func(item Res, err error) bool { return yield(item, err) })
	})
	for i := len(p.Global) - 1; i >= 0; i-- {
		mw, ok := p.Global[i].(StreamMiddleware)
		if !ok {
			return nil, nil, fmt.Errorf("global stream middleware %d is a %T, not a requests.StreamMiddleware", i, p.Global[i])
		}
		if next = mw.WrapStream(info, next); next == nil {
			return nil, nil, fmt.Errorf("stream middleware %T returned a nil handler for %v", mw, info.Request)
		}
	}
	return func(ctx context.Context, req Req, yield func(Res, error) bool) error {
		var typeErr error
		err := next(ctx, req, func(item any, ierr error) bool {
			v, ok := item.(Res)
			if !ok && item != nil {
				typeErr = fmt.Errorf("%w: %v stream yielded a %T, not a %v", ErrMiddlewareType, info.Request, item, info.Response)
				return false
			}
			return yield(v, ierr)
		})
		if typeErr != nil {
			return typeErr
		}
		return err
	}, names, nil
}

// globalSite names where a panic that does not come from the handler came
// from, given the global middleware's names.
func globalSite(global []string) string {
	switch len(global) {
	case 0:
		return ""
	case 1:
		return "middleware " + global[0]
	default:
		return "one of the global middleware " + strings.Join(global, " → ")
	}
}

func middlewareNames(p registry.Pipeline) []string {
	names := make([]string, 0, len(p.Global)+len(p.Typed))
	for _, mw := range p.Global {
		names = append(names, registry.HandlerName(mw))
	}
	for _, mw := range p.Typed {
		names = append(names, registry.HandlerName(mw))
	}
	return names
}

// emitted returns the event types v declares, if it implements
// events.Declarer.
func emitted(v any) []reflect.Type {
	if d, ok := v.(events.Declarer); ok {
		return d.EmittedEvents()
	}
	return nil
}
