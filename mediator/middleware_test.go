package mediator_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"reflect"
	"strings"
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

// ---------------------------------------------------------------------------
// Fixtures of the middleware tests. Every name declared here starts with mw.

// mwQuery is answered with a string by the handler each test binds.
type mwQuery struct {
	requests.Returns[string]
	Name string
}

// mwOther is a second request type.
type mwOther struct {
	requests.Returns[int]
}

// mwWatch is streamed: N items, 1..N.
type mwWatch struct {
	requests.Returns[int]
	N int
}

type (
	mwEvent    struct{ Name string }
	mwFollowUp struct{}
	mwTick     struct{ N int }
)

var (
	errMwHandler  = errors.New("handler failed")
	errMwReplaced = errors.New("replaced by middleware")
	errMwEvent    = errors.New("event handler failed")
)

// mwQuiet discards the mediator's warnings (events emitted with no handler
// bound are logged).
func mwQuiet() bootstrap.Option { return bootstrap.WithLogger(slog.New(slog.DiscardHandler)) }

// mwGlobal is global request middleware that records its entry and exit.
func mwGlobal(tr *trail, name string) requests.Middleware {
	return requests.MiddlewareFunc(func(_ requests.Info, next requests.AnyHandlerFunc) requests.AnyHandlerFunc {
		return func(ctx context.Context, req any) (any, error) {
			tr.add(name + " enter")
			res, err := next(ctx, req)
			tr.add(name + " exit")
			return res, err
		}
	})
}

// mwTyped is typed middleware for mwQuery that records its entry and exit.
func mwTyped(tr *trail, name string) requests.TypedMiddleware[mwQuery, string] {
	return func(next requests.HandlerFunc[mwQuery, string]) requests.HandlerFunc[mwQuery, string] {
		return func(ctx context.Context, q mwQuery) (string, []events.Event, error) {
			tr.add(name + " enter")
			res, evs, err := next(ctx, q)
			tr.add(name + " exit")
			return res, evs, err
		}
	}
}

// mwGlobalFunc turns f, which gets next, into global request middleware.
func mwGlobalFunc(f func(ctx context.Context, req any, next requests.AnyHandlerFunc) (any, error)) requests.Middleware {
	return requests.MiddlewareFunc(func(_ requests.Info, next requests.AnyHandlerFunc) requests.AnyHandlerFunc {
		return func(ctx context.Context, req any) (any, error) { return f(ctx, req, next) }
	})
}

// mwTypedFunc turns f, which gets next, into typed middleware for mwQuery.
func mwTypedFunc(f func(ctx context.Context, q mwQuery, next requests.HandlerFunc[mwQuery, string]) (string, []events.Event, error)) requests.TypedMiddleware[mwQuery, string] {
	return func(next requests.HandlerFunc[mwQuery, string]) requests.HandlerFunc[mwQuery, string] {
		return func(ctx context.Context, q mwQuery) (string, []events.Event, error) { return f(ctx, q, next) }
	}
}

// mwQueries binds h to mwQuery, wrapped in the typed middleware mws.
func mwQueries(h func(context.Context, mwQuery) (string, []events.Event, error), mws ...requests.TypedMiddleware[mwQuery, string]) bootstrap.Option {
	return bootstrap.WithQueries(func(r *requests.Map) {
		requests.BindHandler(r, requests.HandlerFunc[mwQuery, string](h))
		if len(mws) > 0 {
			requests.Use(r, mws...)
		}
	})
}

// mwGreeter answers "hello <name>" and emits an mwEvent; it counts calls.
func mwGreeter(calls *atomic.Int64) func(context.Context, mwQuery) (string, []events.Event, error) {
	return func(_ context.Context, q mwQuery) (string, []events.Event, error) {
		calls.Add(1)
		return "hello " + q.Name, []events.Event{mwEvent{Name: q.Name}}, nil
	}
}

// mwEventCounter counts the mwEvent values dispatched and records their names.
type mwEventCounter struct {
	mu    sync.Mutex
	names []string
}

func (c *mwEventCounter) option() bootstrap.Option {
	return onEvent(func(_ context.Context, e mwEvent) ([]events.Event, error) {
		c.mu.Lock()
		c.names = append(c.names, e.Name)
		c.mu.Unlock()
		return nil, nil
	})
}

func (c *mwEventCounter) got() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.names...)
}

// mwKind describes the error a stream pair carries.
func mwKind(err error) string {
	var de *mediator.DispatchError
	switch {
	case err == nil:
		return "ok"
	case errors.As(err, &de):
		return "dispatch error"
	default:
		return "error: " + err.Error()
	}
}

// mwFirst, mwSecond and mwThird are named event handlers that record their
// calls; mwFirst returns a follow-up, which mwThird handles.
type (
	mwFirst  struct{ tr *trail }
	mwSecond struct{ tr *trail }
	mwThird  struct{ tr *trail }
)

func (h mwFirst) Handle(context.Context, mwEvent) ([]events.Event, error) {
	h.tr.add("first")
	return []events.Event{mwFollowUp{}}, nil
}

