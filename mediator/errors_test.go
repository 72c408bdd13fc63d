package mediator_test

import (
	"context"
	"errors"
	"reflect"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gocqrs/cqrs/bootstrap"
	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/mediator"
)

func TestEventHandlerPanicIsDispatchErrorWithPanicError(t *testing.T) {
	t.Parallel()
	for _, md := range fanoutModes() {
		t.Run(md.name, func(t *testing.T) {
			t.Parallel()
			type bad struct{}
			type good struct{}
			var goods, afterPanic atomic.Int64
			m := build(t, with(md.opts, emitter(),
				onEvent(func(context.Context, bad) ([]events.Event, error) { panic("event kaboom") }),
				onEvent(func(context.Context, bad) ([]events.Event, error) {
					afterPanic.Add(1) // the next handler of the same event
					return nil, nil
				}),
				onEvent(func(context.Context, good) ([]events.Event, error) {
					goods.Add(1)
					return nil, nil
				}),
			)...)

			var res string
			var err error
			require.NotPanics(t, func() { res, err = sendEvents(t.Context(), m, good{}, bad{}, good{}) })
			assert.Equal(t, "ok", res, "the response survives an event-handler panic")
			de := dispatchError(t, err)
			require.Len(t, de.Failures, 1)
			var he *mediator.HandlerError
			require.ErrorAs(t, err, &he)
			assert.Equal(t, reflect.TypeFor[bad](), he.EventType)
			assert.Equal(t, bad{}, he.Event)
			var pe *mediator.PanicError
			require.ErrorAs(t, he, &pe)
			require.ErrorAs(t, err, &pe)
			assert.Equal(t, "event kaboom", pe.Value)
			assert.NotEmpty(t, pe.Stack)
			assert.EqualValues(t, 2, goods.Load())
			assert.EqualValues(t, 1, afterPanic.Load())
		})
	}
}

func TestFailingHandlerDoesNotStopOthers(t *testing.T) {
	t.Parallel()
	for _, md := range fanoutModes() {
		t.Run(md.name, func(t *testing.T) {
			t.Parallel()
			errSentinel := errors.New("sentinel")
			type ev struct{ N int }
			type other struct{}
			failing := &failingHandler[ev]{err: errSentinel}
			var before, after, others, followUps atomic.Int64
			m := build(t, with(md.opts, emitter(),
				onEvent(func(_ context.Context, e ev) ([]events.Event, error) {
					before.Add(1)
					if e.N == 0 {
						return []events.Event{other{}}, nil
					}
					return nil, nil
				}),
				bootstrap.WithDomainEvents(func(m *events.Map) { events.BindHandler[ev](m, failing) }),
				onEvent(func(context.Context, ev) ([]events.Event, error) {
					after.Add(1)
					return nil, nil
				}),
				onEvent(func(context.Context, other) ([]events.Event, error) {
					others.Add(1)
					followUps.Add(1)
					return nil, nil
				}),
			)...)

			res, err := sendEvents(t.Context(), m, ev{0}, other{}, ev{1}, ev{2})
			assert.Equal(t, "ok", res)
			de := dispatchError(t, err)
			assert.Len(t, de.Failures, 3, "one failure per event the failing handler saw")
			assert.Zero(t, de.NotStarted)
			assert.NoError(t, de.Interrupted)
			require.ErrorIs(t, err, errSentinel)
			var he *mediator.HandlerError
			require.ErrorAs(t, err, &he)
			assert.Equal(t, reflect.TypeFor[ev](), he.EventType)
			assert.Contains(t, he.Handler, "failingHandler")
			require.ErrorIs(t, he, errSentinel)
			assert.Equal(t, errSentinel, he.Err)
			assert.EqualValues(t, 3, failing.calls.Load())
			assert.EqualValues(t, 3, before.Load())
			assert.EqualValues(t, 3, after.Load(), "handlers bound after the failing one still run")
			assert.EqualValues(t, 2, others.Load(), "other events and follow-ups still run")
		})
	}
}

