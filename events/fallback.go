package events

import (
	"context"
	"errors"
	"fmt"
	"reflect"

	"github.com/gocqrs/cqrs/di"
	"github.com/gocqrs/cqrs/internal/registry"
)

// CircuitBreaker guards calls to a handler that may keep failing. Package
// github.com/gocqrs/cqrs/mediator/gobreaker adapts sony/gobreaker.
type CircuitBreaker interface {
	// Call runs fn unless the breaker named name is open. It returns fn's
	// error, or, when it refused to call fn, an error for which IsOpen
	// reports true. One breaker keeps a separate state per name.
	Call(ctx context.Context, name string, fn func(ctx context.Context) error) error
	// IsOpen reports whether err means the breaker refused the call.
	IsOpen(err error) bool
}

// FallbackPolicy says when a fallback handler replaces a failed primary.
// The zero value falls back on any error, with no circuit breaker. Whatever
// the policy, the fallback is never called once the context is done: the
// primary's error (typically the context's) is returned.
type FallbackPolicy struct {
	// On lists the errors that trigger the fallback, matched with
	// errors.Is; empty (and If nil) means any error.
	On []error
	// If, when set, also triggers the fallback for errors it accepts.
	If func(error) bool
	// Breaker, when set, wraps every call to the primary; while it is open
	// the primary is not called and the fallback answers at once.
	Breaker CircuitBreaker
	// Name names the binding's circuit in Breaker. By default every binding
	// has a circuit of its own, named after the bound type, the binding's
	// position and the primary (e.g. "app.OrderPlaced[2] *app.Mailer" for
	// an event, "app.PlaceOrder *app.Orders" for a request). Bindings given
	// the same Name share one circuit.
	Name string
}

// CircuitName returns the name of the circuit a fallback binding of
// bound, whose primary is named primary, uses in the breaker: p.Name when
// set. at is the position of an event binding among those of its type
// (from 1), or 0 for a request binding.
func (p FallbackPolicy) CircuitName(bound reflect.Type, at int, primary string) string {
	switch {
	case p.Name != "":
		return p.Name
	case at > 0:
		return fmt.Sprintf("%v[%d] %s", bound, at, primary)
	default:
		return fmt.Sprintf("%v %s", bound, primary)
	}
}

// Triggers reports whether err, returned by the primary, calls the fallback.
func (p FallbackPolicy) Triggers(err error) bool {
	if err == nil {
		return false
	}
	if p.Breaker != nil && p.Breaker.IsOpen(err) {
		return true
	}
	if len(p.On) == 0 && p.If == nil {
		return true
	}
	for _, target := range p.On {
		if errors.Is(err, target) {
			return true
		}
	}
	return p.If != nil && p.If(err)
}

// BindFallback binds to E a handler built by primary, backed by one built by
// fallback (both constructors, as for [Bind]): when the primary fails with
// an error the policy accepts (or the breaker is open), the fallback handles
// the event, and its follow-ups replace the primary's. Otherwise the
// primary's error is reported as usual.
func BindFallback[E any](m *Map, primary, fallback any, policy FallbackPolicy) {
	r := reg(m)
	t := reflect.TypeFor[E]()
	want := reflect.TypeFor[Handler[E]]()
	for _, ctor := range []any{primary, fallback} {
		if err := di.CheckConstructor(ctor, want); err != nil {
			r.Fail(fmt.Errorf("events: bind fallback for %v: %w", t, err))
			return
		}
	}
	r.Add(registry.EventEntry{
		Type:   t,
		Source: "fallback " + di.FuncName(primary) + " / " + di.FuncName(fallback),
		Key:    registry.KeyOf(primary, true),
		Build: func(c di.Container, at int) (registry.EventHandler, error) {
			p, err := di.Construct[Handler[E]](c, primary)
			f, ferr := di.Construct[Handler[E]](c, fallback)
			if err = errors.Join(err, ferr); err != nil {
				return registry.EventHandler{}, err
			}
			return fallbackEntry(p, f, policy, at), nil
		},
	})
}

// BindFallbackHandlers binds already built primary and fallback handlers, as
// [BindFallback] does constructors.
func BindFallbackHandlers[E any](m *Map, primary, fallback Handler[E], policy FallbackPolicy) {
	r := reg(m)
	t := reflect.TypeFor[E]()
	if registry.IsNil(primary) || registry.IsNil(fallback) {
		r.Fail(fmt.Errorf("events: bind fallback for %v: nil handler", t))
		return
	}
	r.Add(registry.EventEntry{
		Type:   t,
		Source: fmt.Sprintf("fallback %T / %T", primary, fallback),
		Key:    registry.KeyOf(primary, false),
		Build: func(_ di.Container, at int) (registry.EventHandler, error) {
			return fallbackEntry(primary, fallback, policy, at), nil
		},
	})
}

func fallbackEntry[E any](primary, fallback Handler[E], policy FallbackPolicy, at int) registry.EventHandler {
	name := registry.HandlerName(primary)
	circuit := policy.CircuitName(reflect.TypeFor[E](), at, name)
	h := HandlerFunc[E](func(ctx context.Context, e E) ([]Event, error) {
		var evs []Event
		useFallback, err := registry.TryPrimary(ctx, policy.Breaker, circuit, func(ctx context.Context) error {
			var err error
			evs, err = primary.Handle(ctx, e)
			return err
		}, policy.Triggers)
		if err == nil {
			return evs, nil
		}
		if !useFallback {
			return nil, err
		}
		return fallback.Handle(ctx, e)
	})
	en := entry[E](h)
	en.Name = fmt.Sprintf("%s (fallback %s)", name, registry.HandlerName(fallback))
	en.Value = primary
	if d, ok := primary.(Declarer); ok {
		en.Emits = append(en.Emits, d.EmittedEvents()...)
	}
	if d, ok := fallback.(Declarer); ok {
		en.Emits = append(en.Emits, d.EmittedEvents()...)
	}
	return en
}
