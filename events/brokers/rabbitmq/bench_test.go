package rabbitmq_test

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/events/brokers"
	"github.com/gocqrs/cqrs/events/brokers/rabbitmq"
	"github.com/gocqrs/cqrs/events/wire"
)

// benchBatch is how many messages one benchmark operation publishes or
// consumes.
const benchBatch = 100

// benchTopology is a quorum queue (the default) capped at 20000 messages,
// dropping the oldest, so that publishing benchmarks do not fill it.
func benchTopology(tb testing.TB, u string) (rabbitmq.Topology, string) {
	tb.Helper()
	topo, topic := testTopology("bench", rabbitmq.QueueQuorum)
	topo.QueueArgs = amqp.Table{"x-max-length": int64(20000), "x-overflow": "drop-head"}
	provision(tb, u, topo)
	return topo, topic
}

// benchEnvelopes returns n envelopes of the same event, with keys k-0 ...
// k-(keys-1) in turn.
func benchEnvelopes(tb testing.TB, topic string, n, keys int) []wire.Envelope {
	tb.Helper()
	envs := make([]wire.Envelope, n)
	for i := range envs {
		envs[i] = encode(tb, topic, "k-"+strconv.Itoa(i%keys), i)
		envs[i].CorrelationID = "request-1"
		envs[i].SetHeader(wire.HeaderTraceparent, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	}
	return envs
}

// rawPublishing is the message the Sender makes of env, made by hand.
func rawPublishing(tb testing.TB, env wire.Envelope) amqp.Publishing {
	tb.Helper()
	h, err := wire.ToHeaders(env)
	require.NoError(tb, err)
	t := amqp.Table{brokers.HeaderKey: env.Key}
	for k, v := range h {
		t[k] = v
	}
	return amqp.Publishing{
		Headers: t, DeliveryMode: amqp.Persistent, Body: env.Payload, ContentType: env.ContentType,
		CorrelationId: env.CorrelationID, Type: env.Name, MessageId: env.ID.String(), Timestamp: env.Timestamp,
	}
}

// rawPublisher publishes with amqp091-go directly: every message at once,
// mandatory, then every confirmation awaited.
type rawPublisher struct {
	ch      *amqp.Channel
	returns chan amqp.Return
}

func newRawPublisher(tb testing.TB, u string) *rawPublisher {
	tb.Helper()
	ch, err := adminConn(tb, u).Channel()
	require.NoError(tb, err)
	require.NoError(tb, ch.Confirm(false))
	return &rawPublisher{ch: ch, returns: ch.NotifyReturn(make(chan amqp.Return, 256))}
}

func (p *rawPublisher) publish(tb testing.TB, exchange, key string, msgs []amqp.Publishing) {
	tb.Helper()
	dcs := make([]*amqp.DeferredConfirmation, len(msgs))
	for i, m := range msgs {
		dc, err := p.ch.PublishWithDeferredConfirmWithContext(context.Background(), exchange, key, true, false, m)
		if err != nil {
			tb.Fatal(err)
		}
		dcs[i] = dc
	}
	for _, dc := range dcs {
		if !dc.Wait() {
			tb.Fatal("nacked")
		}
	}
	select {
	case r := <-p.returns:
		tb.Fatalf("returned: %s", r.ReplyText)
	default:
	}
}

// paired times two ways of doing the same work, alternating which goes
// first, so that both see the same broker (whose speed drifts, and which
// shares the machine's cores); it reports the rate of each and their ratio.
type paired struct {
	names  [2]string
	took   [2]time.Duration
	msgs   int
	rounds int
}

// run times fns[0] and fns[1], each handling msgs messages, each after
// prepare (if not nil), which is timed by neither p nor b.
func (p *paired) run(b *testing.B, msgs int, prepare func(), fns [2]func()) {
	b.Helper()
	order := [2]int{0, 1}
	if p.rounds%2 == 1 {
		order = [2]int{1, 0}
	}
	for _, i := range order {
		if prepare != nil {
			b.StopTimer()
			prepare()
			b.StartTimer()
		}
		start := time.Now()
		fns[i]()
		p.took[i] += time.Since(start)
	}
	p.msgs += msgs
	p.rounds++
}

func (p *paired) report(b *testing.B) {
	b.Helper()
	var rate [2]float64
	for i := range rate {
		rate[i] = float64(p.msgs) / p.took[i].Seconds()
		b.ReportMetric(rate[i], p.names[i]+"-msgs/s")
	}
	b.ReportMetric(rate[1]/rate[0], "ratio")
}

// BenchmarkSend publishes batches of 100 events with publisher confirms,
// by the raw client and by the Sender in turn: ratio is the Sender's rate
// over the raw client's. With 100 keys the Sender publishes a batch in one
// round; with one key, one message per round trip (the price of per-key
// order).
func BenchmarkSend(b *testing.B) {
	u := brokerURL(b)
	topo, topic := benchTopology(b, u)
	for _, keys := range []int{benchBatch, 1} {
		b.Run("keys="+strconv.Itoa(keys), func(b *testing.B) {
			raw := newRawPublisher(b, u)
			s := newSender(b, u, topo.Exchange)
			envs := benchEnvelopes(b, topic, benchBatch, keys)
			ctx := context.Background()
			require.NoError(b, s.Send(ctx, envs), "connected")
			pair := paired{names: [2]string{"amqp091", "Sender"}}
			b.ReportAllocs()
			for b.Loop() {
				pair.run(b, len(envs), nil, [2]func(){
					func() {
						// The raw client makes the same messages, as
						// an application publishing directly would.
						msgs := make([]amqp.Publishing, len(envs))
						for i, env := range envs {
							msgs[i] = rawPublishing(b, env)
						}
						raw.publish(b, topo.Exchange, topic, msgs)
					},
					func() {
						if err := s.Send(ctx, envs); err != nil {
							b.Fatal(err)
						}
					},
				})
			}
			pair.report(b)
		})
	}
}

// benchBacklog is how many messages a consuming benchmark operation
// consumes; benchPrefetch is the prefetch of every consumer.
const benchBacklog, benchPrefetch = 1000, 64

// consumeBench provisions a queue and returns it, a function that fills it
// with a backlog (16 keys), and one that consumes the backlog with the raw
// client, from connecting to closing, acknowledging each message.
func consumeBench(b *testing.B, u string) (topo rabbitmq.Topology, fill, rawConsume func()) {
	b.Helper()
	topo, topic := benchTopology(b, u)
	p := newRawPublisher(b, u)
	envs := benchEnvelopes(b, topic, benchBacklog, 16)
	msgs := make([]amqp.Publishing, len(envs))
	for i, env := range envs {
		msgs[i] = rawPublishing(b, env)
	}
	fill = func() {
		for i := 0; i < len(msgs); i += benchBatch {
			p.publish(b, topo.Exchange, topic, msgs[i:i+benchBatch])
		}
	}
	rawConsume = func() {
		conn, err := amqp.Dial(u)
		if err != nil {
			b.Fatal(err)
		}
		defer func() { _ = conn.Close() }()
		ch, err := conn.Channel()
		if err != nil {
			b.Fatal(err)
		}
		if err := ch.Qos(benchPrefetch, 0, false); err != nil {
			b.Fatal(err)
		}
		ds, err := ch.Consume(topo.Queue, "", false, false, false, false, nil)
		if err != nil {
			b.Fatal(err)
		}
		for range benchBacklog {
			d := <-ds
			if err := d.Ack(false); err != nil {
				b.Fatal(err)
			}
		}
	}
	return topo, fill, rawConsume
}

// BenchmarkReceive isolates the adapter: a Source receiving and
// acknowledging a backlog of 1000 messages on one goroutine, as the raw
// client does, from subscribing to closing; ratio is the Source's rate
// over the raw client's.
func BenchmarkReceive(b *testing.B) {
	u := brokerURL(b)
	topo, fill, rawConsume := consumeBench(b, u)
	sub, err := rabbitmq.NewSubscriber(rabbitmq.SubscriberConfig{URL: u, Topology: topo, Prefetch: benchPrefetch, Logger: quiet})
	require.NoError(b, err)
	receive := func() {
		ctx := context.Background()
		src, err := sub.Subscribe(ctx)
		if err != nil {
			b.Fatal(err)
		}
		defer func() { _ = src.Close(ctx) }()
		for range benchBacklog {
			m, err := src.Receive(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if err := m.Settler.Ack(ctx); err != nil {
				b.Fatal(err)
			}
		}
	}
	pair := paired{names: [2]string{"amqp091", "Source"}}
	b.ReportAllocs()
	for b.Loop() {
		pair.run(b, benchBacklog, fill, [2]func(){rawConsume, receive})
	}
	pair.report(b)
}

// BenchmarkConsume consumes a backlog of 1000 messages (16 keys), from
// connecting to closing, by the raw client (prefetch 64, one ack per
// message) and by a brokers.Consumer on the Subscriber (prefetch 64,
// MaxInFlight 64, 8 or 16 handlers) that rebuilds and decodes each event
// and calls a no-op handler before acknowledging it, in turn: ratio is the
// Consumer's rate over the raw client's.
func BenchmarkConsume(b *testing.B) {
	u := brokerURL(b)
	topo, fill, rawConsume := consumeBench(b, u)
	sub, err := rabbitmq.NewSubscriber(rabbitmq.SubscriberConfig{URL: u, Topology: topo, Prefetch: benchPrefetch, Logger: quiet})
	require.NoError(b, err)
	for _, handlers := range []int{8, 16} {
		b.Run("handlers="+strconv.Itoa(handlers), func(b *testing.B) {
			var (
				count  atomic.Int64
				target atomic.Int64
				done   = make(chan struct{}, 1)
			)
			handle := func(_ context.Context, ev events.Event) error {
				if _, ok := ev.(events.Notification[orderPlaced]); !ok {
					b.Errorf("unexpected %T", ev)
				}
				if count.Add(1) == target.Load() {
					done <- struct{}{}
				}
				return nil
			}
			cfg := consumerConfig()
			cfg.MaxConcurrency = handlers
			cfg.MaxInFlight = benchPrefetch
			c, err := brokers.NewConsumer(sub, newDecoder(b), handle, cfg)
			require.NoError(b, err)
			consume := func() {
				target.Store(count.Load() + benchBacklog)
				ctx, cancel := context.WithCancel(context.Background())
				ran := make(chan error, 1)
				go func() { ran <- c.Run(ctx) }()
				select {
				case <-done:
				case <-time.After(time.Minute):
					b.Fatal("the backlog was not consumed")
				}
				cancel()
				if err := <-ran; err != nil {
					b.Fatal(err)
				}
			}
			pair := paired{names: [2]string{"amqp091", "Consumer"}}
			b.ReportAllocs()
			for b.Loop() {
				pair.run(b, benchBacklog, fill, [2]func(){rawConsume, consume})
			}
			pair.report(b)
		})
	}
}
