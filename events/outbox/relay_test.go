package outbox_test

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gocqrs/cqrs/events/outbox"
	"github.com/gocqrs/cqrs/events/outbox/outboxtest"
	"github.com/gocqrs/cqrs/events/wire"
)

var errBrokerDown = errors.New("broker down")

func TestRelaySenderDownThenBack(t *testing.T) {
	t.Parallel()
	s := outbox.NewMemoryStore(outbox.MemoryOptions{})
	var all []wire.Envelope
	byKey := make(map[string][]wire.Envelope)
	for _, key := range []string{"a", "b", "c", ""} {
		es := envs(key, 20)
		byKey[key] = es
		all = append(all, es...)
	}
	add(t, s, all...)

	rec := newRecorder(len(all))
	inproc := rec.sender()
	var calls atomic.Int32
	sender := outbox.SenderFunc(func(ctx context.Context, es []wire.Envelope) error {
		if calls.Add(1) <= 5 {
			return errBrokerDown
		}
		return inproc.Send(ctx, es)
	})
	cfg := testConfig()
	cfg.BatchSize = 16
	cfg.MaxAttempts = 1000
	r := newRelay(t, s, sender, cfg)
	stop := start(t, r)
	<-rec.done
	stop()

	for _, e := range all {
		assert.Equal(t, 1, rec.times(e.ID), "delivered once")
	}
	for key, es := range byKey {
		if key != "" {
			assert.Equal(t, idsOf(es...), rec.order(key), "key %q in order", key)
		}
	}
	st, err := r.Stats(t.Context())
	require.NoError(t, err)
	assert.Equal(t, outbox.Stats{Sent: int64(len(all))}, st.Store, "nothing lost, nothing dead")
	assert.Equal(t, uint64(len(all)), st.Counters.Sent)
	assert.GreaterOrEqual(t, st.Counters.Failed, uint64(5), "each failed call recorded at least one failure")
	assert.Zero(t, st.Counters.Dead)
	assert.Zero(t, st.Counters.WakePoll)

	first, err := s.Get(t.Context(), all[0].ID)
	require.NoError(t, err)
	assert.Equal(t, outbox.Sent, first.State)
	assert.GreaterOrEqual(t, first.Attempts, 1, "the failed attempts stay visible")
	assert.Equal(t, errBrokerDown.Error(), first.LastError)
}

func TestRelayPoisonRowGoesDead(t *testing.T) {
	t.Parallel()
	mem := outbox.NewMemoryStore(outbox.MemoryOptions{})
	poison := envs("p", 2)
	others := envs("b", 5)
	unkeyed := envs("", 3)
	add(t, mem, poison[0], others[0], unkeyed[0])
	add(t, mem, poison[1])
	add(t, mem, append(others[1:], unkeyed[1:]...)...)

	healthy := len(others) + len(unkeyed)
	rec := newRecorder(healthy)
	rec.fail = func(e wire.Envelope) error {
		if e.ID == poison[0].ID {
			return errors.New("cannot encode")
		}
		return nil
	}
	dead, markDead := once()
	s := &hookStore{Store: mem, afterMarkFailed: func(fs []outbox.Failure, err error) {
		for _, f := range fs {
			if f.Dead && err == nil {
				markDead()
			}
		}
	}}
	cfg := testConfig()
	cfg.MaxAttempts = 3
	cfg.Notifier = mem
	r := newRelay(t, s, rec.sender(), cfg)
	stop := start(t, r)
	<-dead
	<-rec.done
	stop()

	row, err := mem.Get(t.Context(), poison[0].ID)
	require.NoError(t, err)
	assert.Equal(t, outbox.Dead, row.State)
	assert.Equal(t, 3, row.Attempts)
	assert.Equal(t, "cannot encode", row.LastError)
	row, err = mem.Get(t.Context(), poison[1].ID)
	require.NoError(t, err)
	assert.Equal(t, outbox.Pending, row.State, "the poison row's key waits")
	assert.Zero(t, row.Attempts)
	assert.Zero(t, rec.times(poison[1].ID))
	assert.Equal(t, idsOf(others...), rec.order("b"), "other keys keep flowing, in order")
	assert.Len(t, rec.order(""), len(unkeyed))
	c := r.Counters()
	assert.Equal(t, uint64(1), c.Dead)
	assert.Equal(t, uint64(2), c.Failed)
	assert.Equal(t, uint64(healthy), c.Sent)

	dl, err := mem.ListDead(t.Context(), 0, 10)
	require.NoError(t, err)
	require.Len(t, dl, 1)
	assert.Equal(t, poison[0].ID, dl[0].Envelope.ID)

	// Once repaired and requeued, the key flows again, in order.
	rec2 := newRecorder(2)
	n, err := mem.Requeue(t.Context(), poison[0].ID)
	require.NoError(t, err)
	assert.Equal(t, int64(1), n)
	stop = start(t, newRelay(t, mem, rec2.sender(), testConfig()))
	<-rec2.done
	stop()
	assert.Equal(t, idsOf(poison...), rec2.order("p"))
}

