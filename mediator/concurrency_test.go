package mediator_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gocqrs/cqrs/bootstrap"
	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/mediator"
	"github.com/gocqrs/cqrs/requests"
)

// TestLimitIsNeverExceeded holds every handler on a barrier until the limit
// is reached, so the maximum in flight must be exactly the limit.
func TestLimitIsNeverExceeded(t *testing.T) {
	t.Parallel()
	for _, order := range []mediator.HandlerOrder{mediator.Serial, mediator.Parallel} {
		for _, n := range []int{1, 3, 10} {
			t.Run(fmt.Sprintf("%v/limit=%d", order, n), func(t *testing.T) {
				t.Parallel()
				const total = 100
				type ev struct{}
				var g gauge
				var handled atomic.Int64
				entered := make(chan struct{}, total)
				release := make(chan struct{})
				m := build(t, emitter(), bootstrap.WithMaxConcurrentEventHandlers(n),
					bootstrap.WithEventHandlerOrder(order),
					onEvent(func(context.Context, ev) ([]events.Event, error) {
						g.enter()
						defer g.leave()
						entered <- struct{}{}
						<-release
						handled.Add(1)
						return nil, nil
					}))
				evs := make([]events.Event, total)
				for i := range evs {
					evs[i] = ev{}
				}

				done := async(func() (string, error) { return sendEvents(t.Context(), m, evs...) })
				for i := range n {
					recv(t, entered, fmt.Sprintf("handler %d of %d", i+1, n))
				}
				// n handlers hold their slots: no other may enter.
				assertQuiet(t, entered, "handler beyond the limit")
				close(release)
				res, err := await(t, done)
				require.NoError(t, err)
				assert.Equal(t, "ok", res)
				assert.EqualValues(t, total, handled.Load())
				assert.EqualValues(t, n, g.max.Load())
				assert.Zero(t, g.cur.Load())
			})
		}
	}
}

// TestLimitHoldsForManyHandlersOfOneEvent: with parallel handler order each
// handler of one event is scheduled on its own, still within the limit.
func TestLimitHoldsForManyHandlersOfOneEvent(t *testing.T) {
	t.Parallel()
	for _, n := range []int{1, 3, 10} {
		t.Run(fmt.Sprintf("limit=%d", n), func(t *testing.T) {
			t.Parallel()
			const handlers = 30
			type ev struct{}
			var g gauge
			var handled atomic.Int64
			entered := make(chan struct{}, 2*handlers)
			release := make(chan struct{})
			opts := []bootstrap.Option{emitter(), bootstrap.WithMaxConcurrentEventHandlers(n),
				bootstrap.WithEventHandlerOrder(mediator.Parallel)}
			for range handlers {
				opts = append(opts, onEvent(func(context.Context, ev) ([]events.Event, error) {
					g.enter()
					defer g.leave()
					entered <- struct{}{}
					<-release
					handled.Add(1)
					return nil, nil
				}))
			}
			m := build(t, opts...)

			done := async(func() (string, error) { return sendEvents(t.Context(), m, ev{}, ev{}) })
			for i := range n {
				recv(t, entered, fmt.Sprintf("handler %d of %d", i+1, n))
			}
			assertQuiet(t, entered, "handler beyond the limit")
			close(release)
			_, err := await(t, done)
			require.NoError(t, err)
			assert.EqualValues(t, 2*handlers, handled.Load())
			assert.EqualValues(t, n, g.max.Load())
		})
	}
}

