package events

import (
	"context"
	"fmt"
	"reflect"

	"github.com/gocqrs/cqrs/di"
	"github.com/gocqrs/cqrs/internal/registry"
)

// ErrDuplicateBinding is matched by the bootstrap error reporting a handler
// bound twice to one event type (or a request type bound twice).
var ErrDuplicateBinding = registry.ErrDuplicate

// ErrInterfaceBinding is matched by the bootstrap error reporting a handler
// bound to an interface type, which no event can ever match.
var ErrInterfaceBinding = registry.ErrInterfaceEvent

// Map binds event types to their handlers, in bind order, which is the order
// in which the handlers of one event run when handlers run serially. Several
// handlers may be bound to one event type; binding the same handler twice to
// one type is an error matching [ErrDuplicateBinding]. "The same handler" is
// the same constructor (closures made by one func literal count as one
// constructor; bind such handlers as values), the same pointer (or map or
// channel) bound twice, or two constructors that return one shared pointer.
// Handler values that are not pointers (a struct value, a HandlerFunc) are
// never duplicates: four noop{} values are four handlers.
//
// Events are matched by exact dynamic type: a handler bound to OrderPlaced
// does not receive *OrderPlaced. An event type is therefore never an
// interface: binding to one is an error matching [ErrInterfaceBinding].
//
// Each handler is named, in errors, logs, spans and diagrams, by its type,
// or, for a function (a [HandlerFunc]), by the function's name; handlers of
// one event type that would share a name get a " #n" suffix, n being the
// bind position from 1.
//
// Binding never fails on the spot: problems are recorded and reported, all at
// once, by bootstrap. The zero Map is empty and ready to use. A Map is not
// safe for concurrent use; it is filled once, at start-up.
type Map registry.Events

// Bind binds to E the handler built by ctor, a constructor whose parameters
// are resolved from the container at bootstrap and whose first result
// implements [Handler][E] (an optional second result is an error). The handler
// is built once and shared by every dispatch.
func Bind[E any](m *Map, ctor any) {
	r := reg(m)
	t := reflect.TypeFor[E]()
	if err := di.CheckConstructor(ctor, reflect.TypeFor[Handler[E]]()); err != nil {
		r.Fail(fmt.Errorf("events: bind %v: %w", t, err))
		return
	}
	r.Add(registry.EventEntry{
		Type:   t,
		Source: "constructor " + di.FuncName(ctor),
		Key:    registry.KeyOf(ctor, true),
		Build: func(c di.Container, _ int) (registry.EventHandler, error) {
			h, err := di.Construct[Handler[E]](c, ctor)
			if err != nil {
				return registry.EventHandler{}, err
			}
			return entry(h), nil
		},
	})
}

// BindHandler binds h, an already built handler, to E.
func BindHandler[E any](m *Map, h Handler[E]) {
	r := reg(m)
	t := reflect.TypeFor[E]()
	if registry.IsNil(h) {
		r.Fail(fmt.Errorf("events: bind %v: nil handler", t))
		return
	}
	r.Add(registry.EventEntry{
		Type:   t,
		Source: fmt.Sprintf("handler %T", h),
		Key:    registry.KeyOf(h, false),
		Build:  func(di.Container, int) (registry.EventHandler, error) { return entry(h), nil },
	})
}

// Len reports how many event types have at least one handler.
func (m *Map) Len() int { return reg(m).Len() }

func reg(m *Map) *registry.Events {
	if m == nil {
		panic("events: Bind on a nil *events.Map")
	}
	return (*registry.Events)(m)
}

func entry[E any](h Handler[E]) registry.EventHandler {
	var emits []reflect.Type
	if d, ok := h.(Declarer); ok {
		emits = d.EmittedEvents()
	}
	return registry.EventHandler{
		Name:  registry.HandlerName(h),
		Value: h,
		Emits: emits,
		Call: func(ctx context.Context, event any) ([]any, error) {
			e, ok := event.(E)
			if !ok {
				return nil, fmt.Errorf("events: %T routed to a handler of %v", event, reflect.TypeFor[E]())
			}
			return h.Handle(ctx, e)
		},
	}
}
