package mediator_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/dig"

	"github.com/gocqrs/cqrs/bootstrap"
	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/mediator"
	"github.com/gocqrs/cqrs/requests"
)

// Defect: a handler bound to an interface type passed bootstrap and was
// never called.
func TestBindingToAnInterfaceTypeIsRejected(t *testing.T) {
	t.Parallel()
	_, err := bootstrap.Bootstrap(nil, emitter(), bootstrap.WithDomainEvents(func(m *events.Map) {
		events.BindHandler[fmt.Stringer](m, events.HandlerFunc[fmt.Stringer](func(context.Context, fmt.Stringer) ([]events.Event, error) {
			return nil, nil
		}))
		events.Bind[error](m, func() events.Handler[error] { return nil })
	}))
	require.ErrorIs(t, err, events.ErrInterfaceBinding)
	assert.Contains(t, err.Error(), "fmt.Stringer")
	assert.Contains(t, err.Error(), "error")
}

// recordingBreaker records the circuit names it is asked to guard and
// opens a circuit after its first failure.
type recordingBreaker struct {
	mu    sync.Mutex
	names []string
	open  map[string]bool
}

var errOpen = errors.New("circuit open")

func (b *recordingBreaker) Call(ctx context.Context, name string, fn func(context.Context) error) error {
	b.mu.Lock()
	b.names = append(b.names, name)
	open := b.open[name]
	b.mu.Unlock()
	if open {
		return errOpen
	}
	err := fn(ctx)
	if err != nil {
		b.mu.Lock()
		b.open[name] = true
		b.mu.Unlock()
	}
	return err
}

func (b *recordingBreaker) IsOpen(err error) bool { return errors.Is(err, errOpen) }

// Defect: two fallback bindings whose primaries share a type shared one
// circuit, so one binding's failures opened the other's.
func TestEveryFallbackBindingHasItsOwnCircuit(t *testing.T) {
	t.Parallel()
	type ev struct{}
	errDown := errors.New("down")
	var failingCalls, healthyCalls atomic.Int64
	primary := func(calls *atomic.Int64, fail bool) events.Handler[ev] {
		return events.HandlerFunc[ev](func(context.Context, ev) ([]events.Event, error) {
			calls.Add(1)
			if fail {
				return nil, errDown
			}
			return nil, nil
		})
	}
	noop := events.HandlerFunc[ev](func(context.Context, ev) ([]events.Event, error) { return nil, nil })
	br := &recordingBreaker{open: map[string]bool{}}
	policy := events.FallbackPolicy{Breaker: br}
	m := build(t, emitter(), bootstrap.WithDomainEvents(func(m *events.Map) {
		events.BindFallbackHandlers[ev](m, primary(&failingCalls, true), noop, policy)
		events.BindFallbackHandlers[ev](m, primary(&healthyCalls, false), noop, policy)
	}))
	for range 3 {
		_, err := sendEvents(t.Context(), m, ev{})
		require.NoError(t, err)
	}
	assert.EqualValues(t, 1, failingCalls.Load(), "the failing primary's circuit opened")
	assert.EqualValues(t, 3, healthyCalls.Load(), "the healthy primary's circuit stayed closed")
	br.mu.Lock()
	names := br.names
	br.mu.Unlock()
	require.Len(t, names, 6)
	assert.NotEqual(t, names[0], names[1])
	assert.Contains(t, names[0], "mediator_test.ev")
	assert.Contains(t, names[0], "[1]")
	assert.Contains(t, names[1], "[2]")
}

// A circuit can be named; bindings given one name share it.
func TestFallbackCircuitCanBeNamed(t *testing.T) {
	t.Parallel()
	type ev struct{}
	br := &recordingBreaker{open: map[string]bool{}}
	failing := events.HandlerFunc[ev](func(context.Context, ev) ([]events.Event, error) { return nil, errors.New("down") })
	noop := events.HandlerFunc[ev](func(context.Context, ev) ([]events.Event, error) { return nil, nil })
	type req struct{ requests.Returns[int] }
	rfail := requests.HandlerFunc[req, int](func(context.Context, req) (int, []events.Event, error) { return 0, nil, errors.New("down") })
	rnoop := requests.HandlerFunc[req, int](func(context.Context, req) (int, []events.Event, error) { return 1, nil, nil })
	m := build(t, emitter(),
		bootstrap.WithDomainEvents(func(m *events.Map) {
			events.BindFallbackHandlers[ev](m, failing, noop, events.FallbackPolicy{Breaker: br, Name: "payments"})
		}),
		bootstrap.WithQueries(func(r *requests.Map) {
			requests.BindFallbackHandlers[req](r, rfail, rnoop, requests.FallbackPolicy{Breaker: br, Name: "payments"})
		}))
	_, err := sendEvents(t.Context(), m, ev{})
	require.NoError(t, err)
	res, err := mediator.Send(t.Context(), m, req{})
	require.NoError(t, err)
	assert.Equal(t, 1, res)
	assert.Equal(t, []string{"payments", "payments"}, br.names)
	assert.True(t, br.open["payments"])
}

