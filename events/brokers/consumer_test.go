package brokers_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gocqrs/cqrs/bootstrap"
	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/events/brokers"
	"github.com/gocqrs/cqrs/events/inbox"
	"github.com/gocqrs/cqrs/events/outbox"
	"github.com/gocqrs/cqrs/events/wire"
	"github.com/gocqrs/cqrs/mediator"
)

func TestDefaultConfigIsValid(t *testing.T) {
	t.Parallel()
	require.NoError(t, brokers.DefaultConfig().Validate())
}

func TestConfigValidateReportsEveryProblem(t *testing.T) {
	t.Parallel()
	cfg := brokers.Config{
		MaxInFlight:   -1,
		Backoff:       outbox.Backoff{Base: -time.Second, Max: -2 * time.Second, Jitter: math.NaN()},
		DrainTimeout:  -1,
		Inbox:         inbox.NewMemoryStore(inbox.MemoryOptions{}),
		SettleTimeout: 0,
	}
	err := cfg.Validate()
	require.ErrorIs(t, err, brokers.ErrInvalidConfig)
	for _, want := range []string{
		"MaxConcurrency", "MaxInFlight", "MaxDeliveries", "Backoff.Base", "Backoff.Max", "Backoff.Jitter",
		"SettleTimeout", "DrainTimeout", "Inbox requires a Transactor", "Inbox requires a Name",
	} {
		assert.Contains(t, err.Error(), want)
	}
	var joined interface{ Unwrap() []error }
	require.ErrorAs(t, err, &joined)
	for _, e := range joined.Unwrap() {
		assert.ErrorIs(t, e, brokers.ErrInvalidConfig)
	}
}

func TestConfigMaxInFlight(t *testing.T) {
	t.Parallel()
	cfg := brokers.DefaultConfig()
	cfg.MaxConcurrency = 8
	cfg.MaxInFlight = 4
	require.ErrorIs(t, cfg.Validate(), brokers.ErrInvalidConfig)
	cfg.MaxInFlight = 8
	require.NoError(t, cfg.Validate())
	cfg.MaxInFlight = 0
	require.NoError(t, cfg.Validate())
}

func TestConfigNilInterfaces(t *testing.T) {
	t.Parallel()
	cfg := brokers.DefaultConfig()
	cfg.Name = "c"
	var store *inbox.MemoryStore
	cfg.Inbox = store
	cfg.Transactor = outbox.TransactorFunc(nil)
	err := cfg.Validate()
	require.ErrorIs(t, err, brokers.ErrInvalidConfig)
	assert.Contains(t, err.Error(), "Inbox is a nil")
	assert.Contains(t, err.Error(), "Transactor is a nil")
}

func TestNewConsumerReportsEveryProblem(t *testing.T) {
	t.Parallel()
	cfg := brokers.DefaultConfig()
	cfg.MaxConcurrency = 0
	var sub brokers.SubscriberFunc
	_, err := brokers.NewConsumer(sub, nil, nil, cfg)
	require.ErrorIs(t, err, brokers.ErrInvalidConfig)
	for _, want := range []string{"nil Subscriber", "nil Decoder", "nil handler", "MaxConcurrency"} {
		assert.Contains(t, err.Error(), want)
	}
}

func TestDefaultClassify(t *testing.T) {
	t.Parallel()
	tests := []struct {
		err  error
		want brokers.Action
	}{
		{errBoom, brokers.Retry},
		{fmt.Errorf("%w: %w", brokers.ErrUndecodable, wire.ErrMalformed), brokers.Reject},
		{outbox.Permanent(errBoom), brokers.Reject},
		{fmt.Errorf("wrapped: %w", mediator.ErrHandlerNotFound), brokers.Reject},
		{&brokers.PanicError{Value: "bug"}, brokers.Retry},
		{context.DeadlineExceeded, brokers.Retry},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, brokers.DefaultClassify(tt.err), "%v", tt.err)
	}
}

func TestActionString(t *testing.T) {
	t.Parallel()
	assert.Equal(t, "retry", brokers.Retry.String())
	assert.Equal(t, "reject", brokers.Reject.String())
	assert.Equal(t, "drop", brokers.Drop.String())
	assert.Equal(t, "Action(9)", brokers.Action(9).String())
}

