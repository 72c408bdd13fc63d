package events_test

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
)

// fbShipped is handled by a primary handler backed by a fallback.
type fbShipped struct{ Item string }

// fbNotified is the follow-up of whichever handler handled fbShipped.
type fbNotified struct{ By string }

var (
	errFbUnavailable = errors.New("mail service unavailable")
	errFbInvalid     = errors.New("invalid address")
	errFbOpen        = errors.New("fake breaker open")
)

// fbStatusError is an error with a status code, for FallbackPolicy.If.
type fbStatusError struct{ Code int }

func (e *fbStatusError) Error() string { return fmt.Sprintf("status %d", e.Code) }

// fbPrimary returns the follow-up fbNotified{"primary"}, with err if set, or
// panics with panicV.
type fbPrimary struct {
	err    error
	panicV any
	calls  atomic.Int64
}

func (p *fbPrimary) Handle(context.Context, fbShipped) ([]events.Event, error) {
	p.calls.Add(1)
	if p.panicV != nil {
		panic(p.panicV)
	}
	return []events.Event{fbNotified{By: "primary"}}, p.err
}

// fbFallback returns the follow-up fbNotified{"fallback"}.
type fbFallback struct{ calls atomic.Int64 }

func (f *fbFallback) Handle(context.Context, fbShipped) ([]events.Event, error) {
	f.calls.Add(1)
	return []events.Event{fbNotified{By: "fallback"}}, nil
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

// fbNotes records who emitted the fbNotified follow-ups dispatched.
type fbNotes struct {
	mu sync.Mutex
	by []string
}

func (n *fbNotes) Handle(_ context.Context, e fbNotified) ([]events.Event, error) {
	n.mu.Lock()
	n.by = append(n.by, e.By)
	n.mu.Unlock()
	return nil, nil
}

func (n *fbNotes) got() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.by...)
}

// fbSetup binds primary and fallback to fbShipped with policy, and records
// the follow-ups dispatched.
func fbSetup(t *testing.T, primary *fbPrimary, fallback *fbFallback, policy events.FallbackPolicy) (*mediator.EventMediator, *fbNotes) {
	t.Helper()
	notes := &fbNotes{}
	em, err := bootstrap.Events(nil, bootstrap.WithDomainEvents(func(e *events.Map) {
		events.BindFallbackHandlers[fbShipped](e, primary, fallback, policy)
		events.BindHandler[fbNotified](e, notes)
	}))
	require.NoError(t, err)
	return em, notes
}

func TestEventFallbackOnMatchingError(t *testing.T) {
	t.Parallel()
	primary := &fbPrimary{err: fmt.Errorf("smtp: %w", errFbUnavailable)}
	fallback := &fbFallback{}
	em, notes := fbSetup(t, primary, fallback, events.FallbackPolicy{On: []error{errFbUnavailable}})

	require.NoError(t, em.Send(t.Context(), fbShipped{Item: "book"}))
	assert.Equal(t, int64(1), primary.calls.Load())
	assert.Equal(t, int64(1), fallback.calls.Load())
	assert.Equal(t, []string{"fallback"}, notes.got())
}

func TestEventFallbackNotOnNonMatchingError(t *testing.T) {
	t.Parallel()
	fallback := &fbFallback{}
	em, notes := fbSetup(t, &fbPrimary{err: errFbInvalid}, fallback, events.FallbackPolicy{On: []error{errFbUnavailable}})

	err := em.Send(t.Context(), fbShipped{Item: "book"})
	var de *mediator.DispatchError
	require.ErrorAs(t, err, &de)
	require.Len(t, de.Failures, 1)
	var he *mediator.HandlerError
	require.ErrorAs(t, de.Failures[0], &he)
	require.ErrorIs(t, he, errFbInvalid)
	assert.Equal(t, "*events_test.fbPrimary (fallback *events_test.fbFallback)", he.Handler)
	assert.Zero(t, fallback.calls.Load())
	assert.Empty(t, notes.got(), "a failed primary's follow-ups are not dispatched")
}

func TestEventFallbackOnAnyErrorWithEmptyPolicy(t *testing.T) {
	t.Parallel()
	for _, err := range []error{errFbInvalid, errFbUnavailable, &fbStatusError{Code: 400}} {
		t.Run(err.Error(), func(t *testing.T) {
			t.Parallel()
			fallback := &fbFallback{}
			em, notes := fbSetup(t, &fbPrimary{err: err}, fallback, events.FallbackPolicy{})

			require.NoError(t, em.Send(t.Context(), fbShipped{}))
			assert.Equal(t, int64(1), fallback.calls.Load())
			assert.Equal(t, []string{"fallback"}, notes.got())
		})
	}
}

func TestEventFallbackIfPredicate(t *testing.T) {
	t.Parallel()
	policy := events.FallbackPolicy{If: func(err error) bool {
		var se *fbStatusError
		return errors.As(err, &se) && se.Code >= 500
	}}
	cases := []struct {
		err      error
		fallback bool
	}{
		{&fbStatusError{Code: 503}, true},
		{&fbStatusError{Code: 404}, false},
		{errFbUnavailable, false}, // If alone: On is empty but If is set
	}
	for _, tc := range cases {
		t.Run(tc.err.Error(), func(t *testing.T) {
			t.Parallel()
			fallback := &fbFallback{}
			em, notes := fbSetup(t, &fbPrimary{err: tc.err}, fallback, policy)

			err := em.Send(t.Context(), fbShipped{})
			if tc.fallback {
				require.NoError(t, err)
				assert.Equal(t, []string{"fallback"}, notes.got())
				return
			}
			require.ErrorIs(t, err, tc.err)
			assert.Zero(t, fallback.calls.Load())
			assert.Empty(t, notes.got())
		})
	}
}

