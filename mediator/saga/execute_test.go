package saga_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/events/outbox"
	"github.com/gocqrs/cqrs/events/outbox/outboxtest"
	"github.com/gocqrs/cqrs/mediator"
	"github.com/gocqrs/cqrs/mediator/saga"
	"github.com/gocqrs/cqrs/requests"
)

func backoff() outbox.Backoff {
	return outbox.Backoff{Base: 10 * time.Millisecond, Max: time.Second}
}

func TestExecuteRunsStepsInOrderAndCheckpointsEach(t *testing.T) {
	t.Parallel()
	e := newEnv()
	c := &calls{}
	def := &saga.Definition[order]{Name: "order", Steps: []saga.Step[order]{plain("reserve", c), plain("charge", c), plain("ship", c)}}
	type saved struct {
		status saga.Status
		step   int
		trace  []string
		owner  string
		calls  int
	}
	var saves []saved
	opts := e.options("driver")
	opts.Store = &hooked{Store: e.store, afterSave: func(_ context.Context, cp saga.Checkpoint, err error) error {
		var o order
		require.NoError(t, json.Unmarshal(cp.State, &o))
		saves = append(saves, saved{cp.Status, cp.Step, o.Trace, cp.Owner, len(c.list())})
		return err
	}}
	o := e.orchestrator(t, opts, def)

	res, err := saga.Execute(t.Context(), o, def, order{ID: "o-1"})
	require.NoError(t, err)
	assert.Equal(t, saga.Completed, res.Status)
	assert.Equal(t, []string{"reserve", "charge", "ship"}, res.State.Trace)
	assert.Equal(t, "o-1", res.State.ID)
	assert.Equal(t, []string{"reserve", "charge", "ship"}, c.list())
	assert.Equal(t, []saved{
		{saga.Running, 1, []string{"reserve"}, "driver", 1},
		{saga.Running, 2, []string{"reserve", "charge"}, "driver", 2},
		{saga.Completed, 3, []string{"reserve", "charge", "ship"}, "", 3},
	}, saves, "one checkpoint after each step, the last one releasing the lease")

	id := res.ID.String()
	assert.Equal(t, []string{id + "/reserve", id + "/charge", id + "/ship"}, c.keys)
	log, err := o.History(t.Context(), res.ID)
	require.NoError(t, err)
	require.Len(t, log, 3)
	for i, en := range log {
		assert.Equal(t, saga.Forward, en.Phase)
		assert.Equal(t, saga.Succeeded, en.Outcome)
		assert.Equal(t, i, en.Index)
		assert.Equal(t, 1, en.Attempts)
		assert.Equal(t, "driver", en.Owner)
	}
	rec, err := e.store.Load(t.Context(), res.ID)
	require.NoError(t, err)
	assert.Equal(t, int64(4), rec.Version)
	assert.Empty(t, rec.LeaseOwner)
}

func TestExecuteUnregisteredDefinition(t *testing.T) {
	t.Parallel()
	e := newEnv()
	c := &calls{}
	def := &saga.Definition[order]{Name: "order", Steps: []saga.Step[order]{plain("a", c)}}
	twin := &saga.Definition[order]{Name: "order", Steps: []saga.Step[order]{plain("a", c)}}
	o := e.orchestrator(t, e.options("d"), def)
	_, err := saga.Execute(t.Context(), o, twin, order{})
	require.ErrorIs(t, err, saga.ErrNotRegistered)
	_, err = saga.Execute(t.Context(), o, nil, order{})
	require.ErrorIs(t, err, saga.ErrNotRegistered)
	_, err = saga.Load(t.Context(), o, twin, uuid.New())
	require.ErrorIs(t, err, saga.ErrNotRegistered)
	assert.Empty(t, c.list())
}

func TestDefinitionChangesAfterNewHaveNoEffect(t *testing.T) {
	t.Parallel()
	e := newEnv()
	c := &calls{}
	def := &saga.Definition[order]{Name: "order", Steps: []saga.Step[order]{plain("a", c), plain("b", c)}}
	o := e.orchestrator(t, e.options("d"), def)
	def.Steps[1] = plain("changed", c)
	def.Steps = append(def.Steps, plain("added", c))
	_, err := saga.Execute(t.Context(), o, def, order{})
	require.NoError(t, err)
	assert.Equal(t, []string{"a", "b"}, c.list())
}

