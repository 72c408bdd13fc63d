// Package brokertest is the conformance kit of broker adapters: [Run]
// checks, as subtests, that a transport meets the contracts of package
// events/brokers (Subscriber, Source, Settler, and an outbox.Sender), both
// directly and through a brokers.Consumer, for the memory broker and for
// the NATS, Kafka and RabbitMQ adapters in their own modules.
//
//	func TestConformance(t *testing.T) {
//		brokertest.Run(t, brokertest.Transport{
//			Features: brokertest.Features{CountsRedeliveries: true, DeduplicatesPublishes: true},
//			NewTopic: func(t *testing.T) brokertest.Topic {
//				t.Helper()
//				// A fresh stream (topic, queue), its subscription and its
//				// dead-letter destination, deleted by t.Cleanup.
//				dest := provision(t)
//				return brokertest.Topic{
//					Name:        dest.Subject,
//					Sender:      newSender(dest),
//					Subscriber:  newSubscriber(dest),
//					DeadLetters: newDeadLetterSubscriber(dest),
//				}
//			},
//		})
//	}
//
// # What a transport must provide
//
// [Transport.NewTopic] is called once per subtest, from parallel subtests;
// each call provisions a fresh destination isolated from the others (a
// stream, topic or queue with a unique name), with:
//
//   - a subscription that exists before NewTopic returns and receives every
//     message sent to the topic after that, whenever it first subscribes
//     (Kafka: auto.offset.reset=earliest on a new group; JetStream: a durable
//     consumer with DeliverAll; RabbitMQ: a queue bound before sending);
//   - Sources that can each hold at least 16 unsettled messages
//     (MaxAckPending, prefetch);
//   - a dead-letter destination, readable from its start through
//     [Topic.DeadLetters];
//   - Retry delays of a few milliseconds honoured within the kit's
//     [Transport.Timeout].
//
// The kit sends events of one payload type ([Payload], registered as
// [EventName]) with the topic's Sender, and never sleeps: it waits for what
// it expects (a handler call, a dead letter), for at most
// [Transport.Timeout] each time, which turns a hang into a failure rather
// than measuring speed.
package brokertest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/events/brokers"
	"github.com/gocqrs/cqrs/events/inbox"
	"github.com/gocqrs/cqrs/events/outbox"
	"github.com/gocqrs/cqrs/events/wire"
)

// EventName is the name the kit registers [Payload] under.
const EventName = "brokertest.event"

// DefaultTimeout is the default of [Transport.Timeout].
const DefaultTimeout = 30 * time.Second

// Payload is the payload of the events the kit sends.
type Payload struct {
	Seq  int    `json:"seq"`
	Note string `json:"note,omitempty"`
}

// Transport is what an adapter gives the kit.
type Transport struct {
	// NewTopic provisions a fresh, isolated topic with one subscription on
	// it and its dead-letter destination (see the package documentation),
	// and registers its own cleanup with t.Cleanup. Required.
	NewTopic func(t *testing.T) Topic
	// Features says what the transport does beyond the contract.
	Features Features
	// Timeout bounds each wait of the kit (default [DefaultTimeout]).
	Timeout time.Duration
}

// Features are properties some transports have and others lack; the kit
// checks them only when declared.
type Features struct {
	// CountsRedeliveries: a message released by closing its Source is
	// delivered to the next Source with a higher Attempt (JetStream
	// NumDelivered, the memory broker; not Kafka, whose adapter counts
	// attempts in process). Within one Source, every transport must count
	// the deliveries that follow a Retry.
	CountsRedeliveries bool
	// DeduplicatesPublishes: the transport drops a second publish of an
	// event ID (JetStream's Nats-Msg-Id within its duplicate window), so
	// the consumer's inbox has nothing to absorb.
	DeduplicatesPublishes bool
}

// Topic is one provisioned destination.
type Topic struct {
	// Name is what the kit sets as the envelopes' Topic: the topic,
	// subject or routing key. Sources report it as Message.Topic.
	Name string
	// Sender publishes envelopes (the adapter's outbox.Sender).
	Sender outbox.Sender
	// Subscriber is the subscription on Name. Every Subscribe joins the
	// same subscription (consumer group, durable consumer, queue).
	Subscriber brokers.Subscriber
	// DeadLetters subscribes to the dead-letter destination of
	// Subscriber.
	DeadLetters brokers.Subscriber
}