func TestDeadLetterHeaders(t *testing.T) {
	t.Parallel()
	at := time.Date(2030, 1, 2, 3, 4, 5, 6, time.FixedZone("X", 3600))
	long := strings.Repeat("a", brokers.MaxErrorLen-1) + "é" // the cut falls inside é
	h := brokers.DeadLetter{
		Reason: brokers.ReasonExhausted, Err: errors.New(long), Attempts: 7, Consumer: "billing", Topic: "orders", Time: at,
	}.Headers()
	assert.Equal(t, map[string]string{
		brokers.HeaderDeadLetterReason:   "exhausted",
		brokers.HeaderDeadLetterError:    strings.Repeat("a", brokers.MaxErrorLen-1),
		brokers.HeaderDeadLetterAttempts: "7",
		brokers.HeaderDeadLetterConsumer: "billing",
		brokers.HeaderDeadLetterTopic:    "orders",
		brokers.HeaderDeadLetterTime:     "2030-01-02T02:04:05.000000006Z",
	}, h)

	h = brokers.DeadLetter{Reason: brokers.ReasonRejected, Attempts: 1, Topic: "orders"}.Headers()
	assert.Equal(t, map[string]string{
		brokers.HeaderDeadLetterReason:   "rejected",
		brokers.HeaderDeadLetterAttempts: "1",
		brokers.HeaderDeadLetterTopic:    "orders",
	}, h, "no error, consumer or time: no header for them")
}

func TestRunTwice(t *testing.T) {
	t.Parallel()
	src := newFakeSource()
	subscribed := newSignal()
	sub := brokers.SubscriberFunc(func(context.Context) (brokers.Source, error) {
		subscribed.fire()
		return src, nil
	})
	c, err := brokers.NewConsumer(sub, newDecoder(t), func(context.Context, events.Event) error { return nil }, testConfig())
	require.NoError(t, err)
	assert.Equal(t, "test", c.Name())
	stop := runConsumer(t, c)
	waitFor(t, subscribed.ch, "the first Run to subscribe")
	require.ErrorIs(t, c.Run(t.Context()), brokers.ErrRunning)
	require.NoError(t, stop())
	assert.True(t, src.closed.fired(), "Run closes its Source")

	// It may run again once stopped: it subscribes again.
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	require.NoError(t, c.Run(ctx))
}

func TestSubscribeFailure(t *testing.T) {
	t.Parallel()
	handle := func(context.Context, events.Event) error { return nil }
	for name, sub := range map[string]brokers.SubscriberFunc{
		"error":      func(context.Context) (brokers.Source, error) { return nil, errBoom },
		"panic":      func(context.Context) (brokers.Source, error) { panic("bad adapter") },
		"nil source": func(context.Context) (brokers.Source, error) { return nil, nil },
	} {
		c, err := brokers.NewConsumer(sub, newDecoder(t), handle, testConfig())
		require.NoError(t, err)
		err = c.Run(t.Context())
		require.Error(t, err, name)
		assert.Contains(t, err.Error(), "subscribe", name)
	}
	c, err := brokers.NewConsumer(brokers.SubscriberFunc(func(context.Context) (brokers.Source, error) { return nil, errBoom }),
		newDecoder(t), handle, testConfig())
	require.NoError(t, err)
	require.ErrorIs(t, c.Run(t.Context()), errBoom)
}

// A consumer stopped while it subscribes has not failed: Run returns nil,
// as it does for a stop at any later moment.
func TestStopWhileSubscribingIsNotAFailure(t *testing.T) {
	t.Parallel()
	b := brokers.NewMemoryBroker()
	c, err := brokers.NewConsumer(b.Subscriber(brokers.MemorySubscription{Topic: "orders", Group: "g"}), newDecoder(t),
		func(context.Context, events.Event) error { return nil }, testConfig())
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	require.NoError(t, c.Run(ctx), "the memory subscriber fails Subscribe with ctx's error")

	failing, err := brokers.NewConsumer(brokers.SubscriberFunc(func(ctx context.Context) (brokers.Source, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}), newDecoder(t), func(context.Context, events.Event) error { return nil }, testConfig())
	require.NoError(t, err)
	ctx, cancel = context.WithCancel(t.Context())
	go cancel()
	require.NoError(t, failing.Run(ctx))
}