func TestWithIDMakesStartingIdempotent(t *testing.T) {
	t.Parallel()
	e := newEnv()
	c := &calls{}
	def := &saga.Definition[order]{Name: "order", Steps: []saga.Step[order]{plain("a", c)}}
	o := e.orchestrator(t, e.options("d"), def)
	id := uuid.New()
	res, err := saga.Execute(t.Context(), o, def, order{}, saga.WithID(id))
	require.NoError(t, err)
	assert.Equal(t, id, res.ID)
	res, err = saga.Execute(t.Context(), o, def, order{}, saga.WithID(id))
	require.ErrorIs(t, err, saga.ErrExists)
	assert.Equal(t, saga.Status(0), res.Status)
	assert.Equal(t, []string{"a"}, c.list(), "the second start ran nothing")
}

func TestInvocationKeys(t *testing.T) {
	t.Parallel()
	id := uuid.MustParse("01890a5d-ac96-774b-bcce-b302099a8057")
	inv := saga.Invocation{SagaID: id, Step: "charge"}
	assert.Equal(t, id.String()+"/charge", inv.Key())
	inv.Fallback = true
	assert.Equal(t, id.String()+"/charge/fallback", inv.Key())
	inv.Phase = saga.Compensation
	assert.Equal(t, id.String()+"/charge/fallback/compensate", inv.Key())
	inv.Fallback = false
	assert.Equal(t, id.String()+"/charge/compensate", inv.Key())
	_, ok := saga.InvocationFrom(context.Background())
	assert.False(t, ok)
	assert.Empty(t, saga.KeyFrom(context.Background()))
}

// Requests and events of the mediator tests.
type (
	reserveStock struct {
		requests.Returns[string]
		Order string
	}
	releaseStock struct {
		requests.Returns[requests.Unit]
		Reservation string
	}
	stockReserved struct{ Reservation, Key string }
)

func TestSendStepsGoThroughTheMediator(t *testing.T) {
	t.Parallel()
	e := newEnv()
	var keys []string
	var invs []saga.Invocation
	var handled []stockReserved
	var reqs requests.Map
	requests.BindHandler[reserveStock](&reqs, requests.HandlerFunc[reserveStock, string](func(ctx context.Context, r reserveStock) (string, []events.Event, error) {
		inv, ok := saga.InvocationFrom(ctx)
		require.True(t, ok, "the handler sees the step's invocation")
		invs = append(invs, inv)
		keys = append(keys, saga.KeyFrom(ctx))
		return "res-" + r.Order, []events.Event{stockReserved{Reservation: "res-" + r.Order, Key: saga.KeyFrom(ctx)}}, nil
	}))
	requests.BindHandler[releaseStock](&reqs, requests.HandlerFunc[releaseStock, requests.Unit](func(ctx context.Context, r releaseStock) (requests.Unit, []events.Event, error) {
		keys = append(keys, saga.KeyFrom(ctx))
		return requests.Unit{}, nil, nil
	}))
	var evs events.Map
	events.BindHandler[stockReserved](&evs, events.HandlerFunc[stockReserved](func(ctx context.Context, ev stockReserved) ([]events.Event, error) {
		handled = append(handled, ev)
		return nil, nil
	}))
	m, err := mediator.New(nil, &reqs, &evs, mediator.DefaultConfig())
	require.NoError(t, err)

	type stock struct {
		Order       string `json:"order"`
		Reservation string `json:"reservation"`
	}
	def := &saga.Definition[stock]{Name: "stock", Steps: []saga.Step[stock]{
		{
			Name:         "reserve",
			Action:       saga.Send(func(s *stock) reserveStock { return reserveStock{Order: s.Order} }, func(s *stock, id string) { s.Reservation = id }),
			Compensation: saga.Send(func(s *stock) releaseStock { return releaseStock{Reservation: s.Reservation} }, nil),
		},
		{Name: "fail", Action: saga.Do(func(context.Context, *stock) error { return errBoom })},
	}}
	opts := e.options("d")
	opts.Mediator = m
	o := e.orchestrator(t, opts, def)

	res, err := saga.Execute(t.Context(), o, def, stock{Order: "o-7"})
	require.ErrorIs(t, err, saga.ErrCompensated)
	assert.Equal(t, "res-o-7", res.State.Reservation, "the response was applied, and kept by the checkpoint")
	id := res.ID.String()
	assert.Equal(t, []string{id + "/reserve", id + "/reserve/compensate"}, keys)
	require.Len(t, invs, 1)
	assert.Equal(t, saga.Invocation{SagaID: res.ID, Saga: "stock", Step: "reserve", Index: 0, Phase: saga.Forward, Attempt: 1}, invs[0])
	assert.Equal(t, []stockReserved{{Reservation: "res-o-7", Key: id + "/reserve"}}, handled, "the mediator dispatched the handler's events")
}

