package outbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/gocqrs/cqrs/events/wire"
	"github.com/gocqrs/cqrs/internal/panics"
)

// maxRetryTimers bounds how many retry times a relay remembers to wake up
// for; later ones are found by polling.
const maxRetryTimers = 1024

// maxCleanupRounds bounds the DeleteSent calls of one cleanup, so that a
// large backlog of sent rows does not hold up sending: the cleanup goes on
// after the next batch.
const maxCleanupRounds = 10

// Relay moves committed rows from a [Store] to a [Sender]: it claims
// batches, sends them, and marks each row sent, failed (to be retried
// later, or dead) or released. See the package documentation for the
// guarantees. Create it with [NewRelay]; it is safe for concurrent use.
type Relay struct {
	store    Store
	sender   Sender
	notifier Notifier
	cfg      RelayConfig
	clock    Clock
	log      *slog.Logger

	running atomic.Bool
	c       struct {
		batches, sent, failed, dead, released, leaseLost, storeErrors atomic.Uint64
		wakeSignal, wakePoll, wakeRetry                               atomic.Uint64
	}
}

// RelayCounters counts what a relay did since it was created.
type RelayCounters struct {
	// Batches counts claims that returned rows.
	Batches uint64
	// Sent counts rows marked sent.
	Sent uint64
	// Failed counts failures recorded for a later retry.
	Failed uint64
	// Dead counts rows moved to Dead.
	Dead uint64
	// Released counts rows given back unsent: held back behind a failed
	// row of their key, or in flight when the relay stopped.
	Released uint64
	// LeaseLost counts rows whose mark was refused because another owner
	// had claimed them after this relay's lease expired (they may have
	// been sent twice).
	LeaseLost uint64
	// StoreErrors counts failed store calls.
	StoreErrors uint64
	// WakeSignal, WakePoll and WakeRetry count how an idle relay was
	// woken: by its [Notifier], by the poll interval, or because a failed
	// row it recorded became due.
	WakeSignal, WakePoll, WakeRetry uint64
}

// RelayStats is a relay's state: its counters and the store's stats.
type RelayStats struct {
	// Owner is the relay's owner name.
	Owner string
	// Running reports whether Run is executing.
	Running bool
	// Counters are the relay's counters.
	Counters RelayCounters
	// Store are the store's stats (shared by every relay of the store).
	Store Stats
}

