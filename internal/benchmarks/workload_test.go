package benchmarks_test

import (
	"context"
	"testing"

	"github.com/gocqrs/cqrs/bootstrap"
	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/internal/benchmarks"
	"github.com/gocqrs/cqrs/mediator"
	"github.com/gocqrs/cqrs/requests"
)

// The workload, the same for every contender:
//
//   - a request, Query, whose handler returns a small response (Reply) and no
//     events;
//   - an event, Event, delivered to 4 no-op handlers;
//   - for the mediator and its baseline only, a request, Emit, whose handler
//     returns 4 Emitted events, each delivered to one no-op handler.
//
// Each contender gets the handlers in its own shape; their bodies are the
// same.

// Query is the request. The marker is needed by gocqrs and ignored by the
// others (it is a zero-size field).
type Query struct {
	requests.Returns[Reply]
	ID int64
}

// Reply is the small response.
type Reply struct {
	ID       int64
	Accepted bool
}

func answer(id int64) Reply { return Reply{ID: id, Accepted: true} }

// Event is the event delivered to 4 no-op handlers.
type Event struct{ N int }

// Emit is a request whose handler emits 4 Emitted events.
type Emit struct {
	requests.Returns[Reply]
	ID int64
}

// Emitted is the event Emit's handler returns, 4 times.
type Emitted struct{ N int }

// Handlers in gocqrs's shape, also called by the direct-call baselines.

type queryHandler struct{}

func (queryHandler) Handle(_ context.Context, q Query) (Reply, []events.Event, error) {
	return answer(q.ID), nil, nil
}

type emitHandler struct{ evs []events.Event }

func (h emitHandler) Handle(_ context.Context, e Emit) (Reply, []events.Event, error) {
	return answer(e.ID), h.evs, nil
}

// noop is a no-op handler of Event; id makes four of them distinct bindings.
type noop struct{ id int }

func (noop) Handle(context.Context, Event) ([]events.Event, error) { return nil, nil }

type emittedNoop struct{}

func (emittedNoop) Handle(context.Context, Emitted) ([]events.Event, error) { return nil, nil }

// Handlers in the imitations' shape (benchmarks.RequestHandler and
// NotificationHandler: no events returned).

type plainQueryHandler struct{}

func (plainQueryHandler) Handle(_ context.Context, q Query) (Reply, error) {
	return answer(q.ID), nil
}

type plainNoop struct{ id int }

func (plainNoop) Handle(context.Context, Event) error { return nil }

const fanOut = 4 // handlers of Event, and events returned by Emit's handler

func emittedEvents() []events.Event {
	evs := make([]events.Event, fanOut)
	for i := range evs {
		evs[i] = Emitted{N: i}
	}
	return evs
}

// direct holds the handlers of the direct-call baselines behind interface
// values the compiler cannot see through: newDirect is not inlined, so at
// the call sites the dynamic types are unknown and every call is a real
// dynamic dispatch, as it is inside the mediator.
type direct struct {
	query   requests.Handler[Query, Reply]
	emit    requests.Handler[Emit, Reply]
	emitted events.Handler[Emitted]
	noops   []events.Handler[Event]
}

//go:noinline
func newDirect() *direct {
	d := &direct{
		query:   queryHandler{},
		emit:    emitHandler{evs: emittedEvents()},
		emitted: emittedNoop{},
	}
	for i := range fanOut {
		d.noops = append(d.noops, noop{id: i})
	}
	return d
}

// newMediator bootstraps a gocqrs mediator with every handler of the
// workload bound, plus opts.
func newMediator(b *testing.B, opts ...bootstrap.Option) *mediator.RequestMediator {
	b.Helper()
	evs := emittedEvents()
	opts = append([]bootstrap.Option{
		bootstrap.WithQueries(func(r *requests.Map) {
			requests.BindHandler(r, requests.Handler[Query, Reply](queryHandler{}))
			requests.BindHandler(r, requests.Handler[Emit, Reply](emitHandler{evs: evs}))
		}),
		bootstrap.WithDomainEvents(func(m *events.Map) {
			events.BindHandler(m, events.Handler[Emitted](emittedNoop{}))
			for i := range fanOut {
				events.BindHandler(m, events.Handler[Event](noop{id: i}))
			}
		}),
	}, opts...)
	m, err := bootstrap.Bootstrap(nil, opts...)
	if err != nil {
		b.Fatal(err)
	}
	return m
}

// newSyncMapRegistry returns the sync.Map registry imitation with the
// workload's handlers registered.
func newSyncMapRegistry() *benchmarks.SyncMapRegistry {
	r := &benchmarks.SyncMapRegistry{}
	benchmarks.RegisterRequestHandler[Query, Reply](r, plainQueryHandler{})
	for i := range fanOut {
		benchmarks.RegisterNotificationHandler[Event](r, plainNoop{id: i})
	}
	return r
}

// newGoroutineFanOut returns the goroutine-per-handler imitation with the 4
// no-op handlers of Event.
func newGoroutineFanOut() *benchmarks.GoroutineFanOut {
	f := &benchmarks.GoroutineFanOut{}
	for i := range fanOut {
		benchmarks.Subscribe[Event](f, plainNoop{id: i})
	}
	return f
}

// newDigResolver returns the dig.Invoke-per-request imitation, its container
// providing the query handler.
func newDigResolver(b *testing.B) *benchmarks.DigResolver {
	b.Helper()
	d, err := benchmarks.NewDigResolver(func() benchmarks.RequestHandler[Query, Reply] { return plainQueryHandler{} })
	if err != nil {
		b.Fatal(err)
	}
	return d
}
