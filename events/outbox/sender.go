package outbox

import (
	"context"

	"github.com/gocqrs/cqrs/events/wire"
	"github.com/gocqrs/cqrs/internal/panics"
)

// Sender hands a batch of envelopes to a transport: a broker producer, or an
// in-process consumer ([InProcessSender]). Broker adapters implement it.
type Sender interface {
	// Send delivers envs and returns when the transport has acknowledged
	// them (for a broker: durably accepted), or failed.
	//
	// Records with the same non-empty Key must be delivered in slice order,
	// and a record must not be delivered after an earlier record of the
	// same Key in the batch has failed (report it with [ErrNotAttempted]).
	// Records with different keys may be sent in any order or in parallel.
	//
	// The result says which records were sent:
	//   - nil: every record was acknowledged;
	//   - a *[BatchError] (possibly wrapped) with one entry per record: the
	//     records with a nil entry were acknowledged, the others were not;
	//   - any other error: no record was acknowledged.
	//
	// A record whose error matches [ErrPermanent] is never retried. Send
	// must return promptly once ctx is done (reporting unsent records with
	// ctx's error). It must not keep or modify envs after it returns.
	Send(ctx context.Context, envs []wire.Envelope) error
}

// SenderFunc adapts a function to a [Sender].
type SenderFunc func(ctx context.Context, envs []wire.Envelope) error

// Send calls f(ctx, envs).
func (f SenderFunc) Send(ctx context.Context, envs []wire.Envelope) error { return f(ctx, envs) }

// InProcessSender returns a [Sender] that calls deliver for each envelope of
// a batch, one at a time, in batch order, on the caller's goroutine: for
// example a function that decodes the payload and calls an EventMediator.
// A record is sent when deliver returns nil. After a record fails, the
// later records of its key are not delivered ([ErrNotAttempted]); other
// keys go on. Once ctx is done, the remaining records are not delivered
// and report ctx's error. A panic in deliver is recovered and reported as
// that record's *[PanicError].
func InProcessSender(deliver func(ctx context.Context, env wire.Envelope) error) Sender {
	return SenderFunc(func(ctx context.Context, envs []wire.Envelope) error {
		var (
			errs   []error
			failed map[string]struct{}
		)
		fail := func(i int, err error) {
			if errs == nil {
				errs = make([]error, len(envs))
			}
			errs[i] = err
		}
		for i, env := range envs {
			if err := ctx.Err(); err != nil {
				fail(i, err)
				continue
			}
			if _, held := failed[env.Key]; held && env.Key != "" {
				fail(i, ErrNotAttempted)
				continue
			}
			if err := deliverOne(ctx, deliver, env); err != nil {
				fail(i, err)
				if env.Key != "" {
					if failed == nil {
						failed = make(map[string]struct{})
					}
					failed[env.Key] = struct{}{}
				}
			}
		}
		if errs == nil {
			return nil
		}
		return &BatchError{Errs: errs}
	})
}

func deliverOne(ctx context.Context, deliver func(context.Context, wire.Envelope) error, env wire.Envelope) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = panics.New(v)
		}
	}()
	return deliver(ctx, env)
}
