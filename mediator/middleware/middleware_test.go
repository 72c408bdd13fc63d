package middleware_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gocqrs/cqrs/bootstrap"
	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/mediator"
	"github.com/gocqrs/cqrs/mediator/middleware"
	"github.com/gocqrs/cqrs/requests"
)

// ---------------------------------------------------------------------------
// Fixtures

// guard bounds every wait: a deadlock detector, never a synchronisation.
const guard = 10 * time.Second

// timeout is the Timeout the tests use. No test asserts a duration.
const timeout = middleware.Timeout(20 * time.Millisecond)

// greet is answered with "hello <name>"; its handler emits greeted.
type greet struct {
	requests.Returns[string]
	Name string
}

type greeted struct{ Name string }

// count is streamed: the numbers 1..N.
type count struct {
	requests.Returns[int]
	N int
}

// signUp validates itself: an email is required.
type signUp struct {
	requests.Returns[string]
	Email string
}

var errEmailRequired = errors.New("email is required")

func (s signUp) Validate() error {
	if s.Email == "" {
		return errEmailRequired
	}
	return nil
}

// ptrValidated has Validate on a pointer receiver: sent by value, it is not
// a middleware.Validator.
type ptrValidated struct {
	requests.Returns[string]
}

func (*ptrValidated) Validate() error { return errors.New("never called") }

// validatedCount is a streamed request that validates itself.
type validatedCount struct {
	requests.Returns[int]
	N int
}

func (c validatedCount) Validate() error {
	if c.N < 0 {
		return errNegative
	}
	return nil
}

var (
	errNegative  = errors.New("negative count")
	errHandler   = errors.New("handler failed")
	errEventFail = errors.New("event handler failed")
)

type greeter struct{ calls *atomic.Int64 }

func (g greeter) Handle(_ context.Context, q greet) (string, []events.Event, error) {
	g.calls.Add(1)
	if q.Name == "" {
		return "", nil, errHandler
	}
	return "hello " + q.Name, []events.Event{greeted{Name: q.Name}}, nil
}

type counter struct{ calls *atomic.Int64 }

func (c counter) Stream(_ context.Context, q count, yield func(int, []events.Event) bool) ([]events.Event, error) {
	c.calls.Add(1)
	for i := 1; i <= q.N; i++ {
		if !yield(i, nil) {
			return nil, nil
		}
	}
	return nil, nil
}

// welcomeLog and mailer are the handlers of greeted; mailer fails for
// "fail".
type (
	welcomeLog struct{}
	mailer     struct{}
)

func (welcomeLog) Handle(context.Context, greeted) ([]events.Event, error) { return nil, nil }

func (mailer) Handle(_ context.Context, e greeted) ([]events.Event, error) {
	if e.Name == "fail" {
		return nil, errEventFail
	}
	return nil, nil
}

// record is one slog record, flattened.
type record struct {
	Level   slog.Level
	Message string
	Attrs   map[string]slog.Value
}

// recorder is a slog.Handler that keeps every record it is given at or above
// its level.
type recorder struct {
	level slog.Level
	mu    sync.Mutex
	recs  []record
}

func (h *recorder) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level }

func (h *recorder) Handle(_ context.Context, r slog.Record) error {
	rec := record{Level: r.Level, Message: r.Message, Attrs: map[string]slog.Value{}}
	r.Attrs(func(a slog.Attr) bool {
		rec.Attrs[a.Key] = a.Value.Resolve()
		return true
	})
	h.mu.Lock()
	h.recs = append(h.recs, rec)
	h.mu.Unlock()
	return nil
}

func (h *recorder) WithAttrs([]slog.Attr) slog.Handler { panic("not used by Logger") }
func (h *recorder) WithGroup(string) slog.Handler      { panic("not used by Logger") }

// withMessage returns the records whose message is msg.
func (h *recorder) withMessage(msg string) []record {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []record
	for _, r := range h.recs {
		if r.Message == msg {
			out = append(out, r)
		}
	}
	return out
}

