package mediator_test

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gocqrs/cqrs/bootstrap"
	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/mediator"
	"github.com/gocqrs/cqrs/requests"
)

// ---------------------------------------------------------------------------
// Helpers of the streaming tests. Every wait is bounded by guard (a deadlock
// detector, never a means of synchronisation), so a broken contract fails a
// test instead of hanging it.

// streamHandlerFunc is the shape of a stream handler written as a function.
type streamHandlerFunc[Req requests.Request[Res], Res any] = func(ctx context.Context, req Req, yield func(Res, []events.Event) bool) ([]events.Event, error)

// streamOn binds f as the stream handler of Req.
func streamOn[Req requests.Request[Res], Res any](f streamHandlerFunc[Req, Res]) bootstrap.Option {
	return bootstrap.WithQueries(func(r *requests.Map) {
		requests.BindStreamHandler[Req, Res](r, requests.StreamHandlerFunc[Req, Res](f))
	})
}

// streamBuild builds a StreamingRequestMediator from values only.
func streamBuild(t *testing.T, opts ...bootstrap.Option) *mediator.StreamingRequestMediator {
	t.Helper()
	sm, err := bootstrap.Streaming(nil, opts...)
	require.NoError(t, err)
	require.NotNil(t, sm)
	return sm
}

// streamPair is one pair received from a stream.
type streamPair[Res any] struct {
	v   Res
	err error
}

// streamDrain ranges over seq to its end and returns every pair received.
func streamDrain[Res any](seq iter.Seq2[Res, error]) []streamPair[Res] {
	var out []streamPair[Res]
	for v, err := range seq {
		out = append(out, streamPair[Res]{v, err})
	}
	return out
}

// streamWait waits for ch to deliver or close; false means it did not within
// guard. Usable from any goroutine.
func streamWait(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	case <-time.After(guard):
		return false
	}
}

// errStreamStuck is returned by a handler whose wait timed out.
var errStreamStuck = errors.New("stream test: wait timed out (deadlock?)")

// streamIsDone reports, without waiting, whether ctx is done.
func streamIsDone(ctx context.Context) bool {
	select {
	case <-ctx.Done():
		return true
	default:
		return false
	}
}

// streamBarrier releases its callers in groups of n: each caller waits until
// n callers (itself included) have arrived in its group. When the callers
// are event handlers of one fan-out, a group can only complete if n of them
// are in flight at once.
type streamBarrier struct {
	n       int
	mu      sync.Mutex
	arrived int
	gate    chan struct{}
}

func streamNewBarrier(n int) *streamBarrier { return &streamBarrier{n: n, gate: make(chan struct{})} }

// wait returns false if its group did not complete within guard.
func (b *streamBarrier) wait() bool {
	b.mu.Lock()
	gate := b.gate
	b.arrived++
	if b.arrived == b.n {
		close(gate)
		b.gate = make(chan struct{})
		b.arrived = 0
	}
	b.mu.Unlock()
	return streamWait(gate)
}

// streamProgress is the item of most test streams.
type streamProgress struct {
	Step    int
	Percent int
}

// streamSteps asks for Steps progress items; the handler bound by
// streamStepper yields item i with Events[i] (when present) and returns Late
// after the last item.
type streamSteps struct {
	requests.Returns[streamProgress]
	Steps  int
	Events [][]events.Event
	Late   []events.Event
}

// streamStepper binds the handler of streamSteps, counting its calls and
// recording what each yield returned.
func streamStepper(calls *atomic.Int64, yields *trail) bootstrap.Option {
	return streamOn(func(_ context.Context, r streamSteps, yield func(streamProgress, []events.Event) bool) ([]events.Event, error) {
		calls.Add(1)
		for i := range r.Steps {
			var evs []events.Event
			if i < len(r.Events) {
				evs = r.Events[i]
			}
			ok := yield(streamProgress{Step: i, Percent: 100 * (i + 1) / r.Steps}, evs)
			yields.add(fmt.Sprintf("yield %d: %v", i, ok))
			if !ok {
				return r.Late, nil
			}
		}
		return r.Late, nil
	})
}

// streamModes are the fan-out modes a streaming test runs in: the package's
// fan-out modes plus the streaming defaults.
func streamModes() []fanoutMode {
	return append(fanoutModes(), fanoutMode{name: "streaming defaults"})
}

// streamCount returns a handler of E that counts its calls.
func streamCount[E any](n *atomic.Int64) bootstrap.Option {
	return onEvent(func(context.Context, E) ([]events.Event, error) {
		n.Add(1)
		return nil, nil
	})
}

// ---------------------------------------------------------------------------
// Items and events

// TestStreamItemsArriveInOrderTyped: a range loop receives the handler's
// items in order, typed by the request's Returns marker.
func TestStreamItemsArriveInOrderTyped(t *testing.T) {
	t.Parallel()
	type words struct {
		requests.Returns[string]
		Text []string
	}
	var calls atomic.Int64
	var yields trail
	sm := streamBuild(t,
		streamStepper(&calls, &yields),
		streamOn(func(_ context.Context, w words, yield func(string, []events.Event) bool) ([]events.Event, error) {
			for _, s := range w.Text {
				if !yield(s, nil) {
					break
				}
			}
			return nil, nil
		}),
	)

	var got []streamProgress
	for p, err := range mediator.Stream(t.Context(), sm, streamSteps{Steps: 4}) {
		require.NoError(t, err)
		got = append(got, p) // p is a streamProgress: no assertion needed
	}
	assert.Equal(t, []streamProgress{{0, 25}, {1, 50}, {2, 75}, {3, 100}}, got)

	var text []string
	for s, err := range mediator.Stream(t.Context(), sm, words{Text: []string{"a", "b", "c"}}) {
		require.NoError(t, err)
		text = append(text, s) // s is a string
	}
	assert.Equal(t, []string{"a", "b", "c"}, text)
	assert.EqualValues(t, 1, calls.Load())
}

