package mediator_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sync/errgroup"

	"github.com/gocqrs/cqrs/bootstrap"
	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/mediator"
	"github.com/gocqrs/cqrs/requests"
)

// goid returns the id of the calling goroutine, from its stack header.
func goid() uint64 {
	var buf [64]byte
	b := buf[:runtime.Stack(buf[:], false)]
	b = bytes.TrimPrefix(b, []byte("goroutine "))
	id, _ := strconv.ParseUint(string(b[:bytes.IndexByte(b, ' ')]), 10, 64)
	return id
}

// waitFor polls cond until it holds, failing the test after guard. It
// waits for a state to be reached (goroutines parked on a slot), never for
// time to pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(guard)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reached within %v", what, guard)
		}
		runtime.Gosched()
	}
}

// parkedOnSlot counts the goroutines waiting for a mediator-wide slot.
func parkedOnSlot() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		if strings.Contains(g, "internal/engine.(*Engine).acquire") && strings.Contains(g, "[select") {
			n++
		}
	}
	return n
}

// blockingHandler counts the invocations in flight and holds each until
// release is closed.
type blockingHandler struct {
	g       gauge
	entered chan struct{}
	release chan struct{}
	done    atomic.Int64
}

func newBlocking(n int) *blockingHandler {
	return &blockingHandler{entered: make(chan struct{}, n), release: make(chan struct{})}
}

type blockEv struct{}

func (h *blockingHandler) option() bootstrap.Option {
	return onEvent(func(context.Context, blockEv) ([]events.Event, error) {
		h.g.enter()
		defer h.g.leave()
		h.entered <- struct{}{}
		<-h.release
		h.done.Add(1)
		return nil, nil
	})
}

// Defect: a context kept from an event handler granted its slot forever, so
// Sends made with it later skipped the mediator-wide limit (and ran
// sequentially).
func TestMediatorWideLimitHoldsForKeptContext(t *testing.T) {
	t.Parallel()
	const sends, perSend, capacity = 10, 2, 2
	type keep struct{}
	bh := newBlocking(sends * perSend)
	var kept context.Context
	m := build(t, emitter(), bh.option(),
		bootstrap.WithMaxConcurrentEventHandlers(4), bootstrap.WithMediatorWideLimit(capacity),
		onEvent(func(ctx context.Context, _ keep) ([]events.Event, error) {
			kept = context.WithoutCancel(ctx)
			return nil, nil
		}))
	_, err := sendEvents(t.Context(), m, keep{})
	require.NoError(t, err)
	require.NotNil(t, kept)

	var wg sync.WaitGroup
	errs := make([]error, sends)
	for i := range sends {
		wg.Go(func() { _, errs[i] = sendEvents(kept, m, blockEv{}, blockEv{}) })
	}
	for range capacity {
		recv(t, bh.entered, "a handler within the limit")
	}
	waitFor(t, "the other invocations parked on the limit, or one more entered", func() bool {
		return len(bh.entered) > 0 || parkedOnSlot() >= sends-capacity
	})
	assertQuiet(t, bh.entered, "a handler beyond the mediator-wide limit")
	close(bh.release)
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	assert.EqualValues(t, sends*perSend, bh.done.Load())
	assert.EqualValues(t, capacity, bh.g.max.Load())
}

