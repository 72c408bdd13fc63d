package bootstrap_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/dig"

	"github.com/gocqrs/cqrs/bootstrap"
	"github.com/gocqrs/cqrs/di"
	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/internal/registry"
	"github.com/gocqrs/cqrs/mediator"
	"github.com/gocqrs/cqrs/requests"
)

// --- fixtures ---------------------------------------------------------------

// ping is a query answered by a number; its handler emits the events it
// carries.
type ping struct {
	requests.Returns[int]
	Emit []events.Event
}

type pingHandler struct{}

func (pingHandler) Handle(_ context.Context, p ping) (int, []events.Event, error) {
	return len(p.Emit), p.Emit, nil
}

// tick is an event; chain is an event whose handler emits the next link.
type (
	tick  struct{ N int }
	chain struct{ N int }
	tock  struct{ N int }
)

// unprovidedRepo and unprovidedClock are never provided to any container.
type (
	unprovidedRepo  struct{}
	unprovidedClock struct{}
)

type journal struct {
	mu      sync.Mutex
	entries []string
}

func (l *journal) add(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.entries = append(l.entries, s)
}

func (l *journal) list() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.entries...)
}

func pingCommands(r *requests.Map) { requests.BindHandler[ping](r, pingHandler{}) }

func onTick(f func(ctx context.Context, e tick) ([]events.Event, error)) func(*events.Map) {
	return func(m *events.Map) { events.BindHandler(m, events.HandlerFunc[tick](f)) }
}

// leaves flattens a tree of joined errors (and errors wrapping a join) into
// its leaves.
func leaves(err error) []error {
	if err == nil {
		return nil
	}
	if u, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range u.Unwrap() {
			out = append(out, leaves(e)...)
		}
		return out
	}
	for next := errors.Unwrap(err); next != nil; next = errors.Unwrap(next) {
		if _, ok := next.(interface{ Unwrap() []error }); ok {
			return leaves(next)
		}
	}
	return []error{err}
}

func countMatching(errs []error, target error) int {
	n := 0
	for _, e := range errs {
		if errors.Is(e, target) {
			n++
		}
	}
	return n
}

// --- option validation ------------------------------------------------------

func TestEveryInvalidOptionIsReportedAtOnce(t *testing.T) {
	t.Parallel()

	m, err := bootstrap.Bootstrap(nil,
		bootstrap.WithMaxConcurrentEventHandlers(0),
		bootstrap.WithMaxEventDepth(0),
		bootstrap.WithMediatorWideLimit(-1),
		bootstrap.WithCommands(nil),
		nil,
	)

	require.Error(t, err)
	assert.Nil(t, m)
	assert.ErrorIs(t, err, mediator.ErrInvalidConfig)
	assert.ErrorIs(t, err, bootstrap.ErrInvalidOption)
	all := leaves(err)
	assert.Len(t, all, 5, "one error per problem: %v", err)
	assert.Equal(t, 3, countMatching(all, mediator.ErrInvalidConfig), "config errors: %v", err)
	assert.Equal(t, 5, countMatching(all, bootstrap.ErrInvalidOption), "every problem is an option error: %v", err)
	// Each diagnostic names its setting.
	for _, name := range []string{"MaxConcurrentEventHandlers", "MaxEventDepth", "MediatorWideLimit", "WithCommands", "option 4"} {
		assert.Contains(t, err.Error(), name)
	}
}

