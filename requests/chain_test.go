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

// chainQuote asks for the price of Key; a chain of links answers it.
type chainQuote struct {
	requests.Returns[string]
	Key string
}

// chainNoted is emitted by every link that ran, naming it.
type chainNoted struct{ Link string }

var errChainLink = errors.New("link failed")

// chainLink is a configurable link: it answers the keys answers accepts,
// fails with fail if set (on its first failTimes calls only, if failTimes is
// not zero), and otherwise passes the request on. It emits a chainNoted
// whether it answers or passes on.
type chainLink struct {
	name      string
	answers   func(key string) bool
	fail      error
	failTimes int64
	calls     atomic.Int64
}

func (l *chainLink) Handle(ctx context.Context, q chainQuote, next func(context.Context, chainQuote) (string, error)) (string, []events.Event, error) {
	n := l.calls.Add(1)
	noted := []events.Event{chainNoted{Link: l.name}}
	if l.fail != nil && (l.failTimes == 0 || n <= l.failTimes) {
		return "", noted, l.fail
	}
	if l.answers != nil && l.answers(q.Key) {
		return l.name + " answered " + q.Key, noted, nil
	}
	res, err := next(ctx, q)
	if err != nil {
		return "", nil, err
	}
	return res, noted, nil
}

func chainKey(key string) func(string) bool { return func(k string) bool { return k == key } }

func chainAny(string) bool { return true }

// chainNotes records the chainNoted events dispatched, in order.
type chainNotes struct {
	mu    sync.Mutex
	links []string
}

func (n *chainNotes) Handle(_ context.Context, e chainNoted) ([]events.Event, error) {
	n.mu.Lock()
	n.links = append(n.links, e.Link)
	n.mu.Unlock()
	return nil, nil
}

func (n *chainNotes) take() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := n.links
	n.links = nil
	return out
}

// chainMediator binds chainQuote to links, and notes to chainNoted; events
// are dispatched one at a time, in order.
func chainMediator(t *testing.T, notes *chainNotes, links ...requests.ChainHandler[chainQuote, string]) *mediator.RequestMediator {
	t.Helper()
	m, err := bootstrap.Bootstrap(nil,
		bootstrap.WithQueries(func(r *requests.Map) { requests.BindChainHandlers(r, links...) }),
		bootstrap.WithDomainEvents(func(e *events.Map) { events.BindHandler[chainNoted](e, notes) }),
	)
	require.NoError(t, err)
	return m
}

func TestChainFirstAnsweringLinkWinsAndLaterLinksAreNotCalled(t *testing.T) {
	t.Parallel()
	cases := []struct {
		key    string
		answer string
		calls  [3]int64
		events []string // in the order the links returned: innermost first
	}{
		{"hot", "cache answered hot", [3]int64{1, 0, 0}, []string{"cache"}},
		{"known", "db answered known", [3]int64{1, 1, 0}, []string{"db", "cache"}},
		{"other", "default answered other", [3]int64{1, 1, 1}, []string{"default", "db", "cache"}},
	}
	for _, tc := range cases {
		t.Run(tc.key, func(t *testing.T) {
			t.Parallel()
			links := []*chainLink{
				{name: "cache", answers: chainKey("hot")},
				{name: "db", answers: chainKey("known")},
				{name: "default", answers: chainAny},
			}
			var notes chainNotes
			m := chainMediator(t, &notes, links[0], links[1], links[2])

			res, err := mediator.Send(t.Context(), m, chainQuote{Key: tc.key})
			require.NoError(t, err)
			assert.Equal(t, tc.answer, res)
			for i, l := range links {
				assert.Equal(t, tc.calls[i], l.calls.Load(), "calls of %s", l.name)
			}
			assert.Equal(t, tc.events, notes.take())
		})
	}
}

func TestChainFallingOffTheEndIsErrEndOfChain(t *testing.T) {
	t.Parallel()
	links := []*chainLink{{name: "cache"}, {name: "db"}}
	var notes chainNotes
	m := chainMediator(t, &notes, links[0], links[1])

	res, err := mediator.Send(t.Context(), m, chainQuote{Key: "x"})
	require.ErrorIs(t, err, requests.ErrEndOfChain)
	assert.ErrorContains(t, err, "requests_test.chainQuote passed through 2 link(s)")
	assert.Empty(t, res)
	assert.Equal(t, int64(1), links[0].calls.Load())
	assert.Equal(t, int64(1), links[1].calls.Load())
	assert.Empty(t, notes.take(), "a failed Send dispatches nothing")
}