// TestStreamEventsAreDispatchedBeforeEachItem: when the consumer receives
// item n, the events of items 0..n and all their follow-ups have been
// handled, and no event handler is still running.
func TestStreamEventsAreDispatchedBeforeEachItem(t *testing.T) {
	t.Parallel()
	for _, md := range streamModes() {
		t.Run(md.name, func(t *testing.T) {
			t.Parallel()
			type ev struct{ Item int }
			type followUp struct{ Item int }
			const steps = 8
			var handled, followUps, calls atomic.Int64
			var g gauge
			var yields trail
			sm := streamBuild(t, with(md.opts,
				streamStepper(&calls, &yields),
				onEvent(func(_ context.Context, e ev) ([]events.Event, error) {
					g.enter()
					defer g.leave()
					handled.Add(1)
					return []events.Event{followUp(e)}, nil
				}),
				onEvent(func(context.Context, followUp) ([]events.Event, error) {
					g.enter()
					defer g.leave()
					followUps.Add(1)
					return nil, nil
				}),
			)...)
			req := streamSteps{Steps: steps, Events: make([][]events.Event, steps)}
			for i := range steps {
				for range i + 1 { // item i carries i+1 events
					req.Events[i] = append(req.Events[i], ev{Item: i})
				}
			}

			n, want := 0, int64(0)
			for p, err := range mediator.Stream(t.Context(), sm, req) {
				require.NoError(t, err)
				require.Equal(t, n, p.Step)
				want += int64(n + 1)
				assert.Equal(t, want, handled.Load(), "events handled when item %d arrives", n)
				assert.Equal(t, want, followUps.Load(), "follow-ups handled when item %d arrives", n)
				assert.Zero(t, g.cur.Load(), "an event handler still runs when item %d arrives", n)
				n++
			}
			assert.Equal(t, steps, n)
			assert.Equal(t, want, handled.Load())
		})
	}
}

// TestStreamLateEventsAreDispatchedBeforeTheLoopEnds: events returned after
// the last item are dispatched, with their follow-ups, before the loop ends,
// even when the stream has no item.
func TestStreamLateEventsAreDispatchedBeforeTheLoopEnds(t *testing.T) {
	t.Parallel()
	for _, md := range streamModes() {
		for _, steps := range []int{3, 0} {
			t.Run(fmt.Sprintf("%s/items=%d", md.name, steps), func(t *testing.T) {
				t.Parallel()
				type late struct{ N int }
				type followUp struct{}
				var lateHandled, followUps, calls atomic.Int64
				var yields, order trail
				sm := streamBuild(t, with(md.opts,
					streamStepper(&calls, &yields),
					onEvent(func(context.Context, late) ([]events.Event, error) {
						lateHandled.Add(1)
						order.add("late")
						return []events.Event{followUp{}}, nil
					}),
					streamCount[followUp](&followUps),
				)...)

				pairs := 0
				for p, err := range mediator.Stream(t.Context(), sm, streamSteps{
					Steps: steps,
					Late:  []events.Event{late{1}, late{2}, late{3}},
				}) {
					require.NoError(t, err)
					assert.Zero(t, lateHandled.Load(), "late events are dispatched after the last item")
					order.add(fmt.Sprintf("item %d", p.Step))
					pairs++
				}
				// The loop has ended: everything is done.
				assert.Equal(t, steps, pairs, "late events add no pair when they succeed")
				assert.EqualValues(t, 3, lateHandled.Load())
				assert.EqualValues(t, 3, followUps.Load())
				var want []string
				for i := range steps {
					want = append(want, fmt.Sprintf("item %d", i))
				}
				want = append(want, "late", "late", "late")
				assert.Equal(t, want, order.get())
				assert.EqualValues(t, 1, calls.Load())
			})
		}
	}
}

// TestStreamEmptyStreamWithoutEventsYieldsNothing: a handler that yields
// nothing and returns nothing gives a loop whose body never runs.
func TestStreamEmptyStreamWithoutEventsYieldsNothing(t *testing.T) {
	t.Parallel()
	var calls atomic.Int64
	var yields trail
	sm := streamBuild(t, streamStepper(&calls, &yields))

	for p, err := range mediator.Stream(t.Context(), sm, streamSteps{}) {
		t.Errorf("unexpected pair (%v, %v)", p, err)
	}
	assert.EqualValues(t, 1, calls.Load(), "the handler ran")
	assert.Empty(t, yields.get())
}

// TestStreamLateEventFailureEndsStreamWithDispatchError: when the events
// returned after the last item are not all handled, the stream ends with
// (zero, *DispatchError).
func TestStreamLateEventFailureEndsStreamWithDispatchError(t *testing.T) {
	t.Parallel()
	for _, md := range streamModes() {
		t.Run(md.name, func(t *testing.T) {
			t.Parallel()
			type late struct{}
			errLate := errors.New("late handler failed")
			var calls atomic.Int64
			var yields trail
			sm := streamBuild(t, with(md.opts,
				streamStepper(&calls, &yields),
				onEvent(func(context.Context, late) ([]events.Event, error) { return nil, errLate }),
			)...)

			pairs := streamDrain(mediator.Stream(t.Context(), sm, streamSteps{Steps: 2, Late: []events.Event{late{}}}))

			require.Len(t, pairs, 3)
			for i, p := range pairs[:2] {
				require.NoError(t, p.err)
				assert.Equal(t, i, p.v.Step)
			}
			assert.Zero(t, pairs[2].v)
			de := dispatchError(t, pairs[2].err)
			require.Len(t, de.Failures, 1)
			require.ErrorIs(t, pairs[2].err, errLate)
		})
	}
}