func TestSendWithoutMediatorFailsTheStep(t *testing.T) {
	t.Parallel()
	e := newEnv()
	def := &saga.Definition[order]{Name: "order", Steps: []saga.Step[order]{
		{Name: "reserve", Action: saga.Send(func(*order) reserveStock { return reserveStock{} }, nil)},
	}}
	o := e.orchestrator(t, e.options("d"), def)
	_, err := saga.Execute(t.Context(), o, def, order{})
	require.ErrorIs(t, err, saga.ErrCompensated)
	require.ErrorIs(t, err, saga.ErrNoMediator)
}

func TestDispatchErrorFromSendCountsAsDone(t *testing.T) {
	t.Parallel()
	e := newEnv()
	var reqs requests.Map
	requests.BindHandler[reserveStock](&reqs, requests.HandlerFunc[reserveStock, string](func(ctx context.Context, r reserveStock) (string, []events.Event, error) {
		return "res", []events.Event{stockReserved{}}, nil
	}))
	var evs events.Map
	events.BindHandler[stockReserved](&evs, events.HandlerFunc[stockReserved](func(context.Context, stockReserved) ([]events.Event, error) {
		return nil, errBoom
	}))
	m, err := mediator.New(nil, &reqs, &evs, mediator.DefaultConfig())
	require.NoError(t, err)
	c := &calls{}
	def := &saga.Definition[order]{Name: "order", Steps: []saga.Step[order]{
		{
			Name:         "reserve",
			Action:       saga.Send(func(*order) reserveStock { return reserveStock{} }, func(o *order, r string) { o.Trace = append(o.Trace, r) }),
			Compensation: saga.Do(func(ctx context.Context, _ *order) error { c.add(ctx, "undo"); return nil }),
			Fallback: &saga.Fallback[order]{
				Action: saga.Do(func(ctx context.Context, _ *order) error { c.add(ctx, "fallback"); return nil }),
			},
		},
		plain("ship", c),
	}}
	opts := e.options("d")
	opts.Mediator = m
	o := e.orchestrator(t, opts, def)
	var results []saga.StepResult
	for r, err := range saga.Stream(t.Context(), o, def, order{}) {
		require.NoError(t, err)
		results = append(results, r)
	}
	require.Len(t, results, 2)
	assert.Equal(t, saga.Succeeded, results[0].Outcome)
	assert.False(t, results[0].Fallback, "a dispatch error is no failure: no fallback")
	var de *mediator.DispatchError
	require.ErrorAs(t, results[0].EventsErr, &de)
	require.ErrorIs(t, results[0].EventsErr, errBoom)
	assert.Equal(t, []string{"ship"}, c.list(), "neither fallback nor compensation ran")

	res, err := saga.Execute(t.Context(), o, def, order{})
	assert.Equal(t, saga.Completed, res.Status)
	assert.Equal(t, []string{"res", "ship"}, res.State.Trace)
	require.ErrorAs(t, err, &de, "Execute reports the dispatch failure beside the completed saga")
	var se *saga.StepError
	require.ErrorAs(t, err, &se)
	assert.Equal(t, "reserve", se.Step)
}

type shipped struct{ Order string }

func TestPlainStepEventsAreDispatchedAfterTheCheckpoint(t *testing.T) {
	t.Parallel()
	e := newEnv()
	disp := &recordEvents{}
	opts := e.options("d")
	opts.Dispatcher = saga.DispatchFunc(func(ctx context.Context, evs ...events.Event) error {
		inv, _ := saga.InvocationFrom(ctx)
		rec, err := e.store.Load(ctx, inv.SagaID)
		require.NoError(t, err)
		assert.Equal(t, inv.Index+1, rec.Step, "the step was checkpointed before its events left")
		return disp.Dispatch(ctx, evs...)
	})
	def := &saga.Definition[order]{Name: "order", Steps: []saga.Step[order]{
		{Name: "ship", Action: func(_ context.Context, o *order) ([]events.Event, error) {
			return []events.Event{shipped{Order: o.ID}}, nil
		}},
		{Name: "notify", Action: func(_ context.Context, o *order) ([]events.Event, error) { return nil, nil }},
	}}
	o := e.orchestrator(t, opts, def)
	res, err := saga.Execute(t.Context(), o, def, order{ID: "o-9"})
	require.NoError(t, err)
	evs, keys := disp.list()
	assert.Equal(t, []events.Event{shipped{Order: "o-9"}}, evs)
	assert.Equal(t, []string{res.ID.String() + "/ship"}, keys)

	disp.err = errBoom
	res, err = saga.Execute(t.Context(), o, def, order{ID: "o-10"})
	assert.Equal(t, saga.Completed, res.Status, "a dispatch failure does not fail the step")
	require.ErrorIs(t, err, errBoom)
	require.NotErrorIs(t, err, saga.ErrCompensated)
}