func TestReceiveErrorsAreRetried(t *testing.T) {
	t.Parallel()
	s := newFakeSettler()
	src := newFakeSource(
		fakeResult{err: errBoom},
		fakeResult{err: errBoom},
		fakeResult{msg: message(t, envelope(t, "k", "o-1"), s)},
	)
	var handled atomic.Int32
	c, err := brokers.NewConsumer(src.subscriber(), newDecoder(t), func(context.Context, events.Event) error {
		handled.Add(1)
		return nil
	}, testConfig())
	require.NoError(t, err)
	stop := runConsumer(t, c)
	waitFor(t, s.settled.ch, "the message settled")
	require.NoError(t, stop())
	assert.Equal(t, []string{"ack"}, s.calls())
	assert.EqualValues(t, 1, handled.Load())
	cs := c.Counters()
	assert.EqualValues(t, 2, cs.ReceiveErrors)
	assert.EqualValues(t, 1, cs.Received)
	assert.EqualValues(t, 1, cs.Handled)
}

func TestReceiveFatalErrorEndsRun(t *testing.T) {
	t.Parallel()
	for name, fatal := range map[string]error{
		"closed":    fmt.Errorf("stream deleted: %w", brokers.ErrClosed),
		"permanent": outbox.Permanent(errBoom),
	} {
		s := newFakeSettler()
		started, gate := newSignal(), make(chan struct{})
		// The source fails for good while the first message is being
		// handled: Run lets the handler finish, then returns the error.
		src := newFakeSource(
			fakeResult{msg: message(t, envelope(t, "k", "o-1"), s)},
			fakeResult{err: fatal, after: started.ch},
		)
		c, err := brokers.NewConsumer(src.subscriber(), newDecoder(t), func(context.Context, events.Event) error {
			started.fire()
			<-gate
			return nil
		}, testConfig())
		require.NoError(t, err)
		done := make(chan error, 1)
		go func() { done <- c.Run(t.Context()) }()
		waitFor(t, started.ch, "the handler started")
		close(gate)
		err = <-done
		require.ErrorIs(t, err, fatal, name)
		assert.Equal(t, []string{"ack"}, s.calls(), name)
	}
}

func TestMessageWithoutSettler(t *testing.T) {
	t.Parallel()
	s := newFakeSettler()
	env := envelope(t, "k", "o-1")
	bad := message(t, env, nil)
	src := newFakeSource(fakeResult{msg: bad}, fakeResult{msg: message(t, envelope(t, "k", "o-2"), s)})
	c, err := brokers.NewConsumer(src.subscriber(), newDecoder(t), func(context.Context, events.Event) error { return nil }, testConfig())
	require.NoError(t, err)
	stop := runConsumer(t, c)
	waitFor(t, s.settled.ch, "the next message settled")
	require.NoError(t, stop())
	assert.EqualValues(t, 1, c.Counters().ReceiveErrors)
	assert.EqualValues(t, 1, c.Counters().Handled)
}

func TestAckFailureIsCounted(t *testing.T) {
	t.Parallel()
	s := newFakeSettler()
	s.ackErr = errors.New("connection lost")
	src := newFakeSource(fakeResult{msg: message(t, envelope(t, "k", "o-1"), s)})
	done := newSignal()
	c, err := brokers.NewConsumer(src.subscriber(), newDecoder(t), func(context.Context, events.Event) error {
		done.fire()
		return nil
	}, testConfig())
	require.NoError(t, err)
	stop := runConsumer(t, c)
	waitFor(t, done.ch, "the handler called")
	require.NoError(t, stop())
	assert.Equal(t, []string{"ack"}, s.calls(), "a failed Ack is not repeated")
	assert.EqualValues(t, 1, c.Counters().SettleErrors)
}