func (h mwSecond) Handle(context.Context, mwEvent) ([]events.Event, error) {
	h.tr.add("second")
	return nil, nil
}

func (h mwThird) Handle(context.Context, mwFollowUp) ([]events.Event, error) {
	h.tr.add("third")
	return nil, nil
}

// mwShort trims the package path from a handler name in a record.
func mwShort(handler string) string {
	return strings.TrimPrefix(handler, "mediator_test.")
}

// ---------------------------------------------------------------------------
// Order

func TestMiddlewareSendOrderIsGlobalThenTypedThenHandler(t *testing.T) {
	t.Parallel()
	tr := &trail{}
	m := build(t, mwQuiet(),
		// Two options: registration order spans options.
		bootstrap.WithRequestMiddleware(mwGlobal(tr, "g1")),
		bootstrap.WithMiddleware(mwGlobal(tr, "g2")),
		bootstrap.WithQueries(func(r *requests.Map) {
			requests.BindHandler(r, requests.HandlerFunc[mwQuery, string](func(context.Context, mwQuery) (string, []events.Event, error) {
				tr.add("handler")
				return "ok", []events.Event{mwEvent{}}, nil
			}))
			requests.Use(r, mwTyped(tr, "t1"), mwTyped(tr, "t2"))
			requests.Use(r, mwTyped(tr, "t3"))
		}),
		onEvent(func(context.Context, mwEvent) ([]events.Event, error) {
			tr.add("event handler")
			return nil, nil
		}),
	)

	res, err := mediator.Send(t.Context(), m, mwQuery{})
	require.NoError(t, err)
	assert.Equal(t, "ok", res)
	// Typed middleware wraps the handler only; global middleware wraps the
	// whole Send, the dispatch of the handler's events included.
	assert.Equal(t, []string{
		"g1 enter", "g2 enter",
		"t1 enter", "t2 enter", "t3 enter",
		"handler",
		"t3 exit", "t2 exit", "t1 exit",
		"event handler",
		"g2 exit", "g1 exit",
	}, tr.get())
}

func TestMiddlewareStreamOrderAndItems(t *testing.T) {
	t.Parallel()
	tr := &trail{}
	global := func(name string) requests.StreamMiddleware {
		return requests.StreamMiddlewareFunc(func(_ requests.Info, next requests.AnyStreamFunc) requests.AnyStreamFunc {
			return func(ctx context.Context, req any, yield func(any, error) bool) error {
				tr.add(name + " enter")
				err := next(ctx, req, func(item any, err error) bool {
					tr.add(fmt.Sprintf("%s item %v %s", name, item, mwKind(err)))
					return yield(item, err)
				})
				tr.add(name + " exit")
				return err
			}
		})
	}
	typed := func(name string) requests.TypedStreamMiddleware[mwWatch, int] {
		return func(next requests.StreamHandlerFunc[mwWatch, int]) requests.StreamHandlerFunc[mwWatch, int] {
			return func(ctx context.Context, w mwWatch, yield func(int, []events.Event) bool) ([]events.Event, error) {
				tr.add(name + " enter")
				late, err := next(ctx, w, func(item int, evs []events.Event) bool {
					tr.add(fmt.Sprintf("%s item %d events %v", name, item, evs))
					return yield(item, evs)
				})
				tr.add(name + " exit")
				return late, err
			}
		}
	}
	sm := streamBuild(t, mwQuiet(),
		bootstrap.WithStreamMiddleware(global("g1"), global("g2")),
		bootstrap.WithQueries(func(r *requests.Map) {
			requests.BindStreamHandler(r, requests.StreamHandlerFunc[mwWatch, int](func(_ context.Context, w mwWatch, yield func(int, []events.Event) bool) ([]events.Event, error) {
				for i := 1; i <= w.N; i++ {
					tr.add(fmt.Sprintf("handler yields %d", i))
					if !yield(i, []events.Event{mwTick{N: i}}) {
						return nil, nil
					}
				}
				return nil, nil
			}))
			requests.UseStream(r, typed("t1"), typed("t2"))
		}),
		onEvent(func(_ context.Context, e mwTick) ([]events.Event, error) {
			tr.add(fmt.Sprintf("event %d", e.N))
			if e.N == 2 {
				return nil, errMwEvent
			}
			return nil, nil
		}),
	)

	for v, err := range mediator.Stream(t.Context(), sm, mwWatch{N: 2}) {
		tr.add(fmt.Sprintf("consumer %d %s", v, mwKind(err)))
	}
	assert.Equal(t, []string{
		"g1 enter", "g2 enter", "t1 enter", "t2 enter",
		// Typed stream middleware sees each item with its events, before
		// they are dispatched (innermost first); global stream middleware
		// sees it after, with the error of that dispatch.
		"handler yields 1",
		"t2 item 1 events [{1}]", "t1 item 1 events [{1}]",
		"event 1",
		"g2 item 1 ok", "g1 item 1 ok",
		"consumer 1 ok",
		"handler yields 2",
		"t2 item 2 events [{2}]", "t1 item 2 events [{2}]",
		"event 2",
		"g2 item 2 dispatch error", "g1 item 2 dispatch error",
		"consumer 2 dispatch error",
		"t2 exit", "t1 exit", "g2 exit", "g1 exit",
	}, tr.get())
}