func TestEachInvalidOptionIsReported(t *testing.T) {
	t.Parallel()
	cases := map[string]struct {
		opt    bootstrap.Option
		target error
	}{
		"nil option":                 {nil, bootstrap.ErrInvalidOption},
		"WithCommands(nil)":          {bootstrap.WithCommands(nil), bootstrap.ErrInvalidOption},
		"WithQueries(nil)":           {bootstrap.WithQueries(nil), bootstrap.ErrInvalidOption},
		"WithDomainEvents(nil)":      {bootstrap.WithDomainEvents(nil), bootstrap.ErrInvalidOption},
		"WithPublisher(nil)":         {bootstrap.WithPublisher(nil), bootstrap.ErrInvalidOption},
		"WithLogger(nil)":            {bootstrap.WithLogger(nil), bootstrap.ErrInvalidOption},
		"WithOnStartup(nil)":         {bootstrap.WithOnStartup(nil), bootstrap.ErrInvalidOption},
		"MaxConcurrentEventHandlers": {bootstrap.WithMaxConcurrentEventHandlers(-3), mediator.ErrInvalidConfig},
		"MaxEventDepth":              {bootstrap.WithMaxEventDepth(-1), mediator.ErrInvalidConfig},
		"MediatorWideLimit":          {bootstrap.WithMediatorWideLimit(-5), mediator.ErrInvalidConfig},
		"unknown EventHandlerOrder":  {bootstrap.WithEventHandlerOrder(mediator.HandlerOrder(9)), mediator.ErrInvalidConfig},
		"zero Config":                {bootstrap.WithConfig(mediator.Config{}), mediator.ErrInvalidConfig},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, err := bootstrap.Bootstrap(nil, tc.opt)
			require.ErrorIs(t, err, tc.target)

			_, err = bootstrap.Events(nil, tc.opt)
			require.ErrorIs(t, err, tc.target, "Events validates options like Bootstrap")
		})
	}
}

func TestWithPublisherRejectsTypedNil(t *testing.T) {
	t.Parallel()
	_, err := bootstrap.Bootstrap(nil, bootstrap.WithPublisher((*events.MemoryPublisher)(nil)))

	require.ErrorIs(t, err, bootstrap.ErrInvalidOption)
}

func TestLaterOptionOverridesEarlier(t *testing.T) {
	t.Parallel()

	_, err := bootstrap.Bootstrap(nil,
		bootstrap.WithMaxEventDepth(0),
		bootstrap.WithMaxEventDepth(4),
		bootstrap.WithConfig(mediator.Config{}), // replaces everything...
		bootstrap.WithMaxConcurrentEventHandlers(2),
		bootstrap.WithMaxEventDepth(3), // ...and later options apply on top
	)

	require.NoError(t, err)
}

func TestOptionAndBindingErrorsAreReportedTogether(t *testing.T) {
	t.Parallel()

	_, err := bootstrap.Bootstrap(nil,
		bootstrap.WithMaxEventDepth(0),
		bootstrap.WithQueries(nil),
		bootstrap.WithCommands(func(r *requests.Map) {
			requests.BindHandler[ping](r, pingHandler{})
			requests.BindHandler[ping](r, pingHandler{}) // duplicate
		}),
		bootstrap.WithDomainEvents(func(m *events.Map) {
			events.Bind[tick](m, "not a constructor")
		}),
	)

	require.Error(t, err)
	assert.ErrorIs(t, err, mediator.ErrInvalidConfig)
	assert.ErrorIs(t, err, bootstrap.ErrInvalidOption)
	assert.ErrorIs(t, err, registry.ErrDuplicate)
	assert.ErrorIs(t, err, di.ErrInvalidConstructor)
	assert.Len(t, leaves(err), 4, "%v", err)
}

// --- dependencies -----------------------------------------------------------

func TestMissingDependencyFailsAtBootstrap(t *testing.T) {
	t.Parallel()
	var built atomic.Int32

	m, err := bootstrap.Bootstrap(dig.New(),
		bootstrap.WithCommands(func(r *requests.Map) {
			requests.Bind[ping](r, func(*unprovidedRepo) pingHandler {
				built.Add(1)
				return pingHandler{}
			})
		}),
	)

	require.Error(t, err, "a missing dependency must fail bootstrap, not the first request")
	assert.Nil(t, m)
	assert.Zero(t, built.Load())
	var de dig.Error
	assert.True(t, errors.As(err, &de), "dig's error is kept: %v", err)
	assert.Contains(t, err.Error(), "unprovidedRepo", "the error names the missing type")
	assert.Contains(t, err.Error(), "ping", "the error names the request type")
}