func TestEventFallbackOnPrimaryPanic(t *testing.T) {
	t.Parallel()
	fallback := &fbFallback{}
	em, notes := fbSetup(t, &fbPrimary{panicV: "mailer bug"}, fallback, events.FallbackPolicy{})

	var err error
	require.NotPanics(t, func() { err = em.Send(t.Context(), fbShipped{}) })
	require.NoError(t, err)
	assert.Equal(t, int64(1), fallback.calls.Load())
	assert.Equal(t, []string{"fallback"}, notes.got())
}

func TestEventFallbackFollowUpsReplacePrimaryFollowUps(t *testing.T) {
	t.Parallel()
	// The primary fails but returns a follow-up: it is never dispatched;
	// the fallback's is.
	primary := &fbPrimary{err: errFbUnavailable}
	em, notes := fbSetup(t, primary, &fbFallback{}, events.FallbackPolicy{})

	require.NoError(t, em.Send(t.Context(), fbShipped{}))
	assert.Equal(t, int64(1), primary.calls.Load())
	assert.Equal(t, []string{"fallback"}, notes.got())
}

func TestEventFallbackNotCalledWhenPrimarySucceeds(t *testing.T) {
	t.Parallel()
	fallback := &fbFallback{}
	em, notes := fbSetup(t, &fbPrimary{}, fallback, events.FallbackPolicy{})

	require.NoError(t, em.Send(t.Context(), fbShipped{}))
	assert.Zero(t, fallback.calls.Load())
	assert.Equal(t, []string{"primary"}, notes.got())
}

func TestEventFallbackBreakerOpenSkipsPrimary(t *testing.T) {
	t.Parallel()
	primary := &fbPrimary{}
	fallback := &fbFallback{}
	breaker := &fbBreaker{}
	em, notes := fbSetup(t, primary, fallback, events.FallbackPolicy{On: []error{errFbUnavailable}, Breaker: breaker})

	require.NoError(t, em.Send(t.Context(), fbShipped{}))
	assert.Equal(t, int64(1), primary.calls.Load(), "closed: the primary handles the event, through the breaker")

	breaker.open.Store(true)
	require.NoError(t, em.Send(t.Context(), fbShipped{}))
	assert.Equal(t, int64(1), primary.calls.Load(), "open: the primary is not called")
	assert.Equal(t, int64(1), fallback.calls.Load())

	assert.Equal(t, []string{"events_test.fbShipped[1] *events_test.fbPrimary", "events_test.fbShipped[1] *events_test.fbPrimary"}, breaker.calls())
	assert.Equal(t, []string{"primary", "fallback"}, notes.got())
}

// fbMailer is a dependency of the handlers built from the container.
type fbMailer struct{ sent atomic.Int64 }

type (
	fbSMTPHandler  struct{ m *fbMailer }
	fbQueueHandler struct{ m *fbMailer }
)

func newFbSMTPHandler(m *fbMailer) *fbSMTPHandler   { return &fbSMTPHandler{m} }
func newFbQueueHandler(m *fbMailer) *fbQueueHandler { return &fbQueueHandler{m} }

func (*fbSMTPHandler) Handle(context.Context, fbShipped) ([]events.Event, error) {
	return nil, errFbUnavailable
}

func (h *fbQueueHandler) Handle(context.Context, fbShipped) ([]events.Event, error) {
	h.m.sent.Add(1)
	return nil, nil
}

func TestEventBindFallbackResolvesBothFromContainer(t *testing.T) {
	t.Parallel()
	mailer := &fbMailer{}
	c := dig.New()
	require.NoError(t, c.Provide(func() *fbMailer { return mailer }))
	em, err := bootstrap.Events(c, bootstrap.WithDomainEvents(func(e *events.Map) {
		events.BindFallback[fbShipped](e, newFbSMTPHandler, newFbQueueHandler, events.FallbackPolicy{On: []error{errFbUnavailable}})
	}))
	require.NoError(t, err)

	require.NoError(t, em.Send(t.Context(), fbShipped{}))
	assert.Equal(t, int64(1), mailer.sent.Load())
}

func TestEventFallbackBindingErrorsAreReportedAtBootstrap(t *testing.T) {
	t.Parallel()
	var nilPrimary *fbPrimary
	cases := []struct {
		name string
		bind func(*events.Map)
		want string
	}{
		{"nil primary", func(e *events.Map) {
			events.BindFallbackHandlers[fbShipped](e, nilPrimary, &fbFallback{}, events.FallbackPolicy{})
		}, "nil handler"},
		{"nil fallback", func(e *events.Map) {
			events.BindFallbackHandlers[fbShipped](e, &fbPrimary{}, nil, events.FallbackPolicy{})
		}, "nil handler"},
		{"constructor of the wrong shape", func(e *events.Map) {
			events.BindFallback[fbShipped](e, newFbSMTPHandler, func() int { return 0 }, events.FallbackPolicy{})
		}, "bind fallback"},
		{"missing dependency", func(e *events.Map) {
			events.BindFallback[fbShipped](e, newFbSMTPHandler, newFbQueueHandler, events.FallbackPolicy{})
		}, "fbMailer"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			em, err := bootstrap.Events(dig.New(), bootstrap.WithDomainEvents(tc.bind))
			require.Error(t, err)
			assert.Nil(t, em)
			assert.ErrorContains(t, err, "events_test.fbShipped")
			assert.ErrorContains(t, err, tc.want)
		})
	}
}