func TestMiddlewareStreamCancellationIsTheStreamErrorNotAnItem(t *testing.T) {
	t.Parallel()
	var (
		items    []string
		returned error
	)
	sm := streamBuild(t, mwQuiet(),
		bootstrap.WithStreamMiddleware(requests.StreamMiddlewareFunc(func(_ requests.Info, next requests.AnyStreamFunc) requests.AnyStreamFunc {
			return func(ctx context.Context, req any, yield func(any, error) bool) error {
				err := next(ctx, req, func(item any, err error) bool {
					items = append(items, fmt.Sprintf("%v %s", item, mwKind(err)))
					return yield(item, err)
				})
				returned = err
				return err
			}
		})),
		streamOn(func(_ context.Context, _ mwWatch, yield func(int, []events.Event) bool) ([]events.Event, error) {
			yield(1, nil)
			if yield(2, nil) {
				return nil, errors.New("yield should have returned false")
			}
			// An error returned after yield returned false is not reported.
			return nil, errMwHandler
		}),
	)

	// The consumer cancels the caller's context after the first item and
	// goes on.
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var got []string
	for v, err := range mediator.Stream(ctx, sm, mwWatch{}) {
		got = append(got, fmt.Sprintf("%d %s", v, mwKind(err)))
		cancel()
	}
	assert.Equal(t, []string{"1 ok", "0 error: context canceled"}, got)
	// Stream ran on this goroutine: the middleware's writes are visible.
	assert.Equal(t, []string{"1 ok"}, items, "global stream middleware sees delivered items only")
	require.ErrorIs(t, returned, context.Canceled, "the cancellation is the error of the stream")
}

func TestMiddlewareEventOrderPerInvocation(t *testing.T) {
	t.Parallel()
	tr := &trail{}
	var mu sync.Mutex
	var wrapped []string
	em := func(name string) events.Middleware {
		return events.MiddlewareFunc(func(inv events.Invocation, next events.InvocationFunc) events.InvocationFunc {
			mu.Lock()
			wrapped = append(wrapped, fmt.Sprintf("%s %v %s", name, inv.EventType, mwShort(inv.Handler)))
			mu.Unlock()
			h := mwShort(inv.Handler)
			return func(ctx context.Context, ev events.Event) ([]events.Event, error) {
				tr.add(name + " enter " + h)
				fus, err := next(ctx, ev)
				tr.add(fmt.Sprintf("%s exit %s with %d follow-up(s)", name, h, len(fus)))
				return fus, err
			}
		})
	}
	m := build(t, mwQuiet(),
		bootstrap.WithConcurrentEventHandling(false),
		bootstrap.WithEventMiddleware(em("e1")),
		bootstrap.WithMiddleware(em("e2")),
		mwQueries(func(context.Context, mwQuery) (string, []events.Event, error) {
			return "ok", []events.Event{mwEvent{}}, nil
		}),
		bootstrap.WithDomainEvents(func(e *events.Map) {
			events.BindHandler[mwEvent](e, mwFirst{tr})
			events.BindHandler[mwEvent](e, mwSecond{tr})
			events.BindHandler[mwFollowUp](e, mwThird{tr})
		}),
	)

	_, err := mediator.Send(t.Context(), m, mwQuery{})
	require.NoError(t, err)
	assert.Equal(t, []string{
		"e1 enter mwFirst", "e2 enter mwFirst", "first", "e2 exit mwFirst with 1 follow-up(s)", "e1 exit mwFirst with 1 follow-up(s)",
		"e1 enter mwSecond", "e2 enter mwSecond", "second", "e2 exit mwSecond with 0 follow-up(s)", "e1 exit mwSecond with 0 follow-up(s)",
		"e1 enter mwThird", "e2 enter mwThird", "third", "e2 exit mwThird with 0 follow-up(s)", "e1 exit mwThird with 0 follow-up(s)",
	}, tr.get())
	// Wrapped once per (event type, handler), at bootstrap.
	mu.Lock()
	defer mu.Unlock()
	assert.ElementsMatch(t, []string{
		"e1 mediator_test.mwEvent mwFirst", "e1 mediator_test.mwEvent mwSecond", "e1 mediator_test.mwFollowUp mwThird",
		"e2 mediator_test.mwEvent mwFirst", "e2 mediator_test.mwEvent mwSecond", "e2 mediator_test.mwFollowUp mwThird",
	}, wrapped)
}