func TestDeadLetterFailureUnordered(t *testing.T) {
	t.Parallel()
	s := newFakeSettler()
	s.deadErrs = []error{errors.New("dead-letter topic unavailable")}
	env := envelope(t, "", "o-1")
	env.Payload = []byte("not json")
	src := newFakeSource(fakeResult{msg: message(t, env, s)})
	c, err := brokers.NewConsumer(src.subscriber(), newDecoder(t), func(context.Context, events.Event) error { return nil }, testConfig())
	require.NoError(t, err)
	stop := runConsumer(t, c)
	waitFor(t, s.settled.ch, "the message settled")
	require.NoError(t, stop())
	assert.Equal(t, []string{"dead-letter", "retry"}, s.calls(),
		"an unordered message is handed back to the broker, to be dead-lettered on its next delivery")
	assert.EqualValues(t, 1, c.Counters().SettleErrors)
	assert.Zero(t, c.Counters().DeadLettered)
}

func TestDeadLetterFailureOrdered(t *testing.T) {
	t.Parallel()
	s := newFakeSettler()
	s.deadErrs = []error{errors.New("down"), errors.New("still down")}
	env := envelope(t, "k", "o-1")
	env.Payload = []byte("not json")
	src := newFakeSource(fakeResult{msg: message(t, env, s)})
	c, err := brokers.NewConsumer(src.subscriber(), newDecoder(t), func(context.Context, events.Event) error { return nil }, testConfig())
	require.NoError(t, err)
	stop := runConsumer(t, c)
	waitFor(t, s.settled.ch, "the message settled")
	require.NoError(t, stop())
	assert.Equal(t, []string{"dead-letter", "dead-letter", "dead-letter"}, s.calls(),
		"an ordered message keeps its key until it is dead-lettered")
	assert.EqualValues(t, 2, c.Counters().SettleErrors)
	assert.EqualValues(t, 1, c.Counters().DeadLettered)
}

func TestDeadLetterFailureReleasedAtShutdown(t *testing.T) {
	t.Parallel()
	s := newFakeSettler()
	s.deadErrs = []error{errors.New("down")}
	env := envelope(t, "k", "o-1")
	env.Payload = []byte("not json")
	src := newFakeSource(fakeResult{msg: message(t, env, s)})
	cfg := testConfig()
	cfg.Backoff = outbox.Backoff{Base: time.Hour, Max: time.Hour}
	c, err := brokers.NewConsumer(src.subscriber(), newDecoder(t), func(context.Context, events.Event) error { return nil }, cfg)
	require.NoError(t, err)
	stop := runConsumer(t, c)
	// The first DeadLetter fails; the consumer would try again in an hour.
	waitFor(t, s.called.ch, "the first DeadLetter")
	require.NoError(t, stop())
	assert.Equal(t, []string{"dead-letter", "retry"}, s.calls(), "released at shutdown, not after an hour")
	assert.EqualValues(t, 1, c.Counters().Released)
}

// memoryHarness is a MemoryBroker with one subscription on "orders".
type memoryHarness struct {
	t      *testing.T
	broker *brokers.MemoryBroker
	sub    *brokers.MemorySubscriber
}

func newMemoryHarness(t *testing.T) *memoryHarness {
	t.Helper()
	b := brokers.NewMemoryBroker()
	return &memoryHarness{t: t, broker: b, sub: b.Subscriber(brokers.MemorySubscription{Topic: "orders", Group: "test"})}
}

func (h *memoryHarness) send(envs ...wire.Envelope) {
	h.t.Helper()
	require.NoError(h.t, h.broker.Send(h.t.Context(), envs))
}

func (h *memoryHarness) consumer(cfg brokers.Config, handle func(context.Context, events.Event) error) *brokers.Consumer {
	h.t.Helper()
	c, err := brokers.NewConsumer(h.sub, newDecoder(h.t), handle, cfg)
	require.NoError(h.t, err)
	return c
}

