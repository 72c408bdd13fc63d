package mediator_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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
// Shared helpers for every test file of the package.

// guard bounds every wait of a test: it is a deadlock detector only, never a
// means of synchronisation.
const guard = 10 * time.Second

// emitCmd is answered with "ok" by the handler [emitter] binds, which emits
// the events the command carries.
type emitCmd struct {
	requests.Returns[string]
	Events []events.Event
}

func emitter() bootstrap.Option {
	return onRequest(func(_ context.Context, c emitCmd) (string, []events.Event, error) {
		return "ok", c.Events, nil
	})
}

// onRequest binds f as the handler of Req.
func onRequest[Req requests.Request[Res], Res any](f func(context.Context, Req) (Res, []events.Event, error)) bootstrap.Option {
	return bootstrap.WithCommands(func(r *requests.Map) {
		requests.BindHandler[Req, Res](r, requests.HandlerFunc[Req, Res](f))
	})
}

// onEvent binds f as one more handler of E.
func onEvent[E any](f func(context.Context, E) ([]events.Event, error)) bootstrap.Option {
	return bootstrap.WithDomainEvents(func(m *events.Map) {
		events.BindHandler[E](m, events.HandlerFunc[E](f))
	})
}

func build(t *testing.T, opts ...bootstrap.Option) *mediator.RequestMediator {
	t.Helper()
	m, err := bootstrap.Bootstrap(nil, opts...)
	require.NoError(t, err)
	require.NotNil(t, m)
	return m
}

// with returns a fresh slice holding base then more.
func with(base []bootstrap.Option, more ...bootstrap.Option) []bootstrap.Option {
	return append(append([]bootstrap.Option(nil), base...), more...)
}

// sendEvents sends an emitCmd carrying evs.
func sendEvents(ctx context.Context, m *mediator.RequestMediator, evs ...events.Event) (string, error) {
	return mediator.Send(ctx, m, emitCmd{Events: evs})
}

// fanoutMode is one way of running a fan-out.
type fanoutMode struct {
	name string
	opts []bootstrap.Option
}

func fanoutModes() []fanoutMode {
	return []fanoutMode{
		{"sequential", []bootstrap.Option{
			bootstrap.WithConcurrentEventHandling(false), bootstrap.WithMaxConcurrentEventHandlers(4),
		}},
		{"parallel", []bootstrap.Option{bootstrap.WithMaxConcurrentEventHandlers(4)}},
		{"parallel handlers", []bootstrap.Option{
			bootstrap.WithMaxConcurrentEventHandlers(4), bootstrap.WithEventHandlerOrder(mediator.Parallel),
		}},
	}
}

type outcome[T any] struct {
	v   T
	err error
}

// async runs f on a new goroutine; await collects its outcome.
func async[T any](f func() (T, error)) <-chan outcome[T] {
	ch := make(chan outcome[T], 1)
	go func() {
		v, err := f()
		ch <- outcome[T]{v, err}
	}()
	return ch
}

func await[T any](t *testing.T, ch <-chan outcome[T]) (T, error) {
	t.Helper()
	select {
	case o := <-ch:
		return o.v, o.err
	case <-time.After(guard):
		t.Fatalf("did not complete within %v: deadlock?", guard)
		panic("unreachable")
	}
}

// recv waits for one value (or the close) of ch.
func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(guard):
		t.Fatalf("%s: nothing within %v: deadlock?", what, guard)
		panic("unreachable")
	}
}

// assertQuiet asserts that ch has nothing to deliver right now.
func assertQuiet[T any](t *testing.T, ch <-chan T, what string) {
	t.Helper()
	select {
	case <-ch:
		t.Errorf("%s: unexpected signal", what)
	default:
	}
}

// gauge tracks how many handlers are in flight and the maximum ever seen.
type gauge struct{ cur, max atomic.Int64 }

func (g *gauge) enter() {
	n := g.cur.Add(1)
	for {
		m := g.max.Load()
		if n <= m || g.max.CompareAndSwap(m, n) {
			return
		}
	}
}

func (g *gauge) leave() { g.cur.Add(-1) }

// trail is a mutex-guarded record of what ran, in order.
type trail struct {
	mu  sync.Mutex
	log []string
}

func (r *trail) add(s string) {
	r.mu.Lock()
	r.log = append(r.log, s)
	r.mu.Unlock()
}

func (r *trail) get() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.log...)
}

// dispatchError asserts err is a *DispatchError and returns it.
func dispatchError(t *testing.T, err error) *mediator.DispatchError {
	t.Helper()
	var de *mediator.DispatchError
	require.ErrorAs(t, err, &de)
	return de
}

// failingHandler is a named event handler that always fails with err.
type failingHandler[E any] struct {
	err   error
	calls atomic.Int64
}

func (h *failingHandler[E]) Handle(context.Context, E) ([]events.Event, error) {
	h.calls.Add(1)
	return nil, h.err
}