func TestMiddlewareEventWrapsEachHandlerSeparately(t *testing.T) {
	t.Parallel()
	tr := &trail{}
	// Refuses to call the second handler only: the first still runs, and
	// the failure is reported against the second.
	refuseSecond := events.MiddlewareFunc(func(inv events.Invocation, next events.InvocationFunc) events.InvocationFunc {
		if mwShort(inv.Handler) != "mwSecond" {
			return next
		}
		return func(context.Context, events.Event) ([]events.Event, error) { return nil, errMwReplaced }
	})
	m := build(t, mwQuiet(),
		bootstrap.WithEventMiddleware(refuseSecond),
		mwQueries(func(context.Context, mwQuery) (string, []events.Event, error) {
			return "ok", []events.Event{mwEvent{}}, nil
		}),
		bootstrap.WithDomainEvents(func(e *events.Map) {
			events.BindHandler[mwEvent](e, mwFirst{tr})
			events.BindHandler[mwEvent](e, mwSecond{tr})
			events.BindHandler[mwFollowUp](e, mwThird{tr})
		}),
	)

	res, err := mediator.Send(t.Context(), m, mwQuery{})
	assert.Equal(t, "ok", res)
	de := dispatchError(t, err)
	require.Len(t, de.Failures, 1)
	var he *mediator.HandlerError
	require.ErrorAs(t, de.Failures[0], &he)
	assert.Equal(t, "mediator_test.mwSecond", he.Handler)
	require.ErrorIs(t, he, errMwReplaced)
	assert.Equal(t, []string{"first", "third"}, tr.get())
}

// ---------------------------------------------------------------------------
// Short-circuit, mutation, replacement

func TestMiddlewareGlobalShortCircuitSkipsHandler(t *testing.T) {
	t.Parallel()
	var calls atomic.Int64
	var evs mwEventCounter
	m := build(t, mwQuiet(),
		bootstrap.WithRequestMiddleware(mwGlobalFunc(func(context.Context, any, requests.AnyHandlerFunc) (any, error) {
			return "cached", nil
		})),
		mwQueries(mwGreeter(&calls)),
		evs.option(),
	)

	res, err := mediator.Send(t.Context(), m, mwQuery{Name: "ann"})
	require.NoError(t, err)
	assert.IsType(t, "", res)
	assert.Equal(t, "cached", res)
	assert.Zero(t, calls.Load(), "handler not called")
	assert.Empty(t, evs.got(), "no event dispatched")
}

func TestMiddlewareTypedShortCircuitSkipsHandler(t *testing.T) {
	t.Parallel()
	var calls atomic.Int64
	var evs mwEventCounter
	m := build(t, mwQuiet(),
		mwQueries(mwGreeter(&calls), mwTypedFunc(func(ctx context.Context, q mwQuery, next requests.HandlerFunc[mwQuery, string]) (string, []events.Event, error) {
			if q.Name == "cached" {
				return "from cache", nil, nil
			}
			return next(ctx, q)
		})),
		evs.option(),
	)

	res, err := mediator.Send(t.Context(), m, mwQuery{Name: "cached"})
	require.NoError(t, err)
	assert.Equal(t, "from cache", res)
	assert.Zero(t, calls.Load(), "handler not called")
	assert.Empty(t, evs.got())

	res, err = mediator.Send(t.Context(), m, mwQuery{Name: "bob"})
	require.NoError(t, err)
	assert.Equal(t, "hello bob", res)
	assert.Equal(t, int64(1), calls.Load())
}

func TestMiddlewareGlobalRequestMutationReachesHandler(t *testing.T) {
	t.Parallel()
	var calls atomic.Int64
	m := build(t, mwQuiet(),
		bootstrap.WithRequestMiddleware(mwGlobalFunc(func(ctx context.Context, req any, next requests.AnyHandlerFunc) (any, error) {
			q, _ := req.(mwQuery)
			q.Name = strings.ToUpper(q.Name)
			return next(ctx, q)
		})),
		mwQueries(mwGreeter(&calls)),
	)

	req := mwQuery{Name: "ann"}
	res, err := mediator.Send(t.Context(), m, req)
	require.NoError(t, err)
	assert.Equal(t, "hello ANN", res)
	assert.Equal(t, "ann", req.Name, "the caller's request is untouched")
}

func TestMiddlewareTypedRequestMutationReachesHandler(t *testing.T) {
	t.Parallel()
	var calls atomic.Int64
	m := build(t, mwQuiet(),
		mwQueries(mwGreeter(&calls), mwTypedFunc(func(ctx context.Context, q mwQuery, next requests.HandlerFunc[mwQuery, string]) (string, []events.Event, error) {
			q.Name += " (checked)"
			return next(ctx, q)
		})),
	)

	res, err := mediator.Send(t.Context(), m, mwQuery{Name: "ann"})
	require.NoError(t, err)
	assert.Equal(t, "hello ann (checked)", res)
}

func TestMiddlewareResponseReplacement(t *testing.T) {
	t.Parallel()
	var calls atomic.Int64
	global := mwGlobalFunc(func(ctx context.Context, req any, next requests.AnyHandlerFunc) (any, error) {
		res, err := next(ctx, req)
		s, _ := res.(string)
		return s + " +global", err
	})
	typed := mwTypedFunc(func(ctx context.Context, q mwQuery, next requests.HandlerFunc[mwQuery, string]) (string, []events.Event, error) {
		res, evs, err := next(ctx, q)
		return res + " +typed", evs, err
	})

	t.Run("global", func(t *testing.T) {
		t.Parallel()
		m := build(t, mwQuiet(), bootstrap.WithRequestMiddleware(global), mwQueries(mwGreeter(&calls)))
		res, err := mediator.Send(t.Context(), m, mwQuery{Name: "ann"})
		require.NoError(t, err)
		assert.Equal(t, "hello ann +global", res)
	})
	t.Run("typed", func(t *testing.T) {
		t.Parallel()
		m := build(t, mwQuiet(), mwQueries(mwGreeter(&calls), typed))
		res, err := mediator.Send(t.Context(), m, mwQuery{Name: "ann"})
		require.NoError(t, err)
		assert.Equal(t, "hello ann +typed", res)
	})
}