// Run runs the conformance subtests against tr, in parallel.
func Run(t *testing.T, tr Transport) {
	t.Helper()
	require.NotNil(t, tr.NewTopic, "brokertest: Transport.NewTopic is required")
	if tr.Timeout <= 0 {
		tr.Timeout = DefaultTimeout
	}
	tests := []struct {
		name string
		fn   func(h *harness)
	}{
		{"RoundTrip", testRoundTrip},
		{"SettleOnce", testSettleOnce},
		{"RetryRedelivers", testRetryRedelivers},
		{"DeadLetterHeaders", testDeadLetterHeaders},
		{"CloseReleases", testCloseReleases},
		{"ConsumerDecodes", testConsumerDecodes},
		{"ForeignProducer", testForeignProducer},
		{"OrderPerKey", testOrderPerKey},
		{"RedeliveryAfterFailure", testRedeliveryAfterFailure},
		{"DeadLetterAfterMaxDeliveries", testDeadLetterAfterMaxDeliveries},
		{"DeadLetterUndecodable", testDeadLetterUndecodable},
		{"ConcurrencyBound", testConcurrencyBound},
		{"ShutdownFinishesInFlight", testShutdownFinishes},
		{"ShutdownReleasesUnfinished", testShutdownReleases},
		{"AtLeastOnceAcrossRestart", testAtLeastOnceAcrossRestart},
		{"DuplicateAbsorbedByInbox", testDuplicateAbsorbed},
		{"BatchedTransactions", testBatchedTransactions},
		{"CorrelationPreserved", testCorrelation},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			top := tr.NewTopic(t)
			require.NotEmpty(t, top.Name, "brokertest: Topic.Name is empty")
			require.NotNil(t, top.Sender, "brokertest: Topic.Sender is nil")
			require.NotNil(t, top.Subscriber, "brokertest: Topic.Subscriber is nil")
			require.NotNil(t, top.DeadLetters, "brokertest: Topic.DeadLetters is nil")
			tt.fn(newHarness(t, tr, top))
		})
	}
}

// harness is one subtest's topic, decoder and helpers.
type harness struct {
	t        *testing.T
	ctx      context.Context
	tr       Transport
	top      Topic
	dec      *wire.Decoder
	enc      wire.Encoder
	deadline time.Duration

	mu     sync.Mutex
	closes map[brokers.Source]*sync.Once // each Source is closed once
}

func newHarness(t *testing.T, tr Transport, top Topic) *harness {
	t.Helper()
	var reg wire.Registry
	require.NoError(t, wire.Register[Payload](&reg, EventName))
	dec, err := wire.NewDecoder(&reg, wire.DecoderOptions{})
	require.NoError(t, err)
	return &harness{t: t, ctx: t.Context(), tr: tr, top: top, dec: dec, deadline: tr.Timeout}
}

// event returns the envelope of a new event with key and seq.
func (h *harness) event(key string, seq int) wire.Envelope {
	h.t.Helper()
	return h.named(EventName, key, Payload{Seq: seq})
}

func (h *harness) named(name, key string, p Payload) wire.Envelope {
	h.t.Helper()
	n := events.NewNotification(name, p).WithTopic(h.top.Name).WithKey(key)
	env, err := h.enc.Encode(n)
	require.NoError(h.t, err)
	return env
}

func (h *harness) send(envs ...wire.Envelope) {
	h.t.Helper()
	require.NoError(h.t, h.top.Sender.Send(h.ctx, envs), "brokertest: Send")
}

// within returns a context bounded by the kit's timeout.
func (h *harness) within() (context.Context, context.CancelFunc) {
	return context.WithTimeout(h.ctx, h.deadline)
}

// subscribe opens a Source of sub, closed at the end of the test.
func (h *harness) subscribe(sub brokers.Subscriber) brokers.Source {
	h.t.Helper()
	ctx, cancel := h.within()
	defer cancel()
	src, err := sub.Subscribe(ctx)
	require.NoError(h.t, err, "brokertest: Subscribe")
	require.NotNil(h.t, src, "brokertest: Subscribe returned a nil Source")
	h.mu.Lock()
	if h.closes == nil {
		h.closes = make(map[brokers.Source]*sync.Once)
	}
	h.closes[src] = new(sync.Once)
	h.mu.Unlock()
	h.t.Cleanup(func() {
		h.closeOnce(src, func(err error) {
			if err != nil {
				h.t.Errorf("brokertest: Close: %v", err)
			}
		})
	})
	return src
}

// closeOnce closes src unless it was closed already, and reports Close's
// error to report.
func (h *harness) closeOnce(src brokers.Source, report func(error)) {
	h.mu.Lock()
	once := h.closes[src]
	h.mu.Unlock()
	once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), h.deadline)
		defer cancel()
		report(src.Close(ctx))
	})
}

// receive receives one message from src within the timeout.
func (h *harness) receive(src brokers.Source, what string) brokers.Message {
	h.t.Helper()
	ctx, cancel := h.within()
	defer cancel()
	m, err := src.Receive(ctx)
	require.NoError(h.t, err, "brokertest: receiving %s", what)
	require.NotNil(h.t, m.Settler, "brokertest: %s has no Settler", what)
	return m
}

func (h *harness) settle(what string, fn func(ctx context.Context) error) {
	h.t.Helper()
	ctx, cancel := h.within()
	defer cancel()
	require.NoError(h.t, fn(ctx), "brokertest: %s", what)
}

func (h *harness) closeSource(src brokers.Source) {
	h.t.Helper()
	var err error
	h.closeOnce(src, func(e error) { err = e })
	require.NoError(h.t, err, "brokertest: Close")
}

// envelopeOf rebuilds the envelope of a received message.
func (h *harness) envelopeOf(m brokers.Message) wire.Envelope {
	h.t.Helper()
	env, err := wire.FromHeaders(m.Headers)
	require.NoError(h.t, err, "brokertest: the headers of a received message cannot be read")
	env.Topic, env.Key, env.Payload = m.Topic, m.Key, m.Body
	return env
}