// Defect: an event handler that started goroutines, each calling Send with
// its context, got all of them past the mediator-wide limit.
func TestMediatorWideLimitHoldsForGoroutinesOfAHandler(t *testing.T) {
	t.Parallel()
	const spawned, capacity = 5, 2
	type fan struct{}
	bh := newBlocking(spawned)
	var m *mediator.RequestMediator
	m = build(t, emitter(), bh.option(),
		bootstrap.WithMaxConcurrentEventHandlers(4), bootstrap.WithMediatorWideLimit(capacity),
		onEvent(func(ctx context.Context, _ fan) ([]events.Event, error) {
			g, gctx := errgroup.WithContext(ctx)
			for range spawned {
				g.Go(func() error { _, err := sendEvents(gctx, m, blockEv{}); return err })
			}
			return nil, g.Wait()
		}))
	done := async(func() (string, error) { return sendEvents(t.Context(), m, fan{}) })
	// The handler holds one slot and lends it to one of its goroutines at a
	// time; the other slot goes to another goroutine.
	for range capacity {
		recv(t, bh.entered, "a nested handler within the limit")
	}
	waitFor(t, "the other goroutines parked on the limit, or one more entered", func() bool {
		return len(bh.entered) > 0 || parkedOnSlot() >= spawned-capacity
	})
	assertQuiet(t, bh.entered, "a nested handler beyond the mediator-wide limit")
	close(bh.release)
	res, err := await(t, done)
	require.NoError(t, err)
	assert.Equal(t, "ok", res)
	assert.EqualValues(t, spawned, bh.done.Load())
	assert.EqualValues(t, capacity, bh.g.max.Load())
}

// At a mediator-wide limit of 1, a handler whose goroutines call Send with
// its context, and one that calls Send on its own goroutine, both finish:
// the slot is lent to one borrower at a time.
func TestMediatorWideLimitOfOneLendsTheSlotWithoutDeadlock(t *testing.T) {
	t.Parallel()
	for _, md := range fanoutModes() {
		t.Run(md.name, func(t *testing.T) {
			t.Parallel()
			type fan struct{}
			type leaf struct{}
			type inline struct{ requests.Returns[int] }
			var leaves atomic.Int64
			var m *mediator.RequestMediator
			m = build(t, with(md.opts, emitter(), bootstrap.WithMediatorWideLimit(1),
				onRequest(func(context.Context, inline) (int, []events.Event, error) {
					return 1, []events.Event{leaf{}, leaf{}}, nil
				}),
				onEvent(func(context.Context, leaf) ([]events.Event, error) { leaves.Add(1); return nil, nil }),
				onEvent(func(ctx context.Context, _ fan) ([]events.Event, error) {
					if _, err := mediator.Send(ctx, m, inline{}); err != nil {
						return nil, err
					}
					var g errgroup.Group
					for range 3 {
						g.Go(func() error { _, err := mediator.Send(ctx, m, inline{}); return err })
					}
					return nil, g.Wait()
				}))...)
			res, err := await(t, async(func() (string, error) { return sendEvents(t.Context(), m, fan{}, fan{}) }))
			require.NoError(t, err)
			assert.Equal(t, "ok", res)
			assert.EqualValues(t, 2*4*2, leaves.Load())
		})
	}
}