// fixture binds greet (handler greeter), count (stream handler counter) and
// two handlers of greeted, with opts.
type fixture struct {
	greetCalls, countCalls atomic.Int64
}

func (f *fixture) options(opts ...bootstrap.Option) []bootstrap.Option {
	return append([]bootstrap.Option{
		bootstrap.WithQueries(func(r *requests.Map) {
			requests.BindHandler[greet](r, greeter{&f.greetCalls})
			requests.BindStreamHandler[count](r, counter{&f.countCalls})
		}),
		bootstrap.WithDomainEvents(func(e *events.Map) {
			events.BindHandler[greeted](e, welcomeLog{})
			events.BindHandler[greeted](e, mailer{})
		}),
	}, opts...)
}

func (f *fixture) mediator(t *testing.T, opts ...bootstrap.Option) *mediator.RequestMediator {
	t.Helper()
	m, err := bootstrap.Bootstrap(nil, f.options(opts...)...)
	require.NoError(t, err)
	return m
}

func (f *fixture) streaming(t *testing.T, opts ...bootstrap.Option) *mediator.StreamingRequestMediator {
	t.Helper()
	sm, err := bootstrap.Streaming(nil, f.options(opts...)...)
	require.NoError(t, err)
	return sm
}

type pair[T any] struct {
	v   T
	err error
}

// drain ranges over the stream of req to its end.
func drain[Req requests.Request[Res], Res any](t *testing.T, sm *mediator.StreamingRequestMediator, req Req) []pair[Res] {
	t.Helper()
	var out []pair[Res]
	for v, err := range mediator.Stream(t.Context(), sm, req) {
		out = append(out, pair[Res]{v, err})
	}
	return out
}

// waitDone blocks until ctx is done and returns its error; it fails after
// guard (a deadlock detector).
func waitDone(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(guard):
		return errors.New("context was never cancelled")
	}
}

// samePointer reports whether two funcs have the same code: a middleware
// that leaves next unwrapped returns next itself.
func samePointer(a, b any) bool {
	return reflect.ValueOf(a).Pointer() == reflect.ValueOf(b).Pointer()
}

// ---------------------------------------------------------------------------
// Logger

func TestLoggerRecordsSuccessAtInfoWithoutPayloads(t *testing.T) {
	t.Parallel()
	rec := &recorder{level: slog.LevelInfo}
	var f fixture
	m := f.mediator(t, bootstrap.WithMiddleware(middleware.NewLogger(slog.New(rec))))

	res, err := mediator.Send(t.Context(), m, greet{Name: "ann"})
	require.NoError(t, err)
	require.Equal(t, "hello ann", res)

	reqs := rec.withMessage("cqrs: request")
	require.Len(t, reqs, 1)
	r := reqs[0]
	assert.Equal(t, slog.LevelInfo, r.Level)
	assert.Equal(t, "middleware_test.greet", r.Attrs["request_type"].String())
	assert.Equal(t, "middleware_test.greeter", r.Attrs["handler"].String())
	require.Contains(t, r.Attrs, "duration")
	assert.Equal(t, slog.KindDuration, r.Attrs["duration"].Kind())
	for _, k := range []string{"error", "request", "response"} {
		assert.NotContains(t, r.Attrs, k)
	}

	// One record per event-handler invocation.
	evs := rec.withMessage("cqrs: event")
	require.Len(t, evs, 2)
	var handlers []string
	for _, e := range evs {
		assert.Equal(t, slog.LevelInfo, e.Level)
		assert.Equal(t, "middleware_test.greeted", e.Attrs["event_type"].String())
		assert.Equal(t, int64(0), e.Attrs["follow_ups"].Int64())
		assert.Contains(t, e.Attrs, "duration")
		assert.NotContains(t, e.Attrs, "event")
		handlers = append(handlers, e.Attrs["handler"].String())
	}
	assert.ElementsMatch(t, []string{"middleware_test.welcomeLog", "middleware_test.mailer"}, handlers)
}