// deadLetters reads n messages from the dead-letter destination and
// acknowledges them.
func (h *harness) deadLetters(n int) []brokers.Message {
	h.t.Helper()
	src := h.subscribe(h.top.DeadLetters)
	out := make([]brokers.Message, 0, n)
	for i := range n {
		m := h.receive(src, fmt.Sprintf("dead letter %d of %d", i+1, n))
		h.settle("Ack of a dead letter", m.Settler.Ack)
		out = append(out, m)
	}
	h.closeSource(src)
	return out
}

// config is the consumer configuration of the kit: fast retries, quiet
// logs, generous settle and drain timeouts.
func (h *harness) config() brokers.Config {
	cfg := brokers.DefaultConfig()
	cfg.Name = "brokertest"
	cfg.MaxConcurrency = 4
	cfg.MaxInFlight = 16
	cfg.Backoff = outbox.Backoff{Base: time.Millisecond, Max: 4 * time.Millisecond}
	cfg.SettleTimeout = h.deadline
	cfg.DrainTimeout = h.deadline
	cfg.Logger = slog.New(slog.DiscardHandler)
	return cfg
}

// call is one handler call.
type call struct {
	Event   events.Notification[Payload]
	Lineage events.Lineage
	Ctx     context.Context
	Err     error
}

// recorder records handler calls and lets the test wait for a condition
// on them.
type recorder struct {
	mu      sync.Mutex
	calls   []call
	changed chan struct{}
}

func newRecorder() *recorder { return &recorder{changed: make(chan struct{})} }

func (r *recorder) add(c call) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, c)
	close(r.changed)
	r.changed = make(chan struct{})
}

func (r *recorder) snapshot() []call {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.calls)
}

// wait waits until cond holds for the calls, and returns them.
func (r *recorder) wait(h *harness, what string, cond func([]call) bool) []call {
	h.t.Helper()
	timer := time.NewTimer(h.deadline)
	defer timer.Stop()
	for {
		r.mu.Lock()
		calls, ch := slices.Clone(r.calls), r.changed
		r.mu.Unlock()
		if cond(calls) {
			return calls
		}
		select {
		case <-ch:
		case <-timer.C:
			require.FailNow(h.t, "brokertest: timed out waiting for "+what, "%d handler calls so far", len(calls))
		case <-h.ctx.Done():
			require.FailNow(h.t, "brokertest: test ended waiting for "+what)
		}
	}
}

// succeeded returns the IDs handled successfully, with their count.
func succeeded(calls []call) map[uuid.UUID]int {
	ok := make(map[uuid.UUID]int)
	for _, c := range calls {
		if c.Err == nil {
			ok[c.Event.ID]++
		}
	}
	return ok
}

func allSucceeded(ids ...uuid.UUID) func([]call) bool {
	return func(calls []call) bool {
		ok := succeeded(calls)
		for _, id := range ids {
			if ok[id] == 0 {
				return false
			}
		}
		return true
	}
}

// handler returns a handler that calls behave (if not nil) and records the
// call with its result.
func (h *harness) handler(rec *recorder, behave func(ctx context.Context, ev events.Notification[Payload]) error) func(context.Context, events.Event) error {
	return func(ctx context.Context, ev events.Event) error {
		n, ok := ev.(events.Notification[Payload])
		if !ok {
			return fmt.Errorf("brokertest: unexpected event %T", ev)
		}
		var err error
		if behave != nil {
			err = behave(ctx, n)
		}
		lin, _ := events.LineageFrom(ctx)
		rec.add(call{Event: n, Lineage: lin, Ctx: ctx, Err: err})
		return err
	}
}

// running is a consumer running in the background.
type running struct {
	c      *brokers.Consumer
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	err    error
}

// start runs a consumer of the topic until stop (or the end of the test).
func (h *harness) start(cfg brokers.Config, handle func(context.Context, events.Event) error) *running {
	h.t.Helper()
	c, err := brokers.NewConsumer(h.top.Subscriber, h.dec, handle, cfg)
	require.NoError(h.t, err)
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{c: c, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- c.Run(ctx) }()
	h.t.Cleanup(func() { _ = r.stop(h) })
	return r
}

// stop cancels the consumer and waits for Run to return.
func (r *running) stop(h *harness) error {
	r.once.Do(func() {
		r.cancel()
		timer := time.NewTimer(2 * h.deadline)
		defer timer.Stop()
		select {
		case r.err = <-r.done:
		case <-timer.C:
			r.err = errors.New("brokertest: Run did not return after its context was cancelled")
			h.t.Error(r.err)
		}
	})
	return r.err
}

// ---------------------------------------------------------------------------
// The transport on its own.

