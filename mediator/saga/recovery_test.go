package saga_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gocqrs/cqrs/mediator/saga"
	"github.com/gocqrs/cqrs/mediator/saga/sagatest"
)

const lease = 30 * time.Second

var errCrashed = errors.New("process crashed")

// effect returns a step that applies its effect through fx, deduplicated by
// its idempotency key, and records each invocation in c.
func effect(name string, c *calls, fx *sagatest.Effects) saga.Step[order] {
	return saga.Step[order]{
		Name: name,
		Action: saga.Do(func(ctx context.Context, o *order) error {
			c.add(ctx, name)
			fx.Apply(ctx)
			o.Trace = append(o.Trace, name)
			return nil
		}),
		Compensation: saga.Do(func(ctx context.Context, o *order) error {
			c.add(ctx, "undo "+name)
			fx.Apply(ctx)
			return nil
		}),
	}
}

// process is a store as one process sees it: once dead, every write fails,
// as if the process had crashed.
type process struct {
	saga.Store
	dead atomic.Bool
	// dieAfter, when set, kills the process after a successful Save it
	// accepts; dieBefore kills it instead of a Save it accepts.
	dieAfter, dieBefore func(saga.Checkpoint) bool
	onDeath             func()
}

func (p *process) kill() {
	if !p.dead.Swap(true) && p.onDeath != nil {
		p.onDeath()
	}
}

func (p *process) Save(ctx context.Context, cp saga.Checkpoint) error {
	if p.dieBefore != nil && p.dieBefore(cp) {
		p.kill()
	}
	if p.dead.Load() {
		return errCrashed
	}
	err := p.Store.Save(ctx, cp)
	if err == nil && p.dieAfter != nil && p.dieAfter(cp) {
		p.kill()
	}
	return err
}

func (p *process) Renew(ctx context.Context, id uuid.UUID, owner string, lease time.Duration) error {
	if p.dead.Load() {
		return errCrashed
	}
	return p.Store.Renew(ctx, id, owner, lease)
}

func (p *process) Claim(ctx context.Context, owner string, names []string, limit int, lease time.Duration) ([]saga.Record, error) {
	if p.dead.Load() {
		return nil, errCrashed
	}
	return p.Store.Claim(ctx, owner, names, limit, lease)
}

func TestCancellationMidStepLeavesTheSagaRecoverable(t *testing.T) {
	t.Parallel()
	e := newEnv()
	c := &calls{}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var resumed []bool
	def := &saga.Definition[order]{Name: "order", Steps: []saga.Step[order]{
		plain("a", c),
		{
			Name: "b",
			Action: saga.Do(func(ctx context.Context, o *order) error {
				inv, _ := saga.InvocationFrom(ctx)
				resumed = append(resumed, inv.Resumed)
				c.add(ctx, "b")
				if inv.Resumed {
					o.Trace = append(o.Trace, "b")
					return nil
				}
				cancel() // the caller gives up while b runs
				<-ctx.Done()
				return ctx.Err()
			}),
			Compensation: saga.Do(func(ctx context.Context, _ *order) error { c.add(ctx, "undo b"); return nil }),
		},
		plain("c", c),
	}}
	o := e.orchestrator(t, e.options("caller"), def)

	res, err := saga.Execute(ctx, o, def, order{})
	require.ErrorIs(t, err, saga.ErrInterrupted)
	require.ErrorIs(t, err, context.Canceled)
	assert.Equal(t, saga.Running, res.Status)
	assert.Equal(t, []string{"a"}, res.State.Trace)
	assert.Equal(t, []string{"a", "b"}, c.list(), "nothing was compensated")

	rec, err := e.store.Load(t.Context(), res.ID)
	require.NoError(t, err)
	assert.Equal(t, saga.Running, rec.Status)
	assert.Equal(t, 1, rec.Step)
	assert.Empty(t, rec.LeaseOwner, "the lease was released")
	log, err := o.History(t.Context(), res.ID)
	require.NoError(t, err)
	require.Len(t, log, 2)
	assert.Equal(t, saga.Interrupted, log[1].Outcome)
	assert.Equal(t, "b", log[1].Step)

	// Released, so recoverable at once.
	r := e.orchestrator(t, e.options("recoverer"), def)
	n, err := r.Recover(t.Context())
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	snap, err := saga.Load(t.Context(), r, def, res.ID)
	require.NoError(t, err)
	assert.Equal(t, saga.Completed, snap.Record.Status)
	assert.Equal(t, []string{"a", "b", "c"}, snap.State.Trace)
	assert.Equal(t, []bool{false, true}, resumed, "b runs again, marked as resumed")
}