// ---------------------------------------------------------------------------
// Errors

// TestStreamHandlerErrorEndsStreamAfterDeliveredItems: the items yielded
// before the error are delivered, then one (zero, err), then the loop ends;
// the events returned with the error are not dispatched.
func TestStreamHandlerErrorEndsStreamAfterDeliveredItems(t *testing.T) {
	t.Parallel()
	type ev struct{}
	type late struct{}
	errBroken := errors.New("input is broken")
	var handled, lateHandled atomic.Int64
	sm := streamBuild(t,
		streamOn(func(_ context.Context, _ streamSteps, yield func(streamProgress, []events.Event) bool) ([]events.Event, error) {
			if !yield(streamProgress{Step: 0}, []events.Event{ev{}}) {
				return nil, nil
			}
			if !yield(streamProgress{Step: 1}, []events.Event{ev{}}) {
				return nil, nil
			}
			return []events.Event{late{}}, fmt.Errorf("row 3: %w", errBroken)
		}),
		streamCount[ev](&handled),
		streamCount[late](&lateHandled),
	)

	var got []streamProgress
	var errs []error
	for p, err := range mediator.Stream(t.Context(), sm, streamSteps{}) {
		if err != nil {
			errs = append(errs, err)
			assert.Zero(t, p, "an error comes with the zero item")
			continue
		}
		got = append(got, p)
	}

	assert.Equal(t, []streamProgress{{Step: 0}, {Step: 1}}, got)
	require.Len(t, errs, 1)
	require.ErrorIs(t, errs[0], errBroken)
	assert.EqualValues(t, 2, handled.Load())
	assert.Zero(t, lateHandled.Load(), "events returned with the error are not dispatched")
}

// TestStreamEventFailureIsDeliveredWithItemAndStreamGoesOn: by default a
// failing event handler of item n gives the pair (item n, *DispatchError)
// and the stream goes on.
func TestStreamEventFailureIsDeliveredWithItemAndStreamGoesOn(t *testing.T) {
	t.Parallel()
	for _, md := range streamModes() {
		t.Run(md.name, func(t *testing.T) {
			t.Parallel()
			type good struct{}
			type bad struct{}
			type late struct{}
			errBad := errors.New("bad handler")
			var goods, lateHandled, calls atomic.Int64
			var yields trail
			bh := &failingHandler[bad]{err: errBad}
			sm := streamBuild(t, with(md.opts,
				streamStepper(&calls, &yields),
				streamCount[good](&goods),
				streamCount[late](&lateHandled),
				bootstrap.WithDomainEvents(func(m *events.Map) { events.BindHandler[bad](m, bh) }),
			)...)
			req := streamSteps{Steps: 4, Late: []events.Event{late{}}, Events: [][]events.Event{
				{good{}},
				{good{}, bad{}, good{}},
				{good{}},
				{good{}},
			}}

			pairs := streamDrain(mediator.Stream(t.Context(), sm, req))

			require.Len(t, pairs, 4, "the stream goes on after the failure")
			for i, p := range pairs {
				assert.Equal(t, i, p.v.Step, "item %d is delivered", i)
				if i != 1 {
					assert.NoError(t, p.err, "item %d", i)
				}
			}
			de := dispatchError(t, pairs[1].err)
			require.ErrorIs(t, pairs[1].err, errBad)
			require.Len(t, de.Failures, 1)
			assert.Zero(t, de.NotStarted)
			require.NoError(t, de.Interrupted)
			var he *mediator.HandlerError
			require.ErrorAs(t, pairs[1].err, &he)
			assert.Equal(t, bad{}, he.Event)
			assert.EqualValues(t, 5, goods.Load(), "the other handlers ran")
			assert.EqualValues(t, 1, bh.calls.Load())
			assert.EqualValues(t, 1, lateHandled.Load())
			assert.Equal(t, []string{"yield 0: true", "yield 1: true", "yield 2: true", "yield 3: true"}, yields.get())
		})
	}
}

// TestStreamEventFailureWithFailFastIsLastPair: with fail-fast, the pair
// (item n, *DispatchError) is the last; the handler's yield returns false
// and its context is cancelled.
func TestStreamEventFailureWithFailFastIsLastPair(t *testing.T) {
	t.Parallel()
	for _, md := range streamModes() {
		t.Run(md.name, func(t *testing.T) {
			t.Parallel()
			type good struct{}
			type bad struct{}
			type late struct{}
			errBad := errors.New("bad handler")
			var goods, lateHandled atomic.Int64
			var yieldedFalse, ctxDoneAfterFalse atomic.Bool
			var produced atomic.Int64
			sm := streamBuild(t, with(md.opts, bootstrap.WithFailFast(),
				streamOn(func(ctx context.Context, _ streamSteps, yield func(streamProgress, []events.Event) bool) ([]events.Event, error) {
					for i := range 4 {
						evs := []events.Event{good{}}
						if i == 1 {
							evs = []events.Event{bad{}}
						}
						produced.Add(1)
						if !yield(streamProgress{Step: i}, evs) {
							yieldedFalse.Store(true)
							ctxDoneAfterFalse.Store(streamIsDone(ctx))
							return []events.Event{late{}}, nil
						}
					}
					return []events.Event{late{}}, nil
				}),
				streamCount[good](&goods),
				streamCount[late](&lateHandled),
				onEvent(func(context.Context, bad) ([]events.Event, error) { return nil, errBad }),
			)...)

			pairs := streamDrain(mediator.Stream(t.Context(), sm, streamSteps{}))

			require.Len(t, pairs, 2, "the failed item is the last pair")
			require.NoError(t, pairs[0].err)
			assert.Equal(t, 0, pairs[0].v.Step)
			assert.Equal(t, 1, pairs[1].v.Step, "the item comes with its dispatch error")
			_ = dispatchError(t, pairs[1].err)
			require.ErrorIs(t, pairs[1].err, errBad)
			assert.True(t, yieldedFalse.Load(), "yield returned false to the handler")
			assert.True(t, ctxDoneAfterFalse.Load(), "the handler's context is cancelled when yield returns false")
			assert.EqualValues(t, 2, produced.Load())
			assert.EqualValues(t, 1, goods.Load())
			assert.Zero(t, lateHandled.Load(), "nothing is dispatched after the last pair")
		})
	}
}

