package mediator_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gocqrs/cqrs/bootstrap"
	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/mediator"
	"github.com/gocqrs/cqrs/requests"
)

// A parallel dispatch that has a single unit of work (one event whose
// handlers run in bind order, or that has one handler) runs it on the
// caller's goroutine, as a sequential dispatch does.
func TestParallelModeRunsASingleUnitOnTheCallersGoroutine(t *testing.T) {
	t.Parallel()
	type ev struct{}
	cases := []struct {
		name     string
		handlers int
		opts     []bootstrap.Option
	}{
		{"serial order, 3 handlers", 3, []bootstrap.Option{bootstrap.WithMaxConcurrentEventHandlers(4)}},
		{"parallel order, 1 handler", 1, []bootstrap.Option{
			bootstrap.WithMaxConcurrentEventHandlers(4), bootstrap.WithEventHandlerOrder(mediator.Parallel),
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			var mu sync.Mutex
			var ids []uint64
			opts := with(c.opts, emitter())
			for range c.handlers {
				opts = with(opts, onEvent(func(context.Context, ev) ([]events.Event, error) {
					mu.Lock()
					defer mu.Unlock()
					ids = append(ids, goid())
					return nil, nil
				}))
			}
			m := build(t, opts...)
			caller := goid()
			require.NoError(t, m.Events().Send(t.Context(), ev{}))
			_, err := sendEvents(t.Context(), m, ev{})
			require.NoError(t, err)
			require.Len(t, ids, 2*c.handlers)
			for _, id := range ids {
				assert.Equal(t, caller, id)
			}
		})
	}
}

// A dispatch that started as one unit goes on in parallel once that unit
// emits follow-ups: here the second handler of the event waits for the
// handler of the first handler's follow-up, which must run beside it.
func TestSingleUnitGoesParallelWithItsFollowUps(t *testing.T) {
	t.Parallel()
	type ev struct{}
	type followUp struct{}
	ran := make(chan struct{})
	m := build(t,
		bootstrap.WithMaxConcurrentEventHandlers(2),
		onEvent(func(context.Context, ev) ([]events.Event, error) { return []events.Event{followUp{}}, nil }),
		onEvent(func(ctx context.Context, _ ev) ([]events.Event, error) {
			select {
			case <-ran:
				return nil, nil
			case <-time.After(guard):
				return nil, context.DeadlineExceeded
			}
		}),
		onEvent(func(context.Context, followUp) ([]events.Event, error) {
			close(ran)
			return nil, nil
		}),
	)
	require.NoError(t, m.Events().Send(t.Context(), ev{}))
}

type ctxKey struct{}

// Dispatches started with different contexts each give their handlers
// their own, although the engine reuses the frame of a dispatch for the
// next one with the same context.
func TestEachDispatchGetsItsOwnContext(t *testing.T) {
	t.Parallel()
	type ev struct{}
	for _, md := range fanoutModes() {
		t.Run(md.name, func(t *testing.T) {
			t.Parallel()
			var got []any
			m := build(t, with(md.opts, onEvent(func(ctx context.Context, _ ev) ([]events.Event, error) {
				got = append(got, ctx.Value(ctxKey{}))
				return nil, nil
			}))...)
			a := context.WithValue(t.Context(), ctxKey{}, "a")
			b := context.WithValue(t.Context(), ctxKey{}, "b")
			for _, ctx := range []context.Context{a, a, b, a, b, b} {
				require.NoError(t, m.Events().Send(ctx, ev{}))
			}
			assert.Equal(t, []any{"a", "a", "b", "a", "b", "b"}, got)
		})
	}
}

