package kafka_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gocqrs/cqrs/events/brokers"
	"github.com/gocqrs/cqrs/events/brokers/kafka"
)

// subscribe opens a Source of sub, closed at the end of the test unless
// closed before.
func subscribe(t *testing.T, sub *kafka.Subscriber) *openSource {
	t.Helper()
	src, err := sub.Subscribe(within(t, 30*time.Second))
	require.NoError(t, err)
	o := &openSource{Source: src}
	t.Cleanup(func() { _ = o.close() })
	return o
}

// openSource is a Source closed once.
type openSource struct {
	brokers.Source
	once sync.Once
	err  error
}

func (o *openSource) close() error {
	o.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		o.err = o.Close(ctx)
	})
	return o.err
}

func (o *openSource) receive(t *testing.T) brokers.Message {
	t.Helper()
	m, err := o.Receive(within(t, 30*time.Second))
	require.NoError(t, err)
	return m
}

// produce writes records with the given values to topic's partition, with
// a plain client: what any producer would write.
func (c *cluster) produce(t *testing.T, topic string, partition int32, key []byte, values ...string) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.brokers...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	require.NoError(t, err)
	defer cl.Close()
	recs := make([]*kgo.Record, len(values))
	for i, v := range values {
		recs[i] = &kgo.Record{Topic: topic, Partition: partition, Key: key, Value: []byte(v)}
	}
	require.NoError(t, cl.ProduceSync(within(t, 30*time.Second), recs...).FirstErr())
}

// partitionOf returns the partition of a message, from its OrderKey.
func partitionOf(t *testing.T, m brokers.Message) int32 {
	t.Helper()
	i := strings.LastIndexByte(m.OrderKey, '/')
	require.Positive(t, i, "OrderKey %q is not topic/partition", m.OrderKey)
	p, err := strconv.Atoi(m.OrderKey[i+1:])
	require.NoError(t, err)
	return int32(p)
}

func TestSubscriberConfig(t *testing.T) {
	t.Parallel()
	_, err := kafka.NewSubscriber(kafka.SubscriberConfig{
		Topic: "orders", DeadLetterTopic: "orders", Ordering: 7, MaxPollRecords: -1, CommitInterval: -1,
		Partitions: -2, ReplicationFactor: -2,
	})
	require.ErrorIs(t, err, kafka.ErrInvalidConfig)
	for _, want := range []string{"Brokers", "Group", "DeadLetterTopic", "Ordering", "MaxPollRecords", "CommitInterval", "Partitions", "ReplicationFactor"} {
		assert.Contains(t, err.Error(), want)
	}

	sub, err := kafka.NewSubscriber(kafka.SubscriberConfig{Brokers: []string{"127.0.0.1:1"}, Topic: "orders", Group: "billing"})
	require.NoError(t, err)
	cfg := sub.Config()
	assert.Equal(t, "orders.dlq", cfg.DeadLetterTopic)
	assert.Equal(t, kafka.DefaultMaxPollRecords, cfg.MaxPollRecords)
	assert.Equal(t, kafka.DefaultRevokeTimeout, cfg.RevokeTimeout)
	assert.Equal(t, kafka.OrderPartition, cfg.Ordering)

	refused, err := kafka.NewSubscriber(kafka.SubscriberConfig{
		Brokers: []string{"127.0.0.1:1"}, Topic: "orders", Group: "billing",
		ClientOptions: []kgo.Opt{kgo.ConsumeRegex(), kgo.DisableIdempotentWrite()},
	})
	require.NoError(t, err)
	_, err = refused.Subscribe(t.Context())
	require.ErrorIs(t, err, kafka.ErrInvalidConfig)
	assert.Contains(t, err.Error(), "ConsumeRegex")
	assert.Contains(t, err.Error(), "DisableIdempotentWrite")
}

func TestSubscribeTopics(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	name := uniqueName(t)

	_, err := c.subscriber(t, kafka.SubscriberConfig{Topic: name, Group: name}).Subscribe(within(t, 30*time.Second))
	require.ErrorIs(t, err, kafka.ErrTopicNotFound)

	src := subscribe(t, c.subscriber(t, kafka.SubscriberConfig{Topic: name, Group: name, CreateTopics: true, Partitions: 3}))
	require.NoError(t, src.close())
	details, err := kadm.NewClient(c.admin).ListTopics(within(t, 30*time.Second), name, name+".dlq")
	require.NoError(t, err)
	for _, topic := range []string{name, name + ".dlq"} {
		require.NoError(t, details[topic].Err, topic)
		assert.Len(t, details[topic].Partitions, 3, topic)
	}
	// Idempotent: a second Subscribe finds them.
	src = subscribe(t, c.subscriber(t, kafka.SubscriberConfig{Topic: name, Group: name, CreateTopics: true}))
	require.NoError(t, src.close())
}

