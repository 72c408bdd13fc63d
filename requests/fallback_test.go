package requests_test

import (
	"context"
	"errors"
	"fmt"
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

// fbQuote asks for a price; a primary handler answers it, backed by a
// fallback.
type fbQuote struct {
	requests.Returns[string]
	Key string
}

// fbPriced is emitted by whichever handler answered, naming it.
type fbPriced struct{ By string }

var (
	errFbUnavailable = errors.New("pricing service unavailable")
	errFbInvalid     = errors.New("invalid key")
	errFbOpen        = errors.New("fake breaker open")
)

// fbStatusError is an error with a status code, for FallbackPolicy.If.
type fbStatusError struct{ Code int }

func (e *fbStatusError) Error() string { return fmt.Sprintf("status %d", e.Code) }

// fbPrimary answers "live <key>", or fails with err, or panics with panicV.
// It emits fbPriced{"primary"} even when it fails.
type fbPrimary struct {
	err    error
	panicV any
	calls  atomic.Int64
}

func (p *fbPrimary) Handle(_ context.Context, q fbQuote) (string, []events.Event, error) {
	p.calls.Add(1)
	if p.panicV != nil {
		panic(p.panicV)
	}
	evs := []events.Event{fbPriced{By: "primary"}}
	if p.err != nil {
		return "", evs, p.err
	}
	return "live " + q.Key, evs, nil
}

// fbFallback answers "cached <key>" and emits fbPriced{"fallback"}.
type fbFallback struct{ calls atomic.Int64 }

func (f *fbFallback) Handle(_ context.Context, q fbQuote) (string, []events.Event, error) {
	f.calls.Add(1)
	return "cached " + q.Key, []events.Event{fbPriced{By: "fallback"}}, nil
}

// fbBreaker is a fake circuit breaker that the test opens and closes.
type fbBreaker struct {
	open  atomic.Bool
	mu    sync.Mutex
	names []string
}

func (b *fbBreaker) Call(ctx context.Context, name string, fn func(context.Context) error) error {
	b.mu.Lock()
	b.names = append(b.names, name)
	b.mu.Unlock()
	if b.open.Load() {
		return fmt.Errorf("%s: %w", name, errFbOpen)
	}
	return fn(ctx)
}

func (b *fbBreaker) IsOpen(err error) bool { return errors.Is(err, errFbOpen) }

func (b *fbBreaker) calls() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.names...)
}

// fbPricedBy records who emitted the fbPriced events dispatched.
type fbPricedBy struct {
	mu sync.Mutex
	by []string
}

func (r *fbPricedBy) Handle(_ context.Context, e fbPriced) ([]events.Event, error) {
	r.mu.Lock()
	r.by = append(r.by, e.By)
	r.mu.Unlock()
	return nil, nil
}

func (r *fbPricedBy) got() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.by...)
}

// fbSetup binds primary and fallback to fbQuote with policy, and records
// the fbPriced events dispatched.
func fbSetup(t *testing.T, primary *fbPrimary, fallback *fbFallback, policy requests.FallbackPolicy) (*mediator.RequestMediator, *fbPricedBy) {
	t.Helper()
	rec := &fbPricedBy{}
	m, err := bootstrap.Bootstrap(nil,
		bootstrap.WithQueries(func(r *requests.Map) {
			requests.BindFallbackHandlers[fbQuote](r, primary, fallback, policy)
		}),
		bootstrap.WithDomainEvents(func(e *events.Map) { events.BindHandler[fbPriced](e, rec) }),
	)
	require.NoError(t, err)
	return m, rec
}

func TestFallbackOnMatchingError(t *testing.T) {
	t.Parallel()
	primary := &fbPrimary{err: fmt.Errorf("GET /price: %w", errFbUnavailable)}
	fallback := &fbFallback{}
	m, rec := fbSetup(t, primary, fallback, requests.FallbackPolicy{On: []error{errFbInvalid, errFbUnavailable}})

	res, err := mediator.Send(t.Context(), m, fbQuote{Key: "book"})
	require.NoError(t, err)
	assert.Equal(t, "cached book", res)
	assert.Equal(t, int64(1), primary.calls.Load())
	assert.Equal(t, int64(1), fallback.calls.Load())
	assert.Equal(t, []string{"fallback"}, rec.got())
}

func TestFallbackNotOnNonMatchingError(t *testing.T) {
	t.Parallel()
	primary := &fbPrimary{err: errFbInvalid}
	fallback := &fbFallback{}
	m, rec := fbSetup(t, primary, fallback, requests.FallbackPolicy{On: []error{errFbUnavailable}})

	res, err := mediator.Send(t.Context(), m, fbQuote{Key: "book"})
	require.ErrorIs(t, err, errFbInvalid)
	assert.Empty(t, res)
	assert.Zero(t, fallback.calls.Load())
	assert.Empty(t, rec.got(), "a failed primary's events are not dispatched")
}