func TestEveryMissingDependencyIsReportedAtOnce(t *testing.T) {
	t.Parallel()

	_, err := bootstrap.Bootstrap(dig.New(),
		bootstrap.WithCommands(func(r *requests.Map) {
			requests.Bind[ping](r, func(*unprovidedRepo) pingHandler { return pingHandler{} })
		}),
		bootstrap.WithDomainEvents(func(m *events.Map) {
			events.Bind[tick](m, func(*unprovidedClock) events.HandlerFunc[tick] {
				return func(context.Context, tick) ([]events.Event, error) { return nil, nil }
			})
		}),
	)

	require.Error(t, err)
	assert.Contains(t, err.Error(), "unprovidedRepo")
	assert.Contains(t, err.Error(), "unprovidedClock")
}

func TestEventsMissingDependencyFailsAtBootstrap(t *testing.T) {
	t.Parallel()

	em, err := bootstrap.Events(dig.New(),
		bootstrap.WithDomainEvents(func(m *events.Map) {
			events.Bind[tick](m, func(*unprovidedClock) events.HandlerFunc[tick] { return nil })
		}),
	)

	require.Error(t, err)
	assert.Nil(t, em)
	assert.Contains(t, err.Error(), "unprovidedClock")
}

func TestNilContainerWithConstructorIsReported(t *testing.T) {
	t.Parallel()

	_, err := bootstrap.Bootstrap(nil,
		bootstrap.WithCommands(func(r *requests.Map) {
			requests.Bind[ping](r, func() pingHandler { return pingHandler{} })
		}),
	)

	require.ErrorIs(t, err, di.ErrMissingDependency)
}

func TestDependenciesComeFromTheContainer(t *testing.T) {
	t.Parallel()
	type multiplier struct{ by int }
	c := dig.New()
	require.NoError(t, c.Provide(func() *multiplier { return &multiplier{by: 7} }))

	m, err := bootstrap.Bootstrap(c,
		bootstrap.WithQueries(func(r *requests.Map) {
			requests.Bind[ping](r, func(mul *multiplier) requests.HandlerFunc[ping, int] {
				return func(_ context.Context, p ping) (int, []events.Event, error) { return mul.by * len(p.Emit), nil, nil }
			})
		}),
	)
	require.NoError(t, err)

	got, err := mediator.Send(t.Context(), m, ping{Emit: []events.Event{tock{}, tock{}}})

	require.NoError(t, err)
	assert.Equal(t, 14, got)
}

func TestDIValuesContainer(t *testing.T) {
	t.Parallel()
	var vals di.Values
	di.Provide(&vals, 5)

	m, err := bootstrap.Bootstrap(&vals,
		bootstrap.WithQueries(func(r *requests.Map) {
			requests.Bind[ping](r, func(n int) requests.HandlerFunc[ping, int] {
				return func(context.Context, ping) (int, []events.Event, error) { return n, nil, nil }
			})
		}),
	)
	require.NoError(t, err)

	got, err := mediator.Send(t.Context(), m, ping{})

	require.NoError(t, err)
	assert.Equal(t, 5, got)
}

// --- start-up hooks ---------------------------------------------------------

func TestOnStartupHooksRunOnceInOrderBeforeHandlersAreBuilt(t *testing.T) {
	t.Parallel()
	l := &journal{}
	c := dig.New()
	require.NoError(t, c.Provide(func() *journal { return l }))

	m, err := bootstrap.Bootstrap(c,
		bootstrap.WithOnStartup(func() error { l.add("hook 1"); return nil }),
		bootstrap.WithCommands(func(r *requests.Map) {
			requests.Bind[ping](r, func(l *journal) pingHandler { l.add("request handler"); return pingHandler{} })
		}),
		bootstrap.WithDomainEvents(func(m *events.Map) {
			events.Bind[tick](m, func(l *journal) events.HandlerFunc[tick] {
				l.add("event handler")
				return func(context.Context, tick) ([]events.Event, error) { return nil, nil }
			})
		}),
		bootstrap.WithOnStartup(func() error { l.add("hook 2"); return nil }),
		bootstrap.WithOnStartup(func() error { l.add("hook 3"); return nil }),
	)
	require.NoError(t, err)
	for range 3 {
		_, err = mediator.Send(t.Context(), m, ping{Emit: []events.Event{tick{}}})
		require.NoError(t, err)
	}

	assert.Equal(t, []string{"hook 1", "hook 2", "hook 3", "request handler", "event handler"}, l.list())
}