// Defect: a cycle through a nested dispatch restarted the depth at 1 and
// recursed until the stack overflowed. Each cycle below would run forever;
// the test stops it at 1,000 calls so that it fails rather than crashes.
func TestMaxDepthEndsCyclesThroughNestedDispatch(t *testing.T) {
	t.Parallel()
	const runaway = 1000
	type ping struct{}
	type pingReq struct{ requests.Returns[int] }
	errRunaway := errors.New("cycle not stopped")
	for _, md := range fanoutModes() {
		t.Run(md.name+"/EventMediator.Send", func(t *testing.T) {
			t.Parallel()
			var calls atomic.Int64
			var m *mediator.RequestMediator
			m = build(t, with(md.opts, onEvent(func(ctx context.Context, _ ping) ([]events.Event, error) {
				if calls.Add(1) > runaway {
					return nil, errRunaway
				}
				return nil, m.Events().Send(ctx, ping{})
			}))...)
			err := m.Events().Send(t.Context(), ping{})
			require.ErrorIs(t, err, mediator.ErrMaxDepth)
			require.NotErrorIs(t, err, errRunaway)
			assert.EqualValues(t, mediator.DefaultMaxEventDepth, calls.Load())
		})
		t.Run(md.name+"/nested Send", func(t *testing.T) {
			t.Parallel()
			var calls atomic.Int64
			var m *mediator.RequestMediator
			m = build(t, with(md.opts,
				onRequest(func(context.Context, pingReq) (int, []events.Event, error) { return 1, []events.Event{ping{}}, nil }),
				onEvent(func(ctx context.Context, _ ping) ([]events.Event, error) {
					if calls.Add(1) > runaway {
						return nil, errRunaway
					}
					_, err := mediator.Send(ctx, m, pingReq{})
					return nil, err
				}))...)
			_, err := mediator.Send(t.Context(), m, pingReq{})
			require.ErrorIs(t, err, mediator.ErrMaxDepth)
			require.NotErrorIs(t, err, errRunaway)
			assert.EqualValues(t, mediator.DefaultMaxEventDepth, calls.Load())
		})
		t.Run(md.name+"/publisher delivering to the EventMediator", func(t *testing.T) {
			t.Parallel()
			// Handled a is answered by notification b, which only the
			// publisher takes; it delivers it back as a.
			type a struct{}
			type b struct{}
			var calls atomic.Int64
			var m *mediator.RequestMediator
			pub := &events.MemoryPublisher{Deliver: func(ctx context.Context, _ events.NotificationEvent) error {
				return m.Events().Send(ctx, events.NewNotification("a", a{}))
			}}
			m = build(t, with(md.opts, bootstrap.WithPublisher(pub),
				onEvent(func(_ context.Context, n events.Notification[a]) ([]events.Event, error) {
					if calls.Add(1) > runaway {
						return nil, errRunaway
					}
					return []events.Event{events.NewNotification("b", b{})}, nil
				}))...)
			err := m.Events().Send(t.Context(), events.NewNotification("a", a{}))
			require.ErrorIs(t, err, mediator.ErrMaxDepth)
			require.NotErrorIs(t, err, errRunaway)
			// a at depths 1, 3, ... 15; b published at 2, 4, ... 16.
			assert.EqualValues(t, mediator.DefaultMaxEventDepth/2, calls.Load())
		})
	}
}

// panickingLog is a slog.Handler that panics on every record.
type panickingLog struct{}

func (panickingLog) Enabled(context.Context, slog.Level) bool  { return true }
func (panickingLog) Handle(context.Context, slog.Record) error { panic("logger broke") }
func (h panickingLog) WithAttrs([]slog.Attr) slog.Handler      { return h }
func (h panickingLog) WithGroup(string) slog.Handler           { return h }

// Defect: a panicking Logger re-panicked in sequential mode (blaming the
// request handler), reached the caller of EventMediator.Send, leaked a
// worker or killed the process in parallel mode.
func TestPanickingLoggerIsReportedNeverRaised(t *testing.T) {
	t.Parallel()
	type handled struct{}
	type unhandled struct{}
	for _, md := range fanoutModes() {
		t.Run(md.name, func(t *testing.T) {
			t.Parallel()
			m := build(t, with(md.opts, emitter(), bootstrap.WithLogger(slog.New(panickingLog{})),
				onEvent(func(context.Context, handled) ([]events.Event, error) {
					return []events.Event{unhandled{}}, nil // logged by a worker in parallel mode
				}))...)
			for _, send := range []func() error{
				func() error {
					res, err := sendEvents(t.Context(), m, handled{}, handled{}, unhandled{})
					assert.Equal(t, "ok", res)
					return err
				},
				func() error { return m.Events().Send(t.Context(), handled{}) },
			} {
				err := send()
				de := dispatchError(t, err)
				require.NotEmpty(t, de.Failures)
				for _, f := range de.Failures {
					var he *mediator.HandlerError
					require.ErrorAs(t, f, &he)
					assert.Equal(t, "logger", he.Handler)
					var pe *mediator.PanicError
					require.ErrorAs(t, f, &pe)
					assert.Equal(t, "logger broke", pe.Value)
				}
			}
		})
	}
}