func TestTwoFailingHandlersAreBothReported(t *testing.T) {
	t.Parallel()
	for _, md := range fanoutModes() {
		t.Run(md.name, func(t *testing.T) {
			t.Parallel()
			errOne := errors.New("one")
			errTwo := errors.New("two")
			type evOne struct{}
			type evTwo struct{}
			one := &failingHandler[evOne]{err: errOne}
			two := &failingHandler[evTwo]{err: errTwo}
			var ok atomic.Int64
			m := build(t, with(md.opts, emitter(),
				bootstrap.WithDomainEvents(func(m *events.Map) {
					events.BindHandler[evOne](m, one)
					events.BindHandler[evTwo](m, two)
				}),
				onEvent(func(context.Context, evTwo) ([]events.Event, error) {
					ok.Add(1)
					return nil, nil
				}),
			)...)

			res, err := sendEvents(t.Context(), m, evOne{}, evTwo{})
			assert.Equal(t, "ok", res)
			de := dispatchError(t, err)
			require.Len(t, de.Failures, 2)
			require.ErrorIs(t, err, errOne)
			require.ErrorIs(t, err, errTwo)
			types := map[reflect.Type]string{}
			for _, f := range de.Failures {
				var he *mediator.HandlerError
				require.ErrorAs(t, f, &he)
				types[he.EventType] = he.Handler
			}
			assert.Contains(t, types[reflect.TypeFor[evOne]()], "failingHandler")
			assert.Contains(t, types[reflect.TypeFor[evTwo]()], "failingHandler")
			assert.EqualValues(t, 1, ok.Load())
		})
	}
}

func TestFollowUpWithErrorIsDiscarded(t *testing.T) {
	t.Parallel()
	for _, md := range fanoutModes() {
		t.Run(md.name, func(t *testing.T) {
			t.Parallel()
			errX := errors.New("x")
			type ev struct{}
			type fu struct{}
			var fus atomic.Int64
			m := build(t, with(md.opts, emitter(),
				onEvent(func(context.Context, ev) ([]events.Event, error) { return []events.Event{fu{}}, errX }),
				onEvent(func(context.Context, fu) ([]events.Event, error) {
					fus.Add(1)
					return nil, nil
				}),
			)...)
			_, err := sendEvents(t.Context(), m, ev{})
			require.ErrorIs(t, err, errX)
			assert.Zero(t, fus.Load())
		})
	}
}

func TestFailFastSequentialDoesNotStartLaterEvents(t *testing.T) {
	t.Parallel()
	errStop := errors.New("stop")
	type ev struct{ N int }
	var order trail
	var calls atomic.Int64
	m := build(t, emitter(), bootstrap.WithFailFast(), bootstrap.WithConcurrentEventHandling(false),
		onEvent(func(_ context.Context, e ev) ([]events.Event, error) {
			calls.Add(1)
			order.add(string(rune('0' + e.N)))
			if e.N == 1 {
				return nil, errStop
			}
			return nil, nil
		}),
	)

	res, err := sendEvents(t.Context(), m, ev{0}, ev{1}, ev{2}, ev{3})
	assert.Equal(t, "ok", res)
	require.ErrorIs(t, err, errStop)
	de := dispatchError(t, err)
	require.Len(t, de.Failures, 1)
	assert.Equal(t, 2, de.NotStarted)
	assert.NoError(t, de.Interrupted, "fail-fast is not an interruption by the caller")
	assert.Equal(t, []string{"0", "1"}, order.get())
	assert.EqualValues(t, 2, calls.Load())
}

func TestFailFastSequentialSkipsRemainingHandlersOfEvent(t *testing.T) {
	t.Parallel()
	errStop := errors.New("stop")
	type ev struct{}
	var second atomic.Int64
	m := build(t, emitter(), bootstrap.WithFailFast(), bootstrap.WithMaxConcurrentEventHandlers(1),
		onEvent(func(context.Context, ev) ([]events.Event, error) { return nil, errStop }),
		onEvent(func(context.Context, ev) ([]events.Event, error) {
			second.Add(1)
			return nil, nil
		}),
	)
	_, err := sendEvents(t.Context(), m, ev{}, ev{})
	require.ErrorIs(t, err, errStop)
	assert.Equal(t, 3, dispatchError(t, err).NotStarted)
	assert.Zero(t, second.Load())
}

