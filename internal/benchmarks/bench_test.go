package benchmarks_test

import (
	"context"
	"testing"

	"github.com/gocqrs/cqrs/bootstrap"
	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/internal/benchmarks"
	"github.com/gocqrs/cqrs/mediator"
)

// Every comparison, each with its baseline first. Sub-benchmarks are named
// impl=NAME, and impl=baseline is the hand-written floor of each comparison,
// so that `benchstat -col /impl` puts the baseline in the first column and
// compares every contender to it. docs/benchmarks.md describes each one.

// BenchmarkSend: one request, whose handler returns a small response and no
// events. Baseline: the handler's Handle called through an interface value.
func BenchmarkSend(b *testing.B) {
	ctx := context.Background()
	q := Query{ID: 42}
	b.Run("impl=baseline", func(b *testing.B) {
		d := newDirect()
		b.ReportAllocs()
		for b.Loop() {
			if r, _, err := d.query.Handle(ctx, q); err != nil || !r.Accepted {
				b.Fatal(r, err)
			}
		}
	})
	b.Run("impl=gocqrs", func(b *testing.B) {
		m := newMediator(b)
		b.ReportAllocs()
		for b.Loop() {
			if r, err := mediator.Send(ctx, m, q); err != nil || !r.Accepted {
				b.Fatal(r, err)
			}
		}
	})
	b.Run("impl=syncmap-registry", func(b *testing.B) {
		reg := newSyncMapRegistry()
		b.ReportAllocs()
		for b.Loop() {
			if r, err := benchmarks.Send[Query, Reply](ctx, reg, q); err != nil || !r.Accepted {
				b.Fatal(r, err)
			}
		}
	})
	b.Run("impl=dig-invoke", func(b *testing.B) {
		d := newDigResolver(b)
		b.ReportAllocs()
		for b.Loop() {
			if r, err := benchmarks.SendDig[Query, Reply](ctx, d, q); err != nil || !r.Accepted {
				b.Fatal(r, err)
			}
		}
	})
	b.Run("impl=watermill", func(b *testing.B) {
		w := newWatermillCommands(b)
		b.ReportAllocs()
		for b.Loop() {
			if err := w.bus.Send(ctx, &q); err != nil {
				b.Fatal(err)
			}
			if r := <-w.replies; !r.Accepted {
				b.Fatal(r)
			}
		}
	})
}

// BenchmarkSendParallel: BenchmarkSend's request from GOMAXPROCS goroutines
// at once (b.RunParallel); ns/op is wall time divided by the requests of all
// goroutines. dig is not safe for concurrent use and is left out.
func BenchmarkSendParallel(b *testing.B) {
	ctx := context.Background()
	q := Query{ID: 42}
	b.Run("impl=baseline", func(b *testing.B) {
		d := newDirect()
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if r, _, err := d.query.Handle(ctx, q); err != nil || !r.Accepted {
					b.Error(r, err)
					return
				}
			}
		})
	})
	b.Run("impl=gocqrs", func(b *testing.B) {
		m := newMediator(b)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if r, err := mediator.Send(ctx, m, q); err != nil || !r.Accepted {
					b.Error(r, err)
					return
				}
			}
		})
	})
	b.Run("impl=syncmap-registry", func(b *testing.B) {
		reg := newSyncMapRegistry()
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if r, err := benchmarks.Send[Query, Reply](ctx, reg, q); err != nil || !r.Accepted {
					b.Error(r, err)
					return
				}
			}
		})
	})
}

// BenchmarkSendEmitting: one request whose handler returns 4 events, each
// delivered to one no-op handler, sequentially, before the response is
// returned. No other contender of this module dispatches events returned by
// a request handler, so only gocqrs is measured. Baseline: the request handler called through an
// interface value, then a plain loop calling the event handler, through an
// interface value, for each returned event.
func BenchmarkSendEmitting(b *testing.B) {
	ctx := context.Background()
	e := Emit{ID: 42}
	b.Run("impl=baseline", func(b *testing.B) {
		d := newDirect()
		b.ReportAllocs()
		for b.Loop() {
			r, evs, err := d.emit.Handle(ctx, e)
			if err != nil || !r.Accepted {
				b.Fatal(r, err)
			}
			for _, ev := range evs {
				em, ok := ev.(Emitted)
				if !ok {
					b.Fatalf("unexpected event %T", ev)
				}
				if _, err := d.emitted.Handle(ctx, em); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
	b.Run("impl=gocqrs", func(b *testing.B) {
		m := newMediator(b, bootstrap.WithConcurrentEventHandling(false))
		b.ReportAllocs()
		for b.Loop() {
			if r, err := mediator.Send(ctx, m, e); err != nil || !r.Accepted {
				b.Fatal(r, err)
			}
		}
	})
}

// BenchmarkPublish: one event delivered to 4 no-op handlers. Baseline: a
// plain loop over the 4 handlers, called through interface values, after one
// type assertion of the event (it arrives as an any, as it does in gocqrs's
// EventMediator).
func BenchmarkPublish(b *testing.B) {
	ctx := context.Background()
	e := Event{N: 1}
	var ev events.Event = e
	b.Run("impl=baseline", func(b *testing.B) {
		d := newDirect()
		b.ReportAllocs()
		for b.Loop() {
			got, ok := ev.(Event)
			if !ok {
				b.Fatalf("unexpected event %T", ev)
			}
			for _, h := range d.noops {
				if _, err := h.Handle(ctx, got); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
	b.Run("impl=gocqrs", func(b *testing.B) {
		em := newMediator(b, bootstrap.WithConcurrentEventHandling(false)).Events()
		b.ReportAllocs()
		for b.Loop() {
			if err := em.Send(ctx, ev); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("impl=gocqrs-parallel-4", func(b *testing.B) {
		em := newMediator(b,
			bootstrap.WithMaxConcurrentEventHandlers(fanOut),
			bootstrap.WithEventHandlerOrder(mediator.Parallel),
		).Events()
		b.ReportAllocs()
		for b.Loop() {
			if err := em.Send(ctx, ev); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("impl=syncmap-registry", func(b *testing.B) {
		reg := newSyncMapRegistry()
		b.ReportAllocs()
		for b.Loop() {
			// The registry's Publish is generic: the caller passes the
			// event with its static type.
			if err := benchmarks.Publish(ctx, reg, e); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("impl=goroutine-per-handler", func(b *testing.B) {
		f := newGoroutineFanOut()
		b.ReportAllocs()
		for b.Loop() {
			if err := f.Publish(ctx, ev); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("impl=watermill", func(b *testing.B) {
		w := newWatermillEvents(b)
		b.ReportAllocs()
		for b.Loop() {
			if err := w.bus.Publish(ctx, &e); err != nil {
				b.Fatal(err)
			}
			for range fanOut {
				<-w.handled
			}
		}
	})
}