// NewRelay returns a relay that moves store's rows to sender. It reports
// every problem with its arguments at once, each matching
// [ErrInvalidConfig]. Zero Clock, Logger, Notifier and Owner take their
// defaults (see [RelayConfig]).
func NewRelay(store Store, sender Sender, cfg RelayConfig) (*Relay, error) {
	var errs []error
	if store == nil {
		errs = append(errs, fmt.Errorf("%w: nil Store", ErrInvalidConfig))
	}
	if sender == nil {
		errs = append(errs, fmt.Errorf("%w: nil Sender", ErrInvalidConfig))
	}
	if err := cfg.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.Owner == "" {
		cfg.Owner = "relay-" + uuid.NewString()
	}
	if cfg.Clock == nil {
		cfg.Clock = SystemClock()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Notifier == nil {
		cfg.Notifier, _ = store.(Notifier)
	}
	return &Relay{
		store:    store,
		sender:   sender,
		notifier: cfg.Notifier,
		cfg:      cfg,
		clock:    cfg.Clock,
		log:      cfg.Logger.With("outbox_relay", cfg.Owner),
	}, nil
}

// Owner returns the relay's owner name.
func (r *Relay) Owner() string { return r.cfg.Owner }

// Counters returns the relay's counters.
func (r *Relay) Counters() RelayCounters {
	return RelayCounters{
		Batches:     r.c.batches.Load(),
		Sent:        r.c.sent.Load(),
		Failed:      r.c.failed.Load(),
		Dead:        r.c.dead.Load(),
		Released:    r.c.released.Load(),
		LeaseLost:   r.c.leaseLost.Load(),
		StoreErrors: r.c.storeErrors.Load(),
		WakeSignal:  r.c.wakeSignal.Load(),
		WakePoll:    r.c.wakePoll.Load(),
		WakeRetry:   r.c.wakeRetry.Load(),
	}
}

// Stats returns the relay's counters and the store's stats; the error is
// the store's.
func (r *Relay) Stats(ctx context.Context) (RelayStats, error) {
	st, err := r.store.Stats(ctx)
	return RelayStats{Owner: r.cfg.Owner, Running: r.running.Load(), Counters: r.Counters(), Store: st}, err
}

// Run relays rows until ctx is done, then returns nil. It returns
// [ErrRelayRunning] at once if the relay is already running; it may be run
// again after it returned.
//
// Store and sender failures do not stop Run: they are logged, counted and
// retried with backoff. When ctx is done, the batch in flight is finished:
// Send sees ctx done and should return promptly; the rows it acknowledged
// are marked sent, the others released (no attempt is counted for a
// failure caused by the cancellation), with a context that is not
// cancelled and is bounded by FinishTimeout. Run starts at most one
// goroutine (to watch the [Notifier]) and waits for it before returning.
func (r *Relay) Run(ctx context.Context) error {
	if !r.running.CompareAndSwap(false, true) {
		return ErrRelayRunning
	}
	defer r.running.Store(false)

	wake := make(chan struct{}, 1)
	watchCtx, stopWatch := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer stopWatch()
	if r.notifier != nil {
		wg.Go(func() { r.watch(watchCtx, wake) })
	}

	r.log.InfoContext(ctx, "outbox relay started", "batch_size", r.cfg.BatchSize, "lease", r.cfg.Lease, "notifier", r.notifier != nil)
	var (
		storeErrs   int
		retries     []time.Time
		nextCleanup = r.clock.Now()
	)
	for ctx.Err() == nil {
		if r.cfg.RetainSent > 0 && !r.clock.Now().Before(nextCleanup) {
			nextCleanup = r.clock.Now().Add(r.cfg.CleanupInterval)
			if more := r.cleanup(ctx); more {
				nextCleanup = r.clock.Now() // go on after the next batch
			}
		}
		claimedAt := r.clock.Now()
		n, err := r.step(ctx, &retries)
		switch {
		case err != nil:
			if ctx.Err() != nil {
				continue
			}
			storeErrs++
			r.pause(ctx, min(r.cfg.Backoff.Delay(storeErrs), max(r.cfg.PollInterval, r.cfg.Backoff.Base)))
		case n > 0:
			storeErrs = 0
		default:
			storeErrs = 0
			r.idle(ctx, wake, &retries, claimedAt, nextCleanup)
		}
	}
	r.log.InfoContext(ctx, "outbox relay stopped", "sent", r.c.sent.Load())
	return nil
}

// watch runs the notifier until ctx is done, restarting it with backoff if
// it fails.
func (r *Relay) watch(ctx context.Context, wake chan<- struct{}) {
	signal := func() {
		select {
		case wake <- struct{}{}:
		default:
		}
	}
	for failures := 1; ; failures++ {
		err := r.notifier.Watch(ctx, signal)
		if ctx.Err() != nil {
			return
		}
		r.log.WarnContext(ctx, "outbox notifier stopped; polling until it is back", "error", err)
		if !r.pause(ctx, r.cfg.Backoff.Delay(failures)) {
			return
		}
	}
}

// pause waits for d or until ctx is done; it reports whether ctx is still
// live.
func (r *Relay) pause(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// idle waits for a wake signal, the poll interval, the next retry this
// relay scheduled, or the next cleanup, whichever comes first. Retries due
// when the last claim began were seen by that claim and are forgotten;
// retries that fell due since end the wait at once.
func (r *Relay) idle(ctx context.Context, wake <-chan struct{}, retries *[]time.Time, claimedAt, nextCleanup time.Time) {
	now := r.clock.Now()
	*retries = slices.DeleteFunc(*retries, func(t time.Time) bool { return !t.After(claimedAt) })
	deadline, counter := now.Add(r.cfg.PollInterval), &r.c.wakePoll
	if len(*retries) > 0 {
		if first := slices.MinFunc(*retries, time.Time.Compare); first.Before(deadline) {
			deadline, counter = first, &r.c.wakeRetry
		}
	}
	if r.cfg.RetainSent > 0 && nextCleanup.Before(deadline) {
		deadline, counter = nextCleanup, nil
	}
	t := time.NewTimer(max(deadline.Sub(now), 0))
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-wake:
		r.c.wakeSignal.Add(1)
	case <-t.C:
		if counter != nil {
			counter.Add(1)
		}
	}
}

// step claims one batch and relays it; it returns the number of rows
// claimed.
func (r *Relay) step(ctx context.Context, retries *[]time.Time) (int, error) {
	rows, err := r.store.Claim(ctx, r.cfg.Owner, r.cfg.BatchSize, r.cfg.Lease)
	if err != nil {
		if ctx.Err() == nil {
			r.c.storeErrors.Add(1)
			r.log.ErrorContext(ctx, "outbox claim failed", "error", err)
		}
		return 0, err
	}
	if len(rows) == 0 {
		return 0, nil
	}
	r.c.batches.Add(1)
	r.process(ctx, rows, retries)
	return len(rows), nil
}

// process sends a claimed batch and records the outcome of every row.
func (r *Relay) process(ctx context.Context, rows []Row, retries *[]time.Time) {
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.cfg.FinishTimeout)
	defer cancel()
	if ctx.Err() != nil {
		ids := make([]uuid.UUID, len(rows))
		for i := range rows {
			ids[i] = rows[i].Envelope.ID
		}
		r.release(fctx, ids)
		return
	}
	envs := make([]wire.Envelope, len(rows))
	for i := range rows {
		envs[i] = rows[i].Envelope
	}
	r.log.DebugContext(ctx, "outbox sending batch", "rows", len(rows), "first_seq", rows[0].Seq)
	errs := r.send(ctx, envs)
	stopping := ctx.Err() != nil

	var (
		sent, release []uuid.UUID
		failures      []Failure
		heldKeys      map[string]struct{}
	)
	for i := range rows {
		row, err := &rows[i], errs[i]
		id, key := row.Envelope.ID, row.Envelope.Key
		if _, held := heldKeys[key]; held && key != "" {
			if err == nil {
				// The sender broke its contract; the record was delivered,
				// so it is marked sent rather than delivered again.
				r.log.WarnContext(ctx, "outbox sender delivered a record after an earlier record of its key failed",
					"event_id", id, "key", key)
				sent = append(sent, id)
			} else {
				release = append(release, id)
			}
			continue
		}
		if err == nil {
			sent = append(sent, id)
			continue
		}
		if key != "" {
			if heldKeys == nil {
				heldKeys = make(map[string]struct{})
			}
			heldKeys[key] = struct{}{}
		}
		if stopping && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
			release = append(release, id)
			continue
		}
		attempts := row.Attempts + 1
		f := Failure{ID: id, Error: truncate(err.Error()), Dead: attempts >= r.cfg.MaxAttempts || errors.Is(err, ErrPermanent)}
		attrs := []any{"event_id", id, "name", row.Envelope.Name, "key", key, "attempts", attempts, "error", err}
		if f.Dead {
			r.log.ErrorContext(ctx, "outbox row is dead; its key is held until it is requeued or deleted", attrs...)
		} else {
			f.Delay = r.cfg.Backoff.Delay(attempts)
			r.log.WarnContext(ctx, "outbox send failed; will retry", append(attrs, "retry_in", f.Delay)...)
		}
		failures = append(failures, f)
	}
	r.markSent(fctx, sent)
	applied := r.markFailed(fctx, failures)
	r.release(fctx, release)

	// Wake up when the rows become due again. The store set their
	// NextAttemptAt from its clock during MarkFailed, so a time read after
	// it returned is not earlier.
	now := r.clock.Now()
	for _, f := range applied {
		if !f.Dead && len(*retries) < maxRetryTimers {
			*retries = append(*retries, now.Add(f.Delay))
		}
	}
}