func fullEnvelope(h *harness) wire.Envelope {
	env := h.event("k-round", 1)
	env.CorrelationID = "corr-round-trip"
	env.CausationID = "cause-round-trip"
	env.SetHeader(wire.HeaderTraceparent, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	env.SetHeader(wire.HeaderTracestate, "vendor=opaque")
	env.SetHeader("x-tenant", "acme")
	return env
}

func testRoundTrip(h *harness) {
	t := h.t
	sent := fullEnvelope(h)
	h.send(sent)

	src := h.subscribe(h.top.Subscriber)
	m := h.receive(src, "the message sent")
	assert.Equal(t, h.top.Name, m.Topic, "Message.Topic")
	assert.Equal(t, sent.Key, m.Key, "Message.Key")
	assert.Equal(t, sent.Payload, m.Body, "Message.Body")
	assert.Equal(t, 1, max(m.Attempt, 1), "Message.Attempt of a first delivery")

	got := h.envelopeOf(m)
	assert.Equal(t, sent.ID, got.ID, "event id")
	assert.Equal(t, sent.Name, got.Name, "event name")
	assert.True(t, sent.Timestamp.Equal(got.Timestamp), "timestamp: sent %v, got %v", sent.Timestamp, got.Timestamp)
	assert.Equal(t, sent.CorrelationID, got.CorrelationID, "correlation id")
	assert.Equal(t, sent.CausationID, got.CausationID, "causation id")
	assert.Equal(t, sent.ContentType, got.ContentType, "content type")
	for _, k := range []string{wire.HeaderTraceparent, wire.HeaderTracestate, "x-tenant"} {
		assert.Equal(t, sent.Header(k), got.Header(k), "header %s", k)
	}

	ev, err := h.dec.Decode(got)
	require.NoError(t, err, "the received message does not decode")
	n, ok := ev.(events.Notification[Payload])
	require.True(t, ok, "decoded %T", ev)
	assert.Equal(t, Payload{Seq: 1}, n.Payload)
	assert.Equal(t, sent.Key, n.Key)
	assert.Equal(t, h.top.Name, n.Topic)
	h.settle("Ack", m.Settler.Ack)
}

func testSettleOnce(h *harness) {
	t := h.t
	h.send(h.event("", 1))
	src := h.subscribe(h.top.Subscriber)
	m := h.receive(src, "the message sent")
	h.settle("Ack", m.Settler.Ack)

	ctx, cancel := h.within()
	defer cancel()
	require.ErrorIs(t, m.Settler.Ack(ctx), brokers.ErrSettled, "a second Ack")
	require.ErrorIs(t, m.Settler.Retry(ctx, 0), brokers.ErrSettled, "Retry after Ack")
	require.ErrorIs(t, m.Settler.DeadLetter(ctx, brokers.DeadLetter{Reason: brokers.ReasonRejected}), brokers.ErrSettled,
		"DeadLetter after Ack")
}

func testRetryRedelivers(h *harness) {
	t := h.t
	sent := h.event("", 1)
	h.send(sent)
	src := h.subscribe(h.top.Subscriber)

	first := h.receive(src, "the first delivery")
	h.settle("Retry", func(ctx context.Context) error { return first.Settler.Retry(ctx, 0) })
	second := h.receive(src, "the delivery after Retry(0)")
	assert.Equal(t, sent.ID, h.envelopeOf(second).ID, "the message delivered after Retry")
	assert.Equal(t, max(first.Attempt, 1)+1, second.Attempt, "Attempt after Retry")

	h.settle("Retry with a delay", func(ctx context.Context) error { return second.Settler.Retry(ctx, 5*time.Millisecond) })
	third := h.receive(src, "the delivery after Retry(5ms)")
	assert.Equal(t, sent.ID, h.envelopeOf(third).ID, "the message delivered after a delayed Retry")
	assert.Equal(t, second.Attempt+1, third.Attempt, "Attempt after a delayed Retry")
	h.settle("Ack", third.Settler.Ack)
}

func testDeadLetterHeaders(h *harness) {
	t := h.t
	sent := fullEnvelope(h)
	h.send(sent)
	src := h.subscribe(h.top.Subscriber)
	m := h.receive(src, "the message sent")
	d := brokers.DeadLetter{
		Reason:   brokers.ReasonRejected,
		Err:      errors.New("brokertest: refused"),
		Attempts: 3,
		Consumer: "brokertest",
		Topic:    m.Topic,
		Time:     time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC),
	}
	h.settle("DeadLetter", func(ctx context.Context) error { return m.Settler.DeadLetter(ctx, d) })

	dead := h.deadLetters(1)[0]
	assert.Equal(t, sent.Payload, dead.Body, "the dead letter's body")
	assert.Equal(t, sent.Key, dead.Key, "the dead letter's key")
	for k, v := range d.Headers() {
		assert.Equal(t, v, dead.Headers[k], "dead-letter header %s", k)
	}
	got := h.envelopeOf(dead)
	assert.Equal(t, sent.ID, got.ID, "the dead letter's event id")
	assert.Equal(t, sent.Name, got.Name, "the dead letter's event name")
	assert.Equal(t, sent.CorrelationID, got.CorrelationID, "the dead letter's correlation id")
	assert.Equal(t, sent.Header(wire.HeaderTraceparent), got.Header(wire.HeaderTraceparent), "the dead letter's traceparent")

	ctx, cancel := h.within()
	defer cancel()
	require.ErrorIs(t, m.Settler.Ack(ctx), brokers.ErrSettled, "Ack after DeadLetter")
}