func TestFallbackOnAnyErrorWithEmptyPolicy(t *testing.T) {
	t.Parallel()
	for _, err := range []error{errFbInvalid, errFbUnavailable, &fbStatusError{Code: 400}} {
		t.Run(err.Error(), func(t *testing.T) {
			t.Parallel()
			fallback := &fbFallback{}
			m, rec := fbSetup(t, &fbPrimary{err: err}, fallback, requests.FallbackPolicy{})

			res, err := mediator.Send(t.Context(), m, fbQuote{Key: "book"})
			require.NoError(t, err)
			assert.Equal(t, "cached book", res)
			assert.Equal(t, []string{"fallback"}, rec.got())
		})
	}
}

func TestFallbackIfPredicate(t *testing.T) {
	t.Parallel()
	policy := requests.FallbackPolicy{
		On: []error{errFbUnavailable},
		If: func(err error) bool {
			var se *fbStatusError
			return errors.As(err, &se) && se.Code >= 500
		},
	}
	cases := []struct {
		err      error
		fallback bool
	}{
		{&fbStatusError{Code: 503}, true},
		{fmt.Errorf("wrapped: %w", &fbStatusError{Code: 502}), true},
		{&fbStatusError{Code: 404}, false},
		{errFbUnavailable, true}, // On still applies
		{errFbInvalid, false},
	}
	for _, tc := range cases {
		t.Run(tc.err.Error(), func(t *testing.T) {
			t.Parallel()
			fallback := &fbFallback{}
			m, _ := fbSetup(t, &fbPrimary{err: tc.err}, fallback, policy)

			res, err := mediator.Send(t.Context(), m, fbQuote{Key: "book"})
			if tc.fallback {
				require.NoError(t, err)
				assert.Equal(t, "cached book", res)
				assert.Equal(t, int64(1), fallback.calls.Load())
				return
			}
			require.ErrorIs(t, err, tc.err)
			assert.Zero(t, fallback.calls.Load())
		})
	}
}

func TestFallbackOnPrimaryPanic(t *testing.T) {
	t.Parallel()
	t.Run("empty policy", func(t *testing.T) {
		t.Parallel()
		fallback := &fbFallback{}
		m, rec := fbSetup(t, &fbPrimary{panicV: "pricing bug"}, fallback, requests.FallbackPolicy{})

		var (
			res string
			err error
		)
		require.NotPanics(t, func() { res, err = mediator.Send(t.Context(), m, fbQuote{Key: "book"}) })
		require.NoError(t, err)
		assert.Equal(t, "cached book", res)
		assert.Equal(t, []string{"fallback"}, rec.got())
	})
	t.Run("panic with a matching error", func(t *testing.T) {
		t.Parallel()
		fallback := &fbFallback{}
		m, _ := fbSetup(t, &fbPrimary{panicV: errFbUnavailable}, fallback, requests.FallbackPolicy{On: []error{errFbUnavailable}})

		res, err := mediator.Send(t.Context(), m, fbQuote{Key: "book"})
		require.NoError(t, err)
		assert.Equal(t, "cached book", res)
	})
	t.Run("policy not triggered", func(t *testing.T) {
		t.Parallel()
		fallback := &fbFallback{}
		m, _ := fbSetup(t, &fbPrimary{panicV: "pricing bug"}, fallback, requests.FallbackPolicy{On: []error{errFbUnavailable}})

		_, err := mediator.Send(t.Context(), m, fbQuote{Key: "book"})
		var pe *mediator.PanicError
		require.ErrorAs(t, err, &pe, "the panic is reported as a *PanicError")
		assert.Equal(t, "pricing bug", pe.Value)
		assert.Zero(t, fallback.calls.Load())
	})
}

func TestFallbackEventsReplacePrimaryEvents(t *testing.T) {
	t.Parallel()
	// The primary fails but returns an event: it is never dispatched; the
	// fallback's is.
	primary := &fbPrimary{err: errFbUnavailable}
	m, rec := fbSetup(t, primary, &fbFallback{}, requests.FallbackPolicy{})

	_, err := mediator.Send(t.Context(), m, fbQuote{Key: "book"})
	require.NoError(t, err)
	assert.Equal(t, int64(1), primary.calls.Load())
	assert.Equal(t, []string{"fallback"}, rec.got())
}

func TestFallbackNotCalledWhenPrimarySucceeds(t *testing.T) {
	t.Parallel()
	primary := &fbPrimary{}
	fallback := &fbFallback{}
	m, rec := fbSetup(t, primary, fallback, requests.FallbackPolicy{})

	res, err := mediator.Send(t.Context(), m, fbQuote{Key: "book"})
	require.NoError(t, err)
	assert.Equal(t, "live book", res)
	assert.Zero(t, fallback.calls.Load())
	assert.Equal(t, []string{"primary"}, rec.got())
}

