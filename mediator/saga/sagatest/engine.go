package sagatest

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gocqrs/cqrs/events/outbox"
	"github.com/gocqrs/cqrs/mediator/saga"
)

// trace is the state of the kit's sagas: what their steps did.
type trace struct {
	Done []string `json:"done"`
}

// Effects records the effects of steps by idempotency key, applying each
// key once, as a step that deduplicates its work would. It is safe for
// concurrent use.
type Effects struct {
	mu      sync.Mutex
	applied map[string]int // key → effects applied
	calls   map[string]int // key → invocations
}

// Apply records one invocation of the step whose idempotency key ctx
// carries and applies its effect unless it was applied already; it reports
// whether it applied it.
func (e *Effects) Apply(ctx context.Context) bool {
	key := saga.KeyFrom(ctx)
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.applied == nil {
		e.applied, e.calls = make(map[string]int), make(map[string]int)
	}
	e.calls[key]++
	if e.applied[key] > 0 {
		return false
	}
	e.applied[key]++
	return true
}

// Applied returns how many times the effect of key was applied (0 or 1).
func (e *Effects) Applied(key string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.applied[key]
}

// Calls returns how many times the step of key was invoked.
func (e *Effects) Calls(key string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.calls[key]
}

// step returns a step named name that records its effect in fx and
// appends name to the trace; its compensation appends "undo name".
func step(name string, fx *Effects) saga.Step[trace] {
	return saga.Step[trace]{
		Name: name,
		Action: saga.Do(func(ctx context.Context, s *trace) error {
			fx.Apply(ctx)
			s.Done = append(s.Done, name)
			return nil
		}),
		Compensation: saga.Do(func(ctx context.Context, s *trace) error {
			fx.Apply(ctx)
			s.Done = append(s.Done, "undo "+name)
			return nil
		}),
	}
}

var errDeclined = errors.New("declined")

// crashing is a store that dies, failing every call, once die says so
// after a successful Save: the process that used it crashed.
type crashing struct {
	saga.Store
	die  func(saga.Checkpoint) bool
	dead atomic.Bool
}

var errCrashed = errors.New("crashed")

func (c *crashing) Save(ctx context.Context, cp saga.Checkpoint) error {
	if c.dead.Load() {
		return errCrashed
	}
	err := c.Store.Save(ctx, cp)
	if err == nil && c.die(cp) {
		c.dead.Store(true)
	}
	return err
}

func (c *crashing) Renew(ctx context.Context, id uuid.UUID, owner string, lease time.Duration) error {
	if c.dead.Load() {
		return errCrashed
	}
	return c.Store.Renew(ctx, id, owner, lease)
}

func (k *kit) orchestrator(t *testing.T, s saga.Store, owner string, tx outbox.Transactor, defs ...saga.AnyDefinition) *saga.Orchestrator {
	t.Helper()
	o, err := saga.New(saga.Options{
		Store:      s,
		Transactor: tx,
		Owner:      owner,
		Lease:      Lease,
		Clock:      k.clock,
		Sleep:      func(ctx context.Context, _ time.Duration) error { return ctx.Err() },
		Logger:     slog.New(slog.DiscardHandler),
	}, defs...)
	require.NoError(t, err)
	return o
}

func testEngine(k *kit) {
	t := k.t
	ctx := t.Context()
	fx := &Effects{}
	ok := &saga.Definition[trace]{Name: "kit-ok", Steps: []saga.Step[trace]{step("a", fx), step("b", fx), step("c", fx)}}
	failing := &saga.Definition[trace]{Name: "kit-failing", Steps: []saga.Step[trace]{
		step("a", fx), step("b", fx),
		{Name: "c", Action: saga.Do(func(context.Context, *trace) error { return errDeclined })},
	}}

	for _, tx := range []outbox.Transactor{nil, k.tx} {
		o := k.orchestrator(t, k.s, "kit-driver", tx, ok, failing)
		res, err := saga.Execute(ctx, o, ok, trace{})
		require.NoError(t, err)
		assert.Equal(t, saga.Completed, res.Status)
		assert.Equal(t, []string{"a", "b", "c"}, res.State.Done)
		snap, err := saga.Load(ctx, o, ok, res.ID)
		require.NoError(t, err)
		assert.Equal(t, []string{"a", "b", "c"}, snap.State.Done)
		assert.Equal(t, saga.Completed, snap.Record.Status)
		assert.Empty(t, snap.Record.LeaseOwner, "a saga that ended holds no lease")
		log, err := o.History(ctx, res.ID)
		require.NoError(t, err)
		require.Len(t, log, 3)
		for i, e := range log {
			assert.Equal(t, saga.Succeeded, e.Outcome, "entry %d", i)
		}

		res, err = saga.Execute(ctx, o, failing, trace{})
		require.ErrorIs(t, err, saga.ErrCompensated)
		require.ErrorIs(t, err, errDeclined)
		assert.Equal(t, saga.Compensated, res.Status)
		assert.Equal(t, []string{"a", "b", "undo b", "undo a"}, res.State.Done)
		log, err = o.History(ctx, res.ID)
		require.NoError(t, err)
		require.Len(t, log, 5)
		assert.Equal(t, saga.StepFailed, log[2].Outcome)
		assert.Equal(t, []string{"declined"}, log[2].Errors)
		assert.Equal(t, saga.Compensation, log[3].Phase)
		assert.Equal(t, "b", log[3].Step)
		assert.Equal(t, "a", log[4].Step)
		if k.tx == nil {
			break
		}
	}

	// A driver that dies after the second checkpoint; another owner
	// recovers the saga once the lease has expired.
	dying := &crashing{Store: k.s, die: func(cp saga.Checkpoint) bool { return cp.Status == saga.Running && cp.Step == 2 }}
	a := k.orchestrator(t, dying, "kit-a", nil, ok)
	res, err := saga.Execute(ctx, a, ok, trace{})
	require.ErrorIs(t, err, saga.ErrInterrupted)
	require.ErrorIs(t, err, errCrashed)
	rec, err := k.s.Load(ctx, res.ID)
	require.NoError(t, err)
	assert.Equal(t, saga.Running, rec.Status)
	assert.Equal(t, 2, rec.Step)
	assert.Equal(t, "kit-a", rec.LeaseOwner, "a dead driver cannot release its lease")

	b := k.orchestrator(t, k.s, "kit-b", nil, ok)
	n, err := b.Recover(ctx)
	require.NoError(t, err)
	require.Zero(t, n, "a live lease is never taken over")

	k.clock.Advance(Lease)
	n, err = b.Recover(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	snap, err := saga.Load(ctx, b, ok, res.ID)
	require.NoError(t, err)
	assert.Equal(t, saga.Completed, snap.Record.Status)
	assert.Equal(t, []string{"a", "b", "c"}, snap.State.Done)
	for _, s := range []string{"a", "b", "c"} {
		assert.Equal(t, 1, fx.Applied(res.ID.String()+"/"+s), "step %s applied once", s)
	}
	assert.Equal(t, 2, fx.Calls(res.ID.String()+"/c"), "the step running at the crash runs again")
}