func TestCancelledBeforeTheNextStepRunsNothingMore(t *testing.T) {
	t.Parallel()
	e := newEnv()
	c := &calls{}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	a := plain("a", c)
	a.Action = saga.Do(func(ctx context.Context, o *order) error { c.add(ctx, "a"); cancel(); return nil })
	def := &saga.Definition[order]{Name: "order", Steps: []saga.Step[order]{a, plain("b", c)}}
	o := e.orchestrator(t, e.options("d"), def)
	res, err := saga.Execute(ctx, o, def, order{})
	require.ErrorIs(t, err, saga.ErrInterrupted)
	assert.Equal(t, saga.Running, res.Status)
	assert.Equal(t, []string{"a"}, c.list())
	rec, err := e.store.Load(t.Context(), res.ID)
	require.NoError(t, err)
	assert.Equal(t, 0, rec.Step, "a's checkpoint was written with the cancelled context, so it failed: a runs again")
}

func TestRecoverSagaAbandonedAfterItsSecondCheckpoint(t *testing.T) {
	t.Parallel()
	e := newEnv()
	c := &calls{}
	fx := &sagatest.Effects{}
	def := &saga.Definition[order]{Name: "order", Steps: []saga.Step[order]{effect("a", c, fx), effect("b", c, fx), effect("c", c, fx)}}

	// Driver A's process dies right after step 2 is checkpointed.
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	procA := &process{Store: e.store, dieAfter: func(cp saga.Checkpoint) bool { return cp.Status == saga.Running && cp.Step == 2 }, onDeath: cancel}
	optsA := e.options("driver-a")
	optsA.Store = procA
	a := e.orchestrator(t, optsA, def)
	res, err := saga.Execute(ctx, a, def, order{})
	require.ErrorIs(t, err, saga.ErrInterrupted)
	rec, err := e.store.Load(t.Context(), res.ID)
	require.NoError(t, err)
	assert.Equal(t, saga.Running, rec.Status)
	assert.Equal(t, 2, rec.Step)
	assert.Equal(t, "driver-a", rec.LeaseOwner, "the dead driver still holds its lease")

	b := e.orchestrator(t, e.options("driver-b"), def)
	n, err := b.Recover(t.Context())
	require.NoError(t, err)
	require.Zero(t, n, "a saga whose lease is alive is never picked up")

	e.clock.Advance(lease)
	n, err = b.Recover(t.Context())
	require.NoError(t, err)
	require.Equal(t, 1, n)
	snap, err := saga.Load(t.Context(), b, def, res.ID)
	require.NoError(t, err)
	assert.Equal(t, saga.Completed, snap.Record.Status)
	assert.Equal(t, []string{"a", "b", "c"}, snap.State.Trace)
	assert.Equal(t, []string{"a", "b", "c"}, c.list())
	for _, s := range []string{"a", "b", "c"} {
		assert.Equal(t, 1, fx.Applied(res.ID.String()+"/"+s), "%s applied once", s)
	}
	assert.Equal(t, 1, snap.Record.Attempts+1, "progress reset the attempts")
}

func TestCrashMidStepRerunsItWithTheSameKey(t *testing.T) {
	t.Parallel()
	e := newEnv()
	c := &calls{}
	fx := &sagatest.Effects{}
	def := &saga.Definition[order]{Name: "order", Steps: []saga.Step[order]{effect("a", c, fx), effect("b", c, fx), effect("c", c, fx)}}
	// The process dies after step c did its work, before its checkpoint.
	procA := &process{Store: e.store, dieBefore: func(cp saga.Checkpoint) bool { return cp.Status == saga.Completed }}
	optsA := e.options("driver-a")
	optsA.Store = procA
	res, err := saga.Execute(t.Context(), e.orchestrator(t, optsA, def), def, order{})
	require.ErrorIs(t, err, saga.ErrInterrupted)
	require.ErrorIs(t, err, errCrashed)

	e.clock.Advance(lease)
	n, err := e.orchestrator(t, e.options("driver-b"), def).Recover(t.Context())
	require.NoError(t, err)
	require.Equal(t, 1, n)
	key := res.ID.String() + "/c"
	assert.Equal(t, 2, fx.Calls(key), "at least once: c ran again")
	assert.Equal(t, 1, fx.Applied(key), "its effect was deduplicated by its key")
	assert.Equal(t, []string{"a", "b", "c", "c"}, c.list())
}