func TestOnStartupErrorStopsBootstrap(t *testing.T) {
	t.Parallel()
	errNoDB := errors.New("database unreachable")
	var ran []int
	built := false

	m, err := bootstrap.Bootstrap(dig.New(),
		bootstrap.WithOnStartup(func() error { ran = append(ran, 1); return nil }),
		bootstrap.WithOnStartup(func() error { ran = append(ran, 2); return errNoDB }),
		bootstrap.WithOnStartup(func() error { ran = append(ran, 3); return nil }),
		bootstrap.WithCommands(func(r *requests.Map) {
			requests.Bind[ping](r, func() pingHandler { built = true; return pingHandler{} })
		}),
	)

	require.ErrorIs(t, err, errNoDB)
	assert.Nil(t, m)
	assert.Equal(t, []int{1, 2}, ran, "hooks after the failing one do not run")
	assert.False(t, built, "no handler is built after a hook fails")
}

func TestOnStartupErrorStopsEvents(t *testing.T) {
	t.Parallel()
	errNoBroker := errors.New("broker unreachable")

	em, err := bootstrap.Events(nil, bootstrap.WithOnStartup(func() error { return errNoBroker }))

	require.ErrorIs(t, err, errNoBroker)
	assert.Nil(t, em)
}

func TestOnStartupHooksDoNotRunWhenOptionsAreInvalid(t *testing.T) {
	t.Parallel()
	cases := map[string]bootstrap.Option{
		"invalid config":  bootstrap.WithMaxEventDepth(0),
		"nil option":      nil,
		"invalid binding": bootstrap.WithCommands(func(r *requests.Map) { requests.Bind[ping](r, 1) }),
	}
	for name, bad := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var ran atomic.Int32
			hook := bootstrap.WithOnStartup(func() error { ran.Add(1); return nil })

			_, err := bootstrap.Bootstrap(nil, hook, bad)
			require.Error(t, err)
			_, err = bootstrap.Events(nil, hook, bad)
			require.Error(t, err)

			assert.Zero(t, ran.Load())
		})
	}
}

// --- defaults ---------------------------------------------------------------

func TestDefaultConfigValues(t *testing.T) {
	t.Parallel()
	cfg := mediator.DefaultConfig()

	assert.Equal(t, 1, cfg.MaxConcurrentEventHandlers)
	assert.True(t, cfg.ConcurrentEventHandleEnable)
	assert.Equal(t, mediator.Serial, cfg.EventHandlerOrder)
	assert.Equal(t, 16, cfg.MaxEventDepth)
	assert.False(t, cfg.FailFast)
	assert.Zero(t, cfg.MediatorWideLimit)
	assert.NoError(t, cfg.Validate())
}

func TestDefaultsDispatchOneHandlerAtATimeBreadthFirst(t *testing.T) {
	t.Parallel()
	l := &journal{}
	var inFlight, overlaps atomic.Int32
	enter := func(name string) func() {
		if inFlight.Add(1) > 1 {
			overlaps.Add(1)
		}
		l.add(name)
		// Give any concurrently running handler the chance to show up.
		for range 50 {
			runtime.Gosched()
		}
		return func() { inFlight.Add(-1) }
	}
	m, err := bootstrap.Bootstrap(nil,
		bootstrap.WithCommands(pingCommands),
		bootstrap.WithDomainEvents(onTick(func(_ context.Context, e tick) ([]events.Event, error) {
			defer enter("tick")()
			if e.N < 3 {
				return []events.Event{tock{N: e.N}}, nil
			}
			return nil, nil
		})),
		bootstrap.WithDomainEvents(func(m *events.Map) {
			events.BindHandler(m, events.HandlerFunc[tock](func(context.Context, tock) ([]events.Event, error) {
				defer enter("tock")()
				return nil, nil
			}))
		}),
	)
	require.NoError(t, err)

	_, err = mediator.Send(t.Context(), m, ping{Emit: []events.Event{tick{1}, tick{2}, tick{3}, tick{4}}})

	require.NoError(t, err)
	assert.Zero(t, overlaps.Load(), "by default at most one event handler runs at a time")
	// Breadth first: every event of a level before the follow-ups.
	assert.Equal(t, []string{"tick", "tick", "tick", "tick", "tock", "tock"}, l.list())
}