func TestLoggerRecordsFailureAtErrorWithTheError(t *testing.T) {
	t.Parallel()
	setup := func(t *testing.T) (*recorder, *mediator.RequestMediator) {
		t.Helper()
		rec := &recorder{level: slog.LevelInfo}
		var f fixture
		return rec, f.mediator(t, bootstrap.WithMiddleware(middleware.NewLogger(slog.New(rec))))
	}

	t.Run("handler", func(t *testing.T) {
		t.Parallel()
		rec, m := setup(t)
		_, err := mediator.Send(t.Context(), m, greet{})
		require.ErrorIs(t, err, errHandler)
		failed := rec.withMessage("cqrs: request failed")
		require.Len(t, failed, 1)
		assert.Equal(t, slog.LevelError, failed[0].Level)
		assert.Equal(t, err.Error(), failed[0].Attrs["error"].String())
		assert.Equal(t, "middleware_test.greet", failed[0].Attrs["request_type"].String())
		assert.Equal(t, "middleware_test.greeter", failed[0].Attrs["handler"].String())
		assert.Contains(t, failed[0].Attrs, "duration")
		assert.Empty(t, rec.withMessage("cqrs: request"))
	})
	t.Run("event handler", func(t *testing.T) {
		t.Parallel()
		rec, m := setup(t)
		res, err := mediator.Send(t.Context(), m, greet{Name: "fail"})
		require.ErrorIs(t, err, errEventFail)
		assert.Equal(t, "hello fail", res)
		failed := rec.withMessage("cqrs: event failed")
		require.Len(t, failed, 1)
		assert.Equal(t, slog.LevelError, failed[0].Level)
		assert.Equal(t, "middleware_test.mailer", failed[0].Attrs["handler"].String())
		assert.Equal(t, errEventFail.Error(), failed[0].Attrs["error"].String())
		assert.Len(t, rec.withMessage("cqrs: event"), 1, "the other handler succeeded")
		// The record of the Send covers the fan-out: its *DispatchError is
		// logged as a failure.
		sends := rec.withMessage("cqrs: request failed")
		require.Len(t, sends, 1)
		assert.Equal(t, err.Error(), sends[0].Attrs["error"].String())
	})
	t.Run("stream", func(t *testing.T) {
		t.Parallel()
		rec := &recorder{level: slog.LevelInfo}
		sm, err := bootstrap.Streaming(nil,
			bootstrap.WithMiddleware(middleware.NewLogger(slog.New(rec))),
			bootstrap.WithQueries(func(r *requests.Map) {
				requests.BindStreamHandler(r, requests.StreamHandlerFunc[count, int](func(_ context.Context, _ count, yield func(int, []events.Event) bool) ([]events.Event, error) {
					yield(1, nil)
					return nil, errHandler
				}))
			}),
		)
		require.NoError(t, err)
		pairs := drain(t, sm, count{N: 1})
		require.Len(t, pairs, 2)
		require.ErrorIs(t, pairs[1].err, errHandler)
		failed := rec.withMessage("cqrs: stream failed")
		require.Len(t, failed, 1)
		assert.Equal(t, slog.LevelError, failed[0].Level)
		assert.Equal(t, errHandler.Error(), failed[0].Attrs["error"].String())
		assert.Equal(t, int64(1), failed[0].Attrs["items"].Int64())
	})
}