func TestTwoRecoverersDriveEachSagaOnce(t *testing.T) {
	t.Parallel()
	e := newEnv()
	c := &calls{}
	fx := &sagatest.Effects{}
	var mu sync.Mutex
	drives := map[uuid.UUID]int{}
	last := effect("c", c, fx)
	inner := last.Action
	last.Action = func(ctx context.Context, o *order) ([]any, error) {
		if inv, _ := saga.InvocationFrom(ctx); inv.Resumed {
			mu.Lock()
			drives[inv.SagaID]++
			mu.Unlock()
		}
		return inner(ctx, o)
	}
	def := &saga.Definition[order]{Name: "order", Steps: []saga.Step[order]{effect("a", c, fx), effect("b", c, fx), last}}

	const sagas = 12
	var ids []uuid.UUID
	for range sagas {
		proc := &process{Store: e.store, dieBefore: func(cp saga.Checkpoint) bool { return cp.Status == saga.Completed }}
		opts := e.options("driver-a")
		opts.Store = proc
		res, err := saga.Execute(t.Context(), e.orchestrator(t, opts, def), def, order{})
		require.ErrorIs(t, err, errCrashed)
		ids = append(ids, res.ID)
	}
	e.clock.Advance(lease)

	recoverers := []*saga.Orchestrator{e.orchestrator(t, e.options("r1"), def), e.orchestrator(t, e.options("r2"), def)}
	counts := make([]int, len(recoverers))
	errs := make([]error, len(recoverers))
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i, r := range recoverers {
		wg.Go(func() {
			<-start
			counts[i], errs[i] = r.Recover(t.Context())
		})
	}
	close(start)
	wg.Wait()
	require.NoError(t, errors.Join(errs...))
	assert.Equal(t, sagas, counts[0]+counts[1], "every saga recovered, by one recoverer")
	for _, id := range ids {
		assert.Equal(t, 1, drives[id], "saga %s driven once", id)
		assert.Equal(t, 1, fx.Applied(id.String()+"/c"))
		rec, err := e.store.Load(t.Context(), id)
		require.NoError(t, err)
		assert.Equal(t, saga.Completed, rec.Status)
	}
}

func TestRecoveryAttemptLimitHaltsTheSaga(t *testing.T) {
	t.Parallel()
	e := newEnv()
	c := &calls{}
	fixed := false
	var proc *process
	b := plain("b", c)
	b.Action = saga.Do(func(ctx context.Context, o *order) error {
		c.add(ctx, "b")
		if !fixed {
			proc.kill() // b takes its process down, every time
			return errCrashed
		}
		o.Trace = append(o.Trace, "b")
		return nil
	})
	def := &saga.Definition[order]{Name: "order", Steps: []saga.Step[order]{plain("a", c), b, plain("c", c)}}
	newProcess := func(owner string) *saga.Orchestrator {
		proc = &process{Store: e.store}
		opts := e.options(owner)
		opts.Store = proc
		opts.MaxRecoveryAttempts = 2
		return e.orchestrator(t, opts, def)
	}

	res, err := saga.Execute(t.Context(), newProcess("first"), def, order{})
	require.ErrorIs(t, err, saga.ErrInterrupted)
	for attempt := 1; attempt <= 2; attempt++ {
		e.clock.Advance(lease)
		n, err := newProcess("recoverer").Recover(t.Context())
		require.ErrorIs(t, err, saga.ErrInterrupted, "attempt %d", attempt)
		require.Equal(t, 1, n)
		rec, err := e.store.Load(t.Context(), res.ID)
		require.NoError(t, err)
		assert.Equal(t, attempt, rec.Attempts)
		assert.Equal(t, saga.Running, rec.Status)
	}
	e.clock.Advance(lease)
	n, err := newProcess("recoverer").Recover(t.Context())
	require.NoError(t, err, "halting a saga is an outcome, not a failure of the pass")
	require.Equal(t, 1, n)
	assert.Equal(t, 3, c.count("b"), "b was not run on the claim over the limit")
	rec, err := e.store.Load(t.Context(), res.ID)
	require.NoError(t, err)
	assert.Equal(t, saga.Halted, rec.Status)
	assert.True(t, rec.Status.NeedsAttention())
	assert.Equal(t, 1, rec.Step)
	assert.Empty(t, rec.LeaseOwner)
	log, err := e.store.Log(t.Context(), res.ID)
	require.NoError(t, err)
	halt := log[len(log)-1]
	assert.Equal(t, saga.HaltedOutcome, halt.Outcome)
	assert.Equal(t, "b", halt.Step)
	require.Len(t, halt.Errors, 1)
	assert.Contains(t, halt.Errors[0], saga.ErrAttemptsExhausted.Error())

	e.clock.Advance(lease)
	n, err = newProcess("recoverer").Recover(t.Context())
	require.NoError(t, err)
	assert.Zero(t, n, "a halted saga waits for a human")

	fixed = true
	require.NoError(t, newProcess("operator").Resume(t.Context(), res.ID))
	snap, err := saga.Load(t.Context(), newProcess("x"), def, res.ID)
	require.NoError(t, err)
	assert.Equal(t, saga.Completed, snap.Record.Status)
	assert.Equal(t, 0, snap.Record.Attempts)
	assert.Equal(t, []string{"a", "b", "c"}, snap.State.Trace)
}

