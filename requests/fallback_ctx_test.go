package requests_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gocqrs/cqrs/bootstrap"
	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/mediator"
	"github.com/gocqrs/cqrs/requests"
)

type fbCtxQuote struct {
	requests.Returns[string]
}

func TestFallbackIsNotCalledOnceContextIsDone(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	fallbackCalls := 0
	primary := requests.HandlerFunc[fbCtxQuote, string](func(context.Context, fbCtxQuote) (string, []events.Event, error) {
		cancel() // the caller gives up while the primary runs
		return "", nil, context.Canceled
	})
	fallback := requests.HandlerFunc[fbCtxQuote, string](func(context.Context, fbCtxQuote) (string, []events.Event, error) {
		fallbackCalls++
		return "cached", nil, nil
	})
	m, err := bootstrap.Bootstrap(nil, bootstrap.WithQueries(func(r *requests.Map) {
		requests.BindFallbackHandlers(r, primary, fallback, requests.FallbackPolicy{})
	}))
	require.NoError(t, err)

	res, err := mediator.Send(ctx, m, fbCtxQuote{})
	require.ErrorIs(t, err, context.Canceled, "the primary's error is returned")
	assert.Empty(t, res)
	assert.Zero(t, fallbackCalls, "the zero policy does not call the fallback with a done context")
}