func TestRelayCancelMidBatch(t *testing.T) {
	t.Parallel()
	for _, finish := range []bool{false, true} {
		t.Run("sender finishes="+strconv.FormatBool(finish), func(t *testing.T) {
			t.Parallel()
			s := outbox.NewMemoryStore(outbox.MemoryOptions{})
			es := envs("", 10)
			add(t, s, es...)
			blocked, block := once()
			var delivered []uuid.UUID
			sender := outbox.SenderFunc(func(ctx context.Context, batch []wire.Envelope) error {
				errs := make([]error, len(batch))
				for _, e := range batch[:4] {
					delivered = append(delivered, e.ID)
				}
				block()
				<-ctx.Done()
				if finish {
					for _, e := range batch[4:] {
						delivered = append(delivered, e.ID)
					}
					return nil
				}
				for i := 4; i < len(batch); i++ {
					errs[i] = ctx.Err()
				}
				return &outbox.BatchError{Errs: errs}
			})
			r := newRelay(t, s, sender, testConfig())
			stop := start(t, r)
			<-blocked
			stop()

			sent := make(map[uuid.UUID]bool)
			for _, id := range delivered {
				sent[id] = true
			}
			for _, e := range es {
				row, err := s.Get(t.Context(), e.ID)
				require.NoError(t, err)
				if sent[e.ID] {
					assert.Equal(t, outbox.Sent, row.State)
					continue
				}
				assert.Equal(t, outbox.Pending, row.State, "nothing unsent is marked")
				assert.Zero(t, row.Attempts, "a cancelled send is not a failed attempt")
				assert.Empty(t, row.LeaseOwner, "unsent rows are released")
			}
			c := r.Counters()
			assert.Equal(t, uint64(len(delivered)), c.Sent)
			assert.Equal(t, uint64(len(es)-len(delivered)), c.Released)
			assert.Zero(t, c.Failed)
		})
	}
}

