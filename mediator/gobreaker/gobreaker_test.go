package gobreaker_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	sgb "github.com/sony/gobreaker/v2"

	"github.com/gocqrs/cqrs/bootstrap"
	"github.com/gocqrs/cqrs/di"
	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/mediator"
	"github.com/gocqrs/cqrs/mediator/gobreaker"
	"github.com/gocqrs/cqrs/requests"
)

// quote asks for a price: livePricing answers it, cachedPricing is the
// fallback.
type quote struct {
	requests.Returns[string]
	Item string
}

var (
	errUnavailable = errors.New("pricing service unavailable")
	errNotFound    = errors.New("unknown item")
)

// pricing is the dependency of both handlers: it says how the live service
// fails (nil: it answers) and counts the calls.
type pricing struct {
	mu       sync.Mutex
	fail     error
	live     atomic.Int64
	fallback atomic.Int64
}

func (p *pricing) setFail(err error) {
	p.mu.Lock()
	p.fail = err
	p.mu.Unlock()
}

func (p *pricing) failure() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.fail
}

type (
	livePricing   struct{ p *pricing }
	cachedPricing struct{ p *pricing }
)

func newLivePricing(p *pricing) *livePricing     { return &livePricing{p} }
func newCachedPricing(p *pricing) *cachedPricing { return &cachedPricing{p} }

func (h *livePricing) Handle(_ context.Context, q quote) (string, []events.Event, error) {
	h.p.live.Add(1)
	if err := h.p.failure(); err != nil {
		return "", nil, fmt.Errorf("live price of %s: %w", q.Item, err)
	}
	return "live " + q.Item, nil, nil
}

func (h *cachedPricing) Handle(_ context.Context, q quote) (string, []events.Event, error) {
	h.p.fallback.Add(1)
	return "cached " + q.Item, nil, nil
}

// primaryName is the circuit name the mediator gives the binding: the
// request type and the primary's type.
const primaryName = "gobreaker_test.quote *gobreaker_test.livePricing"

// twoStrikes trips a circuit after 2 consecutive failures.
func twoStrikes(c sgb.Counts) bool { return c.ConsecutiveFailures >= 2 }

func setup(t *testing.T, b *gobreaker.Breaker, policy requests.FallbackPolicy) (*mediator.RequestMediator, *pricing) {
	t.Helper()
	p := &pricing{}
	var vals di.Values
	di.Provide(&vals, p)
	policy.Breaker = b
	m, err := bootstrap.Bootstrap(&vals, bootstrap.WithQueries(func(r *requests.Map) {
		requests.BindFallback[quote](r, newLivePricing, newCachedPricing, policy)
	}))
	if err != nil {
		t.Fatal(err)
	}
	return m, p
}

func send(t *testing.T, m *mediator.RequestMediator) (string, error) {
	t.Helper()
	return mediator.Send(t.Context(), m, quote{Item: "book"})
}

func TestBreakerOpensAfterTwoFailuresAndFallbackAnswers(t *testing.T) {
	t.Parallel()
	b := gobreaker.New(sgb.Settings{ReadyToTrip: twoStrikes})
	m, p := setup(t, b, requests.FallbackPolicy{})
	p.setFail(errUnavailable)

	for i := 1; i <= 2; i++ {
		res, err := send(t, m)
		if err != nil || res != "cached book" {
			t.Fatalf("failure %d: Send = %q, %v; want the fallback's answer", i, res, err)
		}
	}
	if got := p.live.Load(); got != 2 {
		t.Fatalf("primary called %d times, want 2", got)
	}
	if got := b.State(primaryName); got != sgb.StateOpen {
		t.Fatalf("after 2 failures the circuit is %v, want open", got)
	}

	// The open circuit refuses calls with an error IsOpen recognises.
	called := false
	err := b.Call(t.Context(), primaryName, func(context.Context) error { called = true; return nil })
	if called {
		t.Fatal("the open circuit called fn")
	}
	if !b.IsOpen(err) || !errors.Is(err, sgb.ErrOpenState) {
		t.Fatalf("Call on an open circuit = %v; want IsOpen and ErrOpenState", err)
	}

	// The primary is no longer called; the fallback answers, even though
	// the service has recovered (the circuit stays open until its timeout).
	p.setFail(nil)
	for range 3 {
		res, err := send(t, m)
		if err != nil || res != "cached book" {
			t.Fatalf("open: Send = %q, %v; want the fallback's answer", res, err)
		}
	}
	if got := p.live.Load(); got != 2 {
		t.Fatalf("primary called %d times while the circuit was open, want 2 in all", got)
	}
	if got := p.fallback.Load(); got != 5 {
		t.Fatalf("fallback called %d times, want 5", got)
	}
}

