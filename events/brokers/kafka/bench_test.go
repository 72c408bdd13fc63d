package kafka_test

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/events/brokers"
	"github.com/gocqrs/cqrs/events/brokers/kafka"
	"github.com/gocqrs/cqrs/events/wire"
)

// benchCluster starts a kfake cluster for a benchmark and creates topic
// with parts partitions.
func benchCluster(b *testing.B, topic string, parts int32, opts ...kfake.Opt) []string {
	b.Helper()
	fake, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1)}, opts...)...)
	require.NoError(b, err)
	b.Cleanup(fake.Close)
	seeds := fake.ListenAddrs()
	admin, err := kgo.NewClient(kgo.SeedBrokers(seeds...))
	require.NoError(b, err)
	defer admin.Close()
	require.NoError(b, kafka.EnsureTopics(b.Context(), admin, kafka.TopicSpec{Name: topic, Partitions: parts}))
	return seeds
}

// benchEnvelopes returns n envelopes of topic over keys keys.
func benchEnvelopes(b *testing.B, topic string, n, keys int) []wire.Envelope {
	b.Helper()
	var enc wire.Encoder
	envs := make([]wire.Envelope, n)
	for i := range envs {
		ev := events.NewNotification(eventName, payload{Seq: i, Note: "a note of some fifty bytes, as events often carry"}).
			WithTopic(topic).WithKey("order-" + strconv.Itoa(i%keys))
		env, err := enc.Encode(ev)
		require.NoError(b, err)
		env.CorrelationID = "request-" + strconv.Itoa(i)
		env.CausationID = env.CorrelationID
		env.SetHeader(wire.HeaderTraceparent, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
		envs[i] = env
	}
	return envs
}

// rawRecords returns the records the Sender makes of envs, built once: the
// raw client produces them as they are.
func rawRecords(b *testing.B, envs []wire.Envelope) []*kgo.Record {
	b.Helper()
	recs := make([]*kgo.Record, len(envs))
	for i, env := range envs {
		h, err := wire.ToHeaders(env)
		require.NoError(b, err)
		r := &kgo.Record{Topic: env.Topic, Key: []byte(env.Key), Value: env.Payload}
		for k, v := range h {
			r.Headers = append(r.Headers, kgo.RecordHeader{Key: k, Value: []byte(v)})
		}
		recs[i] = r
	}
	return recs
}

// BenchmarkSend compares the Sender with the raw client producing the same
// records with ProduceSync, one batch of 100 records per operation, on an
// in-process kfake broker that stores nothing (kfake.BlackholeProduce),
// with the client's default linger (10ms) and with none.
//
//	go test -run '^$' -bench BenchmarkSend -benchmem ./...
func BenchmarkSend(b *testing.B) {
	const batch = 100
	for _, linger := range []time.Duration{0, 10 * time.Millisecond} {
		for _, keys := range []int{batch, 10, 1} {
			topic := "bench-send"
			// The broker acknowledges without storing: its log would
			// grow the heap, and every collection with it.
			seeds := benchCluster(b, topic, 8, kfake.BlackholeProduce())
			envs := benchEnvelopes(b, topic, batch, keys)
			opts := []kgo.Opt{kgo.ProducerLinger(linger)}
			name := fmt.Sprintf("linger=%v/keys=%d", linger, keys)

			b.Run(name+"/sender", func(b *testing.B) {
				s, err := kafka.NewSender(kafka.SenderConfig{Brokers: seeds, ClientOptions: opts, Logger: slog.New(slog.DiscardHandler)})
				require.NoError(b, err)
				defer s.Close()
				ctx := b.Context()
				b.ReportAllocs()
				for b.Loop() {
					if err := s.Send(ctx, envs); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(batch*b.N)/b.Elapsed().Seconds(), "records/s")
			})
			// The raw client producing records it makes from the
			// envelopes each time, the plain way: what a hand-written
			// sender does.
			b.Run(name+"/raw-convert", func(b *testing.B) {
				cl, err := kgo.NewClient(append(opts, kgo.SeedBrokers(seeds...), kgo.RequiredAcks(kgo.AllISRAcks()))...)
				require.NoError(b, err)
				defer cl.Close()
				ctx := b.Context()
				b.ReportAllocs()
				for b.Loop() {
					if err := cl.ProduceSync(ctx, rawRecords(b, envs)...).FirstErr(); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(batch*b.N)/b.Elapsed().Seconds(), "records/s")
			})
			b.Run(name+"/raw", func(b *testing.B) {
				cl, err := kgo.NewClient(append(opts, kgo.SeedBrokers(seeds...), kgo.RequiredAcks(kgo.AllISRAcks()))...)
				require.NoError(b, err)
				defer cl.Close()
				recs := rawRecords(b, envs)
				ctx := b.Context()
				b.ReportAllocs()
				for b.Loop() {
					if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(batch*b.N)/b.Elapsed().Seconds(), "records/s")
			})
		}
	}
}

// meter counts settled messages and wakes a waiter once a count is reached.
type meter struct {
	mu      sync.Mutex
	n, want int64
	reached chan struct{}
}

func (m *meter) add(n int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.n += int64(n)
	if m.reached != nil && m.n >= m.want {
		close(m.reached)
		m.reached = nil
	}
}

// wait waits until the count reaches want.
func (m *meter) wait(b *testing.B, want int64) {
	b.Helper()
	m.mu.Lock()
	if m.n >= want {
		m.mu.Unlock()
		return
	}
	ch := make(chan struct{})
	m.want, m.reached = want, ch
	m.mu.Unlock()
	select {
	case <-ch:
	case <-time.After(time.Minute):
		b.Fatalf("timed out at %d of %d messages", m.n, want)
	}
}

// countingSubscriber counts the messages its Sources' Acks settled.
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
		c.acked.add(1)
	}
	return err
}

