package saga

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"
)

// renewer renews a driver's lease every RenewEvery while it drives a saga.
// It starts no goroutine of its own: a timer calls fire, which re-arms it.
// stop waits for a renewal in flight, so none outlives the drive.
type renewer struct {
	o      *Orchestrator
	id     uuid.UUID
	ctx    context.Context
	cancel context.CancelCauseFunc

	mu      sync.Mutex
	stopped bool
	t       *time.Timer
	wg      sync.WaitGroup // one per scheduled or running fire
}

func (o *Orchestrator) startRenewer(ctx context.Context, id uuid.UUID, cancel context.CancelCauseFunc) *renewer {
	r := &renewer{o: o, id: id, ctx: ctx, cancel: cancel}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.wg.Add(1)
	r.t = time.AfterFunc(o.renewEvery, r.fire)
	return r
}

func (r *renewer) fire() {
	defer r.wg.Done()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return
	}
	err := r.o.store.Renew(r.ctx, r.id, r.o.owner, r.o.lease)
	switch {
	case err == nil:
	case errors.Is(err, ErrLeaseLost) || errors.Is(err, ErrNotFound):
		// Someone else holds the saga now: stop the drive.
		r.cancel(fmt.Errorf("saga %s: renew: %w", r.id, err))
		return
	case r.ctx.Err() != nil:
		return
	default:
		r.o.log.WarnContext(r.ctx, "saga lease renewal failed; retrying", "saga_id", r.id, "owner", r.o.owner, "error", err)
	}
	r.wg.Add(1)
	r.t.Reset(r.o.renewEvery)
}

// stop stops renewing and waits for a renewal in flight.
func (r *renewer) stop() {
	r.mu.Lock()
	r.stopped = true
	if r.t.Stop() {
		r.wg.Done() // the scheduled fire will not run
	}
	r.mu.Unlock()
	r.wg.Wait()
}
