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

// FallbackPolicy says when a fallback handler replaces a failed primary; see
// events.FallbackPolicy.
type FallbackPolicy = events.FallbackPolicy

// CircuitBreaker guards calls to a primary handler; see
// events.CircuitBreaker.
type CircuitBreaker = events.CircuitBreaker

// BindFallback binds Req to a handler built by primary, backed by one built
// by fallback (both constructors, as for [Bind]). When the primary fails
// (returns an error or panics) with an error the policy accepts, or its
// circuit breaker is open, the fallback answers instead: its response and
// its events replace the primary's (a failed primary's events are never
// dispatched). Otherwise the primary's error is returned.
func BindFallback[Req Request[Res], Res any](m *Map, primary, fallback any, policy FallbackPolicy) {
	r := reg(m)
	t := reflect.TypeFor[Req]()
	want := reflect.TypeFor[Handler[Req, Res]]()
	for _, ctor := range []any{primary, fallback} {
		if err := di.CheckConstructor(ctor, want); err != nil {
			r.Fail(fmt.Errorf("requests: bind fallback for %v: %w", t, err))
			return
		}
	}
	r.Add(registry.RequestEntry{
		Type:   t,
		Source: "fallback " + di.FuncName(primary) + " / " + di.FuncName(fallback),
		Build: func(c di.Container, p registry.Pipeline) (registry.Built, error) {
			ph, err := di.Construct[Handler[Req, Res]](c, primary)
			fh, ferr := di.Construct[Handler[Req, Res]](c, fallback)
			if err = errors.Join(err, ferr); err != nil {
				return registry.Built{}, err
			}
			return buildFallback(ph, fh, policy, p)
		},
	})
}

// BindFallbackHandlers binds already built primary and fallback handlers, as
// [BindFallback] does constructors.
func BindFallbackHandlers[Req Request[Res], Res any](m *Map, primary, fallback Handler[Req, Res], policy FallbackPolicy) {
	r := reg(m)
	t := reflect.TypeFor[Req]()
	if registry.IsNil(primary) || registry.IsNil(fallback) {
		r.Fail(fmt.Errorf("requests: bind fallback for %v: nil handler", t))
		return
	}
	r.Add(registry.RequestEntry{
		Type:   t,
		Source: fmt.Sprintf("fallback %T / %T", primary, fallback),
		Build: func(_ di.Container, p registry.Pipeline) (registry.Built, error) {
			return buildFallback(primary, fallback, policy, p)
		},
	})
}

func buildFallback[Req Request[Res], Res any](primary, fallback Handler[Req, Res], policy FallbackPolicy, p registry.Pipeline) (registry.Built, error) {
	circuit := policy.CircuitName(reflect.TypeFor[Req](), 0, registry.HandlerName(primary))
	h := HandlerFunc[Req, Res](func(ctx context.Context, req Req) (Res, []events.Event, error) {
		var (
			res Res
			evs []events.Event
		)
		useFallback, err := registry.TryPrimary(ctx, policy.Breaker, circuit, func(ctx context.Context) error {
			var err error
			res, evs, err = primary.Handle(ctx, req)
			return err
		}, policy.Triggers)
		if err == nil {
			return res, evs, nil
		}
		if !useFallback {
			var zero Res
			return zero, nil, err
		}
		return fallback.Handle(ctx, req)
	})
	return build(h, "fallback", []any{primary, fallback}, p)
}
