// Package registry holds the bindings that package requests and package events
// record and that package mediator resolves at bootstrap. It is internal so
// the storage can change without touching the public API.
package registry

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"

	"github.com/gocqrs/cqrs/di"
)

// ErrDuplicate is matched by every duplicate-binding error.
var ErrDuplicate = errors.New("duplicate binding")

// Request is the resolved, typed handler of one request type. Package
// mediator stores it as an any and asserts it back with the request's own
// type parameters, which costs one pointer comparison.
type Request[Req, Res any] struct {
	// Name describes the handler in errors and diagrams.
	Name string
	// Handle runs the whole pipeline: global middleware, typed middleware,
	// the handler, and the dispatch of the handler's events.
	Handle func(ctx context.Context, req Req) (Res, error)
	// Nilable reports whether Req can hold nil (pointer, map, slice...).
	Nilable bool
}

// Stream is the resolved, typed stream handler of one request type.
type Stream[Req, Res any] struct {
	// Name describes the handler in errors.
	Name string
	// Stream runs the whole pipeline; each item is yielded with the error of
	// the dispatch of its events, after that dispatch.
	Stream func(ctx context.Context, req Req, yield func(Res, error) bool) error
	// Nilable reports whether Req can hold nil.
	Nilable bool
}

// RequestEntry is one recorded request binding, resolved at bootstrap.
type RequestEntry struct {
	Type   reflect.Type
	Source string
	// Stream marks a stream handler, wrapped in stream middleware.
	Stream bool
	Build  func(c di.Container, p Pipeline) (Built, error)
}

// Pipeline is the middleware a request binding is wrapped in when it is
// built. The elements are the public middleware types of package requests;
// the registry does not look inside.
type Pipeline struct {
	// Global request or stream middleware, outermost first.
	Global []any
	// Typed middleware added for this request type, outermost first.
	Typed []any
	// Dispatch fans out the events a handler emitted.
	Dispatch func(ctx context.Context, evs []any) error
}

// Built is a resolved request binding and its description.
type Built struct {
	// Value is a *Request[Req, Res] or a *Stream[Req, Res].
	Value any
	// Kind is "handler", "stream", "chain" or "fallback".
	Kind string
	// Handlers names the handler, or the links of a chain, or the primary
	// and the fallback.
	Handlers []string
	// Emits lists the event types the handlers declare they emit.
	Emits []reflect.Type
	// Middleware names the middleware the handler is wrapped in, outermost
	// first.
	Middleware []string
}

// Requests records request bindings. The zero value is empty.
type Requests struct {
	entries map[reflect.Type]RequestEntry
	typed   map[reflect.Type][]any
	order   []reflect.Type
	errs    []error
}

// Use records typed middleware for t.
func (r *Requests) Use(t reflect.Type, mw any) {
	if r.typed == nil {
		r.typed = make(map[reflect.Type][]any)
	}
	r.typed[t] = append(r.typed[t], mw)
}

// Add records a binding, or an error if t is already bound.
func (r *Requests) Add(e RequestEntry) {
	if prev, ok := r.entries[e.Type]; ok {
		r.errs = append(r.errs, fmt.Errorf("requests: %w: %v is bound to %s, cannot also bind %s", ErrDuplicate, e.Type, prev.Source, e.Source))
		return
	}
	if r.entries == nil {
		r.entries = make(map[reflect.Type]RequestEntry)
	}
	r.entries[e.Type] = e
	r.order = append(r.order, e.Type)
}

// Fail records a binding error, reported at bootstrap.
func (r *Requests) Fail(err error) { r.errs = append(r.errs, err) }

// Len reports the number of bound request types.
func (r *Requests) Len() int { return len(r.order) }

// Resolve builds every bound handler from c, wrapped in the global
// middleware of its kind and its typed middleware, and reports every problem
// at once, including those recorded while binding.
func (r *Requests) Resolve(c di.Container, request, stream []any, dispatch func(context.Context, []any) error) (map[reflect.Type]Built, error) {
	errs := append([]error(nil), r.errs...)
	out := make(map[reflect.Type]Built, len(r.order))
	for _, t := range slices.SortedFunc(maps.Keys(r.typed), func(a, b reflect.Type) int { return strings.Compare(a.String(), b.String()) }) {
		if _, ok := r.entries[t]; !ok {
			errs = append(errs, fmt.Errorf("requests: middleware added for %v, which is not bound", t))
		}
	}
	for _, t := range r.order {
		e := r.entries[t]
		global := request
		if e.Stream {
			global = stream
		}
		h, err := e.Build(c, Pipeline{Global: global, Typed: r.typed[t], Dispatch: dispatch})
		if err != nil {
			errs = append(errs, fmt.Errorf("requests: handler for %v: %w", t, err))
			continue
		}
		out[t] = h
	}
	return out, errors.Join(errs...)
}