// Offsets are committed only past the settled prefix of a partition: a
// record acknowledged behind an unsettled one is delivered again after a
// restart (OrderKey lets the runtime settle them out of order).
func TestCommitsSettledPrefix(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	topic := c.topic(t, 1)
	c.produce(t, topic, 0, nil, "r0", "r1", "r2", "r3")
	sub := c.subscriber(t, kafka.SubscriberConfig{Topic: topic, Group: topic, Ordering: kafka.OrderKey})

	a := subscribe(t, sub)
	var ms []brokers.Message
	for range 4 {
		ms = append(ms, a.receive(t))
	}
	for i, m := range ms {
		assert.Equal(t, "r"+strconv.Itoa(i), string(m.Body), "partition order")
		assert.Empty(t, m.OrderKey, "OrderKey: a record without a key is unordered")
		assert.Equal(t, 1, m.Attempt)
	}
	ctx := within(t, 30*time.Second)
	require.NoError(t, ms[1].Settler.Ack(ctx))
	require.NoError(t, ms[3].Settler.Ack(ctx))
	require.NoError(t, a.close())
	assert.EqualValues(t, -1, c.committed(t, topic, topic, 0), "nothing committed past the unsettled r0")

	b := subscribe(t, sub)
	for i := range 4 {
		m := b.receive(t)
		assert.Equal(t, "r"+strconv.Itoa(i), string(m.Body), "everything delivered again, in order")
		if i == 0 || i == 2 {
			require.NoError(t, m.Settler.Ack(ctx))
		}
	}
	require.NoError(t, b.close())
	assert.EqualValues(t, 1, c.committed(t, topic, topic, 0), "committed past r0 only")

	d := subscribe(t, sub)
	m := d.receive(t)
	assert.Equal(t, "r1", string(m.Body))
	require.NoError(t, m.Settler.Ack(ctx))
	m = d.receive(t)
	assert.Equal(t, "r2", string(m.Body))
	require.NoError(t, m.Settler.Ack(ctx))
	require.NoError(t, d.close())
	assert.EqualValues(t, 3, c.committed(t, topic, topic, 0))
}

// Retry hands the record out again in this Source, with Attempt increased;
// the later records of its partition are not held back, but its offset
// holds the partition's commit.
func TestRetryInPlace(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	topic := c.topic(t, 1)
	c.produce(t, topic, 0, nil, "r0", "r1", "r2")
	sub := c.subscriber(t, kafka.SubscriberConfig{Topic: topic, Group: topic})
	ctx := within(t, 30*time.Second)

	a := subscribe(t, sub)
	r0 := a.receive(t)
	assert.Equal(t, topic+"/0", r0.OrderKey, "OrderPartition: topic/partition")
	require.NoError(t, r0.Settler.Retry(ctx, 0))
	again := a.receive(t)
	assert.Equal(t, "r0", string(again.Body), "a record retried with no delay comes first")
	assert.Equal(t, 2, again.Attempt)
	require.ErrorIs(t, r0.Settler.Ack(ctx), brokers.ErrSettled, "the first delivery's Settler is stale")

	require.NoError(t, again.Settler.Retry(ctx, time.Hour))
	r1 := a.receive(t)
	assert.Equal(t, "r1", string(r1.Body), "the partition goes on while r0 waits")
	require.NoError(t, r1.Settler.Ack(ctx))
	require.NoError(t, a.close())
	assert.EqualValues(t, -1, c.committed(t, topic, topic, 0), "r0 holds the commit")

	b := subscribe(t, sub)
	m := b.receive(t)
	assert.Equal(t, "r0", string(m.Body))
	assert.Equal(t, 1, m.Attempt, "attempts are not counted across Sources")
}