func TestLoggerPayloadsOnlyWhenEnabled(t *testing.T) {
	t.Parallel()
	for _, payloads := range []bool{false, true} {
		t.Run(fmt.Sprint("payloads=", payloads), func(t *testing.T) {
			t.Parallel()
			rec := &recorder{level: slog.LevelInfo}
			l := middleware.NewLogger(slog.New(rec))
			l.Payloads = payloads
			var f fixture
			m := f.mediator(t, bootstrap.WithMiddleware(l))

			_, err := mediator.Send(t.Context(), m, greet{Name: "ann"})
			require.NoError(t, err)
			r := rec.withMessage("cqrs: request")
			require.Len(t, r, 1)
			evs := rec.withMessage("cqrs: event")
			require.Len(t, evs, 2)
			if !payloads {
				assert.NotContains(t, r[0].Attrs, "request")
				assert.NotContains(t, r[0].Attrs, "response")
				for _, e := range evs {
					assert.NotContains(t, e.Attrs, "event")
				}
				return
			}
			assert.Equal(t, greet{Name: "ann"}, r[0].Attrs["request"].Any())
			assert.Equal(t, "hello ann", r[0].Attrs["response"].String())
			for _, e := range evs {
				assert.Equal(t, greeted{Name: "ann"}, e.Attrs["event"].Any())
			}
		})
	}
}

func TestLoggerStreamRecordCountsItems(t *testing.T) {
	t.Parallel()
	for _, payloads := range []bool{false, true} {
		t.Run(fmt.Sprint("payloads=", payloads), func(t *testing.T) {
			t.Parallel()
			rec := &recorder{level: slog.LevelInfo}
			l := middleware.NewLogger(slog.New(rec))
			l.Payloads = payloads
			var f fixture
			sm := f.streaming(t, bootstrap.WithMiddleware(l))

			pairs := drain(t, sm, count{N: 3})
			require.Len(t, pairs, 3)
			s := rec.withMessage("cqrs: stream")
			require.Len(t, s, 1)
			assert.Equal(t, slog.LevelInfo, s[0].Level)
			assert.Equal(t, "middleware_test.count", s[0].Attrs["request_type"].String())
			assert.Equal(t, "middleware_test.counter", s[0].Attrs["handler"].String())
			assert.Equal(t, int64(3), s[0].Attrs["items"].Int64())
			assert.Contains(t, s[0].Attrs, "duration")

			items := rec.withMessage("cqrs: stream item")
			if !payloads {
				assert.Empty(t, items)
				assert.NotContains(t, s[0].Attrs, "request")
				return
			}
			assert.Equal(t, count{N: 3}, s[0].Attrs["request"].Any())
			require.Len(t, items, 3)
			for i, it := range items {
				assert.Equal(t, int64(i), it.Attrs["index"].Int64())
				assert.Equal(t, int64(i+1), it.Attrs["item"].Int64())
			}
		})
	}
}

func TestLoggerSuccessBelowHandlerLevelIsNotLogged(t *testing.T) {
	t.Parallel()
	rec := &recorder{level: slog.LevelInfo}
	l := middleware.NewLogger(slog.New(rec))
	l.Level = slog.LevelDebug
	var f fixture
	m := f.mediator(t, bootstrap.WithMiddleware(l))

	_, err := mediator.Send(t.Context(), m, greet{Name: "ann"})
	require.NoError(t, err)
	assert.Empty(t, rec.withMessage("cqrs: request"))
	assert.Empty(t, rec.withMessage("cqrs: event"))

	_, err = mediator.Send(t.Context(), m, greet{})
	require.ErrorIs(t, err, errHandler)
	assert.Len(t, rec.withMessage("cqrs: request failed"), 1, "failures are logged at Error whatever Level is")
}

func TestNewLoggerDefaults(t *testing.T) {
	t.Parallel()
	l := middleware.NewLogger(nil)
	assert.Same(t, slog.Default(), l.Log)
	assert.Equal(t, slog.LevelInfo, l.Level)
	assert.False(t, l.Payloads)
}

// ---------------------------------------------------------------------------
// Timeout

func TestTimeoutCancelsSlowHandler(t *testing.T) {
	t.Parallel()
	var hadDeadline atomic.Bool
	m, err := bootstrap.Bootstrap(nil,
		bootstrap.WithMiddleware(timeout),
		bootstrap.WithQueries(func(r *requests.Map) {
			requests.BindHandler(r, requests.HandlerFunc[greet, string](func(ctx context.Context, _ greet) (string, []events.Event, error) {
				_, ok := ctx.Deadline()
				hadDeadline.Store(ok)
				return "", nil, waitDone(ctx)
			}))
		}),
	)
	require.NoError(t, err)

	res, err := mediator.Send(t.Context(), m, greet{Name: "ann"})
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Empty(t, res)
	assert.True(t, hadDeadline.Load())
}

