package saga_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/events/outbox"
	"github.com/gocqrs/cqrs/mediator/saga"
)

func TestNewReportsEveryProblemAtOnce(t *testing.T) {
	t.Parallel()
	c := &calls{}
	noop := saga.Do(func(context.Context, *order) error { return nil })
	bad := &saga.Definition[order]{Name: "", Steps: []saga.Step[order]{
		{Name: "a", Action: noop},
		{Name: "a", Action: noop},
		{Name: "", Action: noop},
		{Name: "x/y", Action: noop},
		{Name: "nil", Action: nil},
		{Name: "fb", Action: noop, Fallback: &saga.Fallback[order]{}},
		{Name: "slow", Action: noop, Timeout: -time.Second},
	}}
	empty := &saga.Definition[order]{Name: "empty"}
	good := &saga.Definition[order]{Name: "good", Steps: []saga.Step[order]{plain("a", c)}}
	dup := &saga.Definition[order]{Name: "good", Steps: []saga.Step[order]{plain("a", c)}}
	var nilDef *saga.Definition[order]
	_, err := saga.New(saga.Options{
		Lease:               time.Second,
		RenewEvery:          2 * time.Second,
		CompensationBackoff: outbox.Backoff{Base: time.Second, Max: time.Millisecond, Jitter: 2},
		MaxRecoveryAttempts: -1,
	}, bad, empty, good, dup, nilDef, nil)
	require.Error(t, err)
	require.ErrorIs(t, err, saga.ErrInvalidDefinition)
	require.ErrorIs(t, err, saga.ErrInvalidOptions)
	msg := err.Error()
	for _, want := range []string{
		"nil Store", "RenewEvery", "Base", "Jitter", "MaxRecoveryAttempts",
		`saga "": empty name`,
		`step 1 ("a"): duplicate name, already used by step 0`,
		"step 2: empty name",
		`step 3 ("x/y"): name contains "/"`,
		`step 4 ("nil"): nil action`,
		`step 5 ("fb"): fallback with a nil action`,
		`step 6 ("slow"): negative timeout`,
		`saga "empty": no steps`,
		`saga "good" registered twice`,
		"nil definition",
		"definition 5 is nil",
	} {
		assert.Contains(t, msg, want)
	}
	n := 0
	var walk func(error)
	walk = func(err error) {
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				walk(e)
			}
			return
		}
		n++
	}
	walk(err)
	assert.Equal(t, 16, n, "one error per problem")

	require.NoError(t, good.Validate())
	assert.Equal(t, "good", good.SagaName())
	assert.Empty(t, nilDef.SagaName())
	assert.Empty(t, nilDef.Mermaid())
}

func TestMermaidDrawsFallbacksAndSkippedCompensations(t *testing.T) {
	t.Parallel()
	c := &calls{}
	check := plain("check", c)
	check.Compensation = nil
	ch := charge(c, events.FallbackPolicy{})
	ch.Compensation = nil
	def := &saga.Definition[order]{Name: "place-order", Steps: []saga.Step[order]{check, ch, plain("ship: now", c)}}
	assert.Equal(t, `sequenceDiagram
    participant O as saga place-order
    participant S1 as check
    participant S2 as charge
    participant F2 as charge (fallback)
    participant S3 as ship  now
    O->>S1: check
    S1-->>O: done, checkpoint
    O->>S2: charge
    alt charge succeeds
        S2-->>O: done, checkpoint
    else charge fails and the fallback policy accepts the error
        O->>F2: charge (fallback)
        F2-->>O: done, checkpoint
    end
    O->>S3: ship  now
    alt ship  now succeeds
        S3-->>O: done, checkpoint: completed
    else ship  now fails
        S3--xO: failed, checkpoint: compensating
        alt charge ran
            Note over O,S2: charge: nothing to compensate
        else its fallback ran
            O->>F2: compensate charge (fallback), retried with backoff
            F2-->>O: done, checkpoint
        end
        Note over O,S1: check: nothing to compensate
        Note over O: compensated
    end
    Note over O,S3: a step that fails is followed by the compensation of the steps before it, in reverse order
`, def.Mermaid())

	one := &saga.Definition[order]{Name: "one", Steps: []saga.Step[order]{plain("only", c)}}
	assert.Equal(t, `sequenceDiagram
    participant O as saga one
    participant S1 as only
    O->>S1: only
    alt only succeeds
        S1-->>O: done, checkpoint: completed
    else only fails
        S1--xO: failed, checkpoint: compensating
        Note over O: compensated (nothing to undo)
    end
`, one.Mermaid())

	o, err := saga.New(saga.Options{Store: saga.NewMemoryStore(saga.MemoryOptions{})}, def)
	require.NoError(t, err)
	assert.Equal(t, def.Mermaid(), o.Mermaid("place-order"))
	assert.Empty(t, o.Mermaid("nope"))
	assert.Equal(t, []string{"place-order"}, o.Names())
}

// observer records what an Observer is told.
type observer struct {
	mu     sync.Mutex
	events []string
}

func (o *observer) add(s string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.events = append(o.events, s)
}

type spanKey struct{}