// TestFourthEventStartsOnlyWhenASlotFrees is the seed scenario: a command
// emits 4 events with a limit of 3.
func TestFourthEventStartsOnlyWhenASlotFrees(t *testing.T) {
	t.Parallel()
	type ev struct{ I int }
	var started, release [4]chan struct{}
	for i := range 4 {
		started[i] = make(chan struct{})
		release[i] = make(chan struct{})
	}
	var finished atomic.Int64
	m := build(t, emitter(), bootstrap.WithMaxConcurrentEventHandlers(3),
		onEvent(func(_ context.Context, e ev) ([]events.Event, error) {
			close(started[e.I])
			<-release[e.I]
			finished.Add(1)
			return nil, nil
		}))

	done := async(func() (string, error) { return sendEvents(t.Context(), m, ev{0}, ev{1}, ev{2}, ev{3}) })
	for i := range 3 {
		recv(t, started[i], fmt.Sprintf("event %d", i))
	}
	// The three hold their slots, so the 4th cannot have started.
	assertQuiet(t, started[3], "4th event while three hold their slots")
	close(release[1])
	recv(t, started[3], "4th event after a slot freed")
	assert.EqualValues(t, 1, finished.Load())
	assertQuiet(t, done, "Send while handlers still run")
	close(release[0])
	close(release[2])
	close(release[3])
	res, err := await(t, done)
	require.NoError(t, err)
	assert.Equal(t, "ok", res)
	assert.EqualValues(t, 4, finished.Load(), "all 4 finish before Send returns")
}

func TestMediatorWideLimitBoundsAllSends(t *testing.T) {
	t.Parallel()
	const sends, perSend = 20, 6
	type ev struct{}
	var g gauge
	var handled atomic.Int64
	entered := make(chan struct{}, sends*perSend)
	release := make(chan struct{})
	m := build(t, emitter(), bootstrap.WithMaxConcurrentEventHandlers(4), bootstrap.WithMediatorWideLimit(2),
		onEvent(func(context.Context, ev) ([]events.Event, error) {
			g.enter()
			defer g.leave()
			entered <- struct{}{}
			<-release
			handled.Add(1)
			return nil, nil
		}))
	evs := make([]events.Event, perSend)
	for i := range evs {
		evs[i] = ev{}
	}

	var wg sync.WaitGroup
	errs := make([]error, sends)
	for i := range sends {
		wg.Go(func() { _, errs[i] = sendEvents(t.Context(), m, evs...) })
	}
	recv(t, entered, "first handler")
	recv(t, entered, "second handler")
	assertQuiet(t, entered, "third handler under a mediator-wide limit of 2")
	close(release)
	allDone := make(chan struct{})
	go func() { wg.Wait(); close(allDone) }()
	recv(t, allDone, "all sends")
	for _, err := range errs {
		require.NoError(t, err)
	}
	assert.EqualValues(t, sends*perSend, handled.Load())
	assert.EqualValues(t, 2, g.max.Load())
}

func TestPerSendLimitIsIndependentAcrossSends(t *testing.T) {
	t.Parallel()
	type ev struct{}
	var g gauge
	entered := make(chan struct{}, 8)
	release := make(chan struct{})
	m := build(t, emitter(), bootstrap.WithMaxConcurrentEventHandlers(2),
		onEvent(func(context.Context, ev) ([]events.Event, error) {
			g.enter()
			defer g.leave()
			entered <- struct{}{}
			<-release
			return nil, nil
		}))

	first := async(func() (string, error) { return sendEvents(t.Context(), m, ev{}, ev{}, ev{}, ev{}) })
	second := async(func() (string, error) { return sendEvents(t.Context(), m, ev{}, ev{}, ev{}, ev{}) })
	for i := range 4 {
		recv(t, entered, fmt.Sprintf("handler %d of 4", i+1))
	}
	assertQuiet(t, entered, "a fifth handler with two sends limited to 2 each")
	close(release)
	_, err := await(t, first)
	require.NoError(t, err)
	_, err = await(t, second)
	require.NoError(t, err)
	assert.EqualValues(t, 4, g.max.Load())
}

