package outbox_test

import (
	"context"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/gocqrs/cqrs/events/outbox"
	"github.com/gocqrs/cqrs/events/outbox/outboxtest"
	"github.com/gocqrs/cqrs/events/wire"
)

// envs returns n envelopes with the given key.
func envs(key string, n int) []wire.Envelope {
	out := make([]wire.Envelope, n)
	for i := range out {
		out[i] = outboxtest.NewEnvelope(key, key+"-"+strconv.Itoa(i))
	}
	return out
}

func idsOf(es ...wire.Envelope) []uuid.UUID {
	out := make([]uuid.UUID, len(es))
	for i, e := range es {
		out[i] = e.ID
	}
	return out
}

// add commits envs in one transaction.
func add(tb testing.TB, s *outbox.MemoryStore, es ...wire.Envelope) {
	tb.Helper()
	require.NoError(tb, s.InTx(context.Background(), func(ctx context.Context) error {
		return s.Add(ctx, es...)
	}))
}

// testConfig is a relay configuration for tests: millisecond backoff, an
// hour of poll interval (so a test that progresses was not woken by the
// poll), no retention, no logs.
func testConfig() outbox.RelayConfig {
	cfg := outbox.DefaultRelayConfig()
	cfg.PollInterval = time.Hour
	cfg.Backoff = outbox.Backoff{Base: time.Millisecond, Max: 4 * time.Millisecond, Jitter: 0.5}
	cfg.RetainSent = 0
	cfg.Logger = slog.New(slog.DiscardHandler)
	return cfg
}

func newRelay(tb testing.TB, s outbox.Store, sender outbox.Sender, cfg outbox.RelayConfig) *outbox.Relay {
	tb.Helper()
	r, err := outbox.NewRelay(s, sender, cfg)
	require.NoError(tb, err)
	return r
}

// start runs r until the returned stop function is called; stop cancels
// ctx and waits for Run to return nil.
func start(tb testing.TB, r *outbox.Relay) (stop func()) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	return func() {
		tb.Helper()
		cancel()
		require.NoError(tb, <-done)
	}
}

// recorder is an in-process consumer that records what it receives and
// closes done once it has seen want distinct envelopes.
type recorder struct {
	mu    sync.Mutex
	want  int
	count map[uuid.UUID]int
	byKey map[string][]uuid.UUID
	done  chan struct{}
	fail  func(wire.Envelope) error
}

func newRecorder(want int) *recorder {
	return &recorder{want: want, count: make(map[uuid.UUID]int), byKey: make(map[string][]uuid.UUID), done: make(chan struct{})}
}

func (r *recorder) deliver(_ context.Context, env wire.Envelope) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail != nil {
		if err := r.fail(env); err != nil {
			return err
		}
	}
	r.count[env.ID]++
	r.byKey[env.Key] = append(r.byKey[env.Key], env.ID)
	if len(r.count) == r.want && r.count[env.ID] == 1 {
		close(r.done)
	}
	return nil
}

func (r *recorder) sender() outbox.Sender { return outbox.InProcessSender(r.deliver) }

func (r *recorder) order(key string) []uuid.UUID {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.byKey[key])
}

func (r *recorder) times(id uuid.UUID) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.count[id]
}

func (r *recorder) distinct() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.count)
}

// hookStore wraps a store and calls hooks after some of its methods, on the
// caller's goroutine.
type hookStore struct {
	outbox.Store
	claimErr        func() error
	markSentErr     error
	afterClaim      func(rows []outbox.Row)
	afterMarkFailed func(fs []outbox.Failure, err error)
}

func (h *hookStore) Claim(ctx context.Context, owner string, limit int, lease time.Duration) ([]outbox.Row, error) {
	if h.claimErr != nil {
		if err := h.claimErr(); err != nil {
			return nil, err
		}
	}
	rows, err := h.Store.Claim(ctx, owner, limit, lease)
	if err == nil && h.afterClaim != nil {
		h.afterClaim(rows)
	}
	return rows, err
}

func (h *hookStore) MarkSent(ctx context.Context, owner string, ids ...uuid.UUID) error {
	if h.markSentErr != nil {
		return h.markSentErr
	}
	return h.Store.MarkSent(ctx, owner, ids...)
}

func (h *hookStore) MarkFailed(ctx context.Context, owner string, fs ...outbox.Failure) error {
	err := h.Store.MarkFailed(ctx, owner, fs...)
	if h.afterMarkFailed != nil {
		h.afterMarkFailed(fs, err)
	}
	return err
}

// once returns a channel and a function that closes it the first time it
// is called.
func once() (chan struct{}, func()) {
	ch := make(chan struct{})
	var o sync.Once
	return ch, func() { o.Do(func() { close(ch) }) }
}
