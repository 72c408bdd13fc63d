package mediator_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/gocqrs/cqrs/bootstrap"
	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/mediator"
	"github.com/gocqrs/cqrs/requests"
)

// The fan-out efficiency benchmarks dispatch events whose handlers wait on a
// timer (not the CPU), and report wall time against the ideal and the
// maximum number of handlers seen in flight.

type benchWaitCmd struct {
	requests.Returns[requests.Unit]
}

type benchWaitEvent struct{}

// inflight tracks concurrent handler invocations.
type inflight struct {
	cur, max atomic.Int64
}

func (f *inflight) enter() {
	n := f.cur.Add(1)
	for {
		m := f.max.Load()
		if n <= m || f.max.CompareAndSwap(m, n) {
			return
		}
	}
}

func (f *inflight) leave() { f.cur.Add(-1) }

func benchWaitMediator(b *testing.B, count int, d time.Duration, limit int, f *inflight) *mediator.RequestMediator {
	b.Helper()
	evs := make([]events.Event, count)
	for i := range evs {
		evs[i] = benchWaitEvent{}
	}
	m, err := bootstrap.Bootstrap(nil,
		bootstrap.WithMaxConcurrentEventHandlers(limit),
		bootstrap.WithCommands(func(r *requests.Map) {
			requests.BindHandler(r, requests.HandlerFunc[benchWaitCmd, requests.Unit](
				func(context.Context, benchWaitCmd) (requests.Unit, []events.Event, error) {
					return requests.Unit{}, evs, nil
				}))
		}),
		bootstrap.WithDomainEvents(func(m *events.Map) {
			events.BindHandler(m, events.HandlerFunc[benchWaitEvent](
				func(ctx context.Context, _ benchWaitEvent) ([]events.Event, error) {
					f.enter()
					defer f.leave()
					t := time.NewTimer(d)
					defer t.Stop()
					select {
					case <-t.C:
					case <-ctx.Done():
						return nil, ctx.Err()
					}
					return nil, nil
				}))
		}),
	)
	if err != nil {
		b.Fatal(err)
	}
	return m
}

// BenchmarkFanOutEfficiency: 100 events x 2 ms at limit 10. The ideal is
// 100/10 x 2 ms = 20 ms per Send; wall/ideal is reported, and max-in-flight
// must equal the limit. The baseline does the same waits through a bare
// errgroup with SetLimit(10), to show what timers alone cost.
func BenchmarkFanOutEfficiency(b *testing.B) {
	const (
		n     = 100
		limit = 10
		wait  = 2 * time.Millisecond
	)
	ideal := time.Duration(n/limit) * wait
	ctx := context.Background()
	report := func(b *testing.B, start time.Time, f *inflight) {
		b.Helper()
		per := time.Since(start) / time.Duration(b.N)
		b.ReportMetric(float64(per)/float64(ideal), "wall/ideal")
		b.ReportMetric(float64(f.max.Load()), "max-in-flight")
	}
	b.Run("baseline=errgroup-limit-10", func(b *testing.B) {
		var f inflight
		start := time.Now()
		for b.Loop() {
			var g errgroup.Group
			g.SetLimit(limit)
			for range n {
				g.Go(func() error {
					f.enter()
					defer f.leave()
					t := time.NewTimer(wait)
					<-t.C
					return nil
				})
			}
			_ = g.Wait()
		}
		report(b, start, &f)
	})
	b.Run("mediator-limit-10", func(b *testing.B) {
		var f inflight
		m := benchWaitMediator(b, n, wait, limit, &f)
		start := time.Now()
		for b.Loop() {
			if _, err := mediator.Send(ctx, m, benchWaitCmd{}); err != nil {
				b.Fatal(err)
			}
		}
		report(b, start, &f)
	})
}

// BenchmarkFanOutFloor: 100 events x 1 ms at limit 100, against the floor of
// 100 bare goroutines each waiting 1 ms with a WaitGroup.
func BenchmarkFanOutFloor(b *testing.B) {
	const (
		n    = 100
		wait = time.Millisecond
	)
	ctx := context.Background()
	b.Run("baseline=bare-goroutines", func(b *testing.B) {
		for b.Loop() {
			var wg sync.WaitGroup
			for range n {
				wg.Go(func() {
					t := time.NewTimer(wait)
					<-t.C
				})
			}
			wg.Wait()
		}
	})
	b.Run("mediator-limit-100", func(b *testing.B) {
		var f inflight
		m := benchWaitMediator(b, n, wait, n, &f)
		for b.Loop() {
			if _, err := mediator.Send(ctx, m, benchWaitCmd{}); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(f.max.Load()), "max-in-flight")
	})
}
