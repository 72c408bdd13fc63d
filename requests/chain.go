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

// ErrEndOfChain is returned (wrapped) by the next of the last link of a
// chain: the request went through every link, from the first, and each
// passed it on. The message names the request type and the number of links.
// A link that fails does not pass the request on: when a link retries and
// the next link fails again, the error is that link's, not ErrEndOfChain.
var ErrEndOfChain = errors.New("requests: no handler in the chain answered")

// ChainHandler is one link of a chain of responsibility: it answers the
// request itself, or passes it on by calling next. It returns only its own
// events; the mediator collects the events of every link that ran and
// returned without error, in the order they returned.
//
// A link may call next more than once, to retry or to compare answers. The
// next given to a link always runs the link that follows it, with the
// request it is given: a second call runs that link again, as the first call
// did, and skips none. Each call is a separate invocation, and the rule
// above applies to each: an invocation that returns without error has its
// events collected, whatever the link that called next then does (calls it
// again, ignores what it returned, or itself returns an error); an
// invocation that returns an error has its events dropped. So a next link
// that runs twice without error contributes its events twice, in the order
// the invocations returned, and one that fails and then succeeds contributes
// those of the success only. Calls of next must not overlap and must be made
// before Handle returns: next is not safe for concurrent use.
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
	ch := &chain[Req, Res]{links: links}
	// Falling off the end is the same for every request: the error, and the
	// next of the last link, are built once.
	end := fmt.Errorf("%w: %v passed through %d link(s)", ErrEndOfChain, reflect.TypeFor[Req](), len(links))
	ch.last = func(context.Context, Req) (Res, error) {
		var zero Res
		return zero, end
	}
	h := HandlerFunc[Req, Res](func(ctx context.Context, req Req) (Res, []events.Event, error) {
		run := &chainRun[Req, Res]{chain: ch}
		res, err := run.handle(ctx, req, 0)
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

// chain is what the requests to one chain share.
type chain[Req Request[Res], Res any] struct {
	links []ChainHandler[Req, Res]
	last  func(context.Context, Req) (Res, error) // the next of the last link
}

// chainRun walks one request down a chain. It holds no cursor: the next
// given to link i always runs link i+1, however often it is called.
type chainRun[Req Request[Res], Res any] struct {
	chain *chain[Req, Res]
	evs   []events.Event
}

// handle runs one invocation of link i, and keeps its events if it returns
// without error.
func (c *chainRun[Req, Res]) handle(ctx context.Context, req Req, i int) (Res, error) {
	links := c.chain.links
	next := c.chain.last
	if i+1 < len(links) {
		next = func(ctx context.Context, req Req) (Res, error) { return c.handle(ctx, req, i+1) }
	}
	res, evs, err := links[i].Handle(ctx, req, next)
	if err != nil {
		var zero Res
		return zero, err
	}
	c.evs = append(c.evs, evs...)
	return res, nil
}