func TestCancelDuringFanOut(t *testing.T) {
	t.Parallel()
	for _, order := range []mediator.HandlerOrder{mediator.Serial, mediator.Parallel} {
		t.Run(order.String(), func(t *testing.T) {
			t.Parallel()
			const total = 50
			type ev struct{}
			var started atomic.Int64
			entered := make(chan struct{}, total)
			m := build(t, emitter(), bootstrap.WithMaxConcurrentEventHandlers(2), bootstrap.WithEventHandlerOrder(order),
				onEvent(func(ctx context.Context, _ ev) ([]events.Event, error) {
					started.Add(1)
					entered <- struct{}{}
					<-ctx.Done()
					return nil, nil
				}))
			evs := make([]events.Event, total)
			for i := range evs {
				evs[i] = ev{}
			}
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()

			done := async(func() (string, error) { return sendEvents(ctx, m, evs...) })
			recv(t, entered, "first handler")
			recv(t, entered, "second handler")
			cancel()
			res, err := await(t, done)

			assert.Equal(t, "ok", res, "the request handler succeeded")
			require.ErrorIs(t, err, context.Canceled)
			de := dispatchError(t, err)
			require.ErrorIs(t, de.Interrupted, context.Canceled)
			assert.Positive(t, de.NotStarted)
			assert.EqualValues(t, 2, started.Load(), "nothing starts after the cancellation")
			assert.EqualValues(t, total, started.Load()+int64(de.NotStarted),
				"every invocation either started or is counted as not started")
			assert.Empty(t, de.Failures)
		})
	}
}

// TestCancelStopsRemainingHandlersOfAnEvent: the not-yet-started handlers of
// the event being dispatched are not started either.
func TestCancelStopsRemainingHandlersOfAnEvent(t *testing.T) {
	t.Parallel()
	for _, md := range fanoutModes() {
		t.Run(md.name, func(t *testing.T) {
			t.Parallel()
			type ev struct{}
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			var first, others atomic.Int64
			m := build(t, with(md.opts, emitter(), bootstrap.WithMaxConcurrentEventHandlers(2),
				onEvent(func(context.Context, ev) ([]events.Event, error) {
					if first.Add(1) == 1 {
						cancel()
					}
					return nil, nil
				}),
				onEvent(func(context.Context, ev) ([]events.Event, error) {
					others.Add(1)
					return nil, nil
				}),
				onEvent(func(context.Context, ev) ([]events.Event, error) {
					others.Add(1)
					return nil, nil
				}),
			)...)

			_, err := sendEvents(ctx, m, ev{})
			require.ErrorIs(t, err, context.Canceled)
			de := dispatchError(t, err)
			// In parallel handler order the second worker may have taken a
			// handler before the cancellation; none may start after it.
			assert.EqualValues(t, 3, first.Load()+others.Load()+int64(de.NotStarted))
			if md.name != "parallel handlers" {
				assert.EqualValues(t, 1, first.Load())
				assert.Zero(t, others.Load(), "handlers after the cancellation must not start")
				assert.Equal(t, 2, de.NotStarted)
			}
		})
	}
}

// TestCancelStopsWaitingForMediatorWideSlot: one Send holds the only
// mediator-wide slot; another, waiting for it, returns when cancelled.
func TestCancelStopsWaitingForMediatorWideSlot(t *testing.T) {
	t.Parallel()
	for _, limit := range []int{1, 2} {
		t.Run(fmt.Sprintf("limit=%d", limit), func(t *testing.T) {
			t.Parallel()
			type holdEv struct{}
			type waitEv struct{}
			type waitCmd struct{ requests.Returns[string] }
			holding := make(chan struct{})
			releaseHold := make(chan struct{})
			waitHandled := make(chan struct{})
			var waitRan atomic.Int64
			m := build(t, emitter(), bootstrap.WithMediatorWideLimit(1), bootstrap.WithMaxConcurrentEventHandlers(limit),
				onRequest(func(context.Context, waitCmd) (string, []events.Event, error) {
					close(waitHandled)
					return "waited", []events.Event{waitEv{}}, nil
				}),
				onEvent(func(context.Context, holdEv) ([]events.Event, error) {
					close(holding)
					<-releaseHold
					return nil, nil
				}),
				onEvent(func(context.Context, waitEv) ([]events.Event, error) {
					waitRan.Add(1)
					return nil, nil
				}),
			)

			holder := async(func() (string, error) { return sendEvents(t.Context(), m, holdEv{}) })
			recv(t, holding, "holder")
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			waiter := async(func() (string, error) { return mediator.Send(ctx, m, waitCmd{}) })
			recv(t, waitHandled, "waiter's request handler")
			cancel()
			// The holder still holds the slot: the waiter returns anyway.
			res, err := await(t, waiter)
			assert.Equal(t, "waited", res)
			require.ErrorIs(t, err, context.Canceled)
			de := dispatchError(t, err)
			require.ErrorIs(t, de.Interrupted, context.Canceled)
			assert.Equal(t, 1, de.NotStarted)
			assert.Zero(t, waitRan.Load())

			close(releaseHold)
			_, err = await(t, holder)
			require.NoError(t, err)
		})
	}
}

