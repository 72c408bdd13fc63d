package saga_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/mediator/saga"
)

var (
	errUnavailable = errors.New("payment provider unavailable")
	errOpen        = errors.New("circuit open")
)

// breaker opens a circuit after threshold consecutive failures and never
// closes it.
type breaker struct {
	mu        sync.Mutex
	threshold int
	failures  map[string]int
	names     []string
}

func (b *breaker) Call(ctx context.Context, name string, fn func(context.Context) error) error {
	b.mu.Lock()
	b.names = append(b.names, name)
	if b.failures == nil {
		b.failures = map[string]int{}
	}
	open := b.failures[name] >= b.threshold
	b.mu.Unlock()
	if open {
		return errOpen
	}
	err := fn(ctx)
	b.mu.Lock()
	defer b.mu.Unlock()
	if err != nil {
		b.failures[name]++
	} else {
		b.failures[name] = 0
	}
	return err
}

func (b *breaker) IsOpen(err error) bool { return errors.Is(err, errOpen) }

// charge is a step whose primary fails with errUnavailable (after changing
// the state) and whose fallback succeeds; both can be compensated.
func charge(c *calls, policy events.FallbackPolicy) saga.Step[order] {
	return saga.Step[order]{
		Name: "charge",
		Action: saga.Do(func(ctx context.Context, o *order) error {
			c.add(ctx, "card")
			o.Charge = 100 // discarded: the fallback sees the checkpoint
			return errUnavailable
		}),
		Compensation: saga.Do(func(ctx context.Context, o *order) error { c.add(ctx, "refund card"); return nil }),
		Fallback: &saga.Fallback[order]{
			Action: saga.Do(func(ctx context.Context, o *order) error {
				c.add(ctx, "invoice")
				o.Charge += 1
				return nil
			}),
			Compensation: saga.Do(func(ctx context.Context, o *order) error { c.add(ctx, "cancel invoice"); return nil }),
			Policy:       policy,
		},
	}
}

func TestFallbackAnswersAndIsTheOneCompensated(t *testing.T) {
	t.Parallel()
	e := newEnv()
	c := &calls{}
	def := &saga.Definition[order]{Name: "order", Steps: []saga.Step[order]{
		charge(c, events.FallbackPolicy{On: []error{errUnavailable}}),
		plain("ship", c),
		failing("deliver", c, errBoom),
	}}
	o := e.orchestrator(t, e.options("d"), def)
	var results []saga.StepResult
	for r, err := range saga.Stream(t.Context(), o, def, order{}) {
		if err == nil {
			results = append(results, r)
		}
	}
	assert.Equal(t, []string{"card", "invoice", "ship", "deliver", "undo ship", "cancel invoice"}, c.list())
	require.NotEmpty(t, results)
	assert.True(t, results[0].Fallback)
	assert.Equal(t, 2, results[0].Attempts)
	id := results[0].SagaID.String()
	assert.Equal(t, []string{id + "/charge", id + "/charge/fallback", id + "/ship", id + "/deliver", id + "/ship/compensate", id + "/charge/fallback/compensate"}, c.keys)

	log, err := o.History(t.Context(), results[0].SagaID)
	require.NoError(t, err)
	assert.True(t, log[0].Fallback)
	assert.Equal(t, []string{errUnavailable.Error()}, log[0].Errors, "the primary's error is logged with the fallback's success")
	snap, err := saga.Load(t.Context(), o, def, results[0].SagaID)
	require.NoError(t, err)
	assert.Equal(t, 1, snap.State.Charge, "the primary's change was discarded before the fallback ran")
}

func TestFallbackPolicyThatDoesNotMatch(t *testing.T) {
	t.Parallel()
	e := newEnv()
	c := &calls{}
	def := &saga.Definition[order]{Name: "order", Steps: []saga.Step[order]{
		plain("a", c),
		charge(c, events.FallbackPolicy{On: []error{errBoom}}),
	}}
	o := e.orchestrator(t, e.options("d"), def)
	_, err := saga.Execute(t.Context(), o, def, order{})
	require.ErrorIs(t, err, saga.ErrCompensated)
	require.ErrorIs(t, err, errUnavailable)
	assert.Equal(t, []string{"a", "card", "undo a"}, c.list())
}

func TestFailingFallbackFailsTheStepWithBothErrors(t *testing.T) {
	t.Parallel()
	e := newEnv()
	c := &calls{}
	ch := charge(c, events.FallbackPolicy{})
	ch.Fallback.Action = saga.Do(func(ctx context.Context, _ *order) error { c.add(ctx, "invoice"); return errBoom })
	def := &saga.Definition[order]{Name: "order", Steps: []saga.Step[order]{plain("a", c), ch}}
	o := e.orchestrator(t, e.options("d"), def)
	_, err := saga.Execute(t.Context(), o, def, order{})
	var se *saga.Error
	require.ErrorAs(t, err, &se)
	require.Len(t, se.Errors, 2)
	assert.False(t, se.Errors[0].Fallback)
	require.ErrorIs(t, se.Errors[0], errUnavailable)
	assert.True(t, se.Errors[1].Fallback)
	require.ErrorIs(t, se.Errors[1], errBoom)
	assert.Equal(t, []string{"a", "card", "invoice", "undo a"}, c.list())
}

func TestFallbackCircuitOpens(t *testing.T) {
	t.Parallel()
	e := newEnv()
	c := &calls{}
	br := &breaker{threshold: 2}
	def := &saga.Definition[order]{Name: "order", Steps: []saga.Step[order]{charge(c, events.FallbackPolicy{On: []error{errUnavailable}, Breaker: br})}}
	o := e.orchestrator(t, e.options("d"), def)
	for range 5 {
		res, err := saga.Execute(t.Context(), o, def, order{})
		require.NoError(t, err)
		assert.Equal(t, 1, res.State.Charge)
	}
	assert.Equal(t, 2, c.count("card"), "once the circuit is open the primary is not called")
	assert.Equal(t, 5, c.count("invoice"), "the fallback answers at once")
	assert.Equal(t, []string{"saga order/charge"}, uniq(br.names), "the step's circuit")

	named := &saga.Definition[order]{Name: "named", Steps: []saga.Step[order]{charge(c, events.FallbackPolicy{Breaker: br, Name: "payments"})}}
	o2 := e.orchestrator(t, e.options("d"), named)
	_, err := saga.Execute(t.Context(), o2, named, order{})
	require.NoError(t, err)
	assert.Equal(t, []string{"saga order/charge", "payments"}, uniq(br.names))
}

func uniq(names []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, n := range names {
		if !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	return out
}
