// Package benchmarks compares the gocqrs mediator, on one workload, with
// watermill (the real library) and with hand-written imitations of dispatch
// techniques. This file holds the imitations, each small enough to read at a
// glance and each named for the technique it imitates: it is not any
// library's code, and its figures are those of the technique, not of a
// library that uses it. The benchmarks are in the test files. The figures,
// what each imitation leaves out and how to read them are in
// docs/benchmarks.md of the root module.
//
// It is a module of its own so that its dependencies (watermill) never reach
// the root go.mod.
package benchmarks

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"

	"go.uber.org/dig"
)

// RequestHandler is the handler shape of the imitations: a response and an
// error, no events.
type RequestHandler[Req, Res any] interface {
	Handle(ctx context.Context, req Req) (Res, error)
}

// NotificationHandler is the event-handler shape of the imitations: an
// error, no follow-up events.
type NotificationHandler[E any] interface {
	Handle(ctx context.Context, event E) error
}

// Next calls the rest of a pipeline; the response travels through it as any.
type Next func(ctx context.Context) (any, error)

// Behaviour is a pipeline behaviour (middleware) around a request handler.
type Behaviour interface {
	Handle(ctx context.Context, req any, next Next) (any, error)
}

// SyncMapRegistry imitates one technique: a registry of handlers stored as
// any in sync.Maps keyed by reflect.Type. On every call Send finds the
// handler with reflect.TypeOf, asserts it back to its interface, builds the
// pipeline of behaviours anew by wrapping closures around the handler (here
// with zero behaviours, so only the innermost closure), carries the response
// through it as any and asserts it back to its type at the end. Publish
// looks the handlers up the same way and calls them one after the other,
// each asserted back to its interface, stopping at the first error.
//
// It is only the technique: no package-global state and no lock (each
// benchmark has its own registry), no handler factories, no panic recovery,
// no context check, and errors wrapped with fmt.Errorf only. Registration is
// not safe for concurrent use.
type SyncMapRegistry struct {
	requests      sync.Map // reflect.Type -> RequestHandler[Req, Res], as any
	notifications sync.Map // reflect.Type -> []any, each a NotificationHandler[E]
	behaviours    []Behaviour
}

// RegisterRequestHandler binds h to the requests of type Req.
func RegisterRequestHandler[Req, Res any](r *SyncMapRegistry, h RequestHandler[Req, Res]) {
	r.requests.Store(reflect.TypeFor[Req](), h)
}

// RegisterNotificationHandler adds h to the handlers of events of type E.
func RegisterNotificationHandler[E any](r *SyncMapRegistry, h NotificationHandler[E]) {
	t := reflect.TypeFor[E]()
	hs, _ := r.notifications.Load(t)
	list, _ := hs.([]any)
	r.notifications.Store(t, append(list, h))
}

// Use appends behaviours to the pipeline; the first one added is the
// outermost. The benchmarks add none.
func (r *SyncMapRegistry) Use(behaviours ...Behaviour) {
	r.behaviours = append(r.behaviours, behaviours...)
}

// Send calls the handler bound to req's type through the pipeline.
func Send[Req, Res any](ctx context.Context, r *SyncMapRegistry, req Req) (Res, error) {
	var zero Res
	v, ok := r.requests.Load(reflect.TypeOf(req))
	if !ok {
		return zero, fmt.Errorf("no handler for request %T", req)
	}
	h, ok := v.(RequestHandler[Req, Res])
	if !ok {
		return zero, fmt.Errorf("handler for request %T is not a RequestHandler", req)
	}
	next := Next(func(ctx context.Context) (any, error) { return h.Handle(ctx, req) })
	for i := len(r.behaviours) - 1; i >= 0; i-- {
		b, inner := r.behaviours[i], next
		next = func(ctx context.Context) (any, error) { return b.Handle(ctx, req, inner) }
	}
	out, err := next(ctx)
	if err != nil {
		return zero, fmt.Errorf("error handling request: %w", err)
	}
	res, ok := out.(Res)
	if !ok {
		return zero, fmt.Errorf("handler for request %T returned a %T", req, out)
	}
	return res, nil
}

// Publish calls the handlers of event's type one after the other, stopping at
// the first error.
func Publish[E any](ctx context.Context, r *SyncMapRegistry, event E) error {
	v, ok := r.notifications.Load(reflect.TypeOf(event))
	if !ok {
		return nil
	}
	hs, _ := v.([]any)
	for _, x := range hs {
		h, ok := x.(NotificationHandler[E])
		if !ok {
			return fmt.Errorf("handler for notification %T is not a NotificationHandler", event)
		}
		if err := h.Handle(ctx, event); err != nil {
			return fmt.Errorf("error handling notification: %w", err)
		}
	}
	return nil
}

// DigResolver imitates one technique: resolving the handler from the
// dependency-injection container on every request, here one dig.Invoke per
// Send, dig finding the handler by the type of the invoked function's
// parameter. The handler is provided as a singleton, so dig builds it once
// and then returns it from its cache; what remains per call is dig's
// reflection. dig is not safe for concurrent use, so neither is a
// DigResolver.
type DigResolver struct {
	c *dig.Container
}

// NewDigResolver returns a resolver over a new container providing each of
// ctors (constructors as dig.Provide takes them).
func NewDigResolver(ctors ...any) (*DigResolver, error) {
	c := dig.New()
	for _, ctor := range ctors {
		if err := c.Provide(ctor); err != nil {
			return nil, err
		}
	}
	return &DigResolver{c: c}, nil
}

// SendDig resolves the RequestHandler[Req, Res] from the container and calls
// it.
func SendDig[Req, Res any](ctx context.Context, d *DigResolver, req Req) (Res, error) {
	var res Res
	err := d.c.Invoke(func(h RequestHandler[Req, Res]) error {
		var err error
		res, err = h.Handle(ctx, req)
		return err
	})
	if err != nil {
		var zero Res
		return zero, fmt.Errorf("request %T: %w", req, err)
	}
	return res, nil
}

// GoroutineFanOut imitates one technique: delivering an event by starting
// one goroutine per handler and waiting for all of them with a
// sync.WaitGroup, with no bound on how many run at once.
type GoroutineFanOut struct {
	handlers map[reflect.Type][]func(context.Context, any) error
}

// Subscribe adds h to the handlers of events of type E. It is not safe for
// concurrent use.
func Subscribe[E any](f *GoroutineFanOut, h NotificationHandler[E]) {
	if f.handlers == nil {
		f.handlers = map[reflect.Type][]func(context.Context, any) error{}
	}
	t := reflect.TypeFor[E]()
	f.handlers[t] = append(f.handlers[t], func(ctx context.Context, event any) error {
		e, ok := event.(E)
		if !ok {
			return fmt.Errorf("event %T is not a %v", event, t)
		}
		return h.Handle(ctx, e)
	})
}

// Publish runs every handler of event's type on its own goroutine and returns
// once all have returned, with their errors joined.
func (f *GoroutineFanOut) Publish(ctx context.Context, event any) error {
	hs := f.handlers[reflect.TypeOf(event)]
	errs := make([]error, len(hs))
	var wg sync.WaitGroup
	for i, h := range hs {
		wg.Go(func() { errs[i] = h(ctx, event) })
	}
	wg.Wait()
	return errors.Join(errs...)
}