func TestDefaultsEnableConcurrencyWhenLimitIsRaised(t *testing.T) {
	t.Parallel()
	// Each handler waits until the other one has started: this completes
	// only if both run at once. The deadline turns a hang into a failure.
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	started := map[int]chan struct{}{1: make(chan struct{}), 2: make(chan struct{})}
	m, err := bootstrap.Bootstrap(nil,
		bootstrap.WithCommands(pingCommands),
		bootstrap.WithDomainEvents(onTick(func(ctx context.Context, e tick) ([]events.Event, error) {
			close(started[e.N])
			select {
			case <-started[3-e.N]:
				return nil, nil
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		})),
		bootstrap.WithMaxConcurrentEventHandlers(2), // nothing else: concurrency is enabled by default
	)
	require.NoError(t, err)

	_, err = mediator.Send(ctx, m, ping{Emit: []events.Event{tick{1}, tick{2}}})

	require.NoError(t, err)
}

func TestDefaultsRunHandlersOfOneEventInBindOrder(t *testing.T) {
	t.Parallel()
	l := &journal{}
	var inFlight, overlaps atomic.Int32
	handler := func(name string) events.HandlerFunc[tick] {
		return func(context.Context, tick) ([]events.Event, error) {
			if inFlight.Add(1) > 1 {
				overlaps.Add(1)
			}
			defer inFlight.Add(-1)
			l.add(name)
			for range 50 {
				runtime.Gosched()
			}
			return nil, nil
		}
	}
	m, err := bootstrap.Bootstrap(nil,
		bootstrap.WithCommands(pingCommands),
		bootstrap.WithDomainEvents(func(m *events.Map) {
			events.BindHandler(m, handler("a"))
			events.BindHandler(m, handler("b"))
			events.BindHandler(m, handler("c"))
			events.BindHandler(m, handler("d"))
		}),
		// Parallel events, but the default handler order is Serial.
		bootstrap.WithMaxConcurrentEventHandlers(4),
	)
	require.NoError(t, err)

	_, err = mediator.Send(t.Context(), m, ping{Emit: []events.Event{tick{}}})

	require.NoError(t, err)
	assert.Equal(t, []string{"a", "b", "c", "d"}, l.list())
	assert.Zero(t, overlaps.Load())
}

func TestDefaultMaxEventDepthIs16(t *testing.T) {
	t.Parallel()
	var handled atomic.Int32
	m, err := bootstrap.Bootstrap(nil,
		bootstrap.WithCommands(pingCommands),
		bootstrap.WithDomainEvents(func(m *events.Map) {
			events.BindHandler(m, events.HandlerFunc[chain](func(_ context.Context, c chain) ([]events.Event, error) {
				handled.Add(1)
				return []events.Event{chain{N: c.N + 1}}, nil
			}))
		}),
	)
	require.NoError(t, err)

	_, err = mediator.Send(t.Context(), m, ping{Emit: []events.Event{chain{N: 1}}})

	require.ErrorIs(t, err, mediator.ErrMaxDepth)
	var depthErr *mediator.DepthError
	require.ErrorAs(t, err, &depthErr)
	assert.Equal(t, 16, depthErr.Max)
	assert.Equal(t, 17, depthErr.Depth)
	assert.Equal(t, chain{N: 17}, depthErr.Event)
	assert.EqualValues(t, 16, handled.Load())
}

func TestDefaultsReportEveryFailureWithoutStopping(t *testing.T) {
	t.Parallel()
	errFirst := errors.New("first handler failed")
	secondRan := false
	m, err := bootstrap.Bootstrap(nil,
		bootstrap.WithCommands(pingCommands),
		bootstrap.WithDomainEvents(func(m *events.Map) {
			events.BindHandler(m, events.HandlerFunc[tick](func(context.Context, tick) ([]events.Event, error) {
				return nil, errFirst
			}))
			events.BindHandler(m, events.HandlerFunc[tick](func(context.Context, tick) ([]events.Event, error) {
				secondRan = true
				return nil, nil
			}))
		}),
	)
	require.NoError(t, err)

	res, err := mediator.Send(t.Context(), m, ping{Emit: []events.Event{tick{}}})

	require.ErrorIs(t, err, errFirst)
	assert.Equal(t, 1, res, "the response is returned with the dispatch error")
	assert.True(t, secondRan, "fail-fast is off by default")
	var de *mediator.DispatchError
	require.ErrorAs(t, err, &de)
	assert.Len(t, de.Failures, 1)
	assert.Zero(t, de.NotStarted)
}

func TestWithFailFastStopsAtFirstFailure(t *testing.T) {
	t.Parallel()
	errFirst := errors.New("first handler failed")
	secondRan := false
	m, err := bootstrap.Bootstrap(nil,
		bootstrap.WithCommands(pingCommands),
		bootstrap.WithDomainEvents(func(m *events.Map) {
			events.BindHandler(m, events.HandlerFunc[tick](func(context.Context, tick) ([]events.Event, error) {
				return nil, errFirst
			}))
			events.BindHandler(m, events.HandlerFunc[tick](func(context.Context, tick) ([]events.Event, error) {
				secondRan = true
				return nil, nil
			}))
		}),
		bootstrap.WithFailFast(),
	)
	require.NoError(t, err)

	_, err = mediator.Send(t.Context(), m, ping{Emit: []events.Event{tick{}}})

	require.ErrorIs(t, err, errFirst)
	assert.False(t, secondRan)
	var de *mediator.DispatchError
	require.ErrorAs(t, err, &de)
	assert.Equal(t, 1, de.NotStarted)
}

func TestWithMaxEventDepth(t *testing.T) {
	t.Parallel()
	var handled atomic.Int32
	m, err := bootstrap.Bootstrap(nil,
		bootstrap.WithCommands(pingCommands),
		bootstrap.WithDomainEvents(func(m *events.Map) {
			events.BindHandler(m, events.HandlerFunc[chain](func(_ context.Context, c chain) ([]events.Event, error) {
				handled.Add(1)
				return []events.Event{chain{N: c.N + 1}}, nil
			}))
		}),
		bootstrap.WithMaxEventDepth(3),
	)
	require.NoError(t, err)

	_, err = mediator.Send(t.Context(), m, ping{Emit: []events.Event{chain{N: 1}}})

	var depthErr *mediator.DepthError
	require.ErrorAs(t, err, &depthErr)
	assert.Equal(t, 3, depthErr.Max)
	assert.EqualValues(t, 3, handled.Load())
}

func TestWithPublisherReceivesNotifications(t *testing.T) {
	t.Parallel()
	pub := &events.MemoryPublisher{}
	note := events.NewNotification("pinged", 1)
	m, err := bootstrap.Bootstrap(nil, bootstrap.WithCommands(pingCommands), bootstrap.WithPublisher(pub))
	require.NoError(t, err)

	_, err = mediator.Send(t.Context(), m, ping{Emit: []events.Event{note}})

	require.NoError(t, err)
	assert.Equal(t, []events.NotificationEvent{note}, pub.Take())
}

func TestWithoutPublisherNotificationFails(t *testing.T) {
	t.Parallel()
	m, err := bootstrap.Bootstrap(nil, bootstrap.WithCommands(pingCommands))
	require.NoError(t, err)

	_, err = mediator.Send(t.Context(), m, ping{Emit: []events.Event{events.NewNotification("pinged", 1)}})

	require.ErrorIs(t, err, mediator.ErrNoPublisher)
}

func TestWithLoggerReceivesWarnings(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&buf, nil))
	m, err := bootstrap.Bootstrap(nil, bootstrap.WithCommands(pingCommands), bootstrap.WithLogger(logger))
	require.NoError(t, err)

	_, err = mediator.Send(t.Context(), m, ping{Emit: []events.Event{tock{}}})

	require.NoError(t, err, "an event nobody listens to is not an error")
	assert.Contains(t, buf.String(), "level=WARN")
	assert.Contains(t, buf.String(), "bootstrap_test.tock", "the warning names the event type")
}