func TestTimeoutAppliesToEventHandlers(t *testing.T) {
	t.Parallel()
	var requestHadDeadline atomic.Bool
	m, err := bootstrap.Bootstrap(nil,
		bootstrap.WithEventMiddleware(timeout),
		bootstrap.WithQueries(func(r *requests.Map) {
			requests.BindHandler(r, requests.HandlerFunc[greet, string](func(ctx context.Context, q greet) (string, []events.Event, error) {
				_, ok := ctx.Deadline()
				requestHadDeadline.Store(ok)
				return "hello", []events.Event{greeted{Name: q.Name}}, nil
			}))
		}),
		bootstrap.WithDomainEvents(func(e *events.Map) {
			events.BindHandler(e, events.HandlerFunc[greeted](func(ctx context.Context, _ greeted) ([]events.Event, error) {
				return nil, waitDone(ctx)
			}))
		}),
	)
	require.NoError(t, err)

	res, err := mediator.Send(t.Context(), m, greet{Name: "ann"})
	assert.Equal(t, "hello", res, "the request handler succeeded")
	var de *mediator.DispatchError
	require.ErrorAs(t, err, &de)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.NoError(t, de.Interrupted, "the caller's context was not cancelled")
	assert.False(t, requestHadDeadline.Load(), "event middleware does not wrap the request handler")
}

func TestTimeoutAppliesToStreams(t *testing.T) {
	t.Parallel()
	sm, err := bootstrap.Streaming(nil,
		bootstrap.WithMiddleware(timeout),
		bootstrap.WithQueries(func(r *requests.Map) {
			requests.BindStreamHandler(r, requests.StreamHandlerFunc[count, int](func(ctx context.Context, _ count, yield func(int, []events.Event) bool) ([]events.Event, error) {
				if !yield(1, nil) {
					return nil, nil
				}
				return nil, waitDone(ctx)
			}))
		}),
	)
	require.NoError(t, err)

	pairs := drain(t, sm, count{N: 2})
	require.Len(t, pairs, 2)
	assert.Equal(t, pair[int]{1, nil}, pairs[0])
	assert.Zero(t, pairs[1].v)
	require.ErrorIs(t, pairs[1].err, context.DeadlineExceeded)
}

func TestTimeoutZeroLeavesHandlersUnwrapped(t *testing.T) {
	t.Parallel()
	for _, d := range []middleware.Timeout{0, -1} {
		t.Run(fmt.Sprint(time.Duration(d)), func(t *testing.T) {
			t.Parallel()
			info := requests.Info{Request: reflect.TypeFor[greet](), Response: reflect.TypeFor[string]()}
			next := requests.AnyHandlerFunc(func(context.Context, any) (any, error) { return nil, nil })
			assert.True(t, samePointer(next, d.WrapRequest(info, next)))
			nextStream := requests.AnyStreamFunc(func(context.Context, any, func(any, error) bool) error { return nil })
			assert.True(t, samePointer(nextStream, d.WrapStream(info, nextStream)))
			nextEvent := events.InvocationFunc(func(context.Context, events.Event) ([]events.Event, error) { return nil, nil })
			assert.True(t, samePointer(nextEvent, d.WrapEvent(events.Invocation{EventType: reflect.TypeFor[greeted]()}, nextEvent)))

			// Through the mediator, nothing gets a deadline.
			var deadlines atomic.Int64
			noteDeadline := func(ctx context.Context) {
				if _, ok := ctx.Deadline(); ok {
					deadlines.Add(1)
				}
			}
			m, err := bootstrap.Bootstrap(nil,
				bootstrap.WithMiddleware(d),
				bootstrap.WithQueries(func(r *requests.Map) {
					requests.BindHandler(r, requests.HandlerFunc[greet, string](func(ctx context.Context, q greet) (string, []events.Event, error) {
						noteDeadline(ctx)
						return "ok", []events.Event{greeted{Name: q.Name}}, nil
					}))
				}),
				bootstrap.WithDomainEvents(func(e *events.Map) {
					events.BindHandler(e, events.HandlerFunc[greeted](func(ctx context.Context, _ greeted) ([]events.Event, error) {
						noteDeadline(ctx)
						return nil, nil
					}))
				}),
			)
			require.NoError(t, err)
			res, err := mediator.Send(t.Context(), m, greet{})
			require.NoError(t, err)
			assert.Equal(t, "ok", res)
			assert.Zero(t, deadlines.Load())
		})
	}
}

