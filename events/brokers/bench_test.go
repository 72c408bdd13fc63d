package brokers_test

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/events/brokers"
	"github.com/gocqrs/cqrs/events/wire"
)

// chanSource hands out the messages sent on ch; it is the cheapest Source
// there can be, so that a benchmark over it measures the runtime alone.
type chanSource struct{ ch chan brokers.Message }

func (s chanSource) Receive(ctx context.Context) (brokers.Message, error) {
	select {
	case m := <-s.ch:
		return m, nil
	case <-ctx.Done():
		return brokers.Message{}, ctx.Err()
	}
}

func (chanSource) Close(context.Context) error { return nil }

// countingAcks counts acknowledgements and closes done once target is
// reached; target is set after the messages were sent.
type countingAcks struct {
	acked, target atomic.Int64
	once          sync.Once
	done          chan struct{}
}

func newCountingAcks() *countingAcks {
	a := &countingAcks{done: make(chan struct{})}
	a.target.Store(-1)
	return a
}

func (a *countingAcks) Ack(context.Context) error {
	if a.acked.Add(1) == a.target.Load() {
		a.once.Do(func() { close(a.done) })
	}
	return nil
}

func (a *countingAcks) Retry(context.Context, time.Duration) error           { return nil }
func (a *countingAcks) DeadLetter(context.Context, brokers.DeadLetter) error { return nil }

// wait waits until n messages are acknowledged.
func (a *countingAcks) wait(n int64) {
	a.target.Store(n)
	if a.acked.Load() >= n {
		a.once.Do(func() { close(a.done) })
	}
	<-a.done
}

// BenchmarkRuntime measures the consumer runtime's cost per message over a
// Source that costs next to nothing: receive, decode (wire.FromHeaders and
// the decoder's JSON), a no-op handler, Ack. The baselines, in the same
// run, do the same work in a plain loop on one goroutine, with ("loop")
// and without ("loop/nodecode") decoding. "keys" gives each message one of
// 64 ordering keys; "unordered" gives none.
//
//	go test -run '^$' -bench BenchmarkRuntime -benchmem ./events/brokers/
func BenchmarkRuntime(b *testing.B) {
	var reg wire.Registry
	require.NoError(b, wire.Register[orderPlaced](&reg, orderPlacedName))
	dec, err := wire.NewDecoder(&reg, wire.DecoderOptions{})
	require.NoError(b, err)
	var enc wire.Encoder
	const keys = 64
	msgs := make([]brokers.Message, keys)
	for i := range msgs {
		env, err := enc.Encode(events.NewNotification(orderPlacedName, orderPlaced{ID: "order-1"}).
			WithTopic("orders").WithKey(string(rune('a' + i))))
		require.NoError(b, err)
		h, err := wire.ToHeaders(env)
		require.NoError(b, err)
		msgs[i] = brokers.Message{Topic: env.Topic, Key: env.Key, OrderKey: env.Key, Headers: h, Body: env.Payload}
	}
	noop := func(context.Context, events.Event) error { return nil }

	feed := func(b *testing.B, src chanSource, acks *countingAcks, ordered bool) {
		b.Helper()
		b.ReportAllocs()
		var n int64
		for b.Loop() {
			m := msgs[n%keys]
			if !ordered {
				m.OrderKey = ""
			}
			m.Settler = acks
			src.ch <- m
			n++
		}
		acks.wait(n)
	}

	for _, conc := range []int{1, 4} {
		for _, ordered := range []bool{true, false} {
			name := "unordered"
			if ordered {
				name = "keys"
			}
			b.Run(name+"/concurrency="+string(rune('0'+conc)), func(b *testing.B) {
				src := chanSource{ch: make(chan brokers.Message, 256)}
				acks := newCountingAcks()
				cfg := brokers.DefaultConfig()
				cfg.MaxConcurrency, cfg.MaxInFlight = conc, 256
				cfg.Logger = slog.New(slog.DiscardHandler)
				cfg.Unordered = !ordered
				c, err := brokers.NewConsumer(brokers.SubscriberFunc(func(context.Context) (brokers.Source, error) { return src, nil }),
					dec, noop, cfg)
				require.NoError(b, err)
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan error, 1)
				go func() { done <- c.Run(ctx) }()
				feed(b, src, acks, ordered)
				cancel()
				require.NoError(b, <-done)
			})
		}
	}
	for _, decode := range []bool{true, false} {
		name := "loop"
		if !decode {
			name = "loop/nodecode"
		}
		b.Run(name, func(b *testing.B) {
			src := chanSource{ch: make(chan brokers.Message, 256)}
			acks := newCountingAcks()
			ctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			wg.Go(func() {
				for {
					m, err := src.Receive(ctx)
					if err != nil {
						return
					}
					if decode {
						env, err := wire.FromHeaders(m.Headers)
						if err != nil {
							panic(err)
						}
						env.Topic, env.Key, env.Payload = m.Topic, m.Key, m.Body
						ev, err := dec.Decode(env)
						if err != nil {
							panic(err)
						}
						_ = noop(ctx, ev)
					}
					_ = m.Settler.Ack(ctx)
				}
			})
			feed(b, src, acks, true)
			cancel()
			wg.Wait()
		})
	}
}