// logRecorder is a slog.Handler that keeps every record.
type logRecorder struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (h *logRecorder) Enabled(context.Context, slog.Level) bool { return true }

func (h *logRecorder) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.recs = append(h.recs, r.Clone())
	h.mu.Unlock()
	return nil
}

func (h *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *logRecorder) WithGroup(string) slog.Handler      { return h }

func (h *logRecorder) records() []slog.Record {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]slog.Record(nil), h.recs...)
}

// ---------------------------------------------------------------------------
// Send

func TestSendReturnsTypedResponse(t *testing.T) {
	t.Parallel()
	type double struct {
		requests.Returns[int]
		N int
	}
	type greet struct {
		requests.Returns[string]
		Name string
	}
	m := build(t,
		onRequest(func(_ context.Context, q double) (int, []events.Event, error) { return 2 * q.N, nil, nil }),
		onRequest(func(_ context.Context, q greet) (string, []events.Event, error) { return "hello " + q.Name, nil, nil }),
	)

	var n int // compile-time proof that the response is typed
	n, err := mediator.Send(t.Context(), m, double{N: 21})
	require.NoError(t, err)
	assert.Equal(t, 42, n)

	var s string
	s, err = mediator.Send(t.Context(), m, greet{Name: "go"})
	require.NoError(t, err)
	assert.Equal(t, "hello go", s)
}

func TestSendUnregisteredRequestTypeIsHandlerNotFound(t *testing.T) {
	t.Parallel()
	type bound struct{ requests.Returns[int] }
	type unbound struct{ requests.Returns[int] }
	m := build(t, onRequest(func(context.Context, bound) (int, []events.Event, error) { return 1, nil, nil }))

	res, err := mediator.Send(t.Context(), m, unbound{})
	require.ErrorIs(t, err, mediator.ErrHandlerNotFound)
	assert.Zero(t, res)

	// A mediator with no request bound at all.
	empty := build(t)
	_, err = mediator.Send(t.Context(), empty, bound{})
	require.ErrorIs(t, err, mediator.ErrHandlerNotFound)
}

func TestSendNilPointerRequestIsErrNilRequest(t *testing.T) {
	t.Parallel()
	type cmd struct {
		requests.Returns[int]
		N int
	}
	var calls atomic.Int64
	m := build(t, onRequest(func(_ context.Context, c *cmd) (int, []events.Event, error) {
		calls.Add(1)
		return c.N, nil, nil
	}))

	res, err := mediator.Send(t.Context(), m, (*cmd)(nil))
	require.ErrorIs(t, err, mediator.ErrNilRequest)
	assert.Zero(t, res)
	assert.Zero(t, calls.Load(), "the handler must not be called with a nil request")

	res, err = mediator.Send(t.Context(), m, &cmd{N: 7})
	require.NoError(t, err)
	assert.Equal(t, 7, res)
	assert.EqualValues(t, 1, calls.Load())
}

func TestSendZeroValueRequestReachesHandler(t *testing.T) {
	t.Parallel()
	type cmd struct {
		requests.Returns[string]
		Name string
		N    int
	}
	var got []cmd
	var mu sync.Mutex
	m := build(t, onRequest(func(_ context.Context, c cmd) (string, []events.Event, error) {
		mu.Lock()
		got = append(got, c)
		mu.Unlock()
		return "handled", nil, nil
	}))

	res, err := mediator.Send(t.Context(), m, cmd{})
	require.NoError(t, err)
	assert.Equal(t, "handled", res)
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, []cmd{{}}, got)
}

func TestSendNilMediatorAndNilContextReturnErrors(t *testing.T) {
	t.Parallel()
	type cmd struct{ requests.Returns[int] }
	var calls atomic.Int64
	m := build(t, onRequest(func(context.Context, cmd) (int, []events.Event, error) {
		calls.Add(1)
		return 1, nil, nil
	}))
	var nilCtx context.Context
	var nilM *mediator.RequestMediator

	assert.NotPanics(t, func() {
		res, err := mediator.Send(t.Context(), nilM, cmd{})
		require.ErrorIs(t, err, mediator.ErrNilMediator)
		assert.Zero(t, res)
	})
	assert.NotPanics(t, func() {
		res, err := mediator.Send(nilCtx, m, cmd{})
		require.ErrorIs(t, err, mediator.ErrNilContext)
		assert.Zero(t, res)
	})
	assert.NotPanics(t, func() {
		require.ErrorIs(t, nilM.Events().Send(t.Context(), struct{}{}), mediator.ErrNilMediator)
	})
	assert.NotPanics(t, func() {
		require.ErrorIs(t, m.Events().Send(nilCtx, struct{}{}), mediator.ErrNilContext)
	})
	assert.Zero(t, calls.Load())
}