// ---------------------------------------------------------------------------
// Validation

func signUpMediator(t *testing.T, calls *atomic.Int64) *mediator.RequestMediator {
	t.Helper()
	m, err := bootstrap.Bootstrap(nil,
		bootstrap.WithMiddleware(middleware.Validation{}),
		bootstrap.WithCommands(func(r *requests.Map) {
			requests.BindHandler(r, requests.HandlerFunc[signUp, string](func(_ context.Context, s signUp) (string, []events.Event, error) {
				calls.Add(1)
				return "welcome " + s.Email, nil, nil
			}))
		}),
	)
	require.NoError(t, err)
	return m
}

func TestValidationRejectsInvalidRequestBeforeHandler(t *testing.T) {
	t.Parallel()
	var calls atomic.Int64
	m := signUpMediator(t, &calls)

	res, err := mediator.Send(t.Context(), m, signUp{})
	require.ErrorIs(t, err, middleware.ErrValidation)
	require.ErrorIs(t, err, errEmailRequired)
	var ve *middleware.ValidationError
	require.ErrorAs(t, err, &ve)
	assert.Equal(t, reflect.TypeFor[signUp](), ve.Request)
	assert.Equal(t, errEmailRequired, ve.Err)
	assert.Empty(t, res)
	assert.Zero(t, calls.Load(), "the handler is not called")
}

func TestValidationLetsValidRequestThrough(t *testing.T) {
	t.Parallel()
	var calls atomic.Int64
	m := signUpMediator(t, &calls)

	res, err := mediator.Send(t.Context(), m, signUp{Email: "ann@example.com"})
	require.NoError(t, err)
	assert.Equal(t, "welcome ann@example.com", res)
	assert.Equal(t, int64(1), calls.Load())
}

func TestValidationLeavesNonValidatorsUnwrapped(t *testing.T) {
	t.Parallel()
	for _, typ := range []reflect.Type{reflect.TypeFor[greet](), reflect.TypeFor[ptrValidated]()} {
		info := requests.Info{Request: typ, Response: reflect.TypeFor[string]()}
		next := requests.AnyHandlerFunc(func(context.Context, any) (any, error) { return nil, nil })
		assert.True(t, samePointer(next, middleware.Validation{}.WrapRequest(info, next)), "%v", typ)
		nextStream := requests.AnyStreamFunc(func(context.Context, any, func(any, error) bool) error { return nil })
		assert.True(t, samePointer(nextStream, middleware.Validation{}.WrapStream(info, nextStream)), "%v", typ)
	}
	info := requests.Info{Request: reflect.TypeFor[signUp](), Response: reflect.TypeFor[string]()}
	next := requests.AnyHandlerFunc(func(context.Context, any) (any, error) { return nil, nil })
	assert.False(t, samePointer(next, middleware.Validation{}.WrapRequest(info, next)), "a Validator is wrapped")

	// Through the mediator: a request with Validate on a pointer receiver,
	// sent by value, reaches its handler.
	var calls atomic.Int64
	m, err := bootstrap.Bootstrap(nil,
		bootstrap.WithMiddleware(middleware.Validation{}),
		bootstrap.WithQueries(func(r *requests.Map) {
			requests.BindHandler(r, requests.HandlerFunc[ptrValidated, string](func(context.Context, ptrValidated) (string, []events.Event, error) {
				calls.Add(1)
				return "ok", nil, nil
			}))
		}),
	)
	require.NoError(t, err)
	res, err := mediator.Send(t.Context(), m, ptrValidated{})
	require.NoError(t, err)
	assert.Equal(t, "ok", res)
	assert.Equal(t, int64(1), calls.Load())
}