// ---------------------------------------------------------------------------
// Leaving early

// TestStreamConsumerBreakStopsHandler: breaking out of the loop makes yield
// return false, cancels the handler's context, dispatches nothing more, and
// the loop exits only once the handler has returned.
func TestStreamConsumerBreakStopsHandler(t *testing.T) {
	t.Parallel()
	for _, md := range streamModes() {
		t.Run(md.name, func(t *testing.T) {
			t.Parallel()
			type ev struct{ Item int }
			type late struct{}
			var handled, lateHandled, produced atomic.Int64
			var returned, ctxDoneAfterFalse, yieldAgain atomic.Bool
			var falseAt atomic.Int64
			falseAt.Store(-1)
			var handlerCtx context.Context
			sm := streamBuild(t, with(md.opts,
				streamOn(func(ctx context.Context, _ streamSteps, yield func(streamProgress, []events.Event) bool) ([]events.Event, error) {
					defer returned.Store(true)
					handlerCtx = ctx
					for i := range 100 {
						produced.Add(1)
						if !yield(streamProgress{Step: i}, []events.Event{ev{i}, ev{i}}) {
							falseAt.Store(int64(i))
							ctxDoneAfterFalse.Store(streamIsDone(ctx))
							// A handler that calls yield again still reaches no one.
							yieldAgain.Store(yield(streamProgress{Step: 1000}, []events.Event{ev{1000}}))
							return []events.Event{late{}}, nil
						}
					}
					return []events.Event{late{}}, nil
				}),
				streamCount[ev](&handled),
				streamCount[late](&lateHandled),
			)...)

			var got []int
			for p, err := range mediator.Stream(t.Context(), sm, streamSteps{}) {
				require.NoError(t, err)
				got = append(got, p.Step)
				if p.Step == 2 {
					assert.False(t, returned.Load())
					break
				}
			}

			assert.True(t, returned.Load(), "the loop exits after the handler has returned")
			assert.Equal(t, []int{0, 1, 2}, got)
			assert.EqualValues(t, 2, falseAt.Load(), "yield returns false for the item the consumer broke on")
			assert.True(t, ctxDoneAfterFalse.Load(), "the handler's context is cancelled when yield returns false")
			require.Error(t, handlerCtx.Err())
			assert.False(t, yieldAgain.Load(), "yield keeps returning false")
			assert.EqualValues(t, 3, produced.Load(), "no further item is produced")
			assert.EqualValues(t, 6, handled.Load(), "only the events of delivered items are dispatched")
			assert.Zero(t, lateHandled.Load(), "late events are not dispatched after a break")
		})
	}
}

// TestStreamCancelWhileHandlerIsBlocked: the caller's ctx is cancelled while
// the handler waits between items; the handler's ctx is cancelled and the
// stream ends with an error matching context.Canceled.
func TestStreamCancelWhileHandlerIsBlocked(t *testing.T) {
	t.Parallel()
	errOwn := errors.New("handler's own error")
	cases := []struct {
		name    string
		ret     func(ctx context.Context) error
		noLate  bool  // the handler returns no event
		wantErr error // errors.Is the last pair's error
		exact   bool  // the last pair's error is ctx.Err() itself
	}{
		{name: "returns ctx.Err()", ret: func(ctx context.Context) error { return ctx.Err() }, wantErr: context.Canceled},
		{name: "returns events and nil", ret: func(context.Context) error { return nil }, wantErr: context.Canceled, exact: true},
		{name: "returns nothing", ret: func(context.Context) error { return nil }, noLate: true, wantErr: context.Canceled, exact: true},
		{name: "returns its own error", ret: func(ctx context.Context) error { return errors.Join(errOwn, ctx.Err()) }, wantErr: errOwn},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			type ev struct{}
			type late struct{}
			var handled, lateHandled atomic.Int64
			blocked := make(chan struct{})
			sm := streamBuild(t,
				streamOn(func(ctx context.Context, _ streamSteps, yield func(streamProgress, []events.Event) bool) ([]events.Event, error) {
					if !yield(streamProgress{Step: 0}, []events.Event{ev{}}) {
						return nil, nil
					}
					close(blocked)
					select {
					case <-ctx.Done():
					case <-time.After(guard):
						return nil, errStreamStuck
					}
					if tc.noLate {
						return nil, tc.ret(ctx)
					}
					return []events.Event{late{}}, tc.ret(ctx)
				}),
				streamCount[ev](&handled),
				streamCount[late](&lateHandled),
			)
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			canceller := make(chan struct{})
			go func() {
				defer close(canceller)
				if streamWait(blocked) {
					cancel()
				}
			}()

			pairs := streamDrain(mediator.Stream(ctx, sm, streamSteps{}))
			require.True(t, streamWait(canceller))

			require.Len(t, pairs, 2)
			require.NoError(t, pairs[0].err)
			assert.Equal(t, 0, pairs[0].v.Step)
			assert.Zero(t, pairs[1].v)
			require.NotErrorIs(t, pairs[1].err, errStreamStuck)
			require.ErrorIs(t, pairs[1].err, tc.wantErr)
			if tc.exact {
				assert.Equal(t, ctx.Err(), pairs[1].err, "the stream ends with (zero, ctx.Err())")
			}
			assert.EqualValues(t, 1, handled.Load())
			assert.Zero(t, lateHandled.Load(), "late events are not dispatched once ctx is done")
		})
	}
}