func TestRelaysExactlyOnce(t *testing.T) {
	t.Parallel()
	const (
		relays  = 4
		writers = 4
		perTx   = 25
		total   = 10_000
		keys    = 8 // per writer
	)
	s := outbox.NewMemoryStore(outbox.MemoryOptions{})
	rec := newRecorder(total)
	var rs []*outbox.Relay
	var stops []func()
	for range relays {
		cfg := testConfig()
		cfg.BatchSize = 64
		r := newRelay(t, s, rec.sender(), cfg)
		rs = append(rs, r)
		stops = append(stops, start(t, r))
	}

	// Writers add while the relays run; each writer has keys of its own,
	// so its add order is the commit order of its keys.
	want := make([]map[string][]uuid.UUID, writers)
	var wg sync.WaitGroup
	for w := range writers {
		want[w] = make(map[string][]uuid.UUID)
		wg.Go(func() {
			for i := range total / writers / perTx {
				batch := make([]wire.Envelope, perTx)
				for j := range batch {
					key := ""
					if j%4 != 0 {
						key = "w" + strconv.Itoa(w) + "-k" + strconv.Itoa((i+j)%keys)
					}
					batch[j] = outboxtest.NewEnvelope(key, strconv.Itoa(i))
					want[w][key] = append(want[w][key], batch[j].ID)
				}
				add(t, s, batch...)
			}
		})
	}
	wg.Wait()
	<-rec.done
	for _, stop := range stops {
		stop()
	}

	assert.Equal(t, total, rec.distinct())
	rec.mu.Lock()
	for id, n := range rec.count {
		if n != 1 {
			t.Errorf("envelope %s delivered %d times", id, n)
		}
	}
	rec.mu.Unlock()
	for w := range writers {
		for key, ids := range want[w] {
			if key != "" {
				assert.Equal(t, ids, rec.order(key), "key %s", key)
			}
		}
	}
	var sent uint64
	for _, r := range rs {
		sent += r.Counters().Sent
	}
	assert.Equal(t, uint64(total), sent)
	st, err := s.Stats(t.Context())
	require.NoError(t, err)
	assert.Equal(t, outbox.Stats{Sent: total}, st)
}

func TestRelayWakesOnCommit(t *testing.T) {
	t.Parallel()
	mem := outbox.NewMemoryStore(outbox.MemoryOptions{})
	e := outboxtest.NewEnvelope("k", "x")
	var added atomic.Bool
	s := &hookStore{Store: mem, afterClaim: func(rows []outbox.Row) {
		// On the first claim that finds nothing, commit an event: the relay
		// then goes idle with nothing due, and only the commit's signal can
		// wake it (the poll interval is an hour).
		if len(rows) == 0 && added.CompareAndSwap(false, true) {
			add(t, mem, e)
		}
	}}
	rec := newRecorder(1)
	cfg := testConfig()
	cfg.Notifier = mem
	r := newRelay(t, s, rec.sender(), cfg)
	stop := start(t, r)
	<-rec.done
	stop()

	c := r.Counters()
	assert.GreaterOrEqual(t, c.WakeSignal, uint64(1), "woken by the signal")
	assert.Zero(t, c.WakePoll, "not by the poll")
	assert.Zero(t, c.WakeRetry)
	assert.Equal(t, uint64(1), c.Sent)
}

func TestRelayWithoutNotifierPolls(t *testing.T) {
	t.Parallel()
	mem := outbox.NewMemoryStore(outbox.MemoryOptions{})
	e := outboxtest.NewEnvelope("k", "x")
	var added atomic.Bool
	// The wrapper hides the store's Notifier.
	s := &hookStore{Store: mem, afterClaim: func(rows []outbox.Row) {
		if len(rows) == 0 && added.CompareAndSwap(false, true) {
			add(t, mem, e)
		}
	}}
	rec := newRecorder(1)
	cfg := testConfig()
	cfg.PollInterval = time.Millisecond
	r := newRelay(t, s, rec.sender(), cfg)
	stop := start(t, r)
	<-rec.done
	stop()
	c := r.Counters()
	assert.GreaterOrEqual(t, c.WakePoll, uint64(1))
	assert.Zero(t, c.WakeSignal)
}

// failingNotifier fails its first Watch, then watches the store.
type failingNotifier struct {
	store    *outbox.MemoryStore
	calls    atomic.Int32
	watching func()
}

func (n *failingNotifier) Watch(ctx context.Context, wake func()) error {
	if n.calls.Add(1) == 1 {
		return errors.New("connection refused")
	}
	n.watching()
	return n.store.Watch(ctx, wake)
}

func TestRelayNotifierRestarts(t *testing.T) {
	t.Parallel()
	mem := outbox.NewMemoryStore(outbox.MemoryOptions{})
	watching, signal := once()
	n := &failingNotifier{store: mem, watching: signal}
	rec := newRecorder(1)
	cfg := testConfig()
	cfg.Notifier = n
	r := newRelay(t, mem, rec.sender(), cfg)
	stop := start(t, r)
	<-watching
	add(t, mem, outboxtest.NewEnvelope("k", "x"))
	<-rec.done
	stop()
	assert.Equal(t, int32(2), n.calls.Load())
	assert.Zero(t, r.Counters().WakePoll)
}