// Defect: a handler calling runtime.Goexit (t.FailNow does) on a worker
// goroutine was reported as a success.
func TestGoexitOnAWorkerIsAFailure(t *testing.T) {
	t.Parallel()
	for _, order := range []mediator.HandlerOrder{mediator.Serial, mediator.Parallel} {
		t.Run(order.String(), func(t *testing.T) {
			t.Parallel()
			type ev struct{ N int }
			var caller atomic.Uint64
			exited := make(chan struct{})
			var handled atomic.Int64
			m := build(t, emitter(), bootstrap.WithMaxConcurrentEventHandlers(2), bootstrap.WithEventHandlerOrder(order),
				onEvent(func(_ context.Context, e ev) ([]events.Event, error) {
					if e.N > 1 {
						handled.Add(1)
						return nil, nil
					}
					if goid() == caller.Load() {
						<-exited // the other first-level event runs on a worker
						handled.Add(1)
						return []events.Event{ev{2}, ev{3}, ev{4}}, nil
					}
					defer close(exited)
					runtime.Goexit()
					return nil, nil
				}))
			res, err := await(t, async(func() (string, error) {
				caller.Store(goid())
				return sendEvents(t.Context(), m, ev{1}, ev{1})
			}))
			assert.Equal(t, "ok", res)
			require.ErrorIs(t, err, mediator.ErrGoexit)
			de := dispatchError(t, err)
			assert.Len(t, de.Failures, 1)
			assert.Zero(t, de.NotStarted)
			assert.EqualValues(t, 4, handled.Load(), "the other event and its follow-ups ran")
		})
	}
}

// A handler calling runtime.Goexit in sequential mode ends the caller's
// goroutine (there is no one to report to), and gives its mediator-wide
// slot back.
func TestGoexitInSequentialModeReleasesTheSlot(t *testing.T) {
	t.Parallel()
	type exit struct{}
	type ok struct{}
	m := build(t, emitter(), bootstrap.WithMediatorWideLimit(1),
		onEvent(func(context.Context, exit) ([]events.Event, error) { runtime.Goexit(); return nil, nil }),
		onEvent(func(context.Context, ok) ([]events.Event, error) { return nil, nil }))
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		_, _ = sendEvents(t.Context(), m, exit{})
		t.Error("Send returned on a goroutine that called runtime.Goexit")
	}()
	recv(t, ended, "goroutine end")
	res, err := await(t, async(func() (string, error) { return sendEvents(t.Context(), m, ok{}) }))
	require.NoError(t, err)
	assert.Equal(t, "ok", res)
}

// Defect: after a cancellation, sequential mode counted a follow-up beyond
// the maximum depth as not started, where parallel mode reported it.
func TestCancelledFanOutReportsDepthRefusalInEveryMode(t *testing.T) {
	t.Parallel()
	for _, md := range fanoutModes() {
		t.Run(md.name, func(t *testing.T) {
			t.Parallel()
			type first struct{}
			type deep struct{}
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			m := build(t, with(md.opts, emitter(), bootstrap.WithMaxEventDepth(1),
				onEvent(func(context.Context, first) ([]events.Event, error) {
					cancel()
					return []events.Event{deep{}}, nil
				}),
				onEvent(func(context.Context, deep) ([]events.Event, error) { return nil, nil }))...)
			_, err := sendEvents(ctx, m, first{})
			require.ErrorIs(t, err, mediator.ErrMaxDepth)
			de := dispatchError(t, err)
			assert.Zero(t, de.NotStarted)
			assert.Len(t, de.Failures, 1)
		})
	}
}

// cancelOnLog cancels a context at its n-th record and counts records.
type cancelOnLog struct {
	n      int64
	seen   atomic.Int64
	cancel context.CancelFunc
}