// deadLetters receives n messages from the dead-letter topic.
func (h *memoryHarness) deadLetters(n int) []brokers.Message {
	h.t.Helper()
	dlq := h.broker.Subscriber(brokers.MemorySubscription{Topic: "orders.dlq", Group: "operators"})
	src, err := dlq.Subscribe(h.t.Context())
	require.NoError(h.t, err)
	defer func() { require.NoError(h.t, src.Close(context.Background())) }()
	ctx, cancel := context.WithTimeout(h.t.Context(), 30*time.Second)
	defer cancel()
	out := make([]brokers.Message, 0, n)
	for range n {
		m, err := src.Receive(ctx)
		require.NoError(h.t, err)
		require.NoError(h.t, m.Settler.Ack(ctx))
		out = append(out, m)
	}
	return out
}

func TestUnhandledEventIsDeadLettered(t *testing.T) {
	t.Parallel()
	h := newMemoryHarness(t)
	// An EventMediator with no handler for order.placed.
	em, err := bootstrap.Events(nil)
	require.NoError(t, err)
	h.send(envelope(t, "k", "o-1"))
	c := h.consumer(testConfig(), em.Send)
	stop := runConsumer(t, c)
	dead := h.deadLetters(1)[0]
	require.NoError(t, stop())
	assert.Equal(t, string(brokers.ReasonUnhandled), dead.Headers[brokers.HeaderDeadLetterReason])
	assert.Equal(t, "1", dead.Headers[brokers.HeaderDeadLetterAttempts], "not retried")
	assert.Contains(t, dead.Headers[brokers.HeaderDeadLetterError], "no handler bound")
}

func TestPermanentErrorIsDeadLetteredAtOnce(t *testing.T) {
	t.Parallel()
	h := newMemoryHarness(t)
	h.send(envelope(t, "", "o-1"))
	var calls atomic.Int32
	c := h.consumer(testConfig(), func(context.Context, events.Event) error {
		calls.Add(1)
		return outbox.Permanent(errors.New("order o-1 does not exist"))
	})
	stop := runConsumer(t, c)
	dead := h.deadLetters(1)[0]
	require.NoError(t, stop())
	assert.Equal(t, string(brokers.ReasonRejected), dead.Headers[brokers.HeaderDeadLetterReason])
	assert.Equal(t, "1", dead.Headers[brokers.HeaderDeadLetterAttempts])
	assert.EqualValues(t, 1, calls.Load())
	assert.Zero(t, c.Counters().Retried)
}

func TestUndecodableHeadersAreDeadLettered(t *testing.T) {
	t.Parallel()
	h := newMemoryHarness(t)
	good := envelope(t, "k", "o-2")
	require.NoError(t, h.broker.Publish(t.Context(), brokers.MemoryMessage{
		Topic: "orders", Key: "k", Headers: map[string]string{wire.HeaderEventID: "not-a-uuid"}, Body: []byte("{}"),
	}))
	h.send(good)
	handled := newSignal()
	c := h.consumer(testConfig(), func(_ context.Context, ev events.Event) error {
		if n, _ := ev.(events.Notification[orderPlaced]); n.Payload.ID == "o-2" {
			handled.fire()
		}
		return nil
	})
	stop := runConsumer(t, c)
	waitFor(t, handled.ch, "the next message of the key handled")
	dead := h.deadLetters(1)[0]
	require.NoError(t, stop())
	assert.Equal(t, string(brokers.ReasonUndecodable), dead.Headers[brokers.HeaderDeadLetterReason])
	assert.Equal(t, "not-a-uuid", dead.Headers[wire.HeaderEventID], "the original headers are kept")
	assert.Contains(t, dead.Headers[brokers.HeaderDeadLetterError], "undecodable")
}

func TestDropUnknownEventsOnASharedTopic(t *testing.T) {
	t.Parallel()
	h := newMemoryHarness(t)
	var enc wire.Encoder
	other, err := enc.Encode(events.NewNotification("invoice.sent", struct{}{}).WithTopic("orders").WithKey("k"))
	require.NoError(t, err)
	mine := envelope(t, "k", "o-1")
	h.send(other, mine)
	cfg := testConfig()
	cfg.Classify = func(err error) brokers.Action {
		if errors.Is(err, wire.ErrUnknownEvent) {
			return brokers.Drop
		}
		return brokers.DefaultClassify(err)
	}
	handled := newSignal()
	c := h.consumer(cfg, func(context.Context, events.Event) error {
		handled.fire()
		return nil
	})
	stop := runConsumer(t, c)
	waitFor(t, handled.ch, "the known event handled")
	require.NoError(t, stop())
	cs := c.Counters()
	assert.EqualValues(t, 1, cs.Dropped)
	assert.EqualValues(t, 1, cs.Handled)
	assert.Zero(t, cs.DeadLettered)
	assert.Empty(t, h.broker.Messages("orders.dlq"))
}

