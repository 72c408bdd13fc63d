package saga

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"
)

// Recover finds the sagas that need a driver, those running or
// compensating whose lease was released or has expired (their driver
// stopped or died), and drives each to its end, one at a time, on the
// calling goroutine. It claims them one by one under a lease in this
// orchestrator's name (Store.Claim), so two recoverers, in this process
// or another, never drive the same saga, and a saga whose driver is alive
// and renewing is never taken. Only the sagas of this orchestrator's
// definitions are claimed.
//
// A recovered saga goes on from its last checkpoint: the step that was
// running when its driver stopped runs again, with the same idempotency
// key (Invocation.Resumed is set); a compensating saga goes on
// compensating. A saga claimed more than MaxRecoveryAttempts times without
// making progress is marked Halted, for a human, with its history.
//
// Recover returns the number of sagas it claimed. How each ended (completed,
// compensated, failed, halted) is in the store, the logs and the observer,
// not in the error, which reports what stopped the pass: ctx done, a
// store failure, or a drive interrupted (the pass stops there, so that a
// failing store does not burn every saga's attempts; the next pass goes
// on).
func (o *Orchestrator) Recover(ctx context.Context) (int, error) {
	if len(o.names) == 0 {
		return 0, nil
	}
	n := 0
	for {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		recs, err := o.store.Claim(ctx, o.owner, o.names, 1, o.lease)
		if err != nil {
			return n, fmt.Errorf("saga: claim: %w", err)
		}
		if len(recs) == 0 {
			return n, nil
		}
		for _, rec := range recs {
			n++
			if err := o.recoverOne(ctx, rec); errors.Is(err, ErrInterrupted) || (err != nil && !isOutcome(err)) {
				return n, err
			}
		}
	}
}

// isOutcome reports whether err, returned by a drive, is how the saga
// ended (or that another driver has it) rather than a failure to drive.
func isOutcome(err error) bool {
	var se *Error
	var ste *StepError
	return errors.As(err, &se) || errors.Is(err, ErrConflict) || errors.As(err, &ste)
}

func (o *Orchestrator) recoverOne(ctx context.Context, rec Record) error {
	b, ok := o.byName[rec.Name]
	if !ok {
		// The store returned a saga of a name we did not ask for.
		return fmt.Errorf("saga: claimed saga %s of unknown definition %q", rec.ID, rec.Name)
	}
	o.log.InfoContext(ctx, "saga claimed for recovery",
		"saga", rec.Name, "saga_id", rec.ID.String(), "status", rec.Status.String(), "step", rec.Step,
		"attempt", rec.Attempts, "owner", o.owner)
	if rec.Attempts > o.maxRecovery {
		return b.halt(ctx, rec, fmt.Errorf("%w: claimed %d times without progress (limit %d)", ErrAttemptsExhausted, rec.Attempts, o.maxRecovery))
	}
	return b.drive(ctx, rec)
}

// ErrRecovererRunning is returned by [Recoverer.Run] when it is already
// running.
var ErrRecovererRunning = errors.New("saga: recoverer already running")

// Recoverer runs [Orchestrator.Recover] in the background, every
// interval.
type Recoverer struct {
	o        *Orchestrator
	interval time.Duration
	running  atomic.Bool
}

// NewRecoverer returns a recoverer that runs o.Recover every interval
// (default DefaultRecoverInterval when interval is not positive). Run
// several, in several processes, for availability: leases keep them from
// driving the same saga.
func NewRecoverer(o *Orchestrator, interval time.Duration) *Recoverer {
	if interval <= 0 {
		interval = DefaultRecoverInterval
	}
	return &Recoverer{o: o, interval: interval}
}

// Run recovers sagas until ctx is done, then returns nil: a pass at once,
// then one every interval (waiting with Options.Sleep). Failures are
// logged and retried at the next pass. Run starts no goroutine; a saga
// being driven when ctx is done is interrupted, and left for recovery. It
// returns ErrRecovererRunning if the recoverer is already running.
func (r *Recoverer) Run(ctx context.Context) error {
	if !r.running.CompareAndSwap(false, true) {
		return ErrRecovererRunning
	}
	defer r.running.Store(false)
	r.o.log.InfoContext(ctx, "saga recoverer started", "owner", r.o.owner, "interval", r.interval)
	for ctx.Err() == nil {
		n, err := r.o.Recover(ctx)
		switch {
		case ctx.Err() != nil:
		case err != nil:
			r.o.log.ErrorContext(ctx, "saga recovery pass failed", "owner", r.o.owner, "recovered", n, "error", err)
		case n > 0:
			r.o.log.InfoContext(ctx, "saga recovery pass", "owner", r.o.owner, "recovered", n)
		}
		if ctx.Err() != nil || r.o.sleep(ctx, r.interval) != nil {
			break
		}
	}
	r.o.log.InfoContext(ctx, "saga recoverer stopped", "owner", r.o.owner)
	return nil
}