func testCloseReleases(h *harness) {
	t := h.t
	var sent []wire.Envelope
	for i := range 5 {
		sent = append(sent, h.event("k-"+strconv.Itoa(i), i))
	}
	h.send(sent...)

	// A consumer takes three messages and stops without settling them.
	a := h.subscribe(h.top.Subscriber)
	held := make(map[uuid.UUID]int)
	var last brokers.Message
	for i := range 3 {
		last = h.receive(a, fmt.Sprintf("message %d", i+1))
		held[h.envelopeOf(last).ID] = max(last.Attempt, 1)
	}
	h.closeSource(a)
	ctx, cancel := h.within()
	defer cancel()
	require.ErrorIs(t, last.Settler.Ack(ctx), brokers.ErrClosed, "Ack after the Source was closed")

	// The next consumer receives all five: nothing was lost.
	b := h.subscribe(h.top.Subscriber)
	seen := make(map[uuid.UUID]bool)
	for len(seen) < len(sent) {
		m := h.receive(b, fmt.Sprintf("message %d of %d after the restart", len(seen)+1, len(sent)))
		id := h.envelopeOf(m).ID
		if prev, ok := held[id]; ok && h.tr.Features.CountsRedeliveries {
			assert.Greater(t, m.Attempt, prev, "Attempt of a message released by Close")
		}
		seen[id] = true
		h.settle("Ack", m.Settler.Ack)
	}
	for _, env := range sent {
		assert.True(t, seen[env.ID], "event %d was lost", env.ID)
	}
}

// ---------------------------------------------------------------------------
// Through a consumer.

func testConsumerDecodes(h *harness) {
	t := h.t
	sent := []wire.Envelope{h.event("k-1", 1), h.event("k-2", 2), h.event("", 3)}
	h.send(sent...)
	rec := newRecorder()
	r := h.start(h.config(), h.handler(rec, nil))
	calls := rec.wait(h, "every event handled", allSucceeded(sent[0].ID, sent[1].ID, sent[2].ID))
	byID := make(map[uuid.UUID]events.Notification[Payload])
	for _, c := range calls {
		byID[c.Event.ID] = c.Event
	}
	for i, env := range sent {
		n := byID[env.ID]
		assert.Equal(t, env.Name, n.Name, "event %d name", i)
		assert.Equal(t, h.top.Name, n.Topic, "event %d topic", i)
		assert.Equal(t, env.Key, n.Key, "event %d key", i)
		assert.True(t, env.Timestamp.Equal(n.Timestamp), "event %d timestamp", i)
		assert.Equal(t, Payload{Seq: i + 1}, n.Payload, "event %d payload", i)
	}
	require.NoError(t, r.stop(h))
	c := r.c.Counters()
	assert.EqualValues(t, 3, c.Handled, "Handled")
	assert.Zero(t, c.DeadLettered, "DeadLettered")
}

// testForeignProducer sends what python-cqrs publishes: a bare JSON body
// and no headers at all.
func testForeignProducer(h *harness) {
	t := h.t
	id := uuid.Must(uuid.NewV7())
	body := fmt.Sprintf(`{"event_id":%q,"event_timestamp":"2024-05-01T12:34:56.123456","event_name":%q,"topic":%q,"payload":{"seq":7}}`,
		id, EventName, h.top.Name)
	h.send(wire.Envelope{Topic: h.top.Name, Payload: []byte(body)})
	rec := newRecorder()
	h.start(h.config(), h.handler(rec, nil))
	calls := rec.wait(h, "the bare event handled", allSucceeded(id))
	c := calls[0]
	assert.Equal(t, Payload{Seq: 7}, c.Event.Payload)
	assert.Equal(t, time.Date(2024, 5, 1, 12, 34, 56, 123456000, time.UTC), c.Event.Timestamp)
	assert.Equal(t, events.Lineage{CorrelationID: id.String(), CausationID: id.String()}, c.Lineage,
		"an event without a correlation id starts one: its own id")
}

func testOrderPerKey(h *harness) {
	t := h.t
	const keys, perKey, failing = 4, 20, 5
	var sent []wire.Envelope
	for seq := range perKey {
		for k := range keys {
			sent = append(sent, h.event("k-"+strconv.Itoa(k), seq))
		}
	}
	h.send(sent...)

	var mu sync.Mutex
	failed := make(map[string]bool)
	rec := newRecorder()
	h.start(h.config(), h.handler(rec, func(_ context.Context, n events.Notification[Payload]) error {
		mu.Lock()
		defer mu.Unlock()
		if n.Payload.Seq == failing && !failed[n.Key] {
			failed[n.Key] = true
			return errors.New("brokertest: transient failure")
		}
		return nil
	}))
	ids := make([]uuid.UUID, len(sent))
	for i, env := range sent {
		ids[i] = env.ID
	}
	calls := rec.wait(h, "every event handled", allSucceeded(ids...))

	perKeyCalls := make(map[string][]call)
	for _, c := range calls {
		perKeyCalls[c.Event.Key] = append(perKeyCalls[c.Event.Key], c)
	}
	for k := range keys {
		key := "k-" + strconv.Itoa(k)
		var want, got []string
		for seq := range perKey {
			if seq == failing {
				want = append(want, "5:fail")
			}
			want = append(want, strconv.Itoa(seq))
		}
		for _, c := range perKeyCalls[key] {
			s := strconv.Itoa(c.Event.Payload.Seq)
			if c.Err != nil {
				s += ":fail"
			}
			got = append(got, s)
		}
		assert.Equal(t, want, got, "calls of key %s, in order: a failed event is retried before any later event of its key", key)
	}
}

