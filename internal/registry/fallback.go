package registry

import (
	"context"

	"github.com/gocqrs/cqrs/internal/panics"
)

// Breaker is the part of events.CircuitBreaker the fallback path calls.
type Breaker interface {
	Call(ctx context.Context, name string, fn func(ctx context.Context) error) error
}

// TryPrimary runs primary, through cb when it is not nil, turning a panic
// into an error. It reports whether the fallback must answer instead: the
// primary failed, ctx is not done, and triggers accepts the error (triggers
// also sees the breaker's refusals).
func TryPrimary(ctx context.Context, cb Breaker, name string, primary func(context.Context) error, triggers func(error) bool) (useFallback bool, err error) {
	call := func(ctx context.Context) (err error) {
		defer func() {
			if v := recover(); v != nil {
				err = panics.New(v)
			}
		}()
		return primary(ctx)
	}
	if cb == nil {
		err = call(ctx)
	} else {
		err = cb.Call(ctx, name, call)
	}
	return err != nil && ctx.Err() == nil && triggers(err), err
}