// TestStreamCancelledHandlerIgnoringContextGetsFalse: a handler that ignores
// its context and keeps yielding after the caller cancelled gets false, and
// its items and their events reach no one.
func TestStreamCancelledHandlerIgnoringContextGetsFalse(t *testing.T) {
	t.Parallel()
	type ev struct{ Item int }
	type late struct{}
	var handled, lateHandled atomic.Int64
	var yields trail
	blocked := make(chan struct{})
	resume := make(chan struct{})
	sm := streamBuild(t,
		streamOn(func(_ context.Context, _ streamSteps, yield func(streamProgress, []events.Event) bool) ([]events.Event, error) {
			if !yield(streamProgress{Step: 0}, []events.Event{ev{0}}) {
				return nil, nil
			}
			close(blocked)
			if !streamWait(resume) { // ctx is ignored
				return nil, errStreamStuck
			}
			for i := 1; i <= 5; i++ {
				yields.add(fmt.Sprintf("yield %d: %v", i, yield(streamProgress{Step: i}, []events.Event{ev{i}})))
			}
			return []events.Event{late{}}, nil
		}),
		streamCount[ev](&handled),
		streamCount[late](&lateHandled),
	)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	canceller := make(chan struct{})
	go func() {
		defer close(canceller)
		if streamWait(blocked) {
			cancel()
			close(resume)
		}
	}()

	pairs := streamDrain(mediator.Stream(ctx, sm, streamSteps{}))
	require.True(t, streamWait(canceller))

	require.Len(t, pairs, 2)
	require.NoError(t, pairs[0].err)
	assert.Equal(t, 0, pairs[0].v.Step)
	assert.Zero(t, pairs[1].v, "no item produced after the cancellation reaches the consumer")
	require.ErrorIs(t, pairs[1].err, context.Canceled)
	assert.Equal(t, []string{"yield 1: false", "yield 2: false", "yield 3: false", "yield 4: false", "yield 5: false"}, yields.get())
	assert.EqualValues(t, 1, handled.Load(), "no event of an item yielded after the cancellation is dispatched")
	assert.Zero(t, lateHandled.Load())
}

// TestStreamCancelDuringFanOutMakesItemTheLastPair: when ctx is done during
// the fan-out of item n and some invocations never started, (item n,
// *DispatchError) is the last pair and the handler's yield returns false.
func TestStreamCancelDuringFanOutMakesItemTheLastPair(t *testing.T) {
	t.Parallel()
	modes := []fanoutMode{
		{"sequential", []bootstrap.Option{bootstrap.WithConcurrentEventHandling(false)}},
		{"parallel", []bootstrap.Option{bootstrap.WithMaxConcurrentEventHandlers(2)}},
	}
	for _, md := range modes {
		t.Run(md.name, func(t *testing.T) {
			t.Parallel()
			type ev struct{}
			const total = 10
			var started atomic.Int64
			var yields trail
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			evs := make([]events.Event, total)
			for i := range evs {
				evs[i] = ev{}
			}
			sm := streamBuild(t, with(md.opts,
				streamOn(func(_ context.Context, _ streamSteps, yield func(streamProgress, []events.Event) bool) ([]events.Event, error) {
					for i := range 3 {
						ok := yield(streamProgress{Step: i}, evs)
						yields.add(fmt.Sprintf("yield %d: %v", i, ok))
						if !ok {
							return nil, nil
						}
					}
					return nil, nil
				}),
				onEvent(func(hctx context.Context, _ ev) ([]events.Event, error) {
					if started.Add(1) == 1 {
						cancel()
					}
					// Hold the slot until the cancellation is visible, so the
					// queued invocations cannot start.
					select {
					case <-hctx.Done():
					case <-time.After(guard):
						return nil, errStreamStuck
					}
					return nil, nil
				}),
			)...)

			pairs := streamDrain(mediator.Stream(ctx, sm, streamSteps{}))

			require.Len(t, pairs, 1, "the interrupted item is the last pair")
			assert.Equal(t, 0, pairs[0].v.Step, "the item is still delivered")
			de := dispatchError(t, pairs[0].err)
			require.ErrorIs(t, pairs[0].err, context.Canceled)
			require.ErrorIs(t, de.Interrupted, context.Canceled)
			assert.Positive(t, de.NotStarted)
			assert.Equal(t, int64(total), started.Load()+int64(de.NotStarted))
			assert.Equal(t, []string{"yield 0: false"}, yields.get())
		})
	}
}