func TestMiddlewareErrorReplacement(t *testing.T) {
	t.Parallel()
	failing := func(context.Context, mwQuery) (string, []events.Event, error) {
		return "", nil, errMwHandler
	}
	t.Run("global replaces the error", func(t *testing.T) {
		t.Parallel()
		m := build(t, mwQuiet(),
			bootstrap.WithRequestMiddleware(mwGlobalFunc(func(ctx context.Context, req any, next requests.AnyHandlerFunc) (any, error) {
				res, err := next(ctx, req)
				if errors.Is(err, errMwHandler) {
					return res, errMwReplaced
				}
				return res, err
			})),
			mwQueries(failing),
		)
		_, err := mediator.Send(t.Context(), m, mwQuery{})
		require.ErrorIs(t, err, errMwReplaced)
		require.NotErrorIs(t, err, errMwHandler)
	})
	t.Run("global turns the error into a response", func(t *testing.T) {
		t.Parallel()
		m := build(t, mwQuiet(),
			bootstrap.WithRequestMiddleware(mwGlobalFunc(func(ctx context.Context, req any, next requests.AnyHandlerFunc) (any, error) {
				if _, err := next(ctx, req); errors.Is(err, errMwHandler) {
					return "default", nil
				}
				return "unexpected", nil
			})),
			mwQueries(failing),
		)
		res, err := mediator.Send(t.Context(), m, mwQuery{})
		require.NoError(t, err)
		assert.Equal(t, "default", res)
	})
	t.Run("typed replaces the error", func(t *testing.T) {
		t.Parallel()
		m := build(t, mwQuiet(), mwQueries(failing, mwTypedFunc(func(ctx context.Context, q mwQuery, next requests.HandlerFunc[mwQuery, string]) (string, []events.Event, error) {
			res, evs, err := next(ctx, q)
			if err != nil {
				return res, evs, fmt.Errorf("%w (was: %s)", errMwReplaced, err.Error())
			}
			return res, evs, nil
		})))
		_, err := mediator.Send(t.Context(), m, mwQuery{})
		require.ErrorIs(t, err, errMwReplaced)
		require.NotErrorIs(t, err, errMwHandler)
	})
}

func TestMiddlewareTypedAndGlobalTogether(t *testing.T) {
	t.Parallel()
	var calls atomic.Int64
	var evs mwEventCounter
	m := build(t, mwQuiet(),
		bootstrap.WithRequestMiddleware(mwGlobalFunc(func(ctx context.Context, req any, next requests.AnyHandlerFunc) (any, error) {
			q, _ := req.(mwQuery)
			q.Name += "+global"
			res, err := next(ctx, q)
			s, _ := res.(string)
			return s + " <global", err
		})),
		mwQueries(mwGreeter(&calls), mwTypedFunc(func(ctx context.Context, q mwQuery, next requests.HandlerFunc[mwQuery, string]) (string, []events.Event, error) {
			q.Name += "+typed"
			res, evs, err := next(ctx, q)
			return res + " <typed", evs, err
		})),
		evs.option(),
	)

	res, err := mediator.Send(t.Context(), m, mwQuery{Name: "ann"})
	require.NoError(t, err)
	// The request goes down global then typed; the response comes back up
	// typed then global.
	assert.Equal(t, "hello ann+global+typed <typed <global", res)
	assert.Equal(t, []string{"ann+global+typed"}, evs.got())
	assert.Equal(t, int64(1), calls.Load())
}

// ---------------------------------------------------------------------------
// Events seen by middleware

func TestMiddlewareTypedAddsEventBeforeDispatch(t *testing.T) {
	t.Parallel()
	var calls atomic.Int64
	var evs mwEventCounter
	m := build(t, mwQuiet(),
		mwQueries(mwGreeter(&calls), mwTypedFunc(func(ctx context.Context, q mwQuery, next requests.HandlerFunc[mwQuery, string]) (string, []events.Event, error) {
			res, evs, err := next(ctx, q)
			return res, append(evs, mwEvent{Name: "audit"}), err
		})),
		evs.option(),
	)

	res, err := mediator.Send(t.Context(), m, mwQuery{Name: "ann"})
	require.NoError(t, err)
	assert.Equal(t, "hello ann", res)
	assert.Equal(t, []string{"ann", "audit"}, evs.got())
}