func TestChainDispatchesEventsOfEveryLinkThatRan(t *testing.T) {
	t.Parallel()
	type (
		audited  struct{}
		enriched struct{ N int }
		priced   struct{}
	)
	var got []string
	var mu sync.Mutex
	note := func(s string) {
		mu.Lock()
		got = append(got, s)
		mu.Unlock()
	}
	// The first two links pass the request on and return events of their
	// own; the third answers.
	audit := requests.ChainHandlerFunc[chainQuote, string](func(ctx context.Context, q chainQuote, next func(context.Context, chainQuote) (string, error)) (string, []events.Event, error) {
		res, err := next(ctx, q)
		return res, []events.Event{audited{}}, err
	})
	enrich := requests.ChainHandlerFunc[chainQuote, string](func(ctx context.Context, q chainQuote, next func(context.Context, chainQuote) (string, error)) (string, []events.Event, error) {
		q.Key += "+enriched"
		res, err := next(ctx, q)
		return res, []events.Event{enriched{1}, enriched{2}}, err
	})
	price := requests.ChainHandlerFunc[chainQuote, string](func(_ context.Context, q chainQuote, _ func(context.Context, chainQuote) (string, error)) (string, []events.Event, error) {
		return "price of " + q.Key, []events.Event{priced{}}, nil
	})
	m, err := bootstrap.Bootstrap(nil,
		bootstrap.WithQueries(func(r *requests.Map) { requests.BindChainHandlers(r, audit, enrich, price) }),
		bootstrap.WithDomainEvents(func(e *events.Map) {
			events.BindHandler(e, events.HandlerFunc[audited](func(context.Context, audited) ([]events.Event, error) {
				note("audited")
				return nil, nil
			}))
			events.BindHandler(e, events.HandlerFunc[enriched](func(_ context.Context, ev enriched) ([]events.Event, error) {
				note(fmt.Sprint("enriched ", ev.N))
				return nil, nil
			}))
			events.BindHandler(e, events.HandlerFunc[priced](func(context.Context, priced) ([]events.Event, error) {
				note("priced")
				return nil, nil
			}))
		}),
	)
	require.NoError(t, err)

	res, err := mediator.Send(t.Context(), m, chainQuote{Key: "book"})
	require.NoError(t, err)
	assert.Equal(t, "price of book+enriched", res, "a link may change the request it passes on")
	mu.Lock()
	defer mu.Unlock()
	// In the order the links returned: the answering link first.
	assert.Equal(t, []string{"priced", "enriched 1", "enriched 2", "audited"}, got)
}

func TestChainFailingLinkEventsAreNotDispatched(t *testing.T) {
	t.Parallel()
	t.Run("an earlier link recovers", func(t *testing.T) {
		t.Parallel()
		// cache passes on; db fails with events; cache answers instead.
		cache := requests.ChainHandlerFunc[chainQuote, string](func(ctx context.Context, q chainQuote, next func(context.Context, chainQuote) (string, error)) (string, []events.Event, error) {
			if _, err := next(ctx, q); errors.Is(err, errChainLink) {
				return "stale", []events.Event{chainNoted{Link: "cache"}}, nil
			}
			return "fresh", nil, nil
		})
		db := &chainLink{name: "db", fail: errChainLink}
		last := &chainLink{name: "default", answers: chainAny}
		var notes chainNotes
		m := chainMediator(t, &notes, cache, db, last)

		res, err := mediator.Send(t.Context(), m, chainQuote{Key: "x"})
		require.NoError(t, err)
		assert.Equal(t, "stale", res)
		assert.Equal(t, []string{"cache"}, notes.take(), "db's events are not dispatched")
		assert.Zero(t, last.calls.Load())
	})
	t.Run("a link that fails after passing on drops only its own events", func(t *testing.T) {
		t.Parallel()
		// cache passes on; db passes on, default answers, then db fails;
		// cache answers instead. default returned without error: its
		// events are kept.
		cache := requests.ChainHandlerFunc[chainQuote, string](func(ctx context.Context, q chainQuote, next func(context.Context, chainQuote) (string, error)) (string, []events.Event, error) {
			if _, err := next(ctx, q); errors.Is(err, errChainLink) {
				return "stale", []events.Event{chainNoted{Link: "cache"}}, nil
			}
			return "fresh", nil, nil
		})
		db := requests.ChainHandlerFunc[chainQuote, string](func(ctx context.Context, q chainQuote, next func(context.Context, chainQuote) (string, error)) (string, []events.Event, error) {
			_, _ = next(ctx, q)
			return "", []events.Event{chainNoted{Link: "db"}}, errChainLink
		})
		last := &chainLink{name: "default", answers: chainAny}
		var notes chainNotes
		m := chainMediator(t, &notes, cache, db, last)

		res, err := mediator.Send(t.Context(), m, chainQuote{Key: "x"})
		require.NoError(t, err)
		assert.Equal(t, "stale", res)
		assert.Equal(t, []string{"default", "cache"}, notes.take())
	})
	t.Run("the error reaches the caller", func(t *testing.T) {
		t.Parallel()
		first := &chainLink{name: "first"}
		db := &chainLink{name: "db", fail: errChainLink}
		var notes chainNotes
		m := chainMediator(t, &notes, first, db)

		_, err := mediator.Send(t.Context(), m, chainQuote{Key: "x"})
		require.ErrorIs(t, err, errChainLink)
		assert.Empty(t, notes.take(), "no link's events are dispatched")
	})
}

