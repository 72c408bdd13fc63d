package kafka_test

import (
	"context"
	"errors"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/events/brokers"
	"github.com/gocqrs/cqrs/events/brokers/kafka"
	"github.com/gocqrs/cqrs/events/inbox"
	"github.com/gocqrs/cqrs/events/outbox"
	"github.com/gocqrs/cqrs/events/wire"
	"github.com/gocqrs/cqrs/internal/testenv"
)

// The connections to the broker are cut several times, and the broker is
// unreachable for a while, as events flow from a Sender to a Consumer:
// every event is handled, once (the inbox absorbs redeliveries), in order
// per key, and every offset is committed in the end.
func TestConnectionLoss(t *testing.T) {
	t.Parallel()
	if os.Getenv(brokersEnv) != "" {
		t.Skipf("cuts connections to an in-process kfake broker; %s is set", brokersEnv)
	}
	p := testenv.NewProxy(t, "")
	c := newCluster(t, kfake.ListenFn(p.Listen))
	require.Equal(t, []string{p.Addr()}, c.brokers, "kfake advertises the proxy")
	// Reconnect, and refresh the metadata after failures, quickly: the test
	// waits for it.
	c.opts = append(c.opts,
		kgo.RetryBackoffFn(func(int) time.Duration { return 20 * time.Millisecond }),
		kgo.MetadataMinAge(50*time.Millisecond),
	)
	topic := c.topic(t, 4)

	const keys, perKey, batch = 8, 50, 16
	var envs []wire.Envelope
	for seq := range perKey {
		for k := range keys {
			envs = append(envs, envelope(t, topic, "k-"+strconv.Itoa(k), seq))
		}
	}
	ids := make([]uuid.UUID, len(envs))
	for i, env := range envs {
		ids[i] = env.ID
	}

	// The consumer, with an inbox.
	h := newHandled()
	cfg := consumerConfig(c)
	mem := inbox.NewMemoryStore(inbox.MemoryOptions{})
	cfg.Inbox, cfg.Transactor = mem, mem
	cfg.SettleTimeout = 30 * time.Second
	group := "billing-" + topic
	consumer, err := brokers.NewConsumer(c.subscriber(t, kafka.SubscriberConfig{Topic: topic, Group: group}),
		decoder(t), eventMediator(t, h, nil), cfg)
	require.NoError(t, err)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	runDone := make(chan error, 1)
	go func() { runDone <- consumer.Run(ctx) }()

	// The producer: batches in order; what fails is sent again, in order.
	sender := c.sender(t)
	sendDone := make(chan error, 1)
	go func() {
		sctx := within(t, 2*time.Minute)
		for start := 0; start < len(envs); start += batch {
			pending := envs[start:min(start+batch, len(envs))]
			for len(pending) > 0 {
				err := sender.Send(sctx, pending)
				if err == nil {
					break
				}
				be, ok := errors.AsType[*outbox.BatchError](err)
				if !ok || sctx.Err() != nil {
					sendDone <- err
					return
				}
				var again []wire.Envelope
				for i, e := range be.Errs {
					if e != nil {
						again = append(again, pending[i])
					}
				}
				pending = again
			}
		}
		sendDone <- nil
	}()

	// Faults, as the events are handled.
	atLeast := func(n int) func([]events.Notification[payload]) bool {
		return func(evs []events.Notification[payload]) bool { return len(evs) >= n }
	}
	total := len(envs)
	h.waitFor(t, "a quarter handled", atLeast(total/4))
	p.Cut()
	h.waitFor(t, "half handled", atLeast(total/2))
	p.SetDown(true)
	require.NoError(t, p.WaitRefused(within(t, time.Minute), 10), "clients try to reconnect")
	p.SetDown(false)
	h.waitFor(t, "three quarters handled", atLeast(3*total/4))
	p.Cut()

	evs := h.waitFor(t, "every event handled", allOf(ids))
	require.NoError(t, <-sendDone)
	stop()
	require.NoError(t, <-runDone)

	count := make(map[uuid.UUID]int)
	last := make(map[string]int)
	for _, ev := range evs {
		count[ev.ID]++
		if prev, ok := last[ev.Key]; ok {
			assert.Equal(t, prev+1, ev.Payload.Seq, "key %s: order", ev.Key)
		}
		last[ev.Key] = ev.Payload.Seq
	}
	for _, id := range ids {
		assert.Equal(t, 1, count[id], "event %s handled once", id)
	}
	var committed int64
	for part := range int32(4) {
		committed += max(c.committed(t, group, topic, part), 0)
	}
	assert.Equal(t, c.count(t, topic), committed, "every record committed, once handled")
	counters := consumer.Counters()
	assert.Positive(t, counters.ReceiveErrors, "the outage was reported by Receive")
	t.Logf("records %d, consumer %+v", c.count(t, topic), counters)
}