func TestMiddlewareTypedDropsEvents(t *testing.T) {
	t.Parallel()
	var calls atomic.Int64
	var evs mwEventCounter
	m := build(t, mwQuiet(),
		mwQueries(mwGreeter(&calls), mwTypedFunc(func(ctx context.Context, q mwQuery, next requests.HandlerFunc[mwQuery, string]) (string, []events.Event, error) {
			res, _, err := next(ctx, q)
			return res, nil, err
		})),
		evs.option(),
	)

	res, err := mediator.Send(t.Context(), m, mwQuery{Name: "ann"})
	require.NoError(t, err)
	assert.Equal(t, "hello ann", res)
	assert.Equal(t, int64(1), calls.Load())
	assert.Empty(t, evs.got(), "the handler's event was dropped")
}

func TestMiddlewareGlobalSeesDispatchErrorWithValidResponse(t *testing.T) {
	t.Parallel()
	var calls atomic.Int64
	var (
		seenRes any
		seenErr error
	)
	m := build(t, mwQuiet(),
		bootstrap.WithRequestMiddleware(mwGlobalFunc(func(ctx context.Context, req any, next requests.AnyHandlerFunc) (any, error) {
			res, err := next(ctx, req)
			seenRes, seenErr = res, err
			return res, err
		})),
		mwQueries(mwGreeter(&calls)),
		onEvent(func(context.Context, mwEvent) ([]events.Event, error) { return nil, errMwEvent }),
	)

	res, err := mediator.Send(t.Context(), m, mwQuery{Name: "ann"})
	assert.Equal(t, "hello ann", res)
	assert.Len(t, dispatchError(t, err).Failures, 1)
	require.ErrorIs(t, err, errMwEvent)

	// Send ran on this goroutine: the middleware's writes are visible.
	assert.Equal(t, "hello ann", seenRes, "the response is valid")
	var de *mediator.DispatchError
	require.ErrorAs(t, seenErr, &de, "the middleware sees the *DispatchError")
	require.ErrorIs(t, seenErr, errMwEvent)
}

// ---------------------------------------------------------------------------
// Types

func TestMiddlewareGlobalChangingTypesIsErrMiddlewareType(t *testing.T) {
	t.Parallel()
	var calls atomic.Int64
	t.Run("request", func(t *testing.T) {
		t.Parallel()
		m := build(t, mwQuiet(),
			bootstrap.WithRequestMiddleware(mwGlobalFunc(func(ctx context.Context, _ any, next requests.AnyHandlerFunc) (any, error) {
				return next(ctx, "not a query")
			})),
			mwQueries(mwGreeter(&calls)),
		)
		res, err := mediator.Send(t.Context(), m, mwQuery{Name: "ann"})
		require.ErrorIs(t, err, requests.ErrMiddlewareType)
		assert.Empty(t, res)
		assert.Zero(t, calls.Load(), "the handler is not called")
	})
	t.Run("response", func(t *testing.T) {
		t.Parallel()
		m := build(t, mwQuiet(),
			bootstrap.WithRequestMiddleware(mwGlobalFunc(func(context.Context, any, requests.AnyHandlerFunc) (any, error) {
				return 42, nil
			})),
			mwQueries(mwGreeter(&calls)),
		)
		res, err := mediator.Send(t.Context(), m, mwQuery{Name: "ann"})
		require.ErrorIs(t, err, requests.ErrMiddlewareType)
		assert.Empty(t, res)
	})
	t.Run("stream request", func(t *testing.T) {
		t.Parallel()
		sm := streamBuild(t, mwQuiet(),
			bootstrap.WithStreamMiddleware(requests.StreamMiddlewareFunc(func(_ requests.Info, next requests.AnyStreamFunc) requests.AnyStreamFunc {
				return func(ctx context.Context, _ any, yield func(any, error) bool) error {
					return next(ctx, mwQuery{}, yield)
				}
			})),
			streamOn(func(context.Context, mwWatch, func(int, []events.Event) bool) ([]events.Event, error) {
				calls.Add(1)
				return nil, nil
			}),
		)
		pairs := streamDrain(mediator.Stream(t.Context(), sm, mwWatch{N: 1}))
		require.Len(t, pairs, 1)
		require.ErrorIs(t, pairs[0].err, requests.ErrMiddlewareType)
	})
	// The handlers of the request cases are never called.
	t.Cleanup(func() { assert.Zero(t, calls.Load()) })
}

// ---------------------------------------------------------------------------
// Built once, at bootstrap

func TestMiddlewareChainIsBuiltOncePerRequestType(t *testing.T) {
	t.Parallel()
	var wraps, typedWraps, calls atomic.Int64
	var seen sync.Map
	counting := requests.MiddlewareFunc(func(info requests.Info, next requests.AnyHandlerFunc) requests.AnyHandlerFunc {
		wraps.Add(1)
		seen.Store(info.Request, info.Response)
		return next
	})
	m := build(t, mwQuiet(),
		bootstrap.WithRequestMiddleware(counting),
		mwQueries(mwGreeter(&calls), func(next requests.HandlerFunc[mwQuery, string]) requests.HandlerFunc[mwQuery, string] {
			typedWraps.Add(1)
			return next
		}),
		onRequest(func(context.Context, mwOther) (int, []events.Event, error) { return 1, nil, nil }),
	)
	require.Equal(t, int64(2), wraps.Load(), "one WrapRequest per request type, at bootstrap")

	for range 1000 {
		_, err := mediator.Send(t.Context(), m, mwQuery{Name: "ann"})
		require.NoError(t, err)
		_, err = mediator.Send(t.Context(), m, mwOther{})
		require.NoError(t, err)
	}
	assert.Equal(t, int64(2), wraps.Load(), "not once per Send")
	assert.Equal(t, int64(1), typedWraps.Load())
	assert.Equal(t, int64(1000), calls.Load())
	res, _ := seen.Load(reflect.TypeFor[mwQuery]())
	assert.Equal(t, reflect.TypeFor[string](), res, "Info carries the response type")
	res, _ = seen.Load(reflect.TypeFor[mwOther]())
	assert.Equal(t, reflect.TypeFor[int](), res)
}