// chainRetryLink passes the request on by calling next attempts times in
// all: while next fails, or every time if always is set. It returns the
// last outcome, and emits a chainNoted when it returns without error.
type chainRetryLink struct {
	name     string
	attempts int
	always   bool
	calls    atomic.Int64
}

func (l *chainRetryLink) Handle(ctx context.Context, q chainQuote, next func(context.Context, chainQuote) (string, error)) (string, []events.Event, error) {
	l.calls.Add(1)
	var (
		res string
		err error
	)
	for range l.attempts {
		res, err = next(ctx, q)
		if err == nil && !l.always {
			break
		}
	}
	if err != nil {
		return "", nil, err
	}
	return res, []events.Event{chainNoted{Link: l.name}}, nil
}

func TestChainNextCalledTwiceRunsTheSameNextLinkAgain(t *testing.T) {
	t.Parallel()
	t.Run("a retry after a failure reaches the link that failed", func(t *testing.T) {
		t.Parallel()
		// audit passes on; retry calls next again when it fails; db fails
		// once, then answers; default is never reached.
		audit := &chainLink{name: "audit"}
		retry := &chainRetryLink{name: "retry", attempts: 2}
		db := &chainLink{name: "db", answers: chainAny, fail: errChainLink, failTimes: 1}
		last := &chainLink{name: "default", answers: chainAny}
		var notes chainNotes
		m := chainMediator(t, &notes, audit, retry, db, last)

		res, err := mediator.Send(t.Context(), m, chainQuote{Key: "x"})
		require.NoError(t, err)
		assert.Equal(t, "db answered x", res)
		assert.Equal(t, int64(1), audit.calls.Load())
		assert.Equal(t, int64(1), retry.calls.Load())
		assert.Equal(t, int64(2), db.calls.Load(), "the second call of next runs db again")
		assert.Zero(t, last.calls.Load(), "no link is skipped")
		assert.Equal(t, []string{"db", "retry", "audit"}, notes.take(),
			"the failed invocation of db contributes no events, the one that answered does")
	})
	t.Run("every invocation that returns without error contributes its events", func(t *testing.T) {
		t.Parallel()
		// twice calls next twice whatever happens; pass passes on; default
		// answers. Each call of next walks pass and default again.
		twice := &chainRetryLink{name: "twice", attempts: 2, always: true}
		pass := &chainLink{name: "pass"}
		last := &chainLink{name: "default", answers: chainAny}
		var notes chainNotes
		m := chainMediator(t, &notes, twice, pass, last)

		res, err := mediator.Send(t.Context(), m, chainQuote{Key: "x"})
		require.NoError(t, err)
		assert.Equal(t, "default answered x", res)
		assert.Equal(t, int64(2), pass.calls.Load())
		assert.Equal(t, int64(2), last.calls.Load())
		assert.Equal(t, []string{"default", "pass", "default", "pass", "twice"}, notes.take(),
			"in the order the invocations returned")
	})
	t.Run("retries in two links stay independent", func(t *testing.T) {
		t.Parallel()
		// outer and inner both call next twice; the last link runs four
		// times.
		outer := &chainRetryLink{name: "outer", attempts: 2, always: true}
		inner := &chainRetryLink{name: "inner", attempts: 2, always: true}
		last := &chainLink{name: "default", answers: chainAny}
		var notes chainNotes
		m := chainMediator(t, &notes, outer, inner, last)

		res, err := mediator.Send(t.Context(), m, chainQuote{Key: "x"})
		require.NoError(t, err)
		assert.Equal(t, "default answered x", res)
		assert.Equal(t, int64(2), inner.calls.Load())
		assert.Equal(t, int64(4), last.calls.Load())
		assert.Equal(t, []string{"default", "default", "inner", "default", "default", "inner", "outer"}, notes.take())
	})
}