func TestRelayStoreErrors(t *testing.T) {
	t.Parallel()
	mem := outbox.NewMemoryStore(outbox.MemoryOptions{})
	add(t, mem, envs("k", 3)...)
	var fails atomic.Int32
	s := &hookStore{Store: mem, claimErr: func() error {
		if fails.Add(1) <= 3 {
			return errors.New("database is down")
		}
		return nil
	}}
	rec := newRecorder(3)
	cfg := testConfig()
	cfg.Notifier = mem
	r := newRelay(t, s, rec.sender(), cfg)
	stop := start(t, r)
	<-rec.done
	stop()
	assert.Equal(t, uint64(3), r.Counters().StoreErrors)
	assert.Equal(t, uint64(3), r.Counters().Sent)
}

// TestRelayBatchOutcome checks how the relay reads one Send result: each
// case sends the batch a1 a2 a3 b1 once (the sender then stops the relay).
func TestRelayBatchOutcome(t *testing.T) {
	t.Parallel()
	boom := errors.New("rejected")
	type want struct {
		state    outbox.State
		attempts int
	}
	tests := []struct {
		name   string
		result func(n int) error
		want   [4]want
		dead   uint64
	}{
		{
			name:   "all sent",
			result: func(int) error { return nil },
			want:   [4]want{{outbox.Sent, 0}, {outbox.Sent, 0}, {outbox.Sent, 0}, {outbox.Sent, 0}},
		},
		{
			name:   "plain error fails the batch; later rows of a key are released",
			result: func(int) error { return boom },
			want:   [4]want{{outbox.Pending, 1}, {outbox.Pending, 0}, {outbox.Pending, 0}, {outbox.Pending, 1}},
		},
		{
			name: "per-record failure",
			result: func(int) error {
				return &outbox.BatchError{Errs: []error{nil, boom, outbox.ErrNotAttempted, nil}}
			},
			want: [4]want{{outbox.Sent, 0}, {outbox.Pending, 1}, {outbox.Pending, 0}, {outbox.Sent, 0}},
		},
		{
			name: "wrapped batch error",
			result: func(int) error {
				return errors.Join(errors.New("producer"), &outbox.BatchError{Errs: []error{nil, boom, outbox.ErrNotAttempted, nil}})
			},
			want: [4]want{{outbox.Sent, 0}, {outbox.Pending, 1}, {outbox.Pending, 0}, {outbox.Sent, 0}},
		},
		{
			name: "a record delivered after its key failed is marked sent",
			result: func(int) error {
				return &outbox.BatchError{Errs: []error{nil, boom, nil, nil}}
			},
			want: [4]want{{outbox.Sent, 0}, {outbox.Pending, 1}, {outbox.Sent, 0}, {outbox.Sent, 0}},
		},
		{
			name: "permanent error is dead at once",
			result: func(int) error {
				return &outbox.BatchError{Errs: []error{outbox.Permanent(boom), outbox.ErrNotAttempted, outbox.ErrNotAttempted, nil}}
			},
			want: [4]want{{outbox.Dead, 1}, {outbox.Pending, 0}, {outbox.Pending, 0}, {outbox.Sent, 0}},
			dead: 1,
		},
		{
			name: "batch error of the wrong length fails the batch",
			result: func(int) error {
				return &outbox.BatchError{Errs: []error{boom}}
			},
			want: [4]want{{outbox.Pending, 1}, {outbox.Pending, 0}, {outbox.Pending, 0}, {outbox.Pending, 1}},
		},
		{
			name:   "panic fails the batch",
			result: func(int) error { panic("sender bug") },
			want:   [4]want{{outbox.Pending, 1}, {outbox.Pending, 0}, {outbox.Pending, 0}, {outbox.Pending, 1}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := outbox.NewMemoryStore(outbox.MemoryOptions{})
			a := envs("a", 3)
			b := envs("b", 1)
			batch := slices.Concat(a, b)
			add(t, s, batch...)
			ctx, cancel := context.WithCancel(context.Background())
			sender := outbox.SenderFunc(func(_ context.Context, es []wire.Envelope) error {
				assert.Equal(t, idsOf(batch...), idsOf(es...), "one batch, in commit order")
				cancel() // stop after this batch; its outcome is still recorded
				return tt.result(len(es))
			})
			cfg := testConfig()
			cfg.Backoff = outbox.Backoff{Base: time.Hour, Max: time.Hour}
			r := newRelay(t, s, sender, cfg)
			require.NoError(t, r.Run(ctx))

			for i, e := range batch {
				row, err := s.Get(t.Context(), e.ID)
				require.NoError(t, err)
				assert.Equal(t, tt.want[i].state, row.State, "row %d state", i)
				assert.Equal(t, tt.want[i].attempts, row.Attempts, "row %d attempts", i)
				assert.Empty(t, row.LeaseOwner, "row %d lease", i)
				if row.Attempts > 0 {
					assert.NotEmpty(t, row.LastError)
				}
			}
			assert.Equal(t, tt.dead, r.Counters().Dead)
		})
	}
}