// TestReentrantSendDoesNotDeadlock: A's event handler sends B, whose event
// handler sends C, on the same mediator.
func TestReentrantSendDoesNotDeadlock(t *testing.T) {
	t.Parallel()
	for _, md := range []fanoutMode{
		{"limit 1, mediator-wide 1", []bootstrap.Option{
			bootstrap.WithMaxConcurrentEventHandlers(1), bootstrap.WithMediatorWideLimit(1),
		}},
		{"limit 3, parallel handlers, mediator-wide 1", []bootstrap.Option{
			bootstrap.WithMaxConcurrentEventHandlers(3), bootstrap.WithEventHandlerOrder(mediator.Parallel),
			bootstrap.WithMediatorWideLimit(1),
		}},
		{"limit 3, parallel handlers", []bootstrap.Option{
			bootstrap.WithMaxConcurrentEventHandlers(3), bootstrap.WithEventHandlerOrder(mediator.Parallel),
		}},
	} {
		t.Run(md.name, func(t *testing.T) {
			t.Parallel()
			type reqA struct{ requests.Returns[string] }
			type reqB struct{ requests.Returns[string] }
			type reqC struct{ requests.Returns[string] }
			type evA struct{}
			type evB struct{}
			type evC struct{}
			const fan = 3 // each level emits 3 events, each with 2 handlers
			fanOut := func(e events.Event) []events.Event {
				out := make([]events.Event, fan)
				for i := range out {
					out[i] = e
				}
				return out
			}
			var m *mediator.RequestMediator
			var a, b, c atomic.Int64
			var bad atomic.Int64
			opts := with(md.opts,
				onRequest(func(context.Context, reqA) (string, []events.Event, error) { return "A", fanOut(evA{}), nil }),
				onRequest(func(context.Context, reqB) (string, []events.Event, error) { return "B", fanOut(evB{}), nil }),
				onRequest(func(context.Context, reqC) (string, []events.Event, error) { return "C", fanOut(evC{}), nil }),
			)
			for range 2 {
				opts = append(opts,
					onEvent(func(ctx context.Context, _ evA) ([]events.Event, error) {
						a.Add(1)
						res, err := mediator.Send(ctx, m, reqB{})
						if res != "B" {
							bad.Add(1)
						}
						return nil, err
					}),
					onEvent(func(ctx context.Context, _ evB) ([]events.Event, error) {
						b.Add(1)
						res, err := mediator.Send(ctx, m, reqC{})
						if res != "C" {
							bad.Add(1)
						}
						return nil, err
					}),
					onEvent(func(context.Context, evC) ([]events.Event, error) {
						c.Add(1)
						return nil, nil
					}),
				)
			}
			m = build(t, opts...)

			res, err := await(t, async(func() (string, error) { return mediator.Send(t.Context(), m, reqA{}) }))
			require.NoError(t, err)
			assert.Equal(t, "A", res)
			assert.Zero(t, bad.Load())
			// 3 evA x 2 handlers; each sends B: 6 x 3 evB x 2; each sends C: 36 x 3 evC x 2.
			assert.EqualValues(t, 6, a.Load())
			assert.EqualValues(t, 36, b.Load())
			assert.EqualValues(t, 216, c.Load())
		})
	}
}

