package saga_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gocqrs/cqrs/events/outbox"
	"github.com/gocqrs/cqrs/mediator/saga"
)

// flaky returns a step whose compensation fails (after changing the
// state) until fix() is called, or, when failures > 0, for its first
// failures attempts.
func flaky(name string, c *calls, failures int) (saga.Step[order], func()) {
	s := plain(name, c)
	fixed := false
	n := 0
	s.Compensation = saga.Do(func(ctx context.Context, o *order) error {
		c.add(ctx, "undo "+name)
		o.Trace = append(o.Trace, "half-undone "+name)
		n++
		if !fixed && (failures == 0 || n <= failures) {
			return fmt.Errorf("undo %s, attempt %d: %w", name, n, errBoom)
		}
		o.Trace = append(o.Trace[:len(o.Trace)-1], "undo "+name)
		return nil
	})
	return s, func() { fixed = true }
}

func TestCompensationRunsInReverseOrderWithRetries(t *testing.T) {
	t.Parallel()
	e := newEnv()
	c := &calls{}
	b, _ := flaky("b", c, 2)
	noUndo := plain("c", c)
	noUndo.Compensation = nil
	def := &saga.Definition[order]{Name: "order", Steps: []saga.Step[order]{plain("a", c), b, noUndo, failing("d", c, errBoom)}}
	o := e.orchestrator(t, e.options("d"), def)

	var results []saga.StepResult
	var final error
	for r, err := range saga.Stream(t.Context(), o, def, order{}) {
		if err != nil {
			final = err
			assert.Equal(t, saga.Compensated, r.Status)
			continue
		}
		results = append(results, r)
	}
	require.ErrorIs(t, final, saga.ErrCompensated)
	assert.Equal(t, []string{"a", "b", "c", "d", "undo b", "undo b", "undo b", "undo a"}, c.list())
	assert.Equal(t, []time.Duration{10 * time.Millisecond, 20 * time.Millisecond}, e.sleep.list(), "exponential backoff between attempts")

	type brief struct {
		step    string
		phase   saga.Phase
		outcome saga.Outcome
		tries   int
	}
	var got []brief
	for _, r := range results {
		got = append(got, brief{r.Step, r.Phase, r.Outcome, r.Attempts})
	}
	assert.Equal(t, []brief{
		{"a", saga.Forward, saga.Succeeded, 1},
		{"b", saga.Forward, saga.Succeeded, 1},
		{"c", saga.Forward, saga.Succeeded, 1},
		{"d", saga.Forward, saga.StepFailed, 1},
		{"b", saga.Compensation, saga.Succeeded, 3},
		{"a", saga.Compensation, saga.Succeeded, 1},
	}, got, "c has nothing to compensate")
	assert.Equal(t, saga.Compensated, results[len(results)-1].Status)

	var se *saga.Error
	require.ErrorAs(t, final, &se)
	assert.Equal(t, "d", se.FailedStep)
	require.Len(t, se.Errors, 3, "the failure and the two failed attempts")
	assert.Equal(t, saga.Forward, se.Errors[0].Phase)
	assert.Equal(t, 2, se.Errors[2].Attempt)
	assert.Empty(t, se.Pending)

	snap, err := saga.Load(t.Context(), o, def, se.SagaID)
	require.NoError(t, err)
	assert.Equal(t, []string{"a", "b", "c", "undo b", "undo a"}, snap.State.Trace,
		"the failed step's and the failed attempts' changes were discarded")
	assert.Equal(t, 0, snap.Record.Step)
	log, err := o.History(t.Context(), se.SagaID)
	require.NoError(t, err)
	require.Len(t, log, 6)
	undoB := log[4]
	assert.Equal(t, saga.Compensation, undoB.Phase)
	assert.Equal(t, 3, undoB.Attempts)
	assert.Len(t, undoB.Errors, 2, "the failed attempts before the success")
	assert.Equal(t, e.clock.Now(), log[5].FinishedAt)
}

func TestCompensationThatKeepsFailingLeavesTheSagaFailed(t *testing.T) {
	t.Parallel()
	e := newEnv()
	c := &calls{}
	b, fix := flaky("b", c, 0)
	def := &saga.Definition[order]{Name: "order", Steps: []saga.Step[order]{plain("a", c), b, failing("c", c, errNope)}}
	o := e.orchestrator(t, e.options("d"), def)

	res, err := saga.Execute(t.Context(), o, def, order{})
	assert.Equal(t, saga.Failed, res.Status)
	require.ErrorIs(t, err, saga.ErrCompensationFailed)
	require.NotErrorIs(t, err, saga.ErrCompensated)
	require.ErrorIs(t, err, errNope, "the step's error is kept")
	require.ErrorIs(t, err, errBoom, "the compensation's errors are kept")
	var se *saga.Error
	require.ErrorAs(t, err, &se)
	assert.Equal(t, saga.Failed, se.Status)
	assert.Equal(t, "c", se.FailedStep)
	assert.Equal(t, []string{"b", "a"}, se.Pending, "b failed, so a was not compensated either")
	require.Len(t, se.Errors, 4)
	assert.Equal(t, "c", se.Errors[0].Step)
	for i, a := range se.Errors[1:] {
		assert.Equal(t, "b", a.Step)
		assert.Equal(t, saga.Compensation, a.Phase)
		assert.Equal(t, i+1, a.Attempt)
	}
	assert.Contains(t, err.Error(), "needs attention")
	assert.Equal(t, 0, c.count("undo a"))
	assert.Equal(t, 3, c.count("undo b"))
	assert.Equal(t, []string{"a", "b"}, res.State.Trace, "back to the last checkpoint")

	rec, err := e.store.Load(t.Context(), res.ID)
	require.NoError(t, err)
	assert.Equal(t, saga.Failed, rec.Status)
	assert.Equal(t, 2, rec.Step, "b and a still to compensate")
	assert.Empty(t, rec.LeaseOwner)
	log, err := o.History(t.Context(), res.ID)
	require.NoError(t, err)
	last := log[len(log)-1]
	assert.Equal(t, saga.StepFailed, last.Outcome)
	assert.Equal(t, saga.Compensation, last.Phase)
	assert.Equal(t, 3, last.Attempts)
	assert.Len(t, last.Errors, 3)

	// Recovery never touches it.
	n, err := o.Recover(t.Context())
	require.NoError(t, err)
	assert.Zero(t, n)

	// An operator fixes the cause and resumes it.
	fix()
	other := e.orchestrator(t, e.options("operator"), def)
	err = other.Resume(t.Context(), res.ID)
	require.ErrorIs(t, err, saga.ErrCompensated)
	require.ErrorAs(t, err, &se)
	require.Len(t, se.Errors, 4, "the history's errors are kept")
	assert.Equal(t, errNope.Error(), se.Errors[0].Err.Error(), "errors of another drive are read back from the log")
	snap, err := saga.Load(t.Context(), o, def, res.ID)
	require.NoError(t, err)
	assert.Equal(t, []string{"a", "b", "undo b", "undo a"}, snap.State.Trace)
	require.ErrorIs(t, other.Resume(t.Context(), res.ID), saga.ErrNotResumable)
}