func TestChainEndOfChainOnlyWhenEveryLinkPassedOn(t *testing.T) {
	t.Parallel()
	t.Run("a retried link that fails again is the error", func(t *testing.T) {
		t.Parallel()
		retry := &chainRetryLink{name: "retry", attempts: 2}
		db := &chainLink{name: "db", fail: errChainLink}
		var notes chainNotes
		m := chainMediator(t, &notes, retry, db)

		_, err := mediator.Send(t.Context(), m, chainQuote{Key: "x"})
		require.ErrorIs(t, err, errChainLink, "db's error, not the end of the chain")
		assert.NotErrorIs(t, err, requests.ErrEndOfChain, "db failed, it did not pass the request on")
		assert.Equal(t, int64(2), db.calls.Load())
		assert.Empty(t, notes.take())
	})
	t.Run("every call of next that falls off the end went through every link", func(t *testing.T) {
		t.Parallel()
		retry := &chainRetryLink{name: "retry", attempts: 2}
		pass := &chainLink{name: "pass"}
		var notes chainNotes
		m := chainMediator(t, &notes, retry, pass)

		_, err := mediator.Send(t.Context(), m, chainQuote{Key: "x"})
		require.ErrorIs(t, err, requests.ErrEndOfChain)
		assert.EqualError(t, err, "requests: no handler in the chain answered: requests_test.chainQuote passed through 2 link(s)")
		assert.Equal(t, int64(2), pass.calls.Load(), "the retry passed through pass again")
		assert.Empty(t, notes.take())
	})
}

// chainPrices is a dependency of the links built from the container.
type chainPrices struct{ cached map[string]string }

type (
	chainCacheLink   struct{ prices *chainPrices }
	chainDefaultLink struct{}
)

func newChainCacheLink(p *chainPrices) *chainCacheLink { return &chainCacheLink{prices: p} }

func newChainDefaultLink() (chainDefaultLink, error) { return chainDefaultLink{}, nil }

func (l *chainCacheLink) Handle(ctx context.Context, q chainQuote, next func(context.Context, chainQuote) (string, error)) (string, []events.Event, error) {
	if p, ok := l.prices.cached[q.Key]; ok {
		return p, nil, nil
	}
	res, err := next(ctx, q)
	return res, nil, err
}

func (chainDefaultLink) Handle(_ context.Context, q chainQuote, _ func(context.Context, chainQuote) (string, error)) (string, []events.Event, error) {
	return "list price of " + q.Key, nil, nil
}

func TestBindChainResolvesLinksFromContainer(t *testing.T) {
	t.Parallel()
	c := dig.New()
	require.NoError(t, c.Provide(func() *chainPrices { return &chainPrices{cached: map[string]string{"book": "12"}} }))
	m, err := bootstrap.Bootstrap(c, bootstrap.WithQueries(func(r *requests.Map) {
		requests.BindChain[chainQuote](r, newChainCacheLink, newChainDefaultLink)
	}))
	require.NoError(t, err)

	res, err := mediator.Send(t.Context(), m, chainQuote{Key: "book"})
	require.NoError(t, err)
	assert.Equal(t, "12", res)
	res, err = mediator.Send(t.Context(), m, chainQuote{Key: "pen"})
	require.NoError(t, err)
	assert.Equal(t, "list price of pen", res)

	// A missing dependency is reported at bootstrap, naming the link.
	_, err = bootstrap.Bootstrap(dig.New(), bootstrap.WithQueries(func(r *requests.Map) {
		requests.BindChain[chainQuote](r, newChainDefaultLink, newChainCacheLink)
	}))
	var de dig.Error
	require.ErrorAs(t, err, &de)
	assert.ErrorContains(t, err, "link 1")
	assert.ErrorContains(t, err, "chainPrices")
}