func testRedeliveryAfterFailure(h *harness) {
	t := h.t
	keyed, unkeyed := h.event("k-1", 1), h.event("", 2)
	h.send(keyed, unkeyed)
	var mu sync.Mutex
	seen := make(map[uuid.UUID]int)
	rec := newRecorder()
	r := h.start(h.config(), h.handler(rec, func(_ context.Context, n events.Notification[Payload]) error {
		mu.Lock()
		defer mu.Unlock()
		if seen[n.ID]++; seen[n.ID] == 1 {
			return errors.New("brokertest: first attempt fails")
		}
		return nil
	}))
	calls := rec.wait(h, "both events handled after a failure", allSucceeded(keyed.ID, unkeyed.ID))
	require.NoError(t, r.stop(h))
	attempts := make(map[uuid.UUID]int)
	for _, c := range calls {
		attempts[c.Event.ID]++
	}
	assert.Equal(t, 2, attempts[keyed.ID], "calls for the keyed event (retried in place)")
	assert.Equal(t, 2, attempts[unkeyed.ID], "calls for the unkeyed event (redelivered by the broker)")
	c := r.c.Counters()
	assert.EqualValues(t, 2, c.Retried, "Retried")
	assert.EqualValues(t, 2, c.Handled, "Handled")
}

func testDeadLetterAfterMaxDeliveries(h *harness) {
	t := h.t
	keyed, unkeyed := h.event("k-1", 1), h.event("", 2)
	h.send(keyed, unkeyed)
	rec := newRecorder()
	cfg := h.config()
	cfg.MaxDeliveries = 3
	r := h.start(cfg, h.handler(rec, func(_ context.Context, n events.Notification[Payload]) error {
		return fmt.Errorf("brokertest: handler down for seq %d", n.Payload.Seq)
	}))

	dead := h.deadLetters(2)
	require.NoError(t, r.stop(h))
	byID := make(map[uuid.UUID]brokers.Message)
	for _, m := range dead {
		byID[h.envelopeOf(m).ID] = m
	}
	for _, env := range []wire.Envelope{keyed, unkeyed} {
		m, ok := byID[env.ID]
		if !assert.True(t, ok, "event seq %s was not dead-lettered", env.Key) {
			continue
		}
		assert.Equal(t, string(brokers.ReasonExhausted), m.Headers[brokers.HeaderDeadLetterReason], "reason")
		assert.Equal(t, "3", m.Headers[brokers.HeaderDeadLetterAttempts], "attempts")
		assert.Contains(t, m.Headers[brokers.HeaderDeadLetterError], "brokertest: handler down", "error")
		assert.Equal(t, "brokertest", m.Headers[brokers.HeaderDeadLetterConsumer], "consumer")
		assert.Equal(t, h.top.Name, m.Headers[brokers.HeaderDeadLetterTopic], "topic")
		assert.Equal(t, env.Payload, m.Body, "body")
		assert.Equal(t, env.Key, m.Key, "key")
	}
	counts := make(map[uuid.UUID]int)
	for _, c := range rec.snapshot() {
		counts[c.Event.ID]++
	}
	assert.Equal(t, 3, counts[keyed.ID], "handler calls for the keyed event")
	assert.Equal(t, 3, counts[unkeyed.ID], "handler calls for the unkeyed event")
	c := r.c.Counters()
	assert.EqualValues(t, 2, c.DeadLettered, "DeadLettered")
	assert.EqualValues(t, 4, c.Retried, "Retried")
}

func testDeadLetterUndecodable(h *harness) {
	t := h.t
	malformed := h.event("k-1", 1)
	malformed.Payload = []byte("not json")
	unknown := h.named("brokertest.unknown", "k-1", Payload{Seq: 2})
	good := h.event("k-1", 3)
	h.send(malformed, unknown, good)

	rec := newRecorder()
	r := h.start(h.config(), h.handler(rec, nil))
	// The good event, behind the two bad ones on its key, is handled: the
	// bad ones did not block the key.
	rec.wait(h, "the event behind two undecodable ones handled", allSucceeded(good.ID))
	dead := h.deadLetters(2)
	require.NoError(t, r.stop(h))

	byID := make(map[uuid.UUID]brokers.Message)
	for _, m := range dead {
		byID[h.envelopeOf(m).ID] = m
	}
	for name, env := range map[string]wire.Envelope{"malformed": malformed, "unknown": unknown} {
		m, ok := byID[env.ID]
		if !assert.True(t, ok, "the %s event was not dead-lettered", name) {
			continue
		}
		assert.Equal(t, string(brokers.ReasonUndecodable), m.Headers[brokers.HeaderDeadLetterReason], "%s: reason", name)
		assert.Equal(t, "1", m.Headers[brokers.HeaderDeadLetterAttempts], "%s: attempts", name)
		assert.NotEmpty(t, m.Headers[brokers.HeaderDeadLetterError], "%s: error", name)
		assert.Equal(t, env.Payload, m.Body, "%s: body", name)
	}
	assert.Len(t, rec.snapshot(), 1, "the handler is called for the good event only")
	assert.EqualValues(t, 2, r.c.Counters().DeadLettered, "DeadLettered")
}