func TestFallbackBreakerOpenSkipsPrimary(t *testing.T) {
	t.Parallel()
	primary := &fbPrimary{}
	fallback := &fbFallback{}
	breaker := &fbBreaker{}
	// On does not list the breaker's error: an open breaker triggers the
	// fallback regardless.
	m, rec := fbSetup(t, primary, fallback, requests.FallbackPolicy{On: []error{errFbUnavailable}, Breaker: breaker})

	res, err := mediator.Send(t.Context(), m, fbQuote{Key: "book"})
	require.NoError(t, err)
	assert.Equal(t, "live book", res, "closed: the primary answers, through the breaker")
	assert.Equal(t, int64(1), primary.calls.Load())

	breaker.open.Store(true)
	res, err = mediator.Send(t.Context(), m, fbQuote{Key: "book"})
	require.NoError(t, err)
	assert.Equal(t, "cached book", res)
	assert.Equal(t, int64(1), primary.calls.Load(), "open: the primary is not called")
	assert.Equal(t, int64(1), fallback.calls.Load())

	breaker.open.Store(false)
	res, err = mediator.Send(t.Context(), m, fbQuote{Key: "book"})
	require.NoError(t, err)
	assert.Equal(t, "live book", res)

	// The breaker is asked once per Send, under the primary's name.
	assert.Equal(t, []string{"requests_test.fbQuote *requests_test.fbPrimary", "requests_test.fbQuote *requests_test.fbPrimary", "requests_test.fbQuote *requests_test.fbPrimary"}, breaker.calls())
	assert.Equal(t, []string{"primary", "fallback", "primary"}, rec.got())
}

func TestFallbackBreakerPassesPrimaryErrors(t *testing.T) {
	t.Parallel()
	breaker := &fbBreaker{}
	fallback := &fbFallback{}
	m, _ := fbSetup(t, &fbPrimary{err: errFbInvalid}, fallback, requests.FallbackPolicy{On: []error{errFbUnavailable}, Breaker: breaker})

	_, err := mediator.Send(t.Context(), m, fbQuote{Key: "book"})
	require.ErrorIs(t, err, errFbInvalid, "the primary's error, through the closed breaker")
	assert.Zero(t, fallback.calls.Load())
	assert.Len(t, breaker.calls(), 1)
}

// fbStore is a dependency of the handlers built from the container.
type fbStore struct{ prices map[string]string }

type (
	fbLiveHandler   struct{ s *fbStore }
	fbCachedHandler struct{ s *fbStore }
)

func newFbLiveHandler(s *fbStore) *fbLiveHandler     { return &fbLiveHandler{s} }
func newFbCachedHandler(s *fbStore) *fbCachedHandler { return &fbCachedHandler{s} }

func (h *fbLiveHandler) Handle(_ context.Context, q fbQuote) (string, []events.Event, error) {
	return "", nil, fmt.Errorf("live %s: %w", q.Key, errFbUnavailable)
}

func (h *fbCachedHandler) Handle(_ context.Context, q fbQuote) (string, []events.Event, error) {
	return h.s.prices[q.Key], nil, nil
}

func TestBindFallbackResolvesBothFromContainer(t *testing.T) {
	t.Parallel()
	c := dig.New()
	require.NoError(t, c.Provide(func() *fbStore { return &fbStore{prices: map[string]string{"book": "12"}} }))
	m, err := bootstrap.Bootstrap(c, bootstrap.WithQueries(func(r *requests.Map) {
		requests.BindFallback[fbQuote](r, newFbLiveHandler, newFbCachedHandler, requests.FallbackPolicy{On: []error{errFbUnavailable}})
	}))
	require.NoError(t, err)

	res, err := mediator.Send(t.Context(), m, fbQuote{Key: "book"})
	require.NoError(t, err)
	assert.Equal(t, "12", res)
}

func TestFallbackBindingErrorsAreReportedAtBootstrap(t *testing.T) {
	t.Parallel()
	var nilPrimary *fbPrimary
	cases := []struct {
		name string
		bind func(*requests.Map)
		want string
	}{
		{"nil primary", func(r *requests.Map) {
			requests.BindFallbackHandlers[fbQuote](r, nilPrimary, &fbFallback{}, requests.FallbackPolicy{})
		}, "nil handler"},
		{"nil fallback", func(r *requests.Map) {
			requests.BindFallbackHandlers[fbQuote](r, &fbPrimary{}, nil, requests.FallbackPolicy{})
		}, "nil handler"},
		{"constructor of the wrong shape", func(r *requests.Map) {
			requests.BindFallback[fbQuote](r, newFbLiveHandler, func() int { return 0 }, requests.FallbackPolicy{})
		}, "bind fallback"},
		{"missing dependency", func(r *requests.Map) {
			requests.BindFallback[fbQuote](r, newFbLiveHandler, newFbCachedHandler, requests.FallbackPolicy{})
		}, "fbStore"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m, err := bootstrap.Bootstrap(dig.New(), bootstrap.WithQueries(tc.bind))
			require.Error(t, err)
			assert.Nil(t, m)
			assert.ErrorContains(t, err, "requests_test.fbQuote")
			assert.ErrorContains(t, err, tc.want)
		})
	}
}