// EventHandler is one resolved event handler.
type EventHandler struct {
	// Name describes the handler in errors.
	Name string
	// Value is the handler itself, used to detect duplicate bindings.
	Value any
	// Call asserts the event to the handler's type and calls it.
	Call func(ctx context.Context, event any) ([]any, error)
	// Emits lists the follow-up event types the handler declares.
	Emits []reflect.Type
}

// EventEntry is one recorded event-handler binding, resolved at bootstrap.
type EventEntry struct {
	Type   reflect.Type
	Source string
	// Key identifies what was bound, to reject the same binding twice
	// before anything is built: the handler value, or a ConstructorKey. Nil
	// when the value is not comparable.
	Key   any
	Build func(c di.Container) (EventHandler, error)
}

// ConstructorKey identifies a constructor by its code pointer. Closures made
// by one func literal share it.
type ConstructorKey uintptr

// KeyOf returns the EventEntry.Key of a bound handler value or constructor.
func KeyOf(v any, constructor bool) any {
	rv := reflect.ValueOf(v)
	if constructor {
		return ConstructorKey(rv.Pointer())
	}
	if !rv.IsValid() || !rv.Comparable() {
		return nil
	}
	return v
}

// Events records event-handler bindings in bind order. The zero value is
// empty.
type Events struct {
	entries map[reflect.Type][]EventEntry
	order   []reflect.Type
	errs    []error
}

// Add appends a binding for e.Type, or records an error if the same handler
// or constructor is already bound to it.
func (r *Events) Add(e EventEntry) {
	if e.Key != nil {
		for _, prev := range r.entries[e.Type] {
			if prev.Key == e.Key {
				r.errs = append(r.errs, fmt.Errorf("events: %w: %s is bound to %v twice", ErrDuplicate, e.Source, e.Type))
				return
			}
		}
	}
	if r.entries == nil {
		r.entries = make(map[reflect.Type][]EventEntry)
	}
	if _, ok := r.entries[e.Type]; !ok {
		r.order = append(r.order, e.Type)
	}
	r.entries[e.Type] = append(r.entries[e.Type], e)
}

// Fail records a binding error, reported at bootstrap.
func (r *Events) Fail(err error) { r.errs = append(r.errs, err) }

// Len reports the number of event types with at least one handler.
func (r *Events) Len() int { return len(r.order) }

// Resolve builds every bound handler from c, in bind order, and reports every
// problem at once. Binding the same handler (an equal value, for instance the
// same pointer) twice to one event type is an error.
func (r *Events) Resolve(c di.Container) (map[reflect.Type][]EventHandler, error) {
	errs := append([]error(nil), r.errs...)
	out := make(map[reflect.Type][]EventHandler, len(r.order))
	for _, t := range r.order {
		var hs []EventHandler
		for i, e := range r.entries[t] {
			h, err := e.Build(c)
			if err != nil {
				errs = append(errs, fmt.Errorf("events: handler %d for %v: %w", i, t, err))
				continue
			}
			if j := indexOf(hs, h.Value); j >= 0 {
				errs = append(errs, fmt.Errorf("events: %w: %s is bound to %v twice (%s)", ErrDuplicate, h.Name, t, e.Source))
				continue
			}
			hs = append(hs, h)
		}
		out[t] = hs
	}
	return out, errors.Join(errs...)
}

func indexOf(hs []EventHandler, v any) int {
	rv := reflect.ValueOf(v)
	if !rv.IsValid() || !rv.Comparable() {
		return -1
	}
	for i, h := range hs {
		hv := reflect.ValueOf(h.Value)
		if hv.IsValid() && hv.Type() == rv.Type() && hv.Comparable() && hv.Equal(rv) {
			return i
		}
	}
	return -1
}

// Nilable reports whether values of t can be nil.
func Nilable(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Chan, reflect.Func, reflect.Interface, reflect.Map, reflect.Pointer, reflect.Slice, reflect.UnsafePointer:
		return true
	default:
		return false
	}
}

// IsNil reports whether v holds a nil value of a nilable kind.
func IsNil(v any) bool {
	if v == nil {
		return true
	}
	rv := reflect.ValueOf(v)
	return Nilable(rv.Type()) && rv.IsNil()
}

// Err reports the errors recorded while binding, before any resolution.
func (r *Requests) Err() error { return errors.Join(r.errs...) }

// Err reports the errors recorded while binding, before any resolution.
func (r *Events) Err() error { return errors.Join(r.errs...) }
