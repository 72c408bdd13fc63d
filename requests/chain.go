package requests

import (
	"context"
	"errors"
	"fmt"
	"reflect"

	"github.com/gocqrs/cqrs/di"
	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/internal/registry"
)

// ErrEndOfChain is returned (wrapped) when every link of a chain passed the
// request on and none answered.
var ErrEndOfChain = errors.New("requests: no handler in the chain answered")

// ChainHandler is one link of a chain of responsibility: it answers the
// request itself, or passes it on by calling next (at most once). It returns
// only its own events; the mediator collects the events of every link that
// ran and returned without error, in the order they returned.
type ChainHandler[Req Request[Res], Res any] interface {
	Handle(ctx context.Context, req Req, next func(context.Context, Req) (Res, error)) (Res, []events.Event, error)
}

// ChainHandlerFunc adapts a function to a [ChainHandler].
type ChainHandlerFunc[Req Request[Res], Res any] func(ctx context.Context, req Req, next func(context.Context, Req) (Res, error)) (Res, []events.Event, error)

// Handle calls f(ctx, req, next).
func (f ChainHandlerFunc[Req, Res]) Handle(ctx context.Context, req Req, next func(context.Context, Req) (Res, error)) (Res, []events.Event, error) {
	return f(ctx, req, next)
}

// BindChain binds Req to a chain of responsibility whose links are built by
// ctors, in order: the first link is asked first. Each constructor is
// resolved like those of [Bind] and must build a [ChainHandler].
func BindChain[Req Request[Res], Res any](m *Map, ctors ...any) {
	r := reg(m)
	t := reflect.TypeFor[Req]()
	if len(ctors) == 0 {
		r.Fail(fmt.Errorf("requests: bind chain %v: no links", t))
		return
	}
	want := reflect.TypeFor[ChainHandler[Req, Res]]()
	for i, ctor := range ctors {
		if err := di.CheckConstructor(ctor, want); err != nil {
			r.Fail(fmt.Errorf("requests: bind chain %v, link %d: %w", t, i, err))
			return
		}
	}
	r.Add(registry.RequestEntry{
		Type:   t,
		Source: "chain starting with " + di.FuncName(ctors[0]),
		Build: func(c di.Container, p registry.Pipeline) (registry.Built, error) {
			links := make([]ChainHandler[Req, Res], len(ctors))
			var errs []error
			for i, ctor := range ctors {
				l, err := di.Construct[ChainHandler[Req, Res]](c, ctor)
				if err != nil {
					errs = append(errs, fmt.Errorf("link %d: %w", i, err))
				}
				links[i] = l
			}
			if err := errors.Join(errs...); err != nil {
				return registry.Built{}, err
			}
			return buildChain(links, p)
		},
	})
}

// BindChainHandlers binds Req to a chain of already built links.
func BindChainHandlers[Req Request[Res], Res any](m *Map, links ...ChainHandler[Req, Res]) {
	r := reg(m)
	t := reflect.TypeFor[Req]()
	if len(links) == 0 {
		r.Fail(fmt.Errorf("requests: bind chain %v: no links", t))
		return
	}
	for i, l := range links {
		if registry.IsNil(l) {
			r.Fail(fmt.Errorf("requests: bind chain %v: link %d is nil", t, i))
			return
		}
	}
	links = append([]ChainHandler[Req, Res](nil), links...)
	r.Add(registry.RequestEntry{
		Type:   t,
		Source: fmt.Sprintf("chain starting with %T", links[0]),
		Build: func(_ di.Container, p registry.Pipeline) (registry.Built, error) {
			return buildChain(links, p)
		},
	})
}

func buildChain[Req Request[Res], Res any](links []ChainHandler[Req, Res], p registry.Pipeline) (registry.Built, error) {
	h := HandlerFunc[Req, Res](func(ctx context.Context, req Req) (Res, []events.Event, error) {
		run := &chainRun[Req, Res]{links: links}
		res, err := run.next(ctx, req)
		if err != nil {
			var zero Res
			return zero, nil, err
		}
		return res, run.evs, nil
	})
	hs := make([]any, len(links))
	for i, l := range links {
		hs[i] = l
	}
	return build(h, "chain", hs, p)
}

// chainRun walks one request down a chain.
type chainRun[Req Request[Res], Res any] struct {
	links []ChainHandler[Req, Res]
	i     int
	evs   []events.Event
}

func (c *chainRun[Req, Res]) next(ctx context.Context, req Req) (Res, error) {
	var zero Res
	if c.i == len(c.links) {
		return zero, fmt.Errorf("%w: %v passed through %d link(s)", ErrEndOfChain, reflect.TypeFor[Req](), len(c.links))
	}
	l := c.links[c.i]
	c.i++
	res, evs, err := l.Handle(ctx, req, c.next)
	if err != nil {
		return zero, err
	}
	c.evs = append(c.evs, evs...)
	return res, nil
}