func TestManyConcurrentSendsThroughOneMediator(t *testing.T) {
	t.Parallel()
	const senders, perSend = 100, 3
	type square struct {
		requests.Returns[int]
		N int
	}
	type ev struct{ N int }
	type fu struct{ N int }
	var sum, handled, followUps atomic.Int64
	m := build(t, bootstrap.WithMaxConcurrentEventHandlers(4), bootstrap.WithEventHandlerOrder(mediator.Parallel),
		onRequest(func(_ context.Context, q square) (int, []events.Event, error) {
			evs := make([]events.Event, perSend)
			for i := range evs {
				evs[i] = ev{q.N}
			}
			return q.N * q.N, evs, nil
		}),
		onEvent(func(_ context.Context, e ev) ([]events.Event, error) {
			sum.Add(int64(e.N))
			handled.Add(1)
			return []events.Event{fu{e.N}}, nil
		}),
		onEvent(func(context.Context, ev) ([]events.Event, error) {
			handled.Add(1)
			return nil, nil
		}),
		onEvent(func(context.Context, fu) ([]events.Event, error) {
			followUps.Add(1)
			return nil, nil
		}),
	)

	var wg sync.WaitGroup
	results := make([]int, senders)
	errs := make([]error, senders)
	for i := range senders {
		wg.Go(func() { results[i], errs[i] = mediator.Send(t.Context(), m, square{N: i}) })
	}
	allDone := make(chan struct{})
	go func() { wg.Wait(); close(allDone) }()
	recv(t, allDone, "all sends")
	for i := range senders {
		require.NoError(t, errs[i])
		assert.Equal(t, i*i, results[i])
	}
	assert.EqualValues(t, senders*perSend*2, handled.Load())
	assert.EqualValues(t, senders*perSend, followUps.Load())
	assert.EqualValues(t, perSend*senders*(senders-1)/2, sum.Load())
}

// TestParallelFollowUpsAfterCallerWorkerIdle: with a limit of 2, one worker
// runs a fast event and runs out of work while the other still runs a slow
// one, which then returns several follow-ups. Queueing them must start a new
// worker without blocking (the worker must not wait for a slot it holds
// itself). Which goroutine runs which event is up to the scheduler, so the
// scenario is repeated.
func TestParallelFollowUpsAfterCallerWorkerIdle(t *testing.T) {
	t.Parallel()
	for _, order := range []mediator.HandlerOrder{mediator.Serial, mediator.Parallel} {
		t.Run(order.String(), func(t *testing.T) {
			t.Parallel()
			type ev struct {
				Fast        bool
				SlowStarted chan struct{}
				FastDone    chan struct{}
			}
			type leaf struct{}
			var leaves atomic.Int64
			m := build(t, emitter(), bootstrap.WithMaxConcurrentEventHandlers(2), bootstrap.WithEventHandlerOrder(order),
				onEvent(func(_ context.Context, e ev) ([]events.Event, error) {
					if e.Fast {
						<-e.SlowStarted // both workers are busy
						close(e.FastDone)
						return nil, nil
					}
					close(e.SlowStarted)
					<-e.FastDone // the other worker is about to run out of work
					return []events.Event{leaf{}, leaf{}, leaf{}}, nil
				}),
				onEvent(func(context.Context, leaf) ([]events.Event, error) {
					leaves.Add(1)
					return nil, nil
				}),
			)
			const rounds = 200
			for range rounds {
				slow, fast := make(chan struct{}), make(chan struct{})
				_, err := await(t, async(func() (string, error) {
					return sendEvents(t.Context(), m,
						ev{Fast: true, SlowStarted: slow, FastDone: fast},
						ev{SlowStarted: slow, FastDone: fast})
				}))
				require.NoError(t, err)
			}
			assert.EqualValues(t, rounds*3, leaves.Load())
		})
	}
}