// TestStreamCancelAfterEveryEventStartedStillDeliversItem: when ctx is done
// during the fan-out of item n but every invocation had already started,
// nothing was skipped: the events of item n are done, so the consumer
// receives item n (as Send returns its response), then the stream ends with
// (zero, ctx.Err()) at the handler's next yield.
func TestStreamCancelAfterEveryEventStartedStillDeliversItem(t *testing.T) {
	t.Parallel()
	modes := []fanoutMode{
		{"sequential", []bootstrap.Option{bootstrap.WithConcurrentEventHandling(false)}},
		{"parallel", []bootstrap.Option{bootstrap.WithMaxConcurrentEventHandlers(2)}},
	}
	for _, md := range modes {
		t.Run(md.name, func(t *testing.T) {
			t.Parallel()
			type ev struct{ Item int }
			var handled atomic.Int64
			var yields trail
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			// In parallel mode both events of item 0 are in flight before
			// either cancels; in sequential mode the last one cancels.
			parties := 1
			if md.name == "parallel" {
				parties = 2
			}
			b := streamNewBarrier(parties)
			sm := streamBuild(t, with(md.opts,
				streamOn(func(_ context.Context, _ streamSteps, yield func(streamProgress, []events.Event) bool) ([]events.Event, error) {
					for i := range 3 {
						evs := []events.Event{ev{i}}
						if i == 0 {
							evs = make([]events.Event, parties)
							for k := range evs {
								evs[k] = ev{i}
							}
						}
						ok := yield(streamProgress{Step: i}, evs)
						yields.add(fmt.Sprintf("yield %d: %v", i, ok))
						if !ok {
							return nil, nil
						}
					}
					return nil, nil
				}),
				onEvent(func(_ context.Context, e ev) ([]events.Event, error) {
					if e.Item == 0 {
						if !b.wait() {
							return nil, errStreamStuck
						}
						if handled.Add(1) == int64(parties) {
							cancel()
						}
						return nil, nil
					}
					handled.Add(1)
					return nil, nil
				}),
			)...)

			pairs := streamDrain(mediator.Stream(ctx, sm, streamSteps{}))

			require.Len(t, pairs, 2, "%v", pairs)
			require.NoError(t, pairs[0].err, "every invocation started: nothing to report")
			assert.Equal(t, 0, pairs[0].v.Step, "the item whose events are all done is delivered")
			assert.Zero(t, pairs[1].v)
			assert.Equal(t, context.Canceled, pairs[1].err)
			assert.EqualValues(t, parties, handled.Load(), "no event of a later item is dispatched")
			assert.Equal(t, []string{"yield 0: true", "yield 1: false"}, yields.get())
		})
	}
}

// ---------------------------------------------------------------------------
// Concurrency of the per-item fan-out

// TestStreamPerItemEventLimit: the events of one item run in parallel up to
// the limit and never beyond: handlers wait on a barrier until limit of them
// are in flight, so the maximum seen is the limit exactly.
func TestStreamPerItemEventLimit(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		opts   []bootstrap.Option
		limit  int
		events int
	}{
		{"WithMaxConcurrentEventHandlers(3)", []bootstrap.Option{bootstrap.WithMaxConcurrentEventHandlers(3)}, 3, 12},
		{"streaming default", nil, mediator.DefaultMaxConcurrentStreamEventHandlers, 30},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			require.Zero(t, tc.events%tc.limit, "every barrier group must fill")
			type ev struct{ Item int }
			var g gauge
			var handled atomic.Int64
			b := streamNewBarrier(tc.limit)
			evs := make([]events.Event, tc.events)
			for i := range evs {
				evs[i] = ev{1}
			}
			sm := streamBuild(t, with(tc.opts,
				streamOn(func(_ context.Context, _ streamSteps, yield func(streamProgress, []events.Event) bool) ([]events.Event, error) {
					if yield(streamProgress{Step: 0}, []events.Event{ev{0}}) {
						yield(streamProgress{Step: 1}, evs)
					}
					return nil, nil
				}),
				onEvent(func(_ context.Context, e ev) ([]events.Event, error) {
					g.enter()
					defer g.leave()
					if e.Item == 1 && !b.wait() {
						return nil, errStreamStuck
					}
					handled.Add(1)
					return nil, nil
				}),
			)...)

			n := 0
			for p, err := range mediator.Stream(t.Context(), sm, streamSteps{}) {
				require.NoError(t, err)
				assert.Equal(t, n, p.Step)
				n++
			}
			assert.Equal(t, 2, n)
			assert.EqualValues(t, tc.events+1, handled.Load())
			assert.EqualValues(t, tc.limit, g.max.Load(), "in flight at once for one item")
			assert.Zero(t, g.cur.Load())
		})
	}
}

// TestStreamManyConcurrentStreams runs 50 streams at once through one
// mediator; each receives its own items, after its own events.
func TestStreamManyConcurrentStreams(t *testing.T) {
	t.Parallel()
	const streams, steps = 50, 20
	type req struct {
		requests.Returns[streamProgress]
		Stream int
	}
	type ev struct{ Stream, Item int }
	type followUp struct{ Stream int }
	var handled, followUps [streams]atomic.Int64
	sm := streamBuild(t,
		streamOn(func(ctx context.Context, r req, yield func(streamProgress, []events.Event) bool) ([]events.Event, error) {
			for i := range steps {
				if !yield(streamProgress{Step: i, Percent: r.Stream}, []events.Event{ev{r.Stream, i}, ev{r.Stream, i}}) {
					return nil, nil
				}
			}
			return []events.Event{followUp{r.Stream}}, nil
		}),
		onEvent(func(_ context.Context, e ev) ([]events.Event, error) {
			handled[e.Stream].Add(1)
			return []events.Event{followUp{e.Stream}}, nil
		}),
		onEvent(func(_ context.Context, e followUp) ([]events.Event, error) {
			followUps[e.Stream].Add(1)
			return nil, nil
		}),
	)

	start := make(chan struct{})
	var wg sync.WaitGroup
	for s := range streams {
		wg.Go(func() {
			<-start
			n := 0
			for p, err := range mediator.Stream(t.Context(), sm, req{Stream: s}) {
				if !assert.NoError(t, err, "stream %d", s) {
					return
				}
				assert.Equal(t, streamProgress{Step: n, Percent: s}, p, "stream %d", s)
				assert.EqualValues(t, 2*(n+1), handled[s].Load(), "stream %d item %d", s, n)
				assert.EqualValues(t, 2*(n+1), followUps[s].Load(), "stream %d item %d", s, n)
				n++
			}
			assert.Equal(t, steps, n, "stream %d", s)
			assert.EqualValues(t, 2*steps+1, followUps[s].Load(), "stream %d: late event", s)
		})
	}
	close(start)
	wg.Wait()
}

