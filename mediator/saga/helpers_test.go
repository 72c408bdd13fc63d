package saga_test

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/mediator/saga"
	"github.com/gocqrs/cqrs/mediator/saga/sagatest"
)

// order is the state of the test sagas.
type order struct {
	ID     string   `json:"id"`
	Trace  []string `json:"trace"`
	Charge int      `json:"charge"`
}

var errBoom = errors.New("boom")

// calls records the invocations of steps, in order, by label.
type calls struct {
	mu   sync.Mutex
	seen []string
	keys []string
}

func (c *calls) add(ctx context.Context, label string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seen = append(c.seen, label)
	c.keys = append(c.keys, saga.KeyFrom(ctx))
}

func (c *calls) list() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.seen)
}

func (c *calls) count(label string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, s := range c.seen {
		if s == label {
			n++
		}
	}
	return n
}

// plain returns a step that records "name" (and "undo name" when
// compensated) in c and in the state's trace.
func plain(name string, c *calls) saga.Step[order] {
	return saga.Step[order]{
		Name: name,
		Action: saga.Do(func(ctx context.Context, o *order) error {
			c.add(ctx, name)
			o.Trace = append(o.Trace, name)
			return nil
		}),
		Compensation: saga.Do(func(ctx context.Context, o *order) error {
			c.add(ctx, "undo "+name)
			o.Trace = append(o.Trace, "undo "+name)
			return nil
		}),
	}
}

// failing returns a step whose action records name, changes the state and
// fails with err.
func failing(name string, c *calls, err error) saga.Step[order] {
	return saga.Step[order]{
		Name: name,
		Action: saga.Do(func(ctx context.Context, o *order) error {
			c.add(ctx, name)
			o.Trace = append(o.Trace, name+" (discarded)")
			return err
		}),
	}
}

// sleeper is an Options.Sleep that records the delays asked for and
// advances the clock instead of waiting.
type sleeper struct {
	clock  *sagatest.Clock
	mu     sync.Mutex
	delays []time.Duration
}

func (s *sleeper) sleep(ctx context.Context, d time.Duration) error {
	s.mu.Lock()
	s.delays = append(s.delays, d)
	s.mu.Unlock()
	s.clock.Advance(d)
	return ctx.Err()
}

func (s *sleeper) list() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.delays)
}

// env is a store, a clock and the options tests build orchestrators from.
type env struct {
	clock *sagatest.Clock
	store *saga.MemoryStore
	sleep *sleeper
}

func newEnv() *env {
	clock := sagatest.NewClock()
	return &env{clock: clock, store: saga.NewMemoryStore(saga.MemoryOptions{Clock: clock}), sleep: &sleeper{clock: clock}}
}

// options returns options over e: lease 30s (renewed every 10s, which a
// test never waits for), backoff 10ms doubling to 1s without jitter, 3
// compensation attempts, logs discarded.
func (e *env) options(owner string) saga.Options {
	return saga.Options{
		Store:                e.store,
		Owner:                owner,
		Lease:                30 * time.Second,
		CompensationAttempts: 3,
		CompensationBackoff:  backoff(),
		Clock:                e.clock,
		Sleep:                e.sleep.sleep,
		Logger:               slog.New(slog.DiscardHandler),
	}
}

func (e *env) orchestrator(t *testing.T, opts saga.Options, defs ...saga.AnyDefinition) *saga.Orchestrator {
	t.Helper()
	o, err := saga.New(opts, defs...)
	require.NoError(t, err)
	return o
}

// hooked wraps a store, calling the hooks around Save and Renew.
type hooked struct {
	saga.Store
	beforeSave func(ctx context.Context, cp saga.Checkpoint) error
	afterSave  func(ctx context.Context, cp saga.Checkpoint, err error) error
	afterRenew func(err error)
}

func (h *hooked) Save(ctx context.Context, cp saga.Checkpoint) error {
	if h.beforeSave != nil {
		if err := h.beforeSave(ctx, cp); err != nil {
			return err
		}
	}
	err := h.Store.Save(ctx, cp)
	if h.afterSave != nil {
		err = h.afterSave(ctx, cp, err)
	}
	return err
}

func (h *hooked) Renew(ctx context.Context, id uuid.UUID, owner string, lease time.Duration) error {
	err := h.Store.Renew(ctx, id, owner, lease)
	if h.afterRenew != nil {
		h.afterRenew(err)
	}
	return err
}

// recordEvents is a Dispatcher that records what it dispatched, with the
// idempotency key of the context.
type recordEvents struct {
	mu   sync.Mutex
	evs  []events.Event
	keys []string
	err  error
}

func (r *recordEvents) Dispatch(ctx context.Context, evs ...events.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.evs = append(r.evs, evs...)
	for range evs {
		r.keys = append(r.keys, saga.KeyFrom(ctx))
	}
	return r.err
}

func (r *recordEvents) list() ([]events.Event, []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.evs), slices.Clone(r.keys)
}