// --- Events -----------------------------------------------------------------

func TestEventsRejectsCommandAndQueryMappers(t *testing.T) {
	t.Parallel()
	for name, opt := range map[string]func(func(*requests.Map)) bootstrap.Option{
		"WithCommands": bootstrap.WithCommands,
		"WithQueries":  bootstrap.WithQueries,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			mapped := false

			em, err := bootstrap.Events(nil, opt(func(*requests.Map) { mapped = true }))

			require.ErrorIs(t, err, bootstrap.ErrInvalidOption)
			assert.Nil(t, em)
			assert.False(t, mapped, "the mapper is not called")
		})
	}
}

func TestEventsDispatchesToHandlers(t *testing.T) {
	t.Parallel()
	l := &journal{}
	pub := &events.MemoryPublisher{}
	em, err := bootstrap.Events(nil,
		bootstrap.WithDomainEvents(onTick(func(_ context.Context, e tick) ([]events.Event, error) {
			l.add("tick")
			return []events.Event{events.NewNotification("ticked", e.N)}, nil
		})),
		bootstrap.WithPublisher(pub),
	)
	require.NoError(t, err)

	require.NoError(t, em.Send(t.Context(), tick{N: 9}))

	assert.Equal(t, []string{"tick"}, l.list())
	published := pub.Take()
	require.Len(t, published, 1)
	assert.Equal(t, 9, published[0].EventPayload())
}

