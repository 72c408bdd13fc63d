package nats_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/events/brokers"
	"github.com/gocqrs/cqrs/events/brokers/nats"
	"github.com/gocqrs/cqrs/events/brokers/nats/natstest"
	"github.com/gocqrs/cqrs/events/outbox"
	"github.com/gocqrs/cqrs/events/wire"
)

// benchBatch is how many messages one benchmark iteration sends;
// consumeBatch, consumes.
const (
	benchBatch   = 1000
	consumeBatch = 10_000
)

// benchConn connects to the server of NATS_URL or, with
// NATS_BENCH_EMBEDDED set, to a current server embedded in the benchmark.
func benchConn(b *testing.B) *natsgo.Conn {
	b.Helper()
	if os.Getenv("NATS_BENCH_EMBEDDED") == "" {
		return connect(b)
	}
	e := natstest.Run(b)
	return dial(b, e.URL())
}

// benchStream creates a stream in memory, bounded, for a benchmark, and
// its consumer, and returns its topology.
func benchStream(b *testing.B, nc *natsgo.Conn) nats.Topology {
	b.Helper()
	js, err := jetstream.New(nc)
	require.NoError(b, err)
	topo := topology(b, nc)
	topo.MaxAckPending = 2048
	_, err = js.CreateStream(b.Context(), jetstream.StreamConfig{
		Name: topo.Stream, Subjects: topo.Subjects, Storage: jetstream.MemoryStorage,
		MaxMsgs: 200_000, Discard: jetstream.DiscardOld,
	})
	require.NoError(b, err)
	provision(b, nc, topo)
	return topo
}

// benchEnvelopes encodes n order.placed events to topic, with n keys
// (keys "distinct"), one ("one") or none ("none").
func benchEnvelopes(b *testing.B, topic, keys string, n int) []wire.Envelope {
	b.Helper()
	envs := make([]wire.Envelope, n)
	for i := range envs {
		key := ""
		switch keys {
		case "distinct":
			key = fmt.Sprintf("customer-%d", i)
		case "one":
			key = "customer"
		}
		envs[i] = envelope(b, topic, key, i)
		envs[i].CorrelationID, envs[i].CausationID = "request-1", "request-1"
	}
	return envs
}

// BenchmarkSend compares the Sender with the client publishing the same
// messages (same subject, body and headers, Nats-Msg-Id included)
// asynchronously and waiting for every acknowledgement, one batch of
// benchBatch messages per iteration, fresh event ids each time.
func BenchmarkSend(b *testing.B) {
	nc := benchConn(b)
	for _, keys := range []string{"none", "distinct", "one"} {
		b.Run("sender/keys="+keys, func(b *testing.B) {
			topo := benchStream(b, nc)
			s := newSender(b, nc, nats.SenderConfig{MaxPending: 256})
			envs := benchEnvelopes(b, topo.Subjects[0], keys, benchBatch)
			b.ReportAllocs()
			for b.Loop() {
				for i := range envs {
					envs[i].ID = uuid.New()
				}
				if err := s.Send(b.Context(), envs); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*benchBatch)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
	b.Run("raw", func(b *testing.B) {
		topo := benchStream(b, nc)
		js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(256))
		require.NoError(b, err)
		envs := benchEnvelopes(b, topo.Subjects[0], "distinct", benchBatch)
		// The headers the Sender writes, made once: the raw client only
		// sets the ids.
		templates := make([]natsgo.Header, len(envs))
		for i, env := range envs {
			h, err := wire.ToHeaders(env)
			require.NoError(b, err)
			templates[i] = make(natsgo.Header, len(h)+2)
			for k, v := range h {
				templates[i][k] = []string{v}
			}
			templates[i][brokers.HeaderKey] = []string{env.Key}
		}
		futures := make([]jetstream.PubAckFuture, len(envs))
		b.ReportAllocs()
		for b.Loop() {
			for i, env := range envs {
				id := uuid.New().String()
				h := maps.Clone(templates[i])
				h[wire.HeaderEventID] = []string{id}
				h[jetstream.MsgIDHeader] = []string{id}
				f, err := js.PublishMsgAsync(&natsgo.Msg{Subject: env.Topic, Header: h, Data: env.Payload})
				if err != nil {
					b.Fatal(err)
				}
				futures[i] = f
			}
			for _, f := range futures {
				select {
				case <-f.Ok():
				case err := <-f.Err():
					b.Fatal(err)
				}
			}
		}
		b.ReportMetric(float64(b.N*benchBatch)/b.Elapsed().Seconds(), "msgs/s")
	})
}

// meter counts acknowledgements and tells when a count is reached.
type meter struct {
	mu    sync.Mutex
	count int64
	want  int64
	ch    chan struct{}
}

// add counts one acknowledgement.
func (m *meter) add() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.count++
	if m.ch != nil && m.count >= m.want {
		close(m.ch)
		m.ch = nil
	}
}

// reach returns a channel closed once the count reaches want.
func (m *meter) reach(want int64) <-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	ch := make(chan struct{})
	if m.count >= want {
		close(ch)
		return ch
	}
	m.want, m.ch = want, ch
	return ch
}