// mwAllocsEnv is set in the environment of the child process that
// TestMiddlewareTypedSendDoesNotAllocate starts.
const mwAllocsEnv = "GOCQRS_MW_ALLOCS_CHILD"

func TestMiddlewareTypedSendDoesNotAllocate(t *testing.T) {
	if os.Getenv(mwAllocsEnv) == "" {
		// testing.AllocsPerRun counts every allocation of the process, so it
		// refuses to run in a parallel test, where the allocations of the
		// tests running alongside would be counted too. Measure in a child
		// process that runs this test alone, not in parallel.
		t.Parallel()
		cmd := exec.CommandContext(t.Context(), os.Args[0],
			"-test.run=^TestMiddlewareTypedSendDoesNotAllocate$", "-test.count=1", "-test.v")
		// The race detector waits a second at exit by default; not here.
		cmd.Env = append(os.Environ(), mwAllocsEnv+"=1", "GORACE="+os.Getenv("GORACE")+" atexit_sleep_ms=0")
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "child process:\n%s", out)
		require.Contains(t, string(out), "--- PASS: TestMiddlewareTypedSendDoesNotAllocate", "the child ran the measurement")
		return
	}

	pass := func(next requests.HandlerFunc[mwQuery, string]) requests.HandlerFunc[mwQuery, string] {
		return func(ctx context.Context, q mwQuery) (string, []events.Event, error) { return next(ctx, q) }
	}
	m := build(t, mwQuiet(), mwQueries(func(_ context.Context, q mwQuery) (string, []events.Event, error) {
		return q.Name, nil, nil
	}, pass, pass, pass))
	ctx := context.Background()
	req := mwQuery{Name: "ann"}
	var failed error
	allocs := testing.AllocsPerRun(1000, func() {
		if res, err := mediator.Send(ctx, m, req); err != nil || res != "ann" {
			failed = fmt.Errorf("Send = %q, %w", res, err)
		}
	})
	require.NoError(t, failed)
	assert.Zero(t, allocs, "Send through 3 typed middleware allocates")
}

// ---------------------------------------------------------------------------
// Bootstrap errors

func TestMiddlewareBootstrapErrors(t *testing.T) {
	t.Parallel()
	pass := func(next requests.HandlerFunc[mwQuery, string]) requests.HandlerFunc[mwQuery, string] { return next }
	passStream := func(next requests.StreamHandlerFunc[mwWatch, int]) requests.StreamHandlerFunc[mwWatch, int] {
		return next
	}
	plain := requests.HandlerFunc[mwQuery, string](func(context.Context, mwQuery) (string, []events.Event, error) {
		return "", nil, nil
	})
	stream := requests.StreamHandlerFunc[mwWatch, int](func(context.Context, mwWatch, func(int, []events.Event) bool) ([]events.Event, error) {
		return nil, nil
	})
	cases := []struct {
		name string
		opts []bootstrap.Option
		want []string
	}{
		{
			name: "Use for an unbound type",
			opts: []bootstrap.Option{bootstrap.WithQueries(func(r *requests.Map) { requests.Use(r, pass) })},
			want: []string{"mediator_test.mwQuery", "not bound"},
		},
		{
			name: "UseStream for an unbound type",
			opts: []bootstrap.Option{bootstrap.WithQueries(func(r *requests.Map) { requests.UseStream(r, passStream) })},
			want: []string{"mediator_test.mwWatch", "not bound"},
		},
		{
			name: "stream middleware for a plain handler",
			opts: []bootstrap.Option{bootstrap.WithQueries(func(r *requests.Map) {
				requests.BindHandler(r, plain)
				requests.UseStream[mwQuery](r, func(next requests.StreamHandlerFunc[mwQuery, string]) requests.StreamHandlerFunc[mwQuery, string] {
					return next
				})
			})},
			want: []string{"mediator_test.mwQuery", "not a TypedMiddleware"},
		},
		{
			name: "typed middleware for a stream handler",
			opts: []bootstrap.Option{bootstrap.WithQueries(func(r *requests.Map) {
				requests.BindStreamHandler(r, stream)
				requests.Use[mwWatch](r, func(next requests.HandlerFunc[mwWatch, int]) requests.HandlerFunc[mwWatch, int] { return next })
			})},
			want: []string{"mediator_test.mwWatch", "not a TypedStreamMiddleware"},
		},
		{
			name: "nil typed middleware",
			opts: []bootstrap.Option{bootstrap.WithQueries(func(r *requests.Map) {
				requests.BindHandler(r, plain)
				requests.Use[mwQuery](r, nil)
			})},
			want: []string{"mediator_test.mwQuery", "nil"},
		},
		{
			name: "typed middleware returning a nil handler",
			opts: []bootstrap.Option{bootstrap.WithQueries(func(r *requests.Map) {
				requests.BindHandler(r, plain)
				requests.Use(r, func(requests.HandlerFunc[mwQuery, string]) requests.HandlerFunc[mwQuery, string] { return nil })
			})},
			want: []string{"mediator_test.mwQuery", "nil handler"},
		},
		{
			name: "global middleware returning a nil handler",
			opts: []bootstrap.Option{
				bootstrap.WithQueries(func(r *requests.Map) { requests.BindHandler(r, plain) }),
				bootstrap.WithRequestMiddleware(requests.MiddlewareFunc(func(requests.Info, requests.AnyHandlerFunc) requests.AnyHandlerFunc { return nil })),
			},
			want: []string{"mediator_test.mwQuery", "nil handler"},
		},
		{
			name: "event middleware returning a nil handler",
			opts: []bootstrap.Option{
				onEvent(func(context.Context, mwEvent) ([]events.Event, error) { return nil, nil }),
				bootstrap.WithEventMiddleware(events.MiddlewareFunc(func(events.Invocation, events.InvocationFunc) events.InvocationFunc { return nil })),
			},
			want: []string{"event middleware", "nil handler"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m, err := bootstrap.Bootstrap(nil, tc.opts...)
			require.Error(t, err)
			assert.Nil(t, m)
			for _, w := range tc.want {
				assert.ErrorContains(t, err, w)
			}
		})
	}
}