func TestRelayPanicErrorStored(t *testing.T) {
	t.Parallel()
	s := outbox.NewMemoryStore(outbox.MemoryOptions{})
	e := outboxtest.NewEnvelope("", "x")
	add(t, s, e)
	ctx, cancel := context.WithCancel(context.Background())
	r := newRelay(t, s, outbox.SenderFunc(func(context.Context, []wire.Envelope) error {
		cancel()
		panic("sender bug")
	}), testConfig())
	require.NoError(t, r.Run(ctx))
	row, err := s.Get(t.Context(), e.ID)
	require.NoError(t, err)
	assert.Contains(t, row.LastError, "sender panicked: panic: sender bug")
}

func TestRelayMarkFails(t *testing.T) {
	t.Parallel()
	mem := outbox.NewMemoryStore(outbox.MemoryOptions{})
	e := outboxtest.NewEnvelope("k", "x")
	add(t, mem, e)
	s := &hookStore{Store: mem, markSentErr: errors.New("connection reset")}
	ctx, cancel := context.WithCancel(context.Background())
	r := newRelay(t, s, outbox.InProcessSender(func(context.Context, wire.Envelope) error {
		cancel()
		return nil
	}), testConfig())
	require.NoError(t, r.Run(ctx))

	c := r.Counters()
	assert.Equal(t, uint64(1), c.StoreErrors)
	assert.Zero(t, c.Sent)
	row, err := mem.Get(t.Context(), e.ID)
	require.NoError(t, err)
	assert.Equal(t, outbox.Pending, row.State, "sent again once the lease expires")
	assert.Equal(t, r.Owner(), row.LeaseOwner)
}

func TestRelayLeaseLost(t *testing.T) {
	t.Parallel()
	clock := outboxtest.NewClock()
	s := outbox.NewMemoryStore(outbox.MemoryOptions{Clock: clock})
	e := outboxtest.NewEnvelope("k", "x")
	add(t, s, e)

	inA, enteredA := once()
	proceed := make(chan struct{})
	slow := outbox.SenderFunc(func(context.Context, []wire.Envelope) error {
		enteredA()
		<-proceed // a send that outlives its lease
		return nil
	})
	cfgA := testConfig()
	cfgA.Owner, cfgA.Clock = "A", clock
	a := newRelay(t, s, slow, cfgA)
	stopA := start(t, a)
	<-inA

	clock.Advance(outbox.DefaultLease)
	ctxB, cancelB := context.WithCancel(context.Background())
	fast := outbox.InProcessSender(func(context.Context, wire.Envelope) error {
		cancelB()
		return nil
	})
	cfgB := testConfig()
	cfgB.Owner, cfgB.Clock = "B", clock
	b := newRelay(t, s, fast, cfgB)
	require.NoError(t, b.Run(ctxB)) // B takes the row over, sends and marks it

	close(proceed)
	stopA()
	assert.Equal(t, uint64(1), a.Counters().LeaseLost, "A's late mark is refused")
	assert.Zero(t, a.Counters().Sent)
	assert.Equal(t, uint64(1), b.Counters().Sent)
	row, err := s.Get(t.Context(), e.ID)
	require.NoError(t, err)
	assert.Equal(t, outbox.Sent, row.State)
}