// The dispatches that share a context allocate nothing: not the frame
// their handlers receive, nor, in parallel mode, any goroutine machinery
// when there is a single unit of work.
func TestDispatchWithASharedContextAllocatesNothing(t *testing.T) {
	type ev struct{ N int }
	noop := func(context.Context, ev) ([]events.Event, error) { return nil, nil }
	for _, md := range fanoutModes() {
		t.Run(md.name, func(t *testing.T) {
			m := build(t, with(md.opts, onEvent(noop), onEvent(noop))...)
			if md.name == "parallel handlers" {
				// Two handlers in parallel order are two units of work.
				m = build(t, with(md.opts, onEvent(noop))...)
			}
			ctx := context.Background()
			var e events.Event = ev{1}
			allocs := testing.AllocsPerRun(100, func() {
				if err := m.Events().Send(ctx, e); err != nil {
					t.Fatal(err)
				}
			})
			assert.Zero(t, allocs)
		})
	}
}

// Every Send reads the mediator: its size keeps it on cache lines of its
// own.
func TestRequestMediatorFillsCacheLines(t *testing.T) {
	t.Parallel()
	if s := unsafe.Sizeof(mediator.RequestMediator{}); s%64 != 0 {
		t.Errorf("a RequestMediator takes %d bytes, not a multiple of 64", s)
	}
}

type parityStream struct{ requests.Returns[int] }

type parityItemEvent struct{ N int }

// A stream handler bound with no middleware runs without the pipeline of
// package requests (registry.Stream.Direct). With a pass-through stream
// middleware it runs through that pipeline; the two must agree on what
// the consumer receives, on the events dispatched and on when.
func TestDirectStreamAgreesWithThePipeline(t *testing.T) {
	t.Parallel()
	errBoom := errors.New("boom")
	type outcome struct {
		got     []string
		handled []int
	}
	run := func(t *testing.T, withMiddleware, fail, cancelAt3 bool, stop int) outcome {
		t.Helper()
		var out outcome
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		opts := []bootstrap.Option{
			bootstrap.WithConcurrentEventHandling(false),
			bootstrap.WithQueries(func(r *requests.Map) {
				requests.BindStreamHandler(r, requests.StreamHandlerFunc[parityStream, int](
					func(ctx context.Context, _ parityStream, yield func(int, []events.Event) bool) ([]events.Event, error) {
						for i := range 5 {
							if cancelAt3 && i == 3 {
								cancel()
							}
							if !yield(i, []events.Event{parityItemEvent{i}}) {
								return []events.Event{parityItemEvent{100}}, nil
							}
						}
						if fail {
							return []events.Event{parityItemEvent{101}}, errBoom
						}
						return []events.Event{parityItemEvent{102}}, nil
					}))
			}),
			bootstrap.WithDomainEvents(func(m *events.Map) {
				events.BindHandler(m, events.HandlerFunc[parityItemEvent](func(_ context.Context, e parityItemEvent) ([]events.Event, error) {
					out.handled = append(out.handled, e.N)
					if e.N == 2 {
						return nil, errBoom
					}
					return nil, nil
				}))
			}),
		}
		if withMiddleware {
			opts = append(opts, bootstrap.WithStreamMiddleware(requests.StreamMiddlewareFunc(
				func(_ requests.Info, next requests.AnyStreamFunc) requests.AnyStreamFunc { return next })))
		}
		sm, err := bootstrap.Streaming(nil, opts...)
		require.NoError(t, err)
		n := 0
		for v, err := range mediator.Stream(ctx, sm, parityStream{}) {
			out.got = append(out.got, fmt.Sprintf("%d %v", v, err))
			if n++; stop > 0 && n == stop {
				break
			}
		}
		return out
	}
	cases := []struct {
		name            string
		fail, cancelAt3 bool
		stop            int
	}{
		{"every item", false, false, 0},
		{"consumer stops", false, false, 2},
		{"handler fails", true, false, 0},
		{"cancelled", false, true, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			direct := run(t, false, c.fail, c.cancelAt3, c.stop)
			piped := run(t, true, c.fail, c.cancelAt3, c.stop)
			assert.Equal(t, piped, direct)
			assert.NotEmpty(t, direct.got)
		})
	}
}
