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

// ErrInterfaceEvent is matched by the error for a handler bound to an
// interface type.
var ErrInterfaceEvent = errors.New("event handler bound to an interface type")

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
	// PanicSite, when not empty, names the global middleware: a panic that
	// reaches the mediator not marked as the handler's came from there.
	PanicSite string
	// Direct, when not nil, is the handler, bound with no middleware and no
	// transactional capture: Handle calls it, then Dispatch with its
	// events. The mediator calls the two itself, which spares a call.
	Direct Handler[Req, Res]
	// Dispatch fans out the events Direct returns.
	Dispatch func(ctx context.Context, evs []any) error

	// Every Send reads the Request; the padding gives it cache lines of its
	// own (128 bytes, a size class whose objects are line-aligned), so that
	// no object written by another goroutine shares a line with it (false
	// sharing, which slows every read from all other cores).
	_ [56]byte
}

// Handler is the shape of a request handler that may emit events; every
// requests.Handler[Req, Res] is one.
type Handler[Req, Res any] interface {
	Handle(ctx context.Context, req Req) (Res, []any, error)
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
	// Direct, when not nil, is the handler, bound with no middleware: the
	// mediator runs it and Dispatch itself, with one adapter between the
	// handler and the consumer instead of two.
	Direct StreamHandler[Req, Res]
	// Dispatch fans out the events Direct yields and returns.
	Dispatch func(ctx context.Context, evs []any) error
}

// StreamHandler is the shape of a stream handler; every
// requests.StreamHandler[Req, Res] is one.
type StreamHandler[Req, Res any] interface {
	Stream(ctx context.Context, req Req, yield func(Res, []any) bool) ([]any, error)
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
	// Capture, when set, runs a handler that may emit events in a
	// transaction, writes the notification events it returned to the
	// outbox in that transaction, and returns the others for Dispatch.
	// The returned context (ctx with the lineage the events were stamped
	// with, not the transaction) is the one to dispatch with.
	Capture func(ctx context.Context, handle func(ctx context.Context) ([]any, error)) (context.Context, []any, error)
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
func (r *Requests) Resolve(c di.Container, request, stream []any, dispatch func(context.Context, []any) error, capture func(context.Context, func(context.Context) ([]any, error)) (context.Context, []any, error)) (map[reflect.Type]Built, error) {
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
		p := Pipeline{Global: global, Typed: r.typed[t], Dispatch: dispatch}
		if !e.Stream {
			p.Capture = capture
		}
		h, err := e.Build(c, p)
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
	// before anything is built: the handler pointer, or a ConstructorKey.
	// Nil when the handler is not a pointer: such values are never
	// duplicates.
	Key any
	// Build builds the handler; at is the binding's position among the
	// bindings of its event type, from 1.
	Build func(c di.Container, at int) (EventHandler, error)
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
	if !pointerLike(rv) {
		return nil
	}
	return v
}

// pointerLike reports whether v refers to an object by address, so that two
// equal values are one handler: a pointer, a map or a channel.
func pointerLike(v reflect.Value) bool {
	switch v.Kind() {
	case reflect.Pointer, reflect.Map, reflect.Chan, reflect.UnsafePointer:
		return !v.IsNil()
	default:
		return false
	}
}

// HandlerName names a handler in errors, logs, spans and diagrams: a
// function (a HandlerFunc) by the function's package-qualified name, any
// other value by its type; an adapter with a HandlerValue method by what it
// wraps.
func HandlerName(v any) string {
	if w, ok := v.(interface{ HandlerValue() any }); ok {
		v = w.HandlerValue()
	}
	if rv := reflect.ValueOf(v); rv.Kind() == reflect.Func && !rv.IsNil() {
		name := di.FuncName(v) // path/to/pkg.Func: keep pkg.Func, as %T does
		if i := strings.LastIndexByte(name, '/'); i >= 0 && !strings.Contains(name[:i], "[") {
			name = name[i+1:]
		}
		return name
	}
	return fmt.Sprintf("%T", v)
}

// Distinct makes names unique by giving every name that occurs more than
// once a " #n" suffix, n being its position in names, from 1.
func Distinct(names []string) {
	seen := make(map[string]int, len(names))
	for _, n := range names {
		seen[n]++
	}
	for i, n := range names {
		if seen[n] > 1 {
			names[i] = fmt.Sprintf("%s #%d", n, i+1)
		}
	}
}

// Events records event-handler bindings in bind order. The zero value is
// empty.
type Events struct {
	entries map[reflect.Type][]EventEntry
	order   []reflect.Type
	errs    []error
}

// Add appends a binding for e.Type, or records an error if the same handler
// or constructor is already bound to it, or if e.Type is an interface.
func (r *Events) Add(e EventEntry) {
	if e.Type.Kind() == reflect.Interface {
		r.errs = append(r.errs, fmt.Errorf("events: bind %s to %v: %w: events are routed by their exact dynamic type, which is never an interface, so the handler would never be called; bind it to each concrete event type", e.Source, e.Type, ErrInterfaceEvent))
		return
	}
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
// problem at once. Binding the same handler (the same pointer, built by two
// constructors or bound twice) twice to one event type is an error. The
// handlers of one event type get distinct names.
func (r *Events) Resolve(c di.Container) (map[reflect.Type][]EventHandler, error) {
	errs := append([]error(nil), r.errs...)
	out := make(map[reflect.Type][]EventHandler, len(r.order))
	for _, t := range r.order {
		var hs []EventHandler
		for i, e := range r.entries[t] {
			h, err := e.Build(c, i+1)
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
		names := make([]string, len(hs))
		for i := range hs {
			names[i] = hs[i].Name
		}
		Distinct(names)
		for i := range hs {
			hs[i].Name = names[i]
		}
		out[t] = hs
	}
	return out, errors.Join(errs...)
}

func indexOf(hs []EventHandler, v any) int {
	if !pointerLike(reflect.ValueOf(v)) {
		return -1
	}
	for i, h := range hs {
		if h.Value == v {
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