type nilHandler struct{}

func (*nilHandler) Handle(context.Context, struct{}) ([]events.Event, error) { return nil, nil }

type nilReq struct{ requests.Returns[int] }

type nilReqHandler struct{}

func (*nilReqHandler) Handle(context.Context, nilReq) (int, []events.Event, error) {
	return 0, nil, nil
}

// Defect: a constructor declared to return an interface that returned a
// typed-nil pointer was accepted, and every dispatch then panicked.
func TestConstructorReturningATypedNilIsRejected(t *testing.T) {
	t.Parallel()
	_, err := bootstrap.Bootstrap(dig.New(),
		bootstrap.WithDomainEvents(func(m *events.Map) {
			events.Bind[struct{}](m, func() events.Handler[struct{}] { var h *nilHandler; return h })
		}),
		bootstrap.WithCommands(func(r *requests.Map) {
			requests.Bind[nilReq](r, func() requests.Handler[nilReq, int] { var h *nilReqHandler; return h })
		}))
	require.Error(t, err)
	assert.Equal(t, 2, strings.Count(err.Error(), "returned a nil"), err.Error())
}

func failWith(name string) events.HandlerFunc[struct{ N int }] {
	return func(context.Context, struct{ N int }) ([]events.Event, error) { return nil, errors.New(name) }
}

func failFirst(ctx context.Context, e struct{ N int }) ([]events.Event, error) {
	return failWith("first")(ctx, e)
}

func failSecond(ctx context.Context, e struct{ N int }) ([]events.Event, error) {
	return failWith("second")(ctx, e)
}

// Defect: two HandlerFunc handlers of one event had the same name in
// errors; named functions are now named, and equal names are numbered.
func TestFuncHandlersHaveDistinctNames(t *testing.T) {
	t.Parallel()
	type ev = struct{ N int }
	m := build(t, emitter(), bootstrap.WithDomainEvents(func(m *events.Map) {
		events.BindHandler[ev](m, events.HandlerFunc[ev](failFirst))
		events.BindHandler[ev](m, events.HandlerFunc[ev](failSecond))
		events.BindHandler[ev](m, failWith("third"))
		events.BindHandler[ev](m, failWith("fourth"))
	}))
	_, err := sendEvents(t.Context(), m, ev{})
	de := dispatchError(t, err)
	require.Len(t, de.Failures, 4)
	var names []string
	for _, f := range de.Failures {
		var he *mediator.HandlerError
		require.ErrorAs(t, f, &he)
		names = append(names, he.Handler)
	}
	assert.Equal(t, []string{"mediator_test.failFirst", "mediator_test.failSecond"}, names[:2])
	// Closures of one literal share a name unless the compiler inlined
	// them apart; either way the four names differ.
	assert.Contains(t, names[2], "failWith")
	seen := map[string]bool{}
	for _, n := range names {
		assert.False(t, seen[n], "name %q given twice", n)
		seen[n] = true
	}
}

type noop struct{}

func (noop) Handle(context.Context, struct{ K int }) ([]events.Event, error) { return nil, nil }

type counting struct{ n int }

func (c *counting) Handle(context.Context, struct{ K int }) ([]events.Event, error) {
	c.n++
	return nil, nil
}

// Equal non-pointer handler values are distinct handlers; the same pointer
// twice is a duplicate.
func TestDuplicateMeansTheSamePointerNotAnEqualValue(t *testing.T) {
	t.Parallel()
	type ev = struct{ K int }
	_, err := bootstrap.Bootstrap(nil, emitter(), bootstrap.WithDomainEvents(func(m *events.Map) {
		for range 4 {
			events.BindHandler[ev](m, noop{})
		}
	}))
	require.NoError(t, err)

	c := &counting{}
	_, err = bootstrap.Bootstrap(nil, emitter(), bootstrap.WithDomainEvents(func(m *events.Map) {
		events.BindHandler[ev](m, c)
		events.BindHandler[ev](m, c)
	}))
	require.ErrorIs(t, err, events.ErrDuplicateBinding)
}