func TestValidationAppliesToStreams(t *testing.T) {
	t.Parallel()
	var calls atomic.Int64
	sm, err := bootstrap.Streaming(nil,
		bootstrap.WithMiddleware(middleware.Validation{}),
		bootstrap.WithQueries(func(r *requests.Map) {
			requests.BindStreamHandler(r, requests.StreamHandlerFunc[validatedCount, int](func(_ context.Context, q validatedCount, yield func(int, []events.Event) bool) ([]events.Event, error) {
				calls.Add(1)
				for i := 1; i <= q.N; i++ {
					if !yield(i, nil) {
						return nil, nil
					}
				}
				return nil, nil
			}))
		}),
	)
	require.NoError(t, err)

	pairs := drain(t, sm, validatedCount{N: -1})
	require.Len(t, pairs, 1)
	require.ErrorIs(t, pairs[0].err, middleware.ErrValidation)
	require.ErrorIs(t, pairs[0].err, errNegative)
	var ve *middleware.ValidationError
	require.ErrorAs(t, pairs[0].err, &ve)
	assert.Zero(t, calls.Load(), "the stream handler is not called")

	pairs = drain(t, sm, validatedCount{N: 2})
	assert.Equal(t, []pair[int]{{1, nil}, {2, nil}}, pairs)
	assert.Equal(t, int64(1), calls.Load())
}

func ExampleValidation() {
	m, err := bootstrap.Bootstrap(nil,
		bootstrap.WithMiddleware(middleware.Validation{}),
		bootstrap.WithCommands(func(r *requests.Map) {
			requests.BindHandler(r, requests.HandlerFunc[signUp, string](func(_ context.Context, s signUp) (string, []events.Event, error) {
				return "welcome " + s.Email, nil, nil
			}))
		}),
	)
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx := context.Background()

	_, err = mediator.Send(ctx, m, signUp{})
	fmt.Println(err)
	fmt.Println(errors.Is(err, middleware.ErrValidation), errors.Is(err, errEmailRequired))

	res, err := mediator.Send(ctx, m, signUp{Email: "ann@example.com"})
	fmt.Println(res, err)
	// Output:
	// middleware_test.signUp: validation failed: email is required
	// true true
	// welcome ann@example.com <nil>
}

func TestLoggerStreamCancelledByCallerCountsDeliveredItemsOnly(t *testing.T) {
	t.Parallel()
	rec := &recorder{level: slog.LevelInfo}
	l := middleware.NewLogger(slog.New(rec))
	l.Payloads = true
	var f fixture
	sm := f.streaming(t, bootstrap.WithMiddleware(l))

	// The consumer cancels the caller's context after the first item and
	// goes on; the handler's next item is neither dispatched nor delivered.
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var got []pair[int]
	for v, err := range mediator.Stream(ctx, sm, count{N: 3}) {
		got = append(got, pair[int]{v, err})
		cancel()
	}
	require.Len(t, got, 2)
	assert.Equal(t, pair[int]{1, nil}, got[0])
	require.ErrorIs(t, got[1].err, context.Canceled)

	assert.Len(t, rec.withMessage("cqrs: stream item"), 1, "one item was delivered")
	assert.Empty(t, rec.withMessage("cqrs: stream"), "a cancelled stream is not logged as a success")
	failed := rec.withMessage("cqrs: stream failed")
	require.Len(t, failed, 1)
	assert.Equal(t, int64(1), failed[0].Attrs["items"].Int64())
	assert.Equal(t, context.Canceled.Error(), failed[0].Attrs["error"].String())
}