// send calls the sender and returns one error per record.
func (r *Relay) send(ctx context.Context, envs []wire.Envelope) []error {
	sctx, cancel := context.WithTimeout(ctx, r.cfg.SendTimeout)
	defer cancel()
	errs := make([]error, len(envs))
	err := r.safeSend(sctx, envs)
	if err == nil {
		return errs
	}
	if be, ok := errors.AsType[*BatchError](err); ok {
		if len(be.Errs) == len(envs) {
			copy(errs, be.Errs)
			return errs
		}
		err = fmt.Errorf("outbox: sender returned %d results for %d records: %w", len(be.Errs), len(envs), err)
		r.log.ErrorContext(ctx, "outbox sender broke its contract; the whole batch counts as failed", "error", err)
	}
	for i := range errs {
		errs[i] = err
	}
	return errs
}

func (r *Relay) safeSend(ctx context.Context, envs []wire.Envelope) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("outbox: sender panicked: %w", panics.New(v))
		}
	}()
	return r.sender.Send(ctx, envs)
}

// notApplied interprets the error of a mark or release of ids: it returns
// the rows it did not apply to (nil when it applied to all), counting and
// logging them.
func (r *Relay) notApplied(ctx context.Context, op string, ids []uuid.UUID, err error) map[uuid.UUID]struct{} {
	if err == nil {
		return nil
	}
	lost := make(map[uuid.UUID]struct{})
	if le, ok := errors.AsType[*LeaseError](err); ok {
		for _, id := range le.IDs {
			lost[id] = struct{}{}
		}
		r.c.leaseLost.Add(uint64(len(le.IDs)))
		r.log.WarnContext(ctx, "outbox lease lost: another relay took these rows over; they may be sent twice",
			"op", op, "rows", len(le.IDs), "error", err)
		return lost
	}
	for _, id := range ids {
		lost[id] = struct{}{}
	}
	r.c.storeErrors.Add(1)
	r.log.ErrorContext(ctx, "outbox store failed; the rows will be claimed again when their lease expires",
		"op", op, "rows", len(ids), "error", err)
	return lost
}

