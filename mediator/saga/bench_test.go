package saga_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/mediator"
	"github.com/gocqrs/cqrs/mediator/saga"
	"github.com/gocqrs/cqrs/requests"
)

type noopRequest struct {
	requests.Returns[requests.Unit]
}

type benchState struct {
	N int `json:"n"`
}

// BenchmarkSaga compares a saga of three no-op steps, run to completion
// with the memory store (a create and three checkpoints, the state encoded
// as JSON each time), with three plain mediator.Sends of a no-op request.
// The nullstore case runs the same saga over a store that keeps nothing,
// to tell the engine's cost from the store's.
func BenchmarkSaga(b *testing.B) {
	ctx := context.Background()
	var reqs requests.Map
	requests.BindHandler[noopRequest](&reqs, requests.HandlerFunc[noopRequest, requests.Unit](
		func(context.Context, noopRequest) (requests.Unit, []events.Event, error) {
			return requests.Unit{}, nil, nil
		}))
	m, err := mediator.New(nil, &reqs, nil, mediator.DefaultConfig())
	if err != nil {
		b.Fatal(err)
	}

	b.Run("send-x3", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			for range 3 {
				if _, err := mediator.Send(ctx, m, noopRequest{}); err != nil {
					b.Fatal(err)
				}
			}
		}
	})

	noop := saga.Do(func(context.Context, *benchState) error { return nil })
	send := saga.Send(func(*benchState) noopRequest { return noopRequest{} }, nil)
	for _, bc := range []struct {
		name   string
		action saga.Action[benchState]
		null   bool
	}{
		{"saga-3-noop-steps", noop, false},
		{"saga-3-send-steps", send, false},
		{"saga-3-noop-steps-nullstore", noop, true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			def := &saga.Definition[benchState]{Name: "bench", Steps: []saga.Step[benchState]{
				{Name: "a", Action: bc.action, Compensation: noop},
				{Name: "b", Action: bc.action, Compensation: noop},
				{Name: "c", Action: bc.action},
			}}
			store := saga.NewMemoryStore(saga.MemoryOptions{})
			var s saga.Store = store
			if bc.null {
				s = nullStore{}
			}
			o, err := saga.New(saga.Options{Store: s, Mediator: m, Logger: slog.New(slog.DiscardHandler)}, def)
			if err != nil {
				b.Fatal(err)
			}
			far := time.Now().Add(time.Hour)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if _, err := saga.Execute(ctx, o, def, benchState{N: 1}); err != nil {
					b.Fatal(err)
				}
				if i++; i%4096 == 0 && !bc.null { // keep the store small
					if _, err := store.Purge(ctx, far, 4096); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}

// nullStore accepts every write and keeps nothing: it measures the engine
// without the store.
type nullStore struct{ saga.Store }

func (nullStore) Create(context.Context, saga.Record, time.Duration) error { return nil }
func (nullStore) Save(context.Context, saga.Checkpoint) error              { return nil }
