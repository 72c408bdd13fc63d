package requests_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/dig"

	"github.com/gocqrs/cqrs/bootstrap"
	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/mediator"
	"github.com/gocqrs/cqrs/requests"
)

type getPrice struct {
	requests.Returns[int]
	Item string
}

// priceBook is a handler of the (Res, error) shape.
type priceBook struct{ prices map[string]int }

var errUnknownItem = errors.New("unknown item")

func (b *priceBook) Handle(_ context.Context, q getPrice) (int, error) {
	p, ok := b.prices[q.Item]
	if !ok {
		return 0, errUnknownItem
	}
	return p, nil
}

func newPriceBook() *priceBook { return &priceBook{prices: map[string]int{"book": 12}} }

func TestPlainHandlerBindsByConstructorValueAndFunc(t *testing.T) {
	t.Parallel()
	for name, bind := range map[string]func(r *requests.Map){
		"constructor": func(r *requests.Map) { requests.Bind[getPrice](r, newPriceBook) },
		"Plain":       func(r *requests.Map) { requests.BindHandler(r, requests.Plain(newPriceBook())) },
		"PlainFunc": func(r *requests.Map) {
			requests.BindHandler(r, requests.PlainFunc(func(ctx context.Context, q getPrice) (int, error) {
				return newPriceBook().Handle(ctx, q)
			}))
		},
		"Func": func(r *requests.Map) {
			requests.BindHandler(r, requests.Func(func(ctx context.Context, q getPrice) (int, []events.Event, error) {
				p, err := newPriceBook().Handle(ctx, q)
				return p, nil, err
			}))
		},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			m, err := bootstrap.Bootstrap(dig.New(), bootstrap.WithQueries(bind))
			require.NoError(t, err)
			p, err := mediator.Send(t.Context(), m, getPrice{Item: "book"})
			require.NoError(t, err)
			assert.Equal(t, 12, p)
			_, err = mediator.Send(t.Context(), m, getPrice{Item: "pen"})
			require.ErrorIs(t, err, errUnknownItem)
		})
	}
}

func TestPlainHandlerWorksWithTypedMiddlewareFallbackAndDiagram(t *testing.T) {
	t.Parallel()
	var seen []string
	m, err := bootstrap.Bootstrap(nil, bootstrap.WithQueries(func(r *requests.Map) {
		requests.BindFallbackHandlers(r, requests.Plain[getPrice](newPriceBook()),
			requests.PlainFunc(func(context.Context, getPrice) (int, error) { return -1, nil }),
			requests.FallbackPolicy{On: []error{errUnknownItem}})
		requests.Use(r, requests.TypedMiddleware[getPrice, int](func(next requests.HandlerFunc[getPrice, int]) requests.HandlerFunc[getPrice, int] {
			return func(ctx context.Context, q getPrice) (int, []events.Event, error) {
				seen = append(seen, q.Item)
				return next(ctx, q)
			}
		}))
	}))
	require.NoError(t, err)
	p, err := mediator.Send(t.Context(), m, getPrice{Item: "book"})
	require.NoError(t, err)
	assert.Equal(t, 12, p)
	p, err = mediator.Send(t.Context(), m, getPrice{Item: "pen"})
	require.NoError(t, err)
	assert.Equal(t, -1, p, "the fallback answered")
	assert.Equal(t, []string{"book", "pen"}, seen)
	assert.True(t, strings.Contains(m.Mermaid(), "*requests_test.priceBook"), m.Mermaid())
}

func TestPlainHandlerSendAllocatesNothing(t *testing.T) {
	m, err := bootstrap.Bootstrap(nil, bootstrap.WithQueries(func(r *requests.Map) {
		requests.BindHandler(r, requests.Plain(newPriceBook()))
	}))
	require.NoError(t, err)
	ctx := context.Background()
	allocs := testing.AllocsPerRun(1000, func() { _, _ = mediator.Send(ctx, m, getPrice{Item: "book"}) })
	assert.Zero(t, allocs)
}