// ---------------------------------------------------------------------------
// Panics

// TestStreamHandlerPanicIsPanicError: a panic in the handler, before or
// between its yields, ends the stream with an error wrapping a *PanicError.
func TestStreamHandlerPanicIsPanicError(t *testing.T) {
	t.Parallel()
	errValue := errors.New("panicked with an error")
	cases := []struct {
		name  string
		items int
		value any
	}{
		{"before the first yield", 0, "kaboom"},
		{"between yields", 2, "kaboom"},
		{"with an error value", 1, errValue},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			type ev struct{}
			var handled atomic.Int64
			sm := streamBuild(t,
				streamOn(func(_ context.Context, _ streamSteps, yield func(streamProgress, []events.Event) bool) ([]events.Event, error) {
					for i := range tc.items {
						if !yield(streamProgress{Step: i}, []events.Event{ev{}}) {
							return nil, nil
						}
					}
					panic(tc.value)
				}),
				streamCount[ev](&handled),
			)

			var pairs []streamPair[streamProgress]
			require.NotPanics(t, func() { pairs = streamDrain(mediator.Stream(t.Context(), sm, streamSteps{})) })

			require.Len(t, pairs, tc.items+1)
			for i, p := range pairs[:tc.items] {
				require.NoError(t, p.err)
				assert.Equal(t, i, p.v.Step)
			}
			last := pairs[tc.items]
			assert.Zero(t, last.v)
			var pe *mediator.PanicError
			require.ErrorAs(t, last.err, &pe)
			assert.Equal(t, tc.value, pe.Value)
			assert.NotEmpty(t, pe.Stack)
			if err, ok := tc.value.(error); ok {
				require.ErrorIs(t, last.err, err)
			}
			assert.EqualValues(t, tc.items, handled.Load())
		})
	}
}

// TestStreamEventHandlerPanicIsDeliveredWithItem: a panic in an event
// handler of item n gives (item n, *DispatchError wrapping a *PanicError),
// and the stream goes on.
func TestStreamEventHandlerPanicIsDeliveredWithItem(t *testing.T) {
	t.Parallel()
	for _, md := range streamModes() {
		t.Run(md.name, func(t *testing.T) {
			t.Parallel()
			type bad struct{}
			var calls atomic.Int64
			var yields trail
			sm := streamBuild(t, with(md.opts,
				streamStepper(&calls, &yields),
				onEvent(func(context.Context, bad) ([]events.Event, error) { panic("event kaboom") }),
			)...)

			var pairs []streamPair[streamProgress]
			require.NotPanics(t, func() {
				pairs = streamDrain(mediator.Stream(t.Context(), sm, streamSteps{Steps: 3, Events: [][]events.Event{nil, {bad{}}}}))
			})

			require.Len(t, pairs, 3)
			require.NoError(t, pairs[0].err)
			require.NoError(t, pairs[2].err)
			assert.Equal(t, 1, pairs[1].v.Step, "the item survives its event handler's panic")
			_ = dispatchError(t, pairs[1].err)
			var pe *mediator.PanicError
			require.ErrorAs(t, pairs[1].err, &pe)
			assert.Equal(t, "event kaboom", pe.Value)
		})
	}
}

// TestStreamConsumerPanicPropagates: a panic in the loop body reaches the
// consumer unchanged; it is not turned into an error of the stream.
func TestStreamConsumerPanicPropagates(t *testing.T) {
	t.Parallel()
	errValue := errors.New("consumer failed")
	for _, value := range []any{"consumer kaboom", errValue} {
		t.Run(fmt.Sprint(value), func(t *testing.T) {
			t.Parallel()
			type ev struct{ Item int }
			var handled atomic.Int64
			var returned, yieldReturned atomic.Bool
			var handlerCtx context.Context
			sm := streamBuild(t,
				streamOn(func(ctx context.Context, _ streamSteps, yield func(streamProgress, []events.Event) bool) ([]events.Event, error) {
					defer returned.Store(true)
					handlerCtx = ctx
					for i := range 5 {
						ok := yield(streamProgress{Step: i}, []events.Event{ev{i}})
						if i == 1 {
							yieldReturned.Store(true)
						}
						if !ok {
							return nil, nil
						}
					}
					return nil, nil
				}),
				streamCount[ev](&handled),
			)

			var got []int
			var errs []error
			var recovered any
			func() {
				defer func() { recovered = recover() }()
				for p, err := range mediator.Stream(t.Context(), sm, streamSteps{}) {
					if err != nil {
						errs = append(errs, err)
						continue
					}
					got = append(got, p.Step)
					if p.Step == 1 {
						panic(value)
					}
				}
			}()

			require.NotNil(t, recovered, "the panic reaches the consumer")
			assert.Equal(t, value, recovered)
			if err, ok := value.(error); ok {
				assert.Same(t, err, recovered, "the panic value is passed through as is")
			}
			assert.Empty(t, errs, "the panic is not turned into an error")
			assert.Equal(t, []int{0, 1}, got)
			assert.True(t, returned.Load(), "the handler unwound")
			assert.False(t, yieldReturned.Load(), "yield did not return to the handler")
			require.Error(t, handlerCtx.Err(), "the handler's context is cancelled")
			assert.EqualValues(t, 2, handled.Load())
		})
	}
}