func (m *meter) wait(b *testing.B, ch <-chan struct{}) {
	b.Helper()
	select {
	case <-ch:
	case <-time.After(time.Minute):
		m.mu.Lock()
		defer m.mu.Unlock()
		b.Fatalf("%d of %d messages consumed", m.count, m.want)
	}
}

// countingSubscriber counts the acknowledgements of its Sources' messages,
// so that a benchmark iteration ends when the last one is acknowledged.
type countingSubscriber struct {
	brokers.Subscriber
	acked *meter
}

func (c countingSubscriber) Subscribe(ctx context.Context) (brokers.Source, error) {
	src, err := c.Subscriber.Subscribe(ctx)
	if err != nil {
		return nil, err
	}
	return countingSource{Source: src, acked: c.acked}, nil
}

type countingSource struct {
	brokers.Source
	acked *meter
}

func (c countingSource) Receive(ctx context.Context) (brokers.Message, error) {
	m, err := c.Source.Receive(ctx)
	if err == nil {
		m.Settler = countingSettler{Settler: m.Settler, acked: c.acked}
	}
	return m, err
}

type countingSettler struct {
	brokers.Settler
	acked *meter
}

func (c countingSettler) Ack(ctx context.Context) error {
	err := c.Settler.Ack(ctx)
	if err == nil {
		c.acked.add()
	}
	return err
}

// consumeInFlight is how many messages every consuming variant holds
// unacknowledged at most: the consumer's MaxInFlight, and the
// acknowledgements in flight of the others.
const consumeInFlight = 512