func (h *cancelOnLog) Enabled(context.Context, slog.Level) bool { return true }
func (h *cancelOnLog) Handle(context.Context, slog.Record) error {
	if h.seen.Add(1) == h.n {
		h.cancel()
	}
	return nil
}
func (h *cancelOnLog) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *cancelOnLog) WithGroup(string) slog.Handler      { return h }

// Defect: queueing a large batch did not look at the context, so a cancel
// was noticed only once every event had been queued. Unhandled events are
// logged as they are queued; the logger cancels at its 100th record.
func TestCancelIsNoticedWhileALargeBatchIsQueued(t *testing.T) {
	t.Parallel()
	const pairs = 5000
	for _, md := range fanoutModes()[1:] {
		t.Run(md.name, func(t *testing.T) {
			t.Parallel()
			type handled struct{}
			type unhandled struct{}
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			rec := &cancelOnLog{n: 100, cancel: cancel}
			var calls atomic.Int64
			m := build(t, with(md.opts, emitter(), bootstrap.WithMaxConcurrentEventHandlers(2),
				bootstrap.WithLogger(slog.New(rec)),
				onEvent(func(context.Context, handled) ([]events.Event, error) { calls.Add(1); return nil, nil }))...)
			evs := make([]events.Event, 0, 2*pairs)
			for range pairs {
				evs = append(evs, unhandled{}, handled{})
			}
			_, err := sendEvents(ctx, m, evs...)
			require.ErrorIs(t, err, context.Canceled)
			de := dispatchError(t, err)
			assert.Equal(t, pairs, de.NotStarted)
			assert.Zero(t, calls.Load())
			assert.Less(t, rec.seen.Load(), int64(1000), "events queued after the cancellation")
		})
	}
}

// The warning about an event with no handler is logged with the dispatch's
// context, so a trace id in it reaches the log line.
func TestUnhandledEventIsLoggedWithTheDispatchContext(t *testing.T) {
	t.Parallel()
	type key struct{}
	type unhandled struct{}
	for _, md := range fanoutModes() {
		t.Run(md.name, func(t *testing.T) {
			t.Parallel()
			var got atomic.Value
			h := ctxLog(func(ctx context.Context) { got.Store(fmt.Sprint(ctx.Value(key{}))) })
			m := build(t, with(md.opts, emitter(), bootstrap.WithLogger(slog.New(h)))...)
			_, err := sendEvents(context.WithValue(t.Context(), key{}, "trace-1"), m, unhandled{})
			require.NoError(t, err)
			assert.Equal(t, "trace-1", got.Load())
		})
	}
}

type ctxLog func(context.Context)

func (h ctxLog) Enabled(context.Context, slog.Level) bool { return true }
func (h ctxLog) Handle(ctx context.Context, _ slog.Record) error {
	h(ctx)
	return nil
}
func (h ctxLog) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h ctxLog) WithGroup(string) slog.Handler      { return h }

// DispatchError.Interrupted carries the cause given to the context.
func TestInterruptedCarriesTheContextCause(t *testing.T) {
	t.Parallel()
	errShutdown := errors.New("shutting down")
	for _, md := range fanoutModes() {
		t.Run(md.name, func(t *testing.T) {
			t.Parallel()
			type first struct{}
			ctx, cancel := context.WithCancelCause(t.Context())
			defer cancel(nil)
			m := build(t, with(md.opts, emitter(),
				onEvent(func(context.Context, first) ([]events.Event, error) {
					cancel(errShutdown)
					return []events.Event{first{}}, nil
				}))...)
			_, err := sendEvents(ctx, m, first{})
			de := dispatchError(t, err)
			assert.Equal(t, 1, de.NotStarted)
			require.ErrorIs(t, de.Interrupted, context.Canceled)
			require.ErrorIs(t, de.Interrupted, errShutdown)
			require.ErrorIs(t, err, errShutdown)

			_, err = sendEvents(ctx, m, first{})
			require.ErrorIs(t, err, context.Canceled)
			require.ErrorIs(t, err, errShutdown, "an early return carries the cause too")
		})
	}
}
