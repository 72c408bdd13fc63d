package brokers_test

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/events/brokers"
	"github.com/gocqrs/cqrs/events/outbox"
	"github.com/gocqrs/cqrs/events/wire"
)

type orderPlaced struct {
	ID string `json:"id"`
}

const orderPlacedName = "order.placed"

func newDecoder(t *testing.T) *wire.Decoder {
	t.Helper()
	var reg wire.Registry
	require.NoError(t, wire.Register[orderPlaced](&reg, orderPlacedName))
	dec, err := wire.NewDecoder(&reg, wire.DecoderOptions{})
	require.NoError(t, err)
	return dec
}

func envelope(t *testing.T, key, id string) wire.Envelope {
	t.Helper()
	var enc wire.Encoder
	env, err := enc.Encode(events.NewNotification(orderPlacedName, orderPlaced{ID: id}).WithTopic("orders").WithKey(key))
	require.NoError(t, err)
	return env
}

// testConfig is a quiet configuration with fast retries.
func testConfig() brokers.Config {
	cfg := brokers.DefaultConfig()
	cfg.Name = "test"
	cfg.MaxConcurrency = 4
	cfg.Backoff = outbox.Backoff{Base: time.Millisecond, Max: 2 * time.Millisecond}
	cfg.SettleTimeout = 10 * time.Second
	cfg.Logger = slog.New(slog.DiscardHandler)
	return cfg
}

// runConsumer runs c until stop is called (or the test ends) and returns
// stop, which waits for Run and returns its error.
func runConsumer(t *testing.T, c *brokers.Consumer) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var (
		once sync.Once
		err  error
	)
	stop = func() error {
		once.Do(func() {
			cancel()
			err = <-done
		})
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

// waitFor waits until ch is closed, failing the test after a generous
// bound (a hang detector, not a timing assertion).
func waitFor(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(30 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

// signal is closed once, by the first call of fire.
type signal struct {
	once sync.Once
	ch   chan struct{}
}

func newSignal() *signal { return &signal{ch: make(chan struct{})} }

func (s *signal) fire() { s.once.Do(func() { close(s.ch) }) }

func (s *signal) fired() bool {
	select {
	case <-s.ch:
		return true
	default:
		return false
	}
}

// fakeSettler records the settle calls of one message.
type fakeSettler struct {
	mu       sync.Mutex
	ops      []string
	dead     []brokers.DeadLetter
	ackErr   error
	retryErr error
	// deadErrs are the results of successive DeadLetter calls; nil once
	// exhausted.
	deadErrs []error
	delays   []time.Duration
	// called fires on the first settle call; settled on the first that
	// succeeds.
	called, settled *signal
}

func newFakeSettler() *fakeSettler { return &fakeSettler{called: newSignal(), settled: newSignal()} }

func (s *fakeSettler) record(op string, err error) error {
	s.ops = append(s.ops, op)
	s.called.fire()
	if err == nil {
		s.settled.fire()
	}
	return err
}

func (s *fakeSettler) Ack(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.record("ack", s.ackErr)
}

func (s *fakeSettler) Retry(_ context.Context, delay time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.delays = append(s.delays, delay)
	return s.record("retry", s.retryErr)
}

func (s *fakeSettler) DeadLetter(_ context.Context, d brokers.DeadLetter) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dead = append(s.dead, d)
	var err error
	if len(s.deadErrs) > 0 {
		err, s.deadErrs = s.deadErrs[0], s.deadErrs[1:]
	}
	return s.record("dead-letter", err)
}

func (s *fakeSettler) calls() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.ops)
}

func message(t *testing.T, env wire.Envelope, s brokers.Settler) brokers.Message {
	t.Helper()
	h, err := wire.ToHeaders(env)
	require.NoError(t, err)
	return brokers.Message{Topic: env.Topic, Key: env.Key, OrderKey: env.Key, Headers: h, Body: env.Payload, Attempt: 1, Settler: s}
}

// fakeSource returns, in order, the results it is given, then blocks until
// ctx is done.
type fakeSource struct {
	mu      sync.Mutex
	results []fakeResult
	closed  *signal
}

type fakeResult struct {
	msg brokers.Message
	err error
	// after, if set, delays the result until it is closed.
	after <-chan struct{}
}

func newFakeSource(results ...fakeResult) *fakeSource {
	return &fakeSource{results: results, closed: newSignal()}
}

func (s *fakeSource) Receive(ctx context.Context) (brokers.Message, error) {
	s.mu.Lock()
	if len(s.results) > 0 {
		r := s.results[0]
		s.results = s.results[1:]
		s.mu.Unlock()
		if r.after != nil {
			select {
			case <-r.after:
			case <-ctx.Done():
				return brokers.Message{}, ctx.Err()
			}
		}
		return r.msg, r.err
	}
	s.mu.Unlock()
	select {
	case <-ctx.Done():
		return brokers.Message{}, ctx.Err()
	case <-s.closed.ch:
		return brokers.Message{}, brokers.ErrClosed
	}
}

func (s *fakeSource) Close(context.Context) error {
	s.closed.fire()
	return nil
}

func (s *fakeSource) subscriber() brokers.Subscriber {
	return brokers.SubscriberFunc(func(context.Context) (brokers.Source, error) { return s, nil })
}

var errBoom = errors.New("boom")