func TestHaltedWhileCompensatingResumesCompensating(t *testing.T) {
	t.Parallel()
	e := newEnv()
	c := &calls{}
	// A saga left compensating by a dead driver, then halted.
	proc := &process{Store: e.store, dieAfter: func(cp saga.Checkpoint) bool { return cp.Status == saga.Compensating }}
	opts := e.options("a")
	opts.Store = proc
	def := &saga.Definition[order]{Name: "order", Steps: []saga.Step[order]{plain("a", c), plain("b", c), failing("c", c, errBoom)}}
	res, err := saga.Execute(t.Context(), e.orchestrator(t, opts, def), def, order{})
	require.ErrorIs(t, err, saga.ErrInterrupted)
	opts = e.options("r")
	opts.MaxRecoveryAttempts = 1
	e.clock.Advance(lease)
	rec, err := e.store.Load(t.Context(), res.ID)
	require.NoError(t, err)
	require.Equal(t, saga.Compensating, rec.Status)
	// Claim it once by hand (a recoverer that died at once), then let
	// recovery halt it.
	_, err = e.store.Claim(t.Context(), "ghost", nil, 1, lease)
	require.NoError(t, err)
	e.clock.Advance(lease)
	r := e.orchestrator(t, opts, def)
	n, err := r.Recover(t.Context())
	require.NoError(t, err)
	require.Equal(t, 1, n)
	rec, err = e.store.Load(t.Context(), res.ID)
	require.NoError(t, err)
	require.Equal(t, saga.Halted, rec.Status)

	err = r.Resume(t.Context(), res.ID)
	require.ErrorIs(t, err, saga.ErrCompensated, "a saga halted while compensating goes on compensating")
	var se *saga.Error
	require.ErrorAs(t, err, &se)
	assert.Equal(t, "c", se.FailedStep)
	require.ErrorContains(t, err, errBoom.Error())
	assert.Equal(t, []string{"a", "b", "c", "undo b", "undo b", "undo a"}, c.list(),
		"the dying driver ran undo b without checkpointing it: it runs again (at least once)")
}

func TestLeaseIsRenewedDuringALongStep(t *testing.T) {
	t.Parallel()
	e := newEnv()
	c := &calls{}
	var renewals atomic.Int64
	renewed := make(chan struct{}, 1)
	started, finish := make(chan struct{}), make(chan struct{})
	long := plain("long", c)
	long.Action = saga.Do(func(ctx context.Context, o *order) error {
		close(started)
		<-finish
		return nil
	})
	def := &saga.Definition[order]{Name: "order", Steps: []saga.Step[order]{plain("a", c), long}}
	opts := e.options("driver")
	opts.RenewEvery = time.Millisecond // real time: renewals start at once
	opts.Store = &hooked{Store: e.store, afterRenew: func(err error) {
		if err == nil {
			renewals.Add(1)
			select {
			case renewed <- struct{}{}:
			default:
			}
		}
	}}
	o := e.orchestrator(t, opts, def)
	done := make(chan error, 1)
	var id uuid.UUID
	go func() {
		res, err := saga.Execute(t.Context(), o, def, order{})
		id = res.ID
		done <- err
	}()
	<-started
	e.clock.Advance(3 * lease) // far past the first lease
	// Wait for two renewals that began after the clock moved.
	base := renewals.Load()
	for renewals.Load() < base+2 {
		<-renewed
	}
	r := e.orchestrator(t, e.options("recoverer"), def)
	n, err := r.Recover(t.Context())
	require.NoError(t, err)
	assert.Zero(t, n, "the renewed lease is alive: no zombie")
	close(finish)
	require.NoError(t, <-done)
	assert.Equal(t, []string{"a"}, c.list()[:1])
	rec, err := e.store.Load(t.Context(), id)
	require.NoError(t, err)
	assert.Equal(t, saga.Completed, rec.Status)
	assert.Equal(t, int64(3), rec.Version, "renewals do not change the version")
}