func (o *observer) StartSaga(ctx context.Context, d saga.Drive) (context.Context, func(saga.Status, error)) {
	o.add("saga " + d.Saga + " " + d.Status.String())
	return context.WithValue(ctx, spanKey{}, "saga"), func(s saga.Status, err error) {
		o.add("saga end " + s.String() + " " + boolStr(err != nil))
	}
}

func (o *observer) StartStep(ctx context.Context, inv saga.Invocation) (context.Context, func(saga.StepResult)) {
	o.add("step " + inv.Step + " " + inv.Phase.String())
	return context.WithValue(ctx, spanKey{}, "step "+inv.Step), func(r saga.StepResult) {
		o.add("step end " + r.Step + " " + r.Outcome.String())
	}
}

func boolStr(b bool) string {
	if b {
		return "error"
	}
	return "ok"
}

func TestObserverSeesEveryDriveAndInvocation(t *testing.T) {
	t.Parallel()
	e := newEnv()
	c := &calls{}
	obs := &observer{}
	var spans []any
	a := plain("a", c)
	a.Action = saga.Do(func(ctx context.Context, o *order) error {
		spans = append(spans, ctx.Value(spanKey{}))
		return nil
	})
	b, _ := flaky("b", c, 1)
	opts := e.options("d")
	opts.Observer = obs
	def := &saga.Definition[order]{Name: "order", Steps: []saga.Step[order]{a, b, failing("c", c, errBoom)}}
	o := e.orchestrator(t, opts, def)
	_, err := saga.Execute(t.Context(), o, def, order{})
	require.ErrorIs(t, err, saga.ErrCompensated)
	assert.Equal(t, []any{"step a"}, spans, "the action runs in the observer's context")
	assert.Equal(t, []string{
		"saga order running",
		"step a forward", "step end a succeeded",
		"step b forward", "step end b succeeded",
		"step c forward", "step end c failed",
		"step b compensation", "step end b failed",
		"step b compensation", "step end b succeeded",
		"step a compensation", "step end a succeeded",
		"saga end compensated error",
	}, obs.events)
}

func TestEveryInvocationIsALogLine(t *testing.T) {
	t.Parallel()
	e := newEnv()
	c := &calls{}
	var buf bytes.Buffer
	var mu sync.Mutex
	opts := e.options("driver-1")
	opts.Logger = slog.New(slog.NewJSONHandler(lockedWriter{&buf, &mu}, nil))
	b, _ := flaky("b", c, 1)
	def := &saga.Definition[order]{Name: "order", Steps: []saga.Step[order]{plain("a", c), b, failing("c", c, errBoom)}}
	o := e.orchestrator(t, opts, def)
	res, err := saga.Execute(t.Context(), o, def, order{})
	require.ErrorIs(t, err, saga.ErrCompensated)

	type line struct {
		Level, Msg, Saga, Step, Phase, Outcome, Error string
		SagaID                                        string `json:"saga_id"`
		Attempts                                      int
	}
	var lines []line
	for _, raw := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var l line
		require.NoError(t, json.Unmarshal([]byte(raw), &l))
		lines = append(lines, l)
	}
	var steps []string
	for _, l := range lines {
		switch l.Msg {
		case "saga step":
			assert.Equal(t, res.ID.String(), l.SagaID)
			assert.Equal(t, "order", l.Saga)
			steps = append(steps, l.Level+" "+l.Step+" "+l.Phase+" "+l.Outcome)
		case "saga compensation attempt failed; retrying":
			steps = append(steps, l.Level+" retry "+l.Step)
		default:
			steps = append(steps, l.Level+" "+l.Msg)
		}
	}
	assert.Equal(t, []string{
		"INFO a forward succeeded",
		"INFO b forward succeeded",
		"WARN c forward failed",
		"WARN retry b",
		"INFO b compensation succeeded",
		"INFO a compensation succeeded",
		"WARN saga compensated",
	}, steps)
}

type lockedWriter struct {
	w  *bytes.Buffer
	mu *sync.Mutex
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func TestStatusAndOutcomeStrings(t *testing.T) {
	t.Parallel()
	for s, want := range map[saga.Status]string{
		saga.Running: "running", saga.Compensating: "compensating", saga.Completed: "completed",
		saga.Compensated: "compensated", saga.Failed: "failed", saga.Halted: "halted", 0: "Status(0)",
	} {
		assert.Equal(t, want, s.String())
	}
	assert.True(t, saga.Compensating.Active())
	assert.False(t, saga.Failed.Active())
	assert.True(t, saga.Halted.NeedsAttention())
	assert.Equal(t, "Phase(0)", saga.Phase(0).String())
	assert.Equal(t, "Outcome(9)", saga.Outcome(9).String())
	assert.Equal(t, "halted", saga.HaltedOutcome.String())

	err := &saga.Error{Saga: "s", Status: saga.Halted, Reason: saga.ErrAttemptsExhausted}
	require.ErrorIs(t, err, saga.ErrHalted)
	require.ErrorIs(t, err, saga.ErrAttemptsExhausted)
	require.NotErrorIs(t, err, saga.ErrCompensated)
	ce := &saga.ConflictError{Version: 3}
	require.ErrorIs(t, ce, saga.ErrConflict)
	assert.Contains(t, ce.Error(), "version 3")
	require.ErrorIs(t, &saga.StepError{Err: errBoom}, errBoom)
	assert.True(t, errors.Is(err, saga.ErrHalted))
}