func (r *Relay) markSent(ctx context.Context, ids []uuid.UUID) {
	if len(ids) == 0 {
		return
	}
	lost := r.notApplied(ctx, "mark sent", ids, r.store.MarkSent(ctx, r.cfg.Owner, ids...))
	r.c.sent.Add(uint64(len(ids) - len(lost)))
}

// markFailed records failures and returns those the store applied.
func (r *Relay) markFailed(ctx context.Context, failures []Failure) []Failure {
	if len(failures) == 0 {
		return nil
	}
	ids := make([]uuid.UUID, len(failures))
	for i, f := range failures {
		ids[i] = f.ID
	}
	lost := r.notApplied(ctx, "mark failed", ids, r.store.MarkFailed(ctx, r.cfg.Owner, failures...))
	applied := failures[:0]
	for _, f := range failures {
		if _, l := lost[f.ID]; l {
			continue
		}
		if f.Dead {
			r.c.dead.Add(1)
		} else {
			r.c.failed.Add(1)
		}
		applied = append(applied, f)
	}
	return applied
}

func (r *Relay) release(ctx context.Context, ids []uuid.UUID) {
	if len(ids) == 0 {
		return
	}
	lost := r.notApplied(ctx, "release", ids, r.store.Release(ctx, r.cfg.Owner, ids...))
	r.c.released.Add(uint64(len(ids) - len(lost)))
}

// cleanup deletes sent rows older than RetainSent; it reports whether more
// may be left.
func (r *Relay) cleanup(ctx context.Context) (more bool) {
	before := r.clock.Now().Add(-r.cfg.RetainSent)
	var total int64
	defer func() {
		if total > 0 {
			r.log.DebugContext(ctx, "outbox deleted sent rows", "rows", total, "before", before)
		}
	}()
	for range maxCleanupRounds {
		n, err := r.store.DeleteSent(ctx, before, r.cfg.CleanupBatch)
		total += n
		if err != nil {
			if ctx.Err() == nil {
				r.c.storeErrors.Add(1)
				r.log.ErrorContext(ctx, "outbox retention cleanup failed", "error", err)
			}
			return false
		}
		if n < int64(r.cfg.CleanupBatch) {
			return false
		}
	}
	return true
}

// truncate bounds an error text to MaxErrorLen bytes of valid UTF-8.
func truncate(s string) string {
	if len(s) <= MaxErrorLen {
		return s
	}
	return strings.ToValidUTF8(s[:MaxErrorLen], "")
}