func TestBreakerIsOpen(t *testing.T) {
	t.Parallel()
	b := gobreaker.New(sgb.Settings{})
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{nil, false},
		{errUnavailable, false},
		{sgb.ErrOpenState, true},
		{sgb.ErrTooManyRequests, true},
		{fmt.Errorf("wrapped: %w", sgb.ErrOpenState), true},
	} {
		if got := b.IsOpen(tc.err); got != tc.want {
			t.Errorf("IsOpen(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

func TestBreakerSeparateNamesHaveSeparateCircuits(t *testing.T) {
	t.Parallel()
	b := gobreaker.New(sgb.Settings{ReadyToTrip: twoStrikes})
	ctx := t.Context()
	for range 2 {
		if err := b.Call(ctx, "a", func(context.Context) error { return errUnavailable }); !errors.Is(err, errUnavailable) {
			t.Fatalf("Call(a) = %v, want the fn's error", err)
		}
	}
	if got := b.State("a"); got != sgb.StateOpen {
		t.Fatalf("circuit a is %v, want open", got)
	}

	called := false
	if err := b.Call(ctx, "b", func(context.Context) error { called = true; return nil }); err != nil || !called {
		t.Fatalf("Call(b) = %v, called %v; want fn called through the closed circuit b", err, called)
	}
	if got := b.State("b"); got != sgb.StateClosed {
		t.Fatalf("circuit b is %v, want closed", got)
	}
	if got := b.State("never used"); got != sgb.StateClosed {
		t.Fatalf("an unused circuit is %v, want closed", got)
	}

	// Through the mediator, with the same breaker: tripping the primary's
	// circuit leaves circuit b closed.
	m, p := setup(t, b, requests.FallbackPolicy{})
	p.setFail(errUnavailable)
	for range 2 {
		if _, err := send(t, m); err != nil {
			t.Fatal(err)
		}
	}
	if got := b.State(primaryName); got != sgb.StateOpen {
		t.Fatalf("circuit %s is %v, want open", primaryName, got)
	}
	if got := b.State("b"); got != sgb.StateClosed {
		t.Fatalf("circuit b is %v after another circuit tripped, want closed", got)
	}
}

func TestBreakerIsSuccessfulKeepsBusinessErrorsFromTripping(t *testing.T) {
	t.Parallel()
	b := gobreaker.New(sgb.Settings{
		ReadyToTrip: twoStrikes,
		// An unknown item is the caller's problem, not the service's.
		IsSuccessful: func(err error) bool { return err == nil || errors.Is(err, errNotFound) },
	})
	m, p := setup(t, b, requests.FallbackPolicy{On: []error{errUnavailable}})

	p.setFail(errNotFound)
	for i := range 5 {
		if _, err := send(t, m); !errors.Is(err, errNotFound) {
			t.Fatalf("Send %d = %v, want the business error, with no fallback", i, err)
		}
	}
	if got := b.State(primaryName); got != sgb.StateClosed {
		t.Fatalf("after 5 business errors the circuit is %v, want closed", got)
	}
	if got := p.live.Load(); got != 5 {
		t.Fatalf("primary called %d times, want 5", got)
	}
	if got := p.fallback.Load(); got != 0 {
		t.Fatalf("fallback called %d times, want 0", got)
	}

	// Real failures still trip it.
	p.setFail(errUnavailable)
	for range 2 {
		if res, err := send(t, m); err != nil || res != "cached book" {
			t.Fatalf("Send = %q, %v; want the fallback's answer", res, err)
		}
	}
	if got := b.State(primaryName); got != sgb.StateOpen {
		t.Fatalf("after 2 failures the circuit is %v, want open", got)
	}
}

func TestBreakerConcurrentCalls(t *testing.T) {
	t.Parallel()
	b := gobreaker.New(sgb.Settings{ReadyToTrip: func(sgb.Counts) bool { return false }})
	var calls atomic.Int64
	var wg sync.WaitGroup
	for i := range 64 {
		wg.Go(func() {
			name := fmt.Sprint("circuit ", i%4)
			if err := b.Call(context.Background(), name, func(context.Context) error { calls.Add(1); return nil }); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if got := calls.Load(); got != 64 {
		t.Fatalf("fn called %d times, want 64", got)
	}
}