func TestPanicsAreRetried(t *testing.T) {
	t.Parallel()
	h := newMemoryHarness(t)
	h.send(envelope(t, "k", "o-1"))
	var calls atomic.Int32
	handled := newSignal()
	cfg := testConfig()
	cfg.Classify = func(err error) brokers.Action {
		var pe *brokers.PanicError
		if errors.As(err, &pe) && pe.Value == "classify me" {
			panic("a broken classifier")
		}
		return brokers.DefaultClassify(err)
	}
	c := h.consumer(cfg, func(context.Context, events.Event) error {
		switch calls.Add(1) {
		case 1:
			panic("handler bug")
		case 2:
			panic("classify me")
		}
		handled.fire()
		return nil
	})
	stop := runConsumer(t, c)
	waitFor(t, handled.ch, "the third attempt")
	require.NoError(t, stop())
	assert.EqualValues(t, 2, c.Counters().Retried, "a panicking handler, and a panicking classifier, mean retry")
	assert.EqualValues(t, 1, c.Counters().Handled)
}

func TestUnorderedRetriesThroughTheBroker(t *testing.T) {
	t.Parallel()
	h := newMemoryHarness(t)
	h.send(envelope(t, "k", "o-1"))
	var attempts []int
	var mu sync.Mutex
	handled := newSignal()
	cfg := testConfig()
	cfg.Unordered = true
	cfg.MaxDeliveries = 5
	src, err := h.sub.Subscribe(t.Context())
	require.NoError(t, err)
	// Observe the attempts the broker counts, through a Subscriber that
	// wraps the memory source.
	sub := brokers.SubscriberFunc(func(context.Context) (brokers.Source, error) { return attemptSpy{src, &mu, &attempts}, nil })
	var calls atomic.Int32
	c, err := brokers.NewConsumer(sub, newDecoder(t), func(context.Context, events.Event) error {
		if calls.Add(1) < 3 {
			return errBoom
		}
		handled.fire()
		return nil
	}, cfg)
	require.NoError(t, err)
	stop := runConsumer(t, c)
	waitFor(t, handled.ch, "the third attempt")
	require.NoError(t, stop())
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, []int{1, 2, 3}, attempts, "each retry is a delivery by the broker")
}

type attemptSpy struct {
	brokers.Source
	mu       *sync.Mutex
	attempts *[]int
}

func (s attemptSpy) Receive(ctx context.Context) (brokers.Message, error) {
	m, err := s.Source.Receive(ctx)
	if err == nil {
		s.mu.Lock()
		*s.attempts = append(*s.attempts, m.Attempt)
		s.mu.Unlock()
	}
	return m, err
}

func TestHandlerRunsInTheTransaction(t *testing.T) {
	t.Parallel()
	h := newMemoryHarness(t)
	h.send(envelope(t, "k", "o-1"))
	cfg := testConfig()
	cfg.Transactor = outbox.MemoryTransactor{}
	inTx := make(chan bool, 1)
	c := h.consumer(cfg, func(ctx context.Context, _ events.Event) error {
		tx, ok := outbox.TxFromContext[*outbox.MemoryTx](ctx)
		inTx <- ok && tx.Open()
		return nil
	})
	stop := runConsumer(t, c)
	assert.True(t, <-inTx, "the handler's context carries an open transaction")
	require.NoError(t, stop())
}