// --- construction count -----------------------------------------------------

func TestHandlersAreConstructedOncePerBootstrap(t *testing.T) {
	t.Parallel()
	var reqBuilt, evBuilt, evHandled atomic.Int32
	c := dig.New()
	opts := []bootstrap.Option{
		bootstrap.WithCommands(func(r *requests.Map) {
			requests.Bind[ping](r, func() pingHandler { reqBuilt.Add(1); return pingHandler{} })
		}),
		bootstrap.WithDomainEvents(func(m *events.Map) {
			events.Bind[tick](m, func() events.HandlerFunc[tick] {
				evBuilt.Add(1)
				return func(context.Context, tick) ([]events.Event, error) { evHandled.Add(1); return nil, nil }
			})
		}),
		bootstrap.WithMaxConcurrentEventHandlers(4),
	}
	m, err := bootstrap.Bootstrap(c, opts...)
	require.NoError(t, err)
	require.EqualValues(t, 1, reqBuilt.Load())
	require.EqualValues(t, 1, evBuilt.Load())

	const senders, each = 8, 25
	var wg sync.WaitGroup
	for range senders {
		wg.Go(func() {
			for range each {
				_, err := mediator.Send(t.Context(), m, ping{Emit: []events.Event{tick{}, tick{}}})
				assert.NoError(t, err)
			}
		})
	}
	wg.Wait()
	require.NoError(t, m.Events().Send(t.Context(), tick{}))

	assert.EqualValues(t, 1, reqBuilt.Load(), "the request handler is built once")
	assert.EqualValues(t, 1, evBuilt.Load(), "the event handler is built once")
	assert.EqualValues(t, senders*each*2+1, evHandled.Load())

	_, err = bootstrap.Bootstrap(c, opts...)
	require.NoError(t, err)
	assert.EqualValues(t, 2, reqBuilt.Load(), "each bootstrap builds its own handlers")
	assert.EqualValues(t, 2, evBuilt.Load())
}