func TestChainRepeatedRequestsAreIndependent(t *testing.T) {
	t.Parallel()
	links := []*chainLink{
		{name: "cache", answers: chainKey("hot")},
		{name: "default", answers: chainAny},
	}
	var notes chainNotes
	m := chainMediator(t, &notes, links[0], links[1])

	// Each request walks the chain from the first link and dispatches only
	// its own events.
	for i := range 3 {
		res, err := mediator.Send(t.Context(), m, chainQuote{Key: "cold"})
		require.NoError(t, err)
		assert.Equal(t, "default answered cold", res)
		assert.Equal(t, []string{"default", "cache"}, notes.take(), "request %d", i)
		res, err = mediator.Send(t.Context(), m, chainQuote{Key: "hot"})
		require.NoError(t, err)
		assert.Equal(t, "cache answered hot", res)
		assert.Equal(t, []string{"cache"}, notes.take(), "request %d", i)
	}
	assert.Equal(t, int64(6), links[0].calls.Load())
	assert.Equal(t, int64(3), links[1].calls.Load())

	// Concurrently too.
	const n = 32
	var wg sync.WaitGroup
	results := make([]string, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			key := "cold"
			if i%2 == 0 {
				key = "hot"
			}
			results[i], errs[i] = mediator.Send(context.Background(), m, chainQuote{Key: key})
		})
	}
	wg.Wait()
	for i := range n {
		require.NoError(t, errs[i])
		if i%2 == 0 {
			assert.Equal(t, "cache answered hot", results[i])
		} else {
			assert.Equal(t, "default answered cold", results[i])
		}
	}
	assert.Len(t, notes.take(), n/2+2*(n/2), "one event per link that ran, per request")
}

func TestChainBindingErrorsAreReportedAtBootstrap(t *testing.T) {
	t.Parallel()
	ok := requests.ChainHandlerFunc[chainQuote, string](func(context.Context, chainQuote, func(context.Context, chainQuote) (string, error)) (string, []events.Event, error) {
		return "", nil, nil
	})
	var nilLink *chainLink
	cases := []struct {
		name string
		bind func(*requests.Map)
		want string
	}{
		{"no links", func(r *requests.Map) { requests.BindChainHandlers[chainQuote, string](r) }, "no links"},
		{"nil link", func(r *requests.Map) { requests.BindChainHandlers(r, ok, nil) }, "link 1 is nil"},
		{"typed nil link", func(r *requests.Map) {
			requests.BindChainHandlers[chainQuote](r, ok, requests.ChainHandler[chainQuote, string](nilLink))
		}, "link 1 is nil"},
		{"no constructors", func(r *requests.Map) { requests.BindChain[chainQuote](r) }, "no links"},
		{"nil constructor", func(r *requests.Map) { requests.BindChain[chainQuote](r, newChainDefaultLink, nil) }, "link 1"},
		{"constructor of the wrong shape", func(r *requests.Map) {
			requests.BindChain[chainQuote](r, newChainDefaultLink, func() int { return 0 })
		}, "link 1"},
		{"constructor returning nil", func(r *requests.Map) {
			requests.BindChain[chainQuote](r, func() *chainLink { return nil })
		}, "link 0"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m, err := bootstrap.Bootstrap(dig.New(), bootstrap.WithQueries(tc.bind))
			require.Error(t, err)
			assert.Nil(t, m)
			assert.ErrorContains(t, err, "requests_test.chainQuote")
			assert.ErrorContains(t, err, tc.want)
		})
	}
}

type benchChainPass struct{}

func (benchChainPass) Handle(ctx context.Context, q chainQuote, next func(context.Context, chainQuote) (string, error)) (string, []events.Event, error) {
	res, err := next(ctx, q)
	return res, nil, err
}

type benchChainAnswer struct{}

func (benchChainAnswer) Handle(_ context.Context, q chainQuote, _ func(context.Context, chainQuote) (string, error)) (string, []events.Event, error) {
	return q.Key, nil, nil
}

// BenchmarkChain: Send to a chain whose links emit no events, answered by
// the first link, by the third after two passed it on, and by none (every
// link passes on and the request falls off the end).
func BenchmarkChain(b *testing.B) {
	ctx := context.Background()
	var (
		pass   requests.ChainHandler[chainQuote, string] = benchChainPass{}
		answer requests.ChainHandler[chainQuote, string] = benchChainAnswer{}
	)
	run := func(b *testing.B, wantErr bool, links ...requests.ChainHandler[chainQuote, string]) {
		b.Helper()
		m, err := bootstrap.Bootstrap(nil, bootstrap.WithQueries(func(r *requests.Map) {
			requests.BindChainHandlers(r, links...)
		}))
		if err != nil {
			b.Fatal(err)
		}
		req := chainQuote{Key: "x"}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := mediator.Send(ctx, m, req); (err != nil) != wantErr {
				b.Fatal(err)
			}
		}
	}
	b.Run("answer=first", func(b *testing.B) { run(b, false, answer, pass, pass) })
	b.Run("answer=third", func(b *testing.B) { run(b, false, pass, pass, answer) })
	b.Run("answer=none", func(b *testing.B) { run(b, true, pass, pass, pass) })
}