type missingDep struct{}

func newNeedsDep(*missingDep) events.Handler[struct{ M int }] { return nil }

// The missing-dependency error names the user's constructor and where it
// is, not the reflect wrapper it is invoked through.
func TestMissingDependencyNamesTheConstructor(t *testing.T) {
	t.Parallel()
	_, err := bootstrap.Bootstrap(dig.New(), bootstrap.WithDomainEvents(func(m *events.Map) {
		events.Bind[struct{ M int }](m, newNeedsDep)
	}))
	require.Error(t, err)
	assert.NotContains(t, err.Error(), "makeFuncStub")
	assert.Contains(t, err.Error(), "constructor github.com/gocqrs/cqrs/mediator_test.newNeedsDep (")
	assert.Contains(t, err.Error(), "bindings_test.go:")
	assert.Contains(t, err.Error(), "missing type: *mediator_test.missingDep")
}

// A typed-nil Publisher is an invalid Config, not only an invalid option.
func TestConfigRejectsATypedNilPublisher(t *testing.T) {
	t.Parallel()
	cfg := mediator.DefaultConfig()
	var p *events.MemoryPublisher
	cfg.Publisher = p
	require.ErrorIs(t, cfg.Validate(), mediator.ErrInvalidConfig)
}

// Sending T when the handler is bound for *T (or the reverse) says so.
func TestSendOfTheOtherPointernessNamesTheBoundType(t *testing.T) {
	t.Parallel()
	type place struct{ requests.Returns[int] }
	m := build(t, onRequest(func(context.Context, *place) (int, []events.Event, error) { return 1, nil, nil }))
	_, err := mediator.Send(t.Context(), m, place{})
	require.ErrorIs(t, err, mediator.ErrHandlerNotFound)
	assert.Contains(t, err.Error(), "a handler is bound for *mediator_test.place")

	m = build(t, onRequest(func(context.Context, place) (int, []events.Event, error) { return 1, nil, nil }))
	_, err = mediator.Send(t.Context(), m, &place{})
	require.ErrorIs(t, err, mediator.ErrHandlerNotFound)
	assert.Contains(t, err.Error(), "a handler is bound for mediator_test.place")
}

// panicAfter is global middleware that panics after its next returned.
type panicAfter struct{}

func (panicAfter) WrapRequest(_ requests.Info, next requests.AnyHandlerFunc) requests.AnyHandlerFunc {
	return func(ctx context.Context, req any) (any, error) {
		_, _ = next(ctx, req)
		panic("middleware broke")
	}
}

// A panic raised by global middleware after next is attributed to the
// middleware; one raised by the handler, to the handler.
func TestPanicIsAttributedToTheStageThatRaisedIt(t *testing.T) {
	t.Parallel()
	type ok struct{ requests.Returns[int] }
	type boom struct{ requests.Returns[int] }
	m := build(t, bootstrap.WithMiddleware(panicAfter{}),
		onRequest(func(context.Context, ok) (int, []events.Event, error) { return 1, nil, nil }))
	_, err := mediator.Send(t.Context(), m, ok{})
	var pe *mediator.PanicError
	require.ErrorAs(t, err, &pe)
	assert.Equal(t, "middleware broke", pe.Value)
	assert.Contains(t, err.Error(), "middleware mediator_test.panicAfter")

	m = build(t, bootstrap.WithMiddleware(mwPassThrough{}),
		onRequest(func(context.Context, boom) (int, []events.Event, error) { panic("handler broke") }))
	_, err = mediator.Send(t.Context(), m, boom{})
	require.ErrorAs(t, err, &pe)
	assert.Equal(t, "handler broke", pe.Value)
	assert.Contains(t, err.Error(), ": handler ")
	assert.NotContains(t, err.Error(), "middleware")
}

type mwPassThrough struct{}

func (mwPassThrough) WrapRequest(_ requests.Info, next requests.AnyHandlerFunc) requests.AnyHandlerFunc {
	return next
}
