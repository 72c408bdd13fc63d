package mediator_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"golang.org/x/sync/errgroup"

	"github.com/gocqrs/cqrs/bootstrap"
	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/mediator"
	"github.com/gocqrs/cqrs/requests"
)

// Each benchmark has its baseline beside it: the same work done by hand.

type benchQuery struct {
	requests.Returns[int]
	N int
}

type benchEmit struct {
	requests.Returns[int]
}

type benchEvent struct{ N int }

type benchQueryHandler struct{}

func (benchQueryHandler) Handle(_ context.Context, q benchQuery) (int, []events.Event, error) {
	return q.N + 1, nil, nil
}

// benchQueryHandlerValue returns the handler behind an interface the
// compiler cannot see through, so that the direct-call baseline is a real
// dynamic call, as the mediator's is.
//
//go:noinline
func benchQueryHandlerValue() requests.Handler[benchQuery, int] { return benchQueryHandler{} }

type benchEmitHandler struct{ evs []events.Event }

func (h benchEmitHandler) Handle(context.Context, benchEmit) (int, []events.Event, error) {
	return 1, h.evs, nil
}

// benchNoop is a no-op event handler; id makes the values bound to one event
// distinct (binding an equal value twice is a duplicate).
type benchNoop struct{ id int }

func (benchNoop) Handle(context.Context, benchEvent) ([]events.Event, error) { return nil, nil }

func benchMediator(b *testing.B, handlers int, opts ...bootstrap.Option) *mediator.RequestMediator {
	b.Helper()
	evs := []events.Event{benchEvent{1}, benchEvent{2}, benchEvent{3}, benchEvent{4}}
	opts = append(opts,
		bootstrap.WithQueries(func(r *requests.Map) {
			requests.BindHandler(r, requests.Handler[benchQuery, int](benchQueryHandler{}))
			requests.BindHandler(r, requests.Handler[benchEmit, int](benchEmitHandler{evs: evs}))
		}),
		bootstrap.WithDomainEvents(func(m *events.Map) {
			for i := range handlers {
				events.BindHandler[benchEvent](m, benchNoop{id: i})
			}
		}),
	)
	m, err := bootstrap.Bootstrap(nil, opts...)
	if err != nil {
		b.Fatal(err)
	}
	return m
}

func BenchmarkSend(b *testing.B) {
	ctx := context.Background()
	b.Run("baseline=direct-call", func(b *testing.B) {
		h := benchQueryHandlerValue()
		b.ReportAllocs()
		for b.Loop() {
			if _, _, err := h.Handle(ctx, benchQuery{N: 1}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("mediator", func(b *testing.B) {
		m := benchMediator(b, 0)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := mediator.Send(ctx, m, benchQuery{N: 1}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("mediator-parallel", func(b *testing.B) {
		m := benchMediator(b, 0)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := mediator.Send(ctx, m, benchQuery{N: 1}); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// benchEmitHandlerValue returns the emitting handler behind an interface,
// as benchQueryHandlerValue does.
//
//go:noinline
func benchEmitHandlerValue(evs []events.Event) requests.Handler[benchEmit, int] {
	return benchEmitHandler{evs: evs}
}

// benchNoopValue returns a no-op event handler behind an interface, as
// benchQueryHandlerValue does.
//
//go:noinline
func benchNoopValue() events.Handler[benchEvent] { return benchNoop{} }

// BenchmarkSendEvents: a handler emits 4 events, one no-op handler each. The
// direct floor calls the request handler through an interface, then the
// event handler for each event it returned.
func BenchmarkSendEvents(b *testing.B) {
	ctx := context.Background()
	evs := []events.Event{benchEvent{1}, benchEvent{2}, benchEvent{3}, benchEvent{4}}
	h := benchNoopValue()
	b.Run("baseline=direct", func(b *testing.B) {
		rh := benchEmitHandlerValue(evs)
		b.ReportAllocs()
		for b.Loop() {
			_, got, err := rh.Handle(ctx, benchEmit{})
			if err != nil {
				b.Fatal(err)
			}
			for _, e := range got {
				ev, _ := e.(benchEvent)
				if _, err := h.Handle(ctx, ev); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
	b.Run("baseline=errgroup-limit-4", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			g, gctx := errgroup.WithContext(ctx)
			g.SetLimit(4)
			for _, e := range evs {
				g.Go(func() error {
					ev, _ := e.(benchEvent)
					_, err := h.Handle(gctx, ev)
					return err
				})
			}
			if err := g.Wait(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("sequential", func(b *testing.B) {
		m := benchMediator(b, 1, bootstrap.WithConcurrentEventHandling(false))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := mediator.Send(ctx, m, benchEmit{}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel-limit-4", func(b *testing.B) {
		m := benchMediator(b, 1, bootstrap.WithMaxConcurrentEventHandlers(4))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := mediator.Send(ctx, m, benchEmit{}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkEventMediator: one incoming event to 4 no-op handlers.
func BenchmarkEventMediator(b *testing.B) {
	ctx := context.Background()
	hs := make([]events.Handler[benchEvent], 4)
	for i := range hs {
		hs[i] = benchNoop{id: i}
	}
	var ev events.Event = benchEvent{1}
	b.Run("baseline=plain-loop", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			for _, h := range hs {
				e, _ := ev.(benchEvent)
				if _, err := h.Handle(ctx, e); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
	b.Run("baseline=waitgroup-goroutine-per-handler", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var wg sync.WaitGroup
			var errs [4]error
			for i, h := range hs {
				wg.Go(func() {
					e, _ := ev.(benchEvent)
					_, errs[i] = h.Handle(ctx, e)
				})
			}
			wg.Wait()
			if err := errors.Join(errs[:]...); err != nil {
				b.Fatal(err)
			}
		}
	})
	run := func(name string, opts ...bootstrap.Option) {
		b.Run(name, func(b *testing.B) {
			em := benchMediator(b, 4, opts...).Events()
			b.ReportAllocs()
			for b.Loop() {
				if err := em.Send(ctx, ev); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	run("sequential", bootstrap.WithConcurrentEventHandling(false))
	// One event, its handlers in bind order: a single unit of work.
	run("parallel-limit-4-serial-order", bootstrap.WithMaxConcurrentEventHandlers(4))
	run("parallel-limit-4-parallel-order", bootstrap.WithMaxConcurrentEventHandlers(4),
		bootstrap.WithEventHandlerOrder(mediator.Parallel))
}