// BenchmarkConsume compares, on the same messages:
//
//   - consumer: a brokers.Consumer on a Subscriber: receive, decode, a
//     no-op handler, a confirmed Ack;
//   - source: the Subscriber's Source alone: Receive, then a confirmed Ack
//     on a goroutine of its own;
//   - raw/ack: the client's iterator and its Ack, which does not wait for
//     the server (what the contract's Ack does not allow);
//   - raw/double-ack: the client's iterator and its DoubleAck, which waits,
//     on a goroutine of its own: the raw equivalent of the Source.
//
// Each iteration publishes consumeBatch messages with nothing consuming and
// the timer stopped, then starts consuming (opening the subscription) and
// stops the timer once the last message is acknowledged.
func BenchmarkConsume(b *testing.B) {
	nc := benchConn(b)
	fill := func(b *testing.B, s *nats.Sender, topic string) {
		b.Helper()
		envs := make([]wire.Envelope, consumeBatch)
		for i := range envs {
			envs[i] = envelope(b, topic, "", i)
		}
		require.NoError(b, s.Send(context.Background(), envs))
	}
	// run measures consume, which consumes until acked reaches its goal,
	// then returns a function stopping it (not measured).
	run := func(b *testing.B, consume func(b *testing.B, topo nats.Topology, acked *meter) (stop func())) {
		b.Helper()
		topo := benchStream(b, nc)
		s := newSender(b, nc, nats.SenderConfig{})
		acked := new(meter)
		b.ReportAllocs()
		var want int64
		for b.Loop() {
			b.StopTimer()
			fill(b, s, topo.Subjects[0])
			want += consumeBatch
			reached := acked.reach(want)
			b.StartTimer()
			stop := consume(b, topo, acked)
			acked.wait(b, reached)
			b.StopTimer()
			stop()
			b.StartTimer()
		}
		b.ReportMetric(float64(b.N*consumeBatch)/b.Elapsed().Seconds(), "msgs/s")
	}
	subscriber := func(b *testing.B, topo nats.Topology) *nats.Subscriber {
		b.Helper()
		sub, err := nats.NewSubscriber(nc, nats.SubscriberConfig{Topology: topo, PullBatch: consumeInFlight, Logger: quiet})
		require.NoError(b, err)
		return sub
	}
	b.Run("consumer", func(b *testing.B) {
		var c *brokers.Consumer
		run(b, func(b *testing.B, topo nats.Topology, acked *meter) func() {
			b.Helper()
			if c == nil {
				cfg := brokers.DefaultConfig()
				cfg.Name, cfg.MaxConcurrency, cfg.MaxInFlight, cfg.Logger = "bench", 8, consumeInFlight, quiet
				cfg.Backoff = outbox.Backoff{Base: time.Millisecond, Max: time.Millisecond}
				var err error
				c, err = brokers.NewConsumer(countingSubscriber{Subscriber: subscriber(b, topo), acked: acked}, orderDecoder(b),
					func(context.Context, events.Event) error { return nil }, cfg)
				require.NoError(b, err)
			}
			ctx, stop := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- c.Run(ctx) }()
			return func() {
				stop()
				require.NoError(b, <-done)
			}
		})
	})
	b.Run("source", func(b *testing.B) {
		var sub *nats.Subscriber
		run(b, func(b *testing.B, topo nats.Topology, acked *meter) func() {
			b.Helper()
			if sub == nil {
				sub = subscriber(b, topo)
			}
			src, err := sub.Subscribe(context.Background())
			require.NoError(b, err)
			ctx, stop := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() {
				defer close(done)
				var wg sync.WaitGroup
				defer wg.Wait()
				sem := make(chan struct{}, consumeInFlight)
				for {
					m, err := src.Receive(ctx)
					if err != nil {
						if ctx.Err() != nil || errors.Is(err, brokers.ErrClosed) || errors.Is(err, outbox.ErrPermanent) {
							return
						}
						continue // transient, as for the runtime
					}
					sem <- struct{}{}
					wg.Go(func() {
						if m.Settler.Ack(context.Background()) == nil {
							acked.add()
						}
						<-sem
					})
				}
			}()
			return func() {
				stop()
				<-done
				require.NoError(b, src.Close(context.Background()))
			}
		})
	})
	for _, double := range []bool{false, true} {
		name := "raw/ack"
		if double {
			name = "raw/double-ack"
		}
		b.Run(name, func(b *testing.B) {
			var cons jetstream.Consumer
			run(b, func(b *testing.B, topo nats.Topology, acked *meter) func() {
				b.Helper()
				if cons == nil {
					js, err := jetstream.New(nc)
					require.NoError(b, err)
					cons, err = js.Consumer(b.Context(), topo.Stream, topo.Consumer)
					require.NoError(b, err)
				}
				it, err := cons.Messages(jetstream.PullMaxMessages(consumeInFlight))
				require.NoError(b, err)
				done := make(chan struct{})
				go func() {
					defer close(done)
					var wg sync.WaitGroup
					defer wg.Wait()
					sem := make(chan struct{}, consumeInFlight)
					for {
						m, err := it.Next()
						if err != nil {
							return
						}
						if !double {
							if m.Ack() == nil {
								acked.add()
							}
							continue
						}
						sem <- struct{}{}
						wg.Go(func() {
							if m.DoubleAck(context.Background()) == nil {
								acked.add()
							}
							<-sem
						})
					}
				}()
				return func() {
					it.Drain() // Next fails once the server has the unsubscription
					<-done
				}
			})
		})
	}
}