// ---------------------------------------------------------------------------
// Panics

func TestMiddlewarePanicIsPanicError(t *testing.T) {
	t.Parallel()
	t.Run("global", func(t *testing.T) {
		t.Parallel()
		var calls atomic.Int64
		m := build(t, mwQuiet(),
			bootstrap.WithRequestMiddleware(mwGlobalFunc(func(context.Context, any, requests.AnyHandlerFunc) (any, error) {
				panic("global boom")
			})),
			mwQueries(mwGreeter(&calls)),
		)
		var (
			res string
			err error
		)
		require.NotPanics(t, func() { res, err = mediator.Send(t.Context(), m, mwQuery{}) })
		var pe *mediator.PanicError
		require.ErrorAs(t, err, &pe)
		assert.Equal(t, "global boom", pe.Value)
		assert.NotEmpty(t, pe.Stack)
		assert.Empty(t, res)
		assert.Zero(t, calls.Load())
	})
	t.Run("typed", func(t *testing.T) {
		t.Parallel()
		var calls atomic.Int64
		m := build(t, mwQuiet(), mwQueries(mwGreeter(&calls), mwTypedFunc(func(context.Context, mwQuery, requests.HandlerFunc[mwQuery, string]) (string, []events.Event, error) {
			panic(errMwHandler)
		})))
		var err error
		require.NotPanics(t, func() { _, err = mediator.Send(t.Context(), m, mwQuery{}) })
		var pe *mediator.PanicError
		require.ErrorAs(t, err, &pe)
		require.ErrorIs(t, err, errMwHandler)
		assert.Zero(t, calls.Load())
	})
	t.Run("event", func(t *testing.T) {
		t.Parallel()
		var calls atomic.Int64
		m := build(t, mwQuiet(),
			bootstrap.WithEventMiddleware(events.MiddlewareFunc(func(events.Invocation, events.InvocationFunc) events.InvocationFunc {
				return func(context.Context, events.Event) ([]events.Event, error) { panic("event boom") }
			})),
			mwQueries(mwGreeter(&calls)),
			onEvent(func(context.Context, mwEvent) ([]events.Event, error) { return nil, nil }),
		)
		res, err := mediator.Send(t.Context(), m, mwQuery{Name: "ann"})
		assert.Equal(t, "hello ann", res, "the response is valid")
		de := dispatchError(t, err)
		require.Len(t, de.Failures, 1)
		var pe *mediator.PanicError
		require.ErrorAs(t, de.Failures[0], &pe)
		assert.Equal(t, "event boom", pe.Value)
	})
	t.Run("stream", func(t *testing.T) {
		t.Parallel()
		sm := streamBuild(t, mwQuiet(),
			bootstrap.WithStreamMiddleware(requests.StreamMiddlewareFunc(func(requests.Info, requests.AnyStreamFunc) requests.AnyStreamFunc {
				return func(context.Context, any, func(any, error) bool) error { panic("stream boom") }
			})),
			streamOn(func(context.Context, mwWatch, func(int, []events.Event) bool) ([]events.Event, error) {
				return nil, nil
			}),
		)
		pairs := streamDrain(mediator.Stream(t.Context(), sm, mwWatch{N: 1}))
		require.Len(t, pairs, 1)
		var pe *mediator.PanicError
		require.ErrorAs(t, pairs[0].err, &pe)
		assert.Equal(t, "stream boom", pe.Value)
	})
}