func TestFailureWithNothingToCompensateEndsAtOnce(t *testing.T) {
	t.Parallel()
	e := newEnv()
	c := &calls{}
	saves := 0
	opts := e.options("d")
	opts.Store = &hooked{Store: e.store, afterSave: func(_ context.Context, _ saga.Checkpoint, err error) error { saves++; return err }}
	def := &saga.Definition[order]{Name: "order", Steps: []saga.Step[order]{failing("a", c, errBoom), plain("b", c)}}
	o := e.orchestrator(t, opts, def)
	res, err := saga.Execute(t.Context(), o, def, order{})
	require.ErrorIs(t, err, saga.ErrCompensated)
	assert.Equal(t, saga.Compensated, res.Status)
	assert.Equal(t, 1, saves, "one write: the failure, which ends the saga")
	n, err := o.Recover(t.Context())
	require.NoError(t, err)
	assert.Zero(t, n, "never picked up again")
}

func TestPanicInAStepIsAFailure(t *testing.T) {
	t.Parallel()
	e := newEnv()
	c := &calls{}
	def := &saga.Definition[order]{Name: "order", Steps: []saga.Step[order]{plain("a", c), {
		Name:   "b",
		Action: saga.Do(func(context.Context, *order) error { panic("kaput") }),
	}}}
	o := e.orchestrator(t, e.options("d"), def)
	_, err := saga.Execute(t.Context(), o, def, order{})
	require.ErrorIs(t, err, saga.ErrCompensated)
	var pe *saga.PanicError
	require.ErrorAs(t, err, &pe)
	assert.Equal(t, "kaput", pe.Value)
	assert.Equal(t, 1, c.count("undo a"))
}

func TestStepTimeoutIsAFailureNotAnInterruption(t *testing.T) {
	t.Parallel()
	e := newEnv()
	c := &calls{}
	def := &saga.Definition[order]{Name: "order", Steps: []saga.Step[order]{plain("a", c), {
		Name:    "slow",
		Timeout: time.Millisecond,
		Action: saga.Do(func(ctx context.Context, _ *order) error {
			<-ctx.Done()
			return ctx.Err()
		}),
	}}}
	o := e.orchestrator(t, e.options("d"), def)
	res, err := saga.Execute(t.Context(), o, def, order{})
	require.ErrorIs(t, err, saga.ErrCompensated)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Equal(t, saga.Compensated, res.Status)
}

func TestStateThatCannotBeEncodedFailsTheStep(t *testing.T) {
	t.Parallel()
	e := newEnv()
	type weird struct {
		F func() `json:"f"`
	}
	def := &saga.Definition[weird]{Name: "weird", Steps: []saga.Step[weird]{
		{Name: "a", Action: saga.Do(func(context.Context, *weird) error { return nil })},
	}}
	o := e.orchestrator(t, e.options("d"), def)
	_, err := saga.Execute(t.Context(), o, def, weird{})
	require.Error(t, err)
	require.NotErrorIs(t, err, saga.ErrInterrupted)
}

func TestCompensationBackoffHasJitter(t *testing.T) {
	t.Parallel()
	e := newEnv()
	c := &calls{}
	b, _ := flaky("b", c, 0)
	opts := e.options("d")
	opts.CompensationAttempts = 5
	opts.CompensationBackoff = outbox.Backoff{Base: 100 * time.Millisecond, Max: 250 * time.Millisecond, Jitter: 0.5}
	def := &saga.Definition[order]{Name: "order", Steps: []saga.Step[order]{b, failing("x", c, errBoom)}}
	o := e.orchestrator(t, opts, def)
	_, err := saga.Execute(t.Context(), o, def, order{})
	require.ErrorIs(t, err, saga.ErrCompensationFailed)
	delays := e.sleep.list()
	require.Len(t, delays, 4, "5 attempts, 4 waits")
	for i, want := range []time.Duration{100, 200, 250, 250} {
		want *= time.Millisecond
		assert.LessOrEqual(t, delays[i], want, "wait %d", i)
		assert.GreaterOrEqual(t, delays[i], want/2, "wait %d", i)
	}
}

var errNope = errors.New("nope")