func TestEventsWithoutDispatcherAreReported(t *testing.T) {
	t.Parallel()
	e := newEnv()
	def := &saga.Definition[order]{Name: "order", Steps: []saga.Step[order]{
		{Name: "ship", Action: func(context.Context, *order) ([]events.Event, error) { return []events.Event{shipped{}}, nil }},
	}}
	o := e.orchestrator(t, e.options("d"), def)
	res, err := saga.Execute(t.Context(), o, def, order{})
	assert.Equal(t, saga.Completed, res.Status)
	require.ErrorIs(t, err, saga.ErrNoDispatcher)
}

func TestEventMediatorDispatcher(t *testing.T) {
	t.Parallel()
	var got []shipped
	var evs events.Map
	events.BindHandler[shipped](&evs, events.HandlerFunc[shipped](func(_ context.Context, ev shipped) ([]events.Event, error) {
		got = append(got, ev)
		return nil, nil
	}))
	m, err := mediator.New(nil, nil, &evs, mediator.DefaultConfig())
	require.NoError(t, err)
	d := saga.EventMediatorDispatcher(m.Events())
	require.NoError(t, d.Dispatch(t.Context(), shipped{Order: "a"}, stockReserved{}, shipped{Order: "b"}), "an event with no handler is ignored")
	assert.Equal(t, []shipped{{"a"}, {"b"}}, got)
	err = d.Dispatch(t.Context(), events.NewNotification("order.shipped", 1))
	require.ErrorIs(t, err, saga.ErrNoDispatcher, "notification events are refused, not dropped")

	// It is the default dispatcher of an orchestrator with a mediator.
	e := newEnv()
	opts := e.options("d")
	opts.Mediator = m
	def := &saga.Definition[order]{Name: "order", Steps: []saga.Step[order]{
		{Name: "ship", Action: func(context.Context, *order) ([]events.Event, error) { return []events.Event{shipped{Order: "c"}}, nil }},
	}}
	o := e.orchestrator(t, opts, def)
	_, err = saga.Execute(t.Context(), o, def, order{})
	require.NoError(t, err)
	assert.Equal(t, []shipped{{"a"}, {"b"}, {"c"}}, got)
}

func TestTransactorCommitsStepAndCheckpointTogether(t *testing.T) {
	t.Parallel()
	e := newEnv()
	ob := outbox.NewMemoryStore(outbox.MemoryOptions{Clock: e.clock})
	var interfere bool
	opts := e.options("d")
	opts.Transactor = e.store // the memory stores share one transaction type
	opts.Store = &hooked{Store: e.store, beforeSave: func(ctx context.Context, cp saga.Checkpoint) error {
		if interfere && cp.Status == saga.Running && cp.Step == 2 {
			interfere = false
			// Another writer moves the saga on while step b runs.
			bg := context.Background()
			rec, err := e.store.Load(bg, cp.ID)
			require.NoError(t, err)
			require.NoError(t, e.store.Save(bg, saga.Checkpoint{ID: cp.ID, Version: rec.Version, Status: rec.Status, Step: rec.Step, State: rec.State}))
		}
		return nil
	}}
	writes := func(name string) saga.Step[order] {
		return saga.Step[order]{Name: name, Action: saga.Do(func(ctx context.Context, o *order) error {
			return ob.Add(ctx, outboxtest.NewEnvelope(saga.KeyFrom(ctx), name))
		})}
	}
	def := &saga.Definition[order]{Name: "order", Steps: []saga.Step[order]{writes("a"), writes("b"), failing("c", &calls{}, errBoom)}}
	o := e.orchestrator(t, opts, def)

	_, err := saga.Execute(t.Context(), o, def, order{})
	require.ErrorIs(t, err, saga.ErrCompensated)
	st, err := ob.Stats(t.Context())
	require.NoError(t, err)
	assert.Equal(t, int64(2), st.Pending, "each step's outbox row committed with its checkpoint")

	interfere = true
	res, err := saga.Execute(t.Context(), o, def, order{})
	require.ErrorIs(t, err, saga.ErrConflict)
	require.NotErrorIs(t, err, saga.ErrCompensated, "a driver that lost the saga compensates nothing")
	st, err = ob.Stats(t.Context())
	require.NoError(t, err)
	assert.Equal(t, int64(3), st.Pending, "step b's row rolled back with its checkpoint")
	rec, err := e.store.Load(t.Context(), res.ID)
	require.NoError(t, err)
	assert.Equal(t, 1, rec.Step)
	log, err := e.store.Log(t.Context(), res.ID)
	require.NoError(t, err)
	assert.Len(t, log, 1, "only step a's entry")
}