// A partition revoked in a rebalance while its records are being handled:
// with no wait, their settles fail and the new owner reads them again;
// with a wait, their acknowledgements are committed before the handoff.
func TestRevocation(t *testing.T) {
	t.Parallel()
	for _, wait := range []bool{false, true} {
		t.Run(fmt.Sprintf("wait=%v", wait), func(t *testing.T) {
			t.Parallel()
			c := newCluster(t)
			topic := c.topic(t, 2)
			for p := range int32(2) {
				c.produce(t, topic, p, nil, fmt.Sprintf("p%d-r0", p))
			}
			cfg := kafka.SubscriberConfig{Topic: topic, Group: topic, RevokeTimeout: -1}
			waiting := make(chan struct{})
			if wait {
				cfg.RevokeTimeout = 30 * time.Second
				cfg.Logger = slog.New(&signalHandler{msg: "kafka: partitions being revoked; waiting for their messages being handled", signal: waiting})
			}
			sub := c.subscriber(t, cfg)
			ctx := within(t, 30*time.Second)

			a := subscribe(t, sub)
			held := make(map[int32]brokers.Message)
			for range 2 {
				m := a.receive(t)
				held[partitionOf(t, m)] = m
			}
			require.Len(t, held, 2, "A holds a message of each partition")
			for p := range int32(2) {
				c.produce(t, topic, p, nil, fmt.Sprintf("p%d-r1", p))
			}
			// B joins: one partition moves to it.
			b := subscribe(t, sub)
			got := make(chan brokers.Message, 1)
			go func() {
				m, err := b.Receive(ctx)
				if err != nil {
					close(got)
					return
				}
				got <- m
			}()
			if wait {
				// The revocation waits for A's message of the moving
				// partition: A acknowledges both messages once it does,
				// and they are committed before B reads the partition.
				select {
				case <-waiting:
				case <-ctx.Done():
					require.FailNow(t, "the revocation did not wait")
				}
				for _, m := range held {
					require.NoError(t, m.Settler.Ack(ctx))
				}
			}
			m, ok := <-got
			require.True(t, ok, "B received nothing")
			moved := partitionOf(t, m)
			if wait {
				assert.Equal(t, fmt.Sprintf("p%d-r1", moved), string(m.Body), "the acknowledged r0 was committed before the handoff")
				return
			}
			assert.Equal(t, fmt.Sprintf("p%d-r0", moved), string(m.Body), "B reads the revoked partition from its last commit")
			err := held[moved].Settler.Ack(ctx)
			require.ErrorIs(t, err, kafka.ErrRevoked, "A's settle after the revocation")
			var pe *kafka.PartitionError
			require.ErrorAs(t, err, &pe)
			assert.Equal(t, moved, pe.Partition)
			require.NoError(t, held[1-moved].Settler.Ack(ctx), "A keeps the other partition")
		})
	}
}

// signalHandler closes signal when msg is logged.
type signalHandler struct {
	msg    string
	signal chan struct{}
	once   sync.Once
}

func (h *signalHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *signalHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Message == h.msg {
		h.once.Do(func() { close(h.signal) })
	}
	return nil
}

func (h *signalHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *signalHandler) WithGroup(string) slog.Handler      { return h }

// A group member takes over the partitions of a member that stops with
// messages unacknowledged: it receives exactly those, in order.
func TestTakeOver(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	topic := c.topic(t, 1)
	c.produce(t, topic, 0, []byte("k"), "r0", "r1", "r2", "r3", "r4")
	sub := c.subscriber(t, kafka.SubscriberConfig{Topic: topic, Group: topic})
	ctx := within(t, 30*time.Second)

	a := subscribe(t, sub)
	for i := range 5 {
		m := a.receive(t)
		if i < 2 {
			require.NoError(t, m.Settler.Ack(ctx))
		}
	}
	b := subscribe(t, sub) // a member without partitions: the topic has one
	got := make(chan []string, 1)
	go func() {
		var bodies []string
		defer func() { got <- bodies }()
		for range 3 {
			m, err := b.Receive(ctx)
			if err != nil {
				return
			}
			bodies = append(bodies, string(m.Body))
			if m.Settler.Ack(ctx) != nil {
				return
			}
		}
	}()
	require.NoError(t, a.close())
	assert.Equal(t, []string{"r2", "r3", "r4"}, <-got, "B receives what A left unacknowledged")
	require.NoError(t, b.close())
	assert.EqualValues(t, 5, c.committed(t, topic, topic, 0))
}

// A dead letter that cannot be published leaves the message leased: it can
// be settled otherwise.
func TestDeadLetterFailure(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	topic := uniqueName(t)
	ctx := within(t, 30*time.Second)
	require.NoError(t, kafka.EnsureTopics(ctx, c.admin, kafka.TopicSpec{Name: topic, Partitions: 1}))
	c.produce(t, topic, 0, []byte("k"), "r0")
	sub := c.subscriber(t, kafka.SubscriberConfig{Topic: topic, Group: topic}) // no dead-letter topic
	a := subscribe(t, sub)
	m := a.receive(t)
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	err := m.Settler.DeadLetter(short, brokers.DeadLetter{Reason: brokers.ReasonRejected, Err: errors.New("no")})
	require.Error(t, err)
	require.NoError(t, m.Settler.Ack(ctx), "the message stays leased")
	require.ErrorIs(t, m.Settler.DeadLetter(ctx, brokers.DeadLetter{Reason: brokers.ReasonRejected}), brokers.ErrSettled)
}