func TestFailFastParallelCancelsRunningHandlers(t *testing.T) {
	t.Parallel()
	for _, md := range []fanoutMode{
		{"parallel", nil},
		{"parallel handlers", []bootstrap.Option{bootstrap.WithEventHandlerOrder(mediator.Parallel)}},
	} {
		t.Run(md.name, func(t *testing.T) {
			t.Parallel()
			errStop := errors.New("stop")
			type ev struct{ Fail bool }
			blocked := make(chan struct{}, 8)
			bothBlocked := make(chan struct{})
			var started, sawCancel, causeIsFailure atomic.Int64
			m := build(t, with(md.opts, emitter(), bootstrap.WithFailFast(), bootstrap.WithMaxConcurrentEventHandlers(3),
				onEvent(func(ctx context.Context, e ev) ([]events.Event, error) {
					started.Add(1)
					if e.Fail {
						<-bothBlocked // fail only once the two others are running
						return nil, errStop
					}
					blocked <- struct{}{}
					<-ctx.Done() // released only by the fail-fast cancellation
					sawCancel.Add(1)
					if errors.Is(context.Cause(ctx), errStop) {
						causeIsFailure.Add(1)
					}
					return nil, nil
				}),
			)...)

			done := async(func() (string, error) {
				return sendEvents(t.Context(), m, ev{}, ev{}, ev{Fail: true}, ev{}, ev{}, ev{})
			})
			recv(t, blocked, "first blocker")
			recv(t, blocked, "second blocker")
			close(bothBlocked)
			res, err := await(t, done)

			assert.Equal(t, "ok", res)
			require.ErrorIs(t, err, errStop)
			de := dispatchError(t, err)
			require.Len(t, de.Failures, 1)
			assert.Equal(t, 3, de.NotStarted, "the events after the first three are not started")
			assert.NoError(t, de.Interrupted)
			assert.EqualValues(t, 3, started.Load())
			assert.EqualValues(t, 2, sawCancel.Load(), "running handlers see their ctx cancelled")
			assert.EqualValues(t, 2, causeIsFailure.Load(), "the cancellation cause is the failure")
			assert.NoError(t, t.Context().Err(), "the caller's ctx is not cancelled")
		})
	}
}

func TestFollowUpDepthIsBounded(t *testing.T) {
	t.Parallel()
	for _, md := range fanoutModes() {
		for _, depth := range []int{0, 1, 3} { // 0: the default
			name := md.name + "/default"
			opts := with(md.opts, emitter())
			want := mediator.DefaultMaxEventDepth
			if depth > 0 {
				name = md.name + "/" + string(rune('0'+depth))
				opts = append(opts, bootstrap.WithMaxEventDepth(depth))
				want = depth
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				type loop struct{ N int }
				var calls atomic.Int64
				m := build(t, append(opts, onEvent(func(_ context.Context, e loop) ([]events.Event, error) {
					calls.Add(1)
					return []events.Event{loop{e.N + 1}}, nil // re-emits itself forever
				}))...)

				res, err := sendEvents(t.Context(), m, loop{1})
				assert.Equal(t, "ok", res)
				require.ErrorIs(t, err, mediator.ErrMaxDepth)
				var de *mediator.DepthError
				require.ErrorAs(t, err, &de)
				assert.Equal(t, want+1, de.Depth)
				assert.Equal(t, want, de.Max)
				assert.Equal(t, reflect.TypeFor[loop](), de.EventType)
				assert.Equal(t, loop{want + 1}, de.Event)
				assert.EqualValues(t, want, calls.Load())
				assert.Len(t, dispatchError(t, err).Failures, 1)
			})
		}
	}
}