func testConcurrencyBound(h *harness) {
	t := h.t
	const limit, total = 4, 12
	var sent []wire.Envelope
	ids := make([]uuid.UUID, total)
	for i := range total {
		sent = append(sent, h.event("k-"+strconv.Itoa(i), i))
		ids[i] = sent[i].ID
	}
	h.send(sent...)

	var now, peak atomic.Int64
	gate := make(chan struct{})
	started := newRecorder()
	rec := newRecorder()
	cfg := h.config()
	cfg.MaxConcurrency = limit
	h.start(cfg, h.handler(rec, func(ctx context.Context, n events.Notification[Payload]) error {
		n1 := now.Add(1)
		defer now.Add(-1)
		for p := peak.Load(); n1 > p && !peak.CompareAndSwap(p, n1); p = peak.Load() {
		}
		started.add(call{Event: n})
		select {
		case <-gate:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}))
	// The first handlers block until the limit is reached: it is reached.
	started.wait(h, fmt.Sprintf("%d handlers running at once", limit), func(c []call) bool { return len(c) >= limit })
	close(gate)
	rec.wait(h, "every event handled", allSucceeded(ids...))
	assert.LessOrEqual(t, peak.Load(), int64(limit), "handlers running at once")
	assert.Equal(t, int64(limit), peak.Load(), "the limit is reached")
}

func testShutdownFinishes(h *harness) {
	t := h.t
	const limit, total = 3, 6
	var sent []wire.Envelope
	for i := range total {
		sent = append(sent, h.event("k-"+strconv.Itoa(i), i))
	}
	h.send(sent...)

	gate := make(chan struct{})
	started := newRecorder()
	recA := newRecorder()
	cfg := h.config()
	cfg.MaxConcurrency = limit
	cfg.MaxInFlight = total
	a := h.start(cfg, h.handler(recA, func(ctx context.Context, n events.Notification[Payload]) error {
		started.add(call{Event: n})
		<-gate // finishes even though Run's context is done
		return nil
	}))
	started.wait(h, "handlers in flight", func(c []call) bool { return len(c) >= limit })
	// Stop A: no handler starts from now on; those in flight may finish.
	a.cancel()
	close(gate)
	require.NoError(t, a.stop(h))
	c := a.c.Counters()
	assert.EqualValues(t, limit, c.Handled, "A: Handled: the handlers in flight finished and were acknowledged")
	assert.Equal(t, c.Received, c.Handled+c.Released, "A: every message received was acknowledged or released")

	doneByA := succeeded(recA.snapshot())
	recB := newRecorder()
	b := h.start(h.config(), h.handler(recB, nil))
	var rest []uuid.UUID
	for _, env := range sent {
		if doneByA[env.ID] == 0 {
			rest = append(rest, env.ID)
		}
	}
	require.Len(t, rest, total-limit)
	rec := recB.wait(h, "the unfinished events handled after the restart", allSucceeded(rest...))
	require.NoError(t, b.stop(h))
	for _, c := range rec {
		assert.Zero(t, doneByA[c.Event.ID], "event %d was acknowledged by A and delivered again", c.Event.Payload.Seq)
	}
}

func testShutdownReleases(h *harness) {
	t := h.t
	const total = 4
	var sent []wire.Envelope
	ids := make([]uuid.UUID, total)
	for i := range total {
		sent = append(sent, h.event("k-"+strconv.Itoa(i), i))
		ids[i] = sent[i].ID
	}
	h.send(sent...)

	started := newRecorder()
	recA := newRecorder()
	cfg := h.config()
	cfg.DrainTimeout = 0 // cancel the handlers at once
	a := h.start(cfg, h.handler(recA, func(ctx context.Context, n events.Notification[Payload]) error {
		started.add(call{Event: n})
		<-ctx.Done() // a handler that never finishes on its own
		return ctx.Err()
	}))
	started.wait(h, "a handler in flight", func(c []call) bool { return len(c) >= 1 })
	require.NoError(t, a.stop(h))
	c := a.c.Counters()
	assert.Zero(t, c.Handled, "A: Handled")
	assert.Zero(t, c.Retried, "A: a cancellation at shutdown is not a failure")
	assert.Equal(t, c.Received, c.Released, "A: every message received was released")

	recB := newRecorder()
	h.start(h.config(), h.handler(recB, nil))
	recB.wait(h, "every event handled after the restart", allSucceeded(ids...))
}

func testAtLeastOnceAcrossRestart(h *harness) {
	const total = 10
	var sent []wire.Envelope
	ids := make([]uuid.UUID, total)
	for i := range total {
		sent = append(sent, h.event("k-"+strconv.Itoa(i%3), i))
		ids[i] = sent[i].ID
	}
	h.send(sent...)

	// A consumer whose handler fails the first attempt of every other
	// event, stopped half way.
	recA := newRecorder()
	var mu sync.Mutex
	tried := make(map[uuid.UUID]bool)
	a := h.start(h.config(), h.handler(recA, func(_ context.Context, n events.Notification[Payload]) error {
		mu.Lock()
		defer mu.Unlock()
		if n.Payload.Seq%2 == 1 && !tried[n.ID] {
			tried[n.ID] = true
			return errors.New("brokertest: flaky")
		}
		return nil
	}))
	recA.wait(h, "some events handled", func(c []call) bool { return len(succeeded(c)) >= total/2 })
	require.NoError(h.t, a.stop(h))

	// Another consumer: every event is handled, by one or the other.
	recB := newRecorder()
	b := h.start(h.config(), h.handler(recB, nil))
	doneByA := succeeded(recA.snapshot())
	var rest []uuid.UUID
	for _, id := range ids {
		if doneByA[id] == 0 {
			rest = append(rest, id)
		}
	}
	recB.wait(h, "every event not handled by A handled by B", allSucceeded(rest...))
	require.NoError(h.t, b.stop(h))
}

func testDuplicateAbsorbed(h *harness) {
	t := h.t
	dup := h.event("k-1", 1)
	sentinel := h.event("k-1", 2)
	h.send(dup)
	h.send(dup) // a relay sending again after a crash
	h.send(sentinel)

	store := inbox.NewMemoryStore(inbox.MemoryOptions{})
	cfg := h.config()
	cfg.Inbox, cfg.Transactor = store, store
	rec := newRecorder()
	r := h.start(cfg, h.handler(rec, nil))
	// The sentinel follows the duplicate on its key: once it is handled,
	// the duplicate has been processed.
	calls := rec.wait(h, "the event after the duplicate handled", allSucceeded(sentinel.ID))
	require.NoError(t, r.stop(h))
	assert.Equal(t, 1, succeeded(calls)[dup.ID], "handler calls for the event sent twice")
	if !h.tr.Features.DeduplicatesPublishes {
		assert.EqualValues(t, 1, r.c.Counters().Duplicates, "Duplicates")
	}
	seen, err := store.Seen(h.ctx, "brokertest", dup.ID)
	require.NoError(t, err)
	assert.True(t, seen, "the inbox records the event")
}

// testBatchedTransactions runs a consumer with MaxBatch over the memory
// inbox: whatever the batches, every event's effect commits exactly once,
// in order per key, a failing event is retried on its own, and a duplicate
// publish is absorbed.
func testBatchedTransactions(h *harness) {
	t := h.t
	const keys, perKey, failing = 6, 15, 7
	var sent []wire.Envelope
	for seq := range perKey {
		for k := range keys {
			sent = append(sent, h.event("k-"+strconv.Itoa(k), seq))
		}
	}
	h.send(sent...)
	h.send(sent[10]) // a relay sending again after a crash

	store := inbox.NewMemoryStore(inbox.MemoryOptions{})
	cfg := h.config()
	cfg.Inbox, cfg.Transactor = store, store
	cfg.MaxConcurrency, cfg.MaxBatch = 2, 8
	var (
		mu      sync.Mutex
		failed  bool
		applied = make(map[uuid.UUID]int)
		order   = make(map[string][]int)
		all     = make(chan struct{})
	)
	rec := newRecorder()
	r := h.start(cfg, h.handler(rec, func(ctx context.Context, n events.Notification[Payload]) error {
		mu.Lock()
		fail := n.Key == "k-2" && n.Payload.Seq == failing && !failed
		failed = failed || fail
		mu.Unlock()
		if fail {
			return errors.New("brokertest: transient failure")
		}
		tx, ok := outbox.TxFromContext[*outbox.MemoryTx](ctx)
		if !ok {
			return errors.New("brokertest: no transaction in the handler's context")
		}
		return tx.OnEnd(func(committed bool) {
			if !committed {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			applied[n.ID]++
			order[n.Key] = append(order[n.Key], n.Payload.Seq)
			if len(applied) == len(sent) {
				close(all)
			}
		})
	}))
	select {
	case <-all:
	case <-time.After(h.deadline):
		t.Fatalf("brokertest: not every event applied within %v", h.deadline)
	}
	require.NoError(t, r.stop(h))
	mu.Lock()
	defer mu.Unlock()
	for _, env := range sent {
		assert.Equal(t, 1, applied[env.ID], "effects of event %s", env.ID)
	}
	want := make([]int, perKey)
	for seq := range want {
		want[seq] = seq
	}
	for k := range keys {
		assert.Equal(t, want, order["k-"+strconv.Itoa(k)], "effects of key k-%d, in order", k)
	}
	assert.True(t, failed, "the failure happened")
}

type extractedKey struct{}

func testCorrelation(h *harness) {
	t := h.t
	withLineage := h.event("k-1", 1)
	withLineage.CorrelationID, withLineage.CausationID = "corr-42", "request-7"
	traceparent := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	withLineage.SetHeader(wire.HeaderTraceparent, traceparent)
	without := h.event("k-2", 2)
	h.send(withLineage, without)

	var mu sync.Mutex
	extracted := make(map[string]map[string]string)
	cfg := h.config()
	cfg.Extract = func(ctx context.Context, headers map[string]string) context.Context {
		mu.Lock()
		defer mu.Unlock()
		extracted[headers[wire.HeaderTraceparent]] = maps.Clone(headers)
		return context.WithValue(ctx, extractedKey{}, headers[wire.HeaderTraceparent])
	}
	rec := newRecorder()
	h.start(cfg, h.handler(rec, nil))
	calls := rec.wait(h, "both events handled", allSucceeded(withLineage.ID, without.ID))
	for _, c := range calls {
		switch c.Event.ID {
		case withLineage.ID:
			assert.Equal(t, events.Lineage{CorrelationID: "corr-42", CausationID: withLineage.ID.String()}, c.Lineage,
				"the correlation continues; the event is the cause")
			assert.Equal(t, traceparent, c.Ctx.Value(extractedKey{}), "the handler's context comes from Extract")
		case without.ID:
			assert.Equal(t, events.Lineage{CorrelationID: without.ID.String(), CausationID: without.ID.String()}, c.Lineage,
				"an event without a correlation id starts one: its own id")
		}
	}
	mu.Lock()
	defer mu.Unlock()
	assert.Contains(t, extracted, traceparent, "Extract sees the traceparent header")
}