func TestInboxRollsBackAFailedAttempt(t *testing.T) {
	t.Parallel()
	h := newMemoryHarness(t)
	env := envelope(t, "k", "o-1")
	sentinel := envelope(t, "k", "o-2")
	h.send(env, env, sentinel) // the event is delivered twice
	store := inbox.NewMemoryStore(inbox.MemoryOptions{})
	cfg := testConfig()
	cfg.Inbox, cfg.Transactor = store, store
	var calls, effects atomic.Int32
	done := newSignal()
	c := h.consumer(cfg, func(ctx context.Context, ev events.Event) error {
		if n, _ := ev.(events.Notification[orderPlaced]); n.Payload.ID == "o-2" {
			done.fire() // behind both copies on their key
			return nil
		}
		if calls.Add(1) == 1 {
			return errBoom // rolled back: no record
		}
		tx, _ := outbox.TxFromContext[*outbox.MemoryTx](ctx)
		return tx.OnEnd(func(committed bool) {
			if committed {
				effects.Add(1)
			}
		})
	})
	stop := runConsumer(t, c)
	waitFor(t, done.ch, "the event behind the two copies handled")
	require.NoError(t, stop())
	assert.EqualValues(t, 2, calls.Load(), "a failed attempt, then a successful one; the copy is not handled")
	assert.EqualValues(t, 1, effects.Load())
	assert.EqualValues(t, 1, c.Counters().Duplicates)
	seen, err := store.Seen(t.Context(), "test", env.ID)
	require.NoError(t, err)
	assert.True(t, seen)
}

func TestShutdownDuringAnInPlaceRetry(t *testing.T) {
	t.Parallel()
	h := newMemoryHarness(t)
	env := envelope(t, "k", "o-1")
	h.send(env)
	cfg := testConfig()
	cfg.Backoff = outbox.Backoff{Base: time.Hour, Max: time.Hour}
	failed := newSignal()
	c := h.consumer(cfg, func(context.Context, events.Event) error {
		failed.fire()
		return errBoom
	})
	stop := runConsumer(t, c)
	waitFor(t, failed.ch, "the first attempt")
	require.NoError(t, stop(), "Run returns without waiting for the hour")
	cs := c.Counters()
	assert.EqualValues(t, 1, cs.Retried)
	assert.EqualValues(t, 1, cs.Released)

	// The message is delivered again to the next consumer.
	handled := newSignal()
	c2 := h.consumer(testConfig(), func(context.Context, events.Event) error {
		handled.fire()
		return nil
	})
	stop2 := runConsumer(t, c2)
	waitFor(t, handled.ch, "the message handled after the restart")
	require.NoError(t, stop2())
}

func TestExtractReturningNilFails(t *testing.T) {
	t.Parallel()
	h := newMemoryHarness(t)
	h.send(envelope(t, "k", "o-1"))
	cfg := testConfig()
	cfg.MaxDeliveries = 1
	cfg.Extract = func(context.Context, map[string]string) context.Context { return nil }
	c := h.consumer(cfg, func(context.Context, events.Event) error { return nil })
	stop := runConsumer(t, c)
	dead := h.deadLetters(1)[0]
	require.NoError(t, stop())
	assert.Equal(t, string(brokers.ReasonExhausted), dead.Headers[brokers.HeaderDeadLetterReason])
	assert.Contains(t, dead.Headers[brokers.HeaderDeadLetterError], "Extract returned a nil context")
}

func TestTooManyDeliveriesAreDeadLetteredUnhandled(t *testing.T) {
	t.Parallel()
	s := newFakeSettler()
	msg := message(t, envelope(t, "k", "o-1"), s)
	msg.Attempt = 11 // earlier deliveries crashed the process
	src := newFakeSource(fakeResult{msg: msg})
	var calls atomic.Int32
	c, err := brokers.NewConsumer(src.subscriber(), newDecoder(t), func(context.Context, events.Event) error {
		calls.Add(1)
		return nil
	}, testConfig())
	require.NoError(t, err)
	stop := runConsumer(t, c)
	waitFor(t, s.settled.ch, "the message settled")
	require.NoError(t, stop())
	assert.Zero(t, calls.Load(), "the handler is not called")
	require.Equal(t, []string{"dead-letter"}, s.calls())
	d := s.dead[0]
	assert.Equal(t, brokers.ReasonExhausted, d.Reason)
	assert.Equal(t, 11, d.Attempts)
	assert.ErrorContains(t, d.Err, "more than MaxDeliveries (10)")
}