// BenchmarkConsume compares a brokers.Consumer on a Subscriber (receive,
// decode, a no-op handler, Ack, offsets committed) with the raw client in a
// consumer group polling up to 500 records at a time and committing each
// poll synchronously, with and without decoding each record as the runtime
// does (wire.FromHeaders and the decoder). Each operation produces 5000
// records over 4 partitions with the timer stopped, then starts the
// consumer (it joins the group, and reads from the last commit), waits
// until every record is acknowledged (committed, for the raw client), and
// stops it (a final commit, leaving the group). Each sub-benchmark has an
// in-process kfake broker of its own.
//
//	go test -run '^$' -bench BenchmarkConsume -benchmem ./...
func BenchmarkConsume(b *testing.B) {
	const (
		batch = 5000
		parts = 4
	)
	quiet := slog.New(slog.DiscardHandler)
	setup := func(b *testing.B) (seeds []string, topic string, fill func()) {
		b.Helper()
		topic = "bench-consume"
		seeds = benchCluster(b, topic, parts)
		s, err := kafka.NewSender(kafka.SenderConfig{Brokers: seeds, Logger: quiet})
		require.NoError(b, err)
		b.Cleanup(s.Close)
		envs := benchEnvelopes(b, topic, batch, 64)
		return seeds, topic, func() {
			for i := 0; i < batch; i += 100 {
				require.NoError(b, s.Send(b.Context(), envs[i:i+100]))
			}
		}
	}
	var reg wire.Registry
	require.NoError(b, wire.Register[payload](&reg, eventName))
	dec, err := wire.NewDecoder(&reg, wire.DecoderOptions{})
	require.NoError(b, err)

	// measure produces a batch with the timer stopped, then runs the
	// consumer start starts until acked counts the batch, and stops it.
	measure := func(b *testing.B, fill func(), acked *meter, start func(ctx context.Context) (stop func())) {
		b.Helper()
		var want int64
		b.ReportAllocs()
		for b.Loop() {
			b.StopTimer()
			fill()
			want += batch
			b.StartTimer()
			ctx, cancel := context.WithCancel(b.Context())
			stop := start(ctx)
			acked.wait(b, want)
			cancel()
			stop()
		}
		b.ReportMetric(float64(batch*b.N)/b.Elapsed().Seconds(), "records/s")
	}

	b.Run("consumer", func(b *testing.B) {
		seeds, topic, fill := setup(b)
		sub, err := kafka.NewSubscriber(kafka.SubscriberConfig{Brokers: seeds, Topic: topic, Group: "bench", Logger: quiet})
		require.NoError(b, err)
		acked := new(meter)
		cfg := brokers.DefaultConfig()
		cfg.MaxConcurrency, cfg.MaxInFlight, cfg.Logger = parts, 256, quiet
		c, err := brokers.NewConsumer(countingSubscriber{Subscriber: sub, acked: acked}, dec,
			func(context.Context, events.Event) error { return nil }, cfg)
		require.NoError(b, err)
		measure(b, fill, acked, func(ctx context.Context) func() {
			done := make(chan error, 1)
			go func() { done <- c.Run(ctx) }()
			return func() { require.NoError(b, <-done) }
		})
	})
	// The Source alone, without the runtime: Receive and Ack, one message
	// at a time.
	b.Run("source", func(b *testing.B) {
		seeds, topic, fill := setup(b)
		sub, err := kafka.NewSubscriber(kafka.SubscriberConfig{Brokers: seeds, Topic: topic, Group: "bench", Logger: quiet})
		require.NoError(b, err)
		acked := new(meter)
		measure(b, fill, acked, func(ctx context.Context) func() {
			src, err := sub.Subscribe(ctx)
			require.NoError(b, err)
			done := make(chan struct{})
			go func() {
				defer close(done)
				for {
					m, err := src.Receive(ctx)
					if err != nil {
						return
					}
					if m.Settler.Ack(ctx) == nil {
						acked.add(1)
					}
				}
			}()
			return func() {
				<-done
				require.NoError(b, src.Close(context.Background()))
			}
		})
	})
	for _, decode := range []bool{false, true} {
		name := "raw"
		if decode {
			name = "raw+decode"
		}
		b.Run(name, func(b *testing.B) {
			seeds, topic, fill := setup(b)
			acked := new(meter)
			measure(b, fill, acked, func(ctx context.Context) func() {
				cl, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.ConsumerGroup("bench"), kgo.ConsumeTopics(topic),
					kgo.DisableAutoCommit(), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
				require.NoError(b, err)
				done := make(chan struct{})
				go func() {
					defer close(done)
					for ctx.Err() == nil {
						recs := cl.PollRecords(ctx, 500).Records()
						if decode && !decodeAll(b, dec, recs) {
							return
						}
						if len(recs) > 0 && cl.CommitRecords(ctx, recs...) == nil {
							acked.add(len(recs))
						}
					}
				}()
				return func() {
					<-done
					cl.Close()
				}
			})
		})
	}
}

// decodeAll decodes records as the consumer runtime does.
func decodeAll(b *testing.B, dec *wire.Decoder, recs []*kgo.Record) bool {
	b.Helper()
	for _, r := range recs {
		h := make(map[string]string, len(r.Headers))
		for _, rh := range r.Headers {
			h[rh.Key] = string(rh.Value)
		}
		env, err := wire.FromHeaders(h)
		if err == nil {
			env.Topic, env.Key, env.Payload = r.Topic, string(r.Key), r.Value
			_, err = dec.Decode(env)
		}
		if err != nil {
			b.Error(err)
			return false
		}
	}
	return true
}