func TestRelayRetention(t *testing.T) {
	t.Parallel()
	clock := outboxtest.NewClock()
	s := outbox.NewMemoryStore(outbox.MemoryOptions{Clock: clock})
	old, recent := envs("", 3), envs("", 2)
	add(t, s, old...)
	rows, err := s.Claim(t.Context(), "x", 10, time.Minute)
	require.NoError(t, err)
	require.NoError(t, s.MarkSent(t.Context(), "x", idsOf(old...)...))
	require.Len(t, rows, 3)
	clock.Advance(2 * time.Hour)
	add(t, s, recent...)
	_, err = s.Claim(t.Context(), "x", 10, time.Minute)
	require.NoError(t, err)
	require.NoError(t, s.MarkSent(t.Context(), "x", idsOf(recent...)...))

	ctx, cancel := context.WithCancel(context.Background())
	hs := &hookStore{Store: s, afterClaim: func([]outbox.Row) { cancel() }}
	cfg := testConfig()
	cfg.Clock = clock
	cfg.RetainSent = time.Hour
	cfg.CleanupBatch = 2 // two rounds
	require.NoError(t, newRelay(t, hs, outbox.InProcessSender(func(context.Context, wire.Envelope) error { return nil }), cfg).Run(ctx))

	for _, e := range old {
		_, err := s.Get(t.Context(), e.ID)
		require.ErrorIs(t, err, outbox.ErrNotFound, "sent rows older than RetainSent are deleted")
	}
	for _, e := range recent {
		_, err := s.Get(t.Context(), e.ID)
		require.NoError(t, err, "recent sent rows are kept")
	}
}

func TestRelayRunTwice(t *testing.T) {
	t.Parallel()
	mem := outbox.NewMemoryStore(outbox.MemoryOptions{})
	running, signal := once()
	s := &hookStore{Store: mem, afterClaim: func([]outbox.Row) { signal() }}
	r := newRelay(t, s, outbox.InProcessSender(func(context.Context, wire.Envelope) error { return nil }), testConfig())
	stop := start(t, r)
	<-running
	require.ErrorIs(t, r.Run(t.Context()), outbox.ErrRelayRunning)
	st, err := r.Stats(t.Context())
	require.NoError(t, err)
	assert.True(t, st.Running)
	assert.Equal(t, r.Owner(), st.Owner)
	assert.True(t, strings.HasPrefix(r.Owner(), "relay-"))
	stop()
	st, err = r.Stats(t.Context())
	require.NoError(t, err)
	assert.False(t, st.Running)

	// It may run again once stopped.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.NoError(t, r.Run(ctx))
}

func TestNewRelayReportsEveryProblem(t *testing.T) {
	t.Parallel()
	cfg := outbox.RelayConfig{
		BatchSize:    0,
		Lease:        time.Second,
		SendTimeout:  2 * time.Second,
		PollInterval: -1,
		Backoff:      outbox.Backoff{Base: time.Second, Max: time.Millisecond, Jitter: 2},
		RetainSent:   time.Hour,
	}
	_, err := outbox.NewRelay(nil, nil, cfg)
	require.ErrorIs(t, err, outbox.ErrInvalidConfig)
	for _, want := range []string{
		"nil Store", "nil Sender", "BatchSize", "SendTimeout (2s) must be shorter than Lease (1s)", "PollInterval",
		"FinishTimeout", "Backoff.Max", "Backoff.Jitter", "MaxAttempts", "CleanupInterval", "CleanupBatch",
	} {
		assert.Contains(t, err.Error(), want)
	}
	require.NoError(t, outbox.DefaultRelayConfig().Validate())
}