// ---------------------------------------------------------------------------
// Look-up and arguments

// TestStreamUnboundRequestIsHandlerNotFound: a single (zero,
// ErrHandlerNotFound), for a type with no binding or a plain handler.
func TestStreamUnboundRequestIsHandlerNotFound(t *testing.T) {
	t.Parallel()
	type unbound struct{ requests.Returns[int] }
	type plain struct{ requests.Returns[int] }
	var calls, plainCalls atomic.Int64
	var yields trail
	sm := streamBuild(t,
		streamStepper(&calls, &yields),
		onRequest(func(context.Context, plain) (int, []events.Event, error) {
			plainCalls.Add(1)
			return 1, nil, nil
		}),
	)

	pairs := streamDrain(mediator.Stream(t.Context(), sm, unbound{}))
	require.Len(t, pairs, 1)
	assert.Zero(t, pairs[0].v)
	require.ErrorIs(t, pairs[0].err, mediator.ErrHandlerNotFound)

	pairs = streamDrain(mediator.Stream(t.Context(), sm, plain{}))
	require.Len(t, pairs, 1)
	assert.Zero(t, pairs[0].v)
	require.ErrorIs(t, pairs[0].err, mediator.ErrHandlerNotFound, "a plain handler is not a stream handler")
	assert.Zero(t, plainCalls.Load())

	// A mediator with nothing bound at all.
	empty := streamBuild(t)
	stepPairs := streamDrain(mediator.Stream(t.Context(), empty, streamSteps{Steps: 1}))
	require.Len(t, stepPairs, 1)
	assert.Zero(t, stepPairs[0].v)
	require.ErrorIs(t, stepPairs[0].err, mediator.ErrHandlerNotFound)
	assert.Zero(t, calls.Load())
}

// TestStreamNilPointerRequestIsErrNilRequest: the handler is not called with
// a nil request.
func TestStreamNilPointerRequestIsErrNilRequest(t *testing.T) {
	t.Parallel()
	type req struct {
		requests.Returns[int]
		N int
	}
	var calls atomic.Int64
	sm := streamBuild(t,
		streamOn(func(_ context.Context, r *req, yield func(int, []events.Event) bool) ([]events.Event, error) {
			calls.Add(1)
			yield(r.N, nil)
			return nil, nil
		}),
	)

	pairs := streamDrain(mediator.Stream(t.Context(), sm, (*req)(nil)))
	require.Len(t, pairs, 1)
	assert.Zero(t, pairs[0].v)
	require.ErrorIs(t, pairs[0].err, mediator.ErrNilRequest)
	assert.Zero(t, calls.Load())

	pairs = streamDrain(mediator.Stream(t.Context(), sm, &req{N: 7}))
	require.Equal(t, []streamPair[int]{{v: 7}}, pairs)
	assert.EqualValues(t, 1, calls.Load())
}

// TestStreamNilMediatorAndNilContext: each is a single error pair; nothing
// panics and the handler is not called.
func TestStreamNilMediatorAndNilContext(t *testing.T) {
	t.Parallel()
	var calls atomic.Int64
	var yields trail
	sm := streamBuild(t, streamStepper(&calls, &yields))
	var nilSM *mediator.StreamingRequestMediator
	var nilCtx context.Context

	var pairs []streamPair[streamProgress]
	require.NotPanics(t, func() { pairs = streamDrain(mediator.Stream(t.Context(), nilSM, streamSteps{Steps: 1})) })
	require.Len(t, pairs, 1)
	assert.Zero(t, pairs[0].v)
	require.ErrorIs(t, pairs[0].err, mediator.ErrNilMediator)

	require.NotPanics(t, func() { pairs = streamDrain(mediator.Stream(nilCtx, sm, streamSteps{Steps: 1})) })
	require.Len(t, pairs, 1)
	assert.Zero(t, pairs[0].v)
	require.ErrorIs(t, pairs[0].err, mediator.ErrNilContext)
	assert.Zero(t, calls.Load())
}

// TestStreamCancelledContextSkipsHandler: with ctx already done the handler
// is not called and the stream is a single (zero, ctx.Err()).
func TestStreamCancelledContextSkipsHandler(t *testing.T) {
	t.Parallel()
	var calls atomic.Int64
	var yields trail
	sm := streamBuild(t, streamStepper(&calls, &yields))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()

	pairs := streamDrain(mediator.Stream(ctx, sm, streamSteps{Steps: 3}))

	require.Len(t, pairs, 1)
	assert.Zero(t, pairs[0].v)
	require.ErrorIs(t, pairs[0].err, context.Canceled)
	assert.Zero(t, calls.Load())
}

// TestStreamEachRangeRunsHandlerAnew: nothing runs until the loop starts,
// and each loop over one iterator runs the handler again.
func TestStreamEachRangeRunsHandlerAnew(t *testing.T) {
	t.Parallel()
	type ev struct{}
	var calls, handled atomic.Int64
	var yields trail
	sm := streamBuild(t, streamStepper(&calls, &yields), streamCount[ev](&handled))

	seq := mediator.Stream(t.Context(), sm, streamSteps{Steps: 3, Events: [][]events.Event{{ev{}}, {ev{}}, {ev{}}}})
	assert.Zero(t, calls.Load(), "nothing runs until the loop starts")

	for run := 1; run <= 3; run++ {
		var got []int
		for p, err := range seq {
			require.NoError(t, err)
			got = append(got, p.Step)
		}
		assert.Equal(t, []int{0, 1, 2}, got, "run %d", run)
		assert.EqualValues(t, run, calls.Load())
		assert.EqualValues(t, 3*run, handled.Load())
	}
}