func TestLeaseLostStopsTheDriver(t *testing.T) {
	t.Parallel()
	e := newEnv()
	c := &calls{}
	started := make(chan uuid.UUID)
	var cause error
	b := plain("b", c)
	b.Action = saga.Do(func(ctx context.Context, o *order) error {
		inv, _ := saga.InvocationFrom(ctx)
		started <- inv.SagaID
		<-ctx.Done()
		cause = context.Cause(ctx)
		return ctx.Err()
	})
	def := &saga.Definition[order]{Name: "order", Steps: []saga.Step[order]{plain("a", c), b}}
	opts := e.options("driver")
	opts.RenewEvery = time.Millisecond
	o := e.orchestrator(t, opts, def)
	done := make(chan error, 1)
	go func() {
		_, err := saga.Execute(t.Context(), o, def, order{})
		done <- err
	}()
	id := <-started
	// The driver stalls: its lease expires and another owner claims it.
	e.clock.Advance(10 * lease)
	var recs []saga.Record
	for len(recs) == 0 { // a renewal may land between the advance and the claim
		var err error
		recs, err = e.store.Claim(t.Context(), "thief", nil, 1, lease)
		require.NoError(t, err)
		if len(recs) == 0 {
			e.clock.Advance(10 * lease)
		}
	}
	err := <-done
	require.ErrorIs(t, err, saga.ErrInterrupted)
	require.ErrorIs(t, err, saga.ErrLeaseLost)
	require.ErrorIs(t, cause, saga.ErrLeaseLost, "the step's context was cancelled with the cause")
	rec, err := e.store.Load(t.Context(), id)
	require.NoError(t, err)
	assert.Equal(t, "thief", rec.LeaseOwner, "the driver did not touch a saga it lost")
	assert.Equal(t, 0, c.count("undo a"))
}

func TestStaleDriverLosesTheSagaToARecoverer(t *testing.T) {
	t.Parallel()
	e := newEnv()
	c := &calls{}
	fx := &sagatest.Effects{}
	started, finish := make(chan struct{}), make(chan struct{})
	b := effect("b", c, fx)
	inner := b.Action
	b.Action = func(ctx context.Context, o *order) ([]any, error) {
		if inv, _ := saga.InvocationFrom(ctx); !inv.Resumed {
			defer func() { <-finish }() // A stalls after doing b's work
			close(started)
		}
		return inner(ctx, o)
	}
	def := &saga.Definition[order]{Name: "order", Steps: []saga.Step[order]{effect("a", c, fx), b, effect("c", c, fx)}}
	a := e.orchestrator(t, e.options("driver-a"), def)
	done := make(chan error, 1)
	var res saga.Result[order]
	go func() {
		var err error
		res, err = saga.Execute(t.Context(), a, def, order{})
		done <- err
	}()
	<-started
	e.clock.Advance(lease)
	n, err := e.orchestrator(t, e.options("driver-b"), def).Recover(t.Context())
	require.NoError(t, err)
	require.Equal(t, 1, n)
	close(finish)
	err = <-done
	require.ErrorIs(t, err, saga.ErrConflict, "A's checkpoint is stale")
	require.NotErrorIs(t, err, saga.ErrCompensated)
	rec, err := e.store.Load(t.Context(), res.ID)
	require.NoError(t, err)
	assert.Equal(t, saga.Completed, rec.Status)
	assert.Equal(t, 1, fx.Applied(res.ID.String()+"/b"))
	assert.Equal(t, 2, fx.Calls(res.ID.String()+"/b"))
	assert.Equal(t, 0, c.count("undo a"))
}

