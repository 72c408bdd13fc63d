package mediator_test

import (
	"context"
	"testing"

	"github.com/gocqrs/cqrs/bootstrap"
	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/mediator"
	"github.com/gocqrs/cqrs/requests"
)

type benchTicks struct {
	requests.Returns[int]
	N int
}

// benchItems is the length of the benchmarked streams.
const benchItems = 10

type benchTicker struct{}

func (benchTicker) Stream(_ context.Context, q benchTicks, yield func(int, []events.Event) bool) ([]events.Event, error) {
	for i := range q.N {
		if !yield(i, nil) {
			return nil, nil
		}
	}
	return nil, nil
}

// BenchmarkStream: 10 items, no events, against ranging over the handler
// directly. Report per item: ns/op / 10.
func BenchmarkStream(b *testing.B) {
	ctx := context.Background()
	req := benchTicks{N: benchItems}
	b.Run("baseline=handler-direct", func(b *testing.B) {
		var h requests.StreamHandler[benchTicks, int] = benchTicker{}
		b.ReportAllocs()
		for b.Loop() {
			sum := 0
			if _, err := h.Stream(ctx, req, func(v int, _ []events.Event) bool { sum += v; return true }); err != nil {
				b.Fatal(err)
			}
			if sum != benchItems*(benchItems-1)/2 {
				b.Fatal(sum)
			}
		}
	})
	b.Run("mediator", func(b *testing.B) {
		sm, err := bootstrap.Streaming(nil, bootstrap.WithQueries(func(r *requests.Map) {
			requests.BindStreamHandler(r, requests.StreamHandler[benchTicks, int](benchTicker{}))
		}))
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			sum := 0
			for v, err := range mediator.Stream(ctx, sm, req) {
				if err != nil {
					b.Fatal(err)
				}
				sum += v
			}
			if sum != benchItems*(benchItems-1)/2 {
				b.Fatal(sum)
			}
		}
	})
}

type benchPassThrough struct{}

func (benchPassThrough) WrapRequest(_ requests.Info, next requests.AnyHandlerFunc) requests.AnyHandlerFunc {
	return func(ctx context.Context, req any) (any, error) { return next(ctx, req) }
}

// BenchmarkMiddleware: Send through 3 pass-through middlewares against none.
// The chains are built at bootstrap; typed middleware adds no allocation,
// global middleware boxes the request and the response.
func BenchmarkMiddleware(b *testing.B) {
	ctx := context.Background()
	passTyped := func(next requests.HandlerFunc[benchQuery, int]) requests.HandlerFunc[benchQuery, int] {
		return func(ctx context.Context, q benchQuery) (int, []events.Event, error) { return next(ctx, q) }
	}
	bind := func(r *requests.Map) {
		requests.BindHandler(r, requests.Handler[benchQuery, int](benchQueryHandler{}))
	}
	run := func(b *testing.B, opts ...bootstrap.Option) {
		b.Helper()
		m, err := bootstrap.Bootstrap(nil, opts...)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := mediator.Send(ctx, m, benchQuery{N: 1}); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("baseline=none", func(b *testing.B) { run(b, bootstrap.WithQueries(bind)) })
	b.Run("typed-3", func(b *testing.B) {
		run(b, bootstrap.WithQueries(func(r *requests.Map) {
			bind(r)
			requests.Use(r, passTyped, passTyped, passTyped)
		}))
	})
	b.Run("global-3", func(b *testing.B) {
		run(b, bootstrap.WithQueries(bind),
			bootstrap.WithMiddleware(benchPassThrough{}, benchPassThrough{}, benchPassThrough{}))
	})
}