func TestSendCancelledContextSkipsHandler(t *testing.T) {
	t.Parallel()
	type cmd struct{ requests.Returns[int] }
	var calls atomic.Int64
	m := build(t, onRequest(func(context.Context, cmd) (int, []events.Event, error) {
		calls.Add(1)
		return 1, nil, nil
	}))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()

	res, err := mediator.Send(ctx, m, cmd{})
	require.ErrorIs(t, err, context.Canceled)
	assert.Zero(t, res)
	assert.Zero(t, calls.Load(), "the handler must not be called with a done context")
}

func TestSendHandlerErrorReturnsZeroAndDispatchesNoEvent(t *testing.T) {
	t.Parallel()
	errBoom := errors.New("boom")
	type cmd struct{ requests.Returns[int] }
	type ev struct{}
	var handled atomic.Int64
	m := build(t,
		bootstrap.WithMaxConcurrentEventHandlers(4),
		onRequest(func(context.Context, cmd) (int, []events.Event, error) {
			return 42, []events.Event{ev{}, ev{}}, fmt.Errorf("wrapped: %w", errBoom)
		}),
		onEvent(func(context.Context, ev) ([]events.Event, error) {
			handled.Add(1)
			return nil, nil
		}),
	)

	res, err := mediator.Send(t.Context(), m, cmd{})
	require.ErrorIs(t, err, errBoom)
	assert.Zero(t, res, "the response of a failed handler is the zero value")
	assert.Zero(t, handled.Load(), "events returned with an error must not be dispatched")
	var de *mediator.DispatchError
	assert.NotErrorAs(t, err, &de)
}

func TestSendHandlerPanicIsPanicError(t *testing.T) {
	t.Parallel()
	errInner := errors.New("inner")
	type cmd struct {
		requests.Returns[int]
		Err bool
	}
	type ev struct{}
	var handled atomic.Int64
	m := build(t,
		onRequest(func(_ context.Context, c cmd) (int, []events.Event, error) {
			if c.Err {
				panic(errInner)
			}
			panic("kaboom")
		}),
		onEvent(func(context.Context, ev) ([]events.Event, error) {
			handled.Add(1)
			return nil, nil
		}),
	)

	var res int
	var err error
	require.NotPanics(t, func() { res, err = mediator.Send(t.Context(), m, cmd{}) })
	var pe *mediator.PanicError
	require.ErrorAs(t, err, &pe)
	assert.Equal(t, "kaboom", pe.Value)
	assert.NotEmpty(t, pe.Stack)
	assert.Zero(t, res)

	// A panic with an error value is reachable with errors.Is.
	require.NotPanics(t, func() { res, err = mediator.Send(t.Context(), m, cmd{Err: true}) })
	require.ErrorAs(t, err, &pe)
	assert.Equal(t, errInner, pe.Value)
	assert.NotEmpty(t, pe.Stack)
	require.ErrorIs(t, err, errInner)
	assert.Zero(t, res)
	assert.Zero(t, handled.Load())
}

func TestTwoMediatorsAreIndependent(t *testing.T) {
	t.Parallel()
	type cmd struct{ requests.Returns[string] }
	type ev struct{}
	var inFirst, inSecond atomic.Int64
	first := build(t,
		onRequest(func(context.Context, cmd) (string, []events.Event, error) { return "first", []events.Event{ev{}}, nil }),
		onEvent(func(context.Context, ev) ([]events.Event, error) {
			inFirst.Add(1)
			return nil, nil
		}),
		emitter(),
	)
	rec := &logRecorder{}
	second := build(t, emitter(), bootstrap.WithLogger(slog.New(rec)))

	// cmd is bound only in the first.
	res, err := mediator.Send(t.Context(), first, cmd{})
	require.NoError(t, err)
	assert.Equal(t, "first", res)
	_, err = mediator.Send(t.Context(), second, cmd{})
	require.ErrorIs(t, err, mediator.ErrHandlerNotFound)

	// ev has a handler only in the first: the second does not reach it.
	_, err = sendEvents(t.Context(), second, ev{})
	require.NoError(t, err)
	assert.EqualValues(t, 1, inFirst.Load())
	require.ErrorIs(t, second.Events().Send(t.Context(), ev{}), mediator.ErrHandlerNotFound)

	// A third mediator binding ev does not change the first two.
	third := build(t, emitter(), onEvent(func(context.Context, ev) ([]events.Event, error) {
		inSecond.Add(1)
		return nil, nil
	}))
	_, err = sendEvents(t.Context(), third, ev{})
	require.NoError(t, err)
	_, err = sendEvents(t.Context(), first, ev{})
	require.NoError(t, err)
	assert.EqualValues(t, 2, inFirst.Load())
	assert.EqualValues(t, 1, inSecond.Load())
	require.ErrorIs(t, second.Events().Send(t.Context(), ev{}), mediator.ErrHandlerNotFound)
}