func TestStreamStoppedEarlyLeavesTheSagaRecoverable(t *testing.T) {
	t.Parallel()
	e := newEnv()
	c := &calls{}
	def := &saga.Definition[order]{Name: "order", Steps: []saga.Step[order]{plain("a", c), plain("b", c), plain("c", c)}}
	o := e.orchestrator(t, e.options("d"), def)
	var id uuid.UUID
	for r, err := range saga.Stream(t.Context(), o, def, order{}) {
		require.NoError(t, err)
		id = r.SagaID
		assert.Equal(t, "a", r.Step)
		break
	}
	rec, err := e.store.Load(t.Context(), id)
	require.NoError(t, err)
	assert.Equal(t, saga.Running, rec.Status)
	assert.Equal(t, 1, rec.Step)
	assert.Empty(t, rec.LeaseOwner)
	n, err := o.Recover(t.Context())
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	assert.Equal(t, []string{"a", "b", "c"}, c.list())
}

func TestResumeRefusesLiveAndUnknownSagas(t *testing.T) {
	t.Parallel()
	e := newEnv()
	c := &calls{}
	def := &saga.Definition[order]{Name: "order", Steps: []saga.Step[order]{plain("a", c)}}
	o := e.orchestrator(t, e.options("d"), def)
	rec := sagatest.NewRecord("order")
	rec.State, rec.LeaseOwner = []byte(`{}`), "someone"
	require.NoError(t, e.store.Create(t.Context(), rec, lease))
	require.ErrorIs(t, o.Resume(t.Context(), rec.ID), saga.ErrLeased)
	require.ErrorIs(t, o.Resume(t.Context(), uuid.New()), saga.ErrNotFound)
	e.clock.Advance(lease)
	require.NoError(t, o.Resume(t.Context(), rec.ID), "an expired lease can be taken over")
	other := sagatest.NewRecord("unknown")
	require.NoError(t, e.store.Create(t.Context(), other, 0))
	require.ErrorIs(t, o.Resume(t.Context(), other.ID), saga.ErrNotRegistered)
}

func TestUndecodableStateIsHalted(t *testing.T) {
	t.Parallel()
	e := newEnv()
	c := &calls{}
	def := &saga.Definition[order]{Name: "order", Steps: []saga.Step[order]{plain("a", c)}}
	o := e.orchestrator(t, e.options("d"), def)
	rec := sagatest.NewRecord("order")
	rec.State = []byte(`{"trace": 42}`)
	require.NoError(t, e.store.Create(t.Context(), rec, 0))
	n, err := o.Recover(t.Context())
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	got, err := e.store.Load(t.Context(), rec.ID)
	require.NoError(t, err)
	assert.Equal(t, saga.Halted, got.Status)
	assert.Empty(t, c.list())
}

func TestRecovererRunsPassesUntilCancelled(t *testing.T) {
	t.Parallel()
	e := newEnv()
	c := &calls{}
	def := &saga.Definition[order]{Name: "order", Steps: []saga.Step[order]{plain("a", c)}}
	rec := sagatest.NewRecord("order")
	rec.State = []byte(`{}`)
	require.NoError(t, e.store.Create(t.Context(), rec, 0))

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	passes := make(chan time.Duration)
	opts := e.options("r")
	opts.Sleep = func(ctx context.Context, d time.Duration) error {
		select {
		case passes <- d:
		case <-ctx.Done():
			return ctx.Err()
		}
		<-ctx.Done()
		return ctx.Err()
	}
	r := saga.NewRecoverer(e.orchestrator(t, opts, def), time.Minute)
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	assert.Equal(t, time.Minute, <-passes, "waits its interval after a pass")
	require.ErrorIs(t, r.Run(ctx), saga.ErrRecovererRunning)
	got, err := e.store.Load(t.Context(), rec.ID)
	require.NoError(t, err)
	assert.Equal(t, saga.Completed, got.Status)
	cancel()
	require.NoError(t, <-done)
}

func TestCursorBeyondTheDefinitionIsHalted(t *testing.T) {
	t.Parallel()
	e := newEnv()
	c := &calls{}
	def := &saga.Definition[order]{Name: "order", Steps: []saga.Step[order]{plain("a", c)}}
	o := e.orchestrator(t, e.options("d"), def)
	rec := sagatest.NewRecord("order")
	rec.State, rec.Step = []byte(`{}`), 3 // written by a release with more steps
	require.NoError(t, e.store.Create(t.Context(), rec, 0))
	n, err := o.Recover(t.Context())
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	got, err := e.store.Load(t.Context(), rec.ID)
	require.NoError(t, err)
	assert.Equal(t, saga.Halted, got.Status)
	log, err := o.History(t.Context(), rec.ID)
	require.NoError(t, err)
	require.Len(t, log, 1)
	assert.Contains(t, log[0].Errors[0], "does not fit the definition")
	assert.Empty(t, c.list())
}
