package saga

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"slices"
	"time"

	"github.com/google/uuid"

	"github.com/gocqrs/cqrs/events/outbox"
	"github.com/gocqrs/cqrs/mediator"
)

// Default values of [Options].
const (
	DefaultLease                = 30 * time.Second
	DefaultCompensationAttempts = 5
	DefaultBackoffBase          = 200 * time.Millisecond
	DefaultBackoffMax           = 10 * time.Second
	DefaultBackoffJitter        = 0.5
	DefaultMaxRecoveryAttempts  = 5
	DefaultFinishTimeout        = 5 * time.Second
	DefaultRecoverInterval      = 10 * time.Second
)

// ErrInvalidOptions is matched by every problem New finds in [Options].
var ErrInvalidOptions = errors.New("saga: invalid options")

// Options configures an [Orchestrator]. The zero value of every field but
// Store means its default.
type Options struct {
	// Store keeps the sagas. Required.
	Store Store
	// Mediator is what steps built by [Send] send their requests through.
	Mediator *mediator.RequestMediator
	// Dispatcher dispatches the events plain actions return. Default: the
	// Mediator's, if it has a Dispatch method, else
	// [EventMediatorDispatcher] over Mediator.Events(); with no Mediator,
	// none (returned events are then reported as failing with
	// [ErrNoDispatcher]).
	Dispatcher Dispatcher
	// Transactor, when set, runs each invocation of an action or a
	// compensation, and the checkpoint that records it, in one transaction
	// (the Store must write in the transaction ctx carries: use the
	// Transactor of the store's database). The step's own writes, made with
	// the transaction in its ctx, and the outbox rows the mediator's
	// capture adds, then commit or roll back with the checkpoint.
	Transactor outbox.Transactor
	// Owner names this orchestrator in leases and logs (default "saga-"
	// and a random UUID). Orchestrators running at the same time should
	// have different owners.
	Owner string
	// Lease is how long a driver holds a saga without renewing (default
	// 30s). If the process dies, its sagas can be recovered once their
	// leases expire: this bounds how long a crash delays them.
	Lease time.Duration
	// RenewEvery is how often a driver renews its lease while it drives a
	// saga, long steps included (default Lease/3). It must be shorter than
	// Lease.
	RenewEvery time.Duration
	// CompensationAttempts is how many times a failing compensation is
	// tried before the saga is marked Failed (default 5).
	CompensationAttempts int
	// CompensationBackoff spaces those attempts: Base after the first
	// failure, doubling up to Max, shortened by a random fraction of up to
	// Jitter (default 200ms doubling to 10s, jitter 0.5).
	CompensationBackoff outbox.Backoff
	// MaxRecoveryAttempts is how many times recovery claims a saga without
	// it making progress before halting it for a human (default 5).
	MaxRecoveryAttempts int
	// FinishTimeout bounds the write that releases a saga when its driver
	// is interrupted; it runs even though the driver's context is done
	// (default 5s).
	FinishTimeout time.Duration
	// Clock tells the time (default [SystemClock]); give it the store's.
	Clock Clock
	// Sleep waits for d or until ctx is done, returning ctx's error then;
	// the orchestrator waits with it between compensation attempts and
	// between recovery passes (default: a timer).
	Sleep func(ctx context.Context, d time.Duration) error
	// Logger receives one line per step invocation and per saga outcome
	// (default slog.Default()).
	Logger *slog.Logger
	// Observer, when set, is told of every drive and invocation (for
	// tracing).
	Observer Observer
}

// Observer watches the orchestrator's work, for tracing: package
// mediator/otel can implement it with one span per drive and one per
// invocation. Its methods are called on the driving goroutine and must be
// safe for concurrent use.
type Observer interface {
	// StartSaga is called when a driver takes a saga (Execute, Stream, a
	// recovery, Resume). The context it returns is used for the whole
	// drive; end is called once, with the saga's status when the drive
	// stopped and the error the drive returned.
	StartSaga(ctx context.Context, d Drive) (_ context.Context, end func(status Status, err error))
	// StartStep is called before each invocation of an action, fallback
	// or compensation (each attempt). The context it returns is the one
	// the invocation and its checkpoint run with; end is called once with
	// the invocation's result.
	StartStep(ctx context.Context, inv Invocation) (_ context.Context, end func(StepResult))
}

// Drive describes a drive of a saga for an [Observer].
type Drive struct {
	SagaID uuid.UUID
	Saga   string
	// Status and Step are the saga's when the drive starts.
	Status Status
	Step   int
	// Owner is the driving orchestrator.
	Owner string
	// Recovered reports a drive started by recovery or Resume.
	Recovered bool
}

// StepResult is the result of one invocation of a step's action, fallback
// or compensation, once its checkpoint is written.
type StepResult struct {
	SagaID uuid.UUID
	Saga   string
	Step   string
	Index  int
	Phase  Phase
	// Fallback reports that the step's fallback ran (or its compensation).
	Fallback bool
	// Outcome is Succeeded, StepFailed or Interrupted. A compensation
	// attempt that failed and will be retried is not reported on its own;
	// the result of its last attempt counts them (Attempts) and Err joins
	// their errors.
	Outcome Outcome
	// Attempts counts the attempts (2 when a fallback ran).
	Attempts int
	// Err is the invocation's error, when it failed (or was interrupted).
	Err error
	// EventsErr is the failure to dispatch the events of an invocation
	// that succeeded; the step still counts as done.
	EventsErr error
	// Status is the saga's status after the invocation's checkpoint.
	Status Status
	// StartedAt and FinishedAt are the orchestrator's clock readings.
	StartedAt  time.Time
	FinishedAt time.Time
}

// Result is what [Execute] returns.
type Result[S any] struct {
	// ID is the saga's.
	ID uuid.UUID
	// Status is the saga's status when Execute returned: Completed,
	// Compensated or Failed, or Running or Compensating when the drive was
	// interrupted.
	Status Status
	// State is the saga's state as of its last checkpoint.
	State S
}

// Snapshot is a saga read back with [Load]: its record and its decoded
// state.
type Snapshot[S any] struct {
	Record Record
	State  S
}

// Orchestrator runs and recovers the sagas of the definitions it was built
// with. It is safe for concurrent use and immutable once built.
type Orchestrator struct {
	store         Store
	mediator      *mediator.RequestMediator
	dispatcher    Dispatcher
	tx            outbox.Transactor
	owner         string
	lease         time.Duration
	renewEvery    time.Duration
	compAttempts  int
	backoff       outbox.Backoff
	maxRecovery   int
	finishTimeout time.Duration
	clock         Clock
	sleep         func(context.Context, time.Duration) error
	log           *slog.Logger
	obs           Observer

	byName map[string]binding
	names  []string
}

// New builds an orchestrator for defs. It validates every definition and
// the options and reports every problem at once: each definition's
// Validate, duplicate saga names, a nil definition, a missing store,
// options out of range.
func New(opts Options, defs ...AnyDefinition) (*Orchestrator, error) {
	o := &Orchestrator{
		store:         opts.Store,
		mediator:      opts.Mediator,
		dispatcher:    opts.Dispatcher,
		tx:            opts.Transactor,
		owner:         opts.Owner,
		lease:         cmpOr(opts.Lease, DefaultLease),
		compAttempts:  cmpOr(opts.CompensationAttempts, DefaultCompensationAttempts),
		backoff:       opts.CompensationBackoff,
		maxRecovery:   cmpOr(opts.MaxRecoveryAttempts, DefaultMaxRecoveryAttempts),
		finishTimeout: cmpOr(opts.FinishTimeout, DefaultFinishTimeout),
		clock:         opts.Clock,
		sleep:         opts.Sleep,
		log:           opts.Logger,
		obs:           opts.Observer,
		byName:        make(map[string]binding, len(defs)),
	}
	o.renewEvery = cmpOr(opts.RenewEvery, o.lease/3)
	if o.backoff == (outbox.Backoff{}) {
		o.backoff = outbox.Backoff{Base: DefaultBackoffBase, Max: DefaultBackoffMax, Jitter: DefaultBackoffJitter}
	}
	if o.owner == "" {
		o.owner = "saga-" + uuid.NewString()
	}
	if o.clock == nil {
		o.clock = SystemClock()
	}
	if o.sleep == nil {
		o.sleep = sleep
	}
	if o.log == nil {
		o.log = slog.Default()
	}
	if o.dispatcher == nil && o.mediator != nil {
		if d, ok := any(o.mediator).(Dispatcher); ok {
			o.dispatcher = d
		} else {
			o.dispatcher = EventMediatorDispatcher(o.mediator.Events())
		}
	}

	errs := o.validate(opts)
	for i, def := range defs {
		if def == nil {
			errs = append(errs, fmt.Errorf("%w: definition %d is nil", ErrInvalidDefinition, i))
			continue
		}
		if err := def.Validate(); err != nil {
			errs = append(errs, err)
			continue
		}
		name := def.SagaName()
		if _, dup := o.byName[name]; dup {
			errs = append(errs, fmt.Errorf("%w: saga %q registered twice", ErrInvalidDefinition, name))
			continue
		}
		o.byName[name] = def.bind(o)
		o.names = append(o.names, name)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	slices.Sort(o.names)
	return o, nil
}

func cmpOr[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

func (o *Orchestrator) validate(opts Options) []error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrInvalidOptions}, args...)...))
	}
	if opts.Store == nil {
		bad("nil Store")
	}
	if o.lease < 0 {
		bad("negative Lease %v", o.lease)
	}
	if o.renewEvery < 0 || o.renewEvery >= o.lease {
		bad("RenewEvery (%v) must be positive and shorter than Lease (%v)", o.renewEvery, o.lease)
	}
	if o.compAttempts < 0 {
		bad("negative CompensationAttempts %d", o.compAttempts)
	}
	if o.maxRecovery < 0 {
		bad("negative MaxRecoveryAttempts %d", o.maxRecovery)
	}
	if o.finishTimeout < 0 {
		bad("negative FinishTimeout %v", o.finishTimeout)
	}
	b := o.backoff
	if b.Base <= 0 || b.Max < b.Base {
		bad("CompensationBackoff needs 0 < Base <= Max, got Base %v, Max %v", b.Base, b.Max)
	}
	if !(b.Jitter >= 0 && b.Jitter <= 1) { // NaN fails both comparisons
		bad("CompensationBackoff.Jitter must be in [0, 1], got %v", b.Jitter)
	}
	return errs
}

// sleep is the default Options.Sleep.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Owner returns the name the orchestrator leases sagas under.
func (o *Orchestrator) Owner() string { return o.owner }

// Store returns the orchestrator's store.
func (o *Orchestrator) Store() Store { return o.store }

// Names returns the names of the orchestrator's sagas, sorted.
func (o *Orchestrator) Names() []string { return slices.Clone(o.names) }

// Mermaid returns the sequence diagram of the saga named name ("" if there
// is none).
func (o *Orchestrator) Mermaid(name string) string {
	if b, ok := o.byName[name]; ok {
		return b.mermaid()
	}
	return ""
}

// StartOption changes how [Execute] and [Stream] start a saga.
type StartOption func(*start)

type start struct {
	id uuid.UUID
}

// startID returns the ID opts give, or uuid.Nil.
func startID(opts []StartOption) uuid.UUID {
	var st start
	for _, opt := range opts {
		if opt != nil {
			opt(&st)
		}
	}
	return st.id
}

// WithID gives the new saga the ID id instead of a new UUIDv7; starting a
// saga with the ID of an existing one fails with [ErrExists], which makes
// starting idempotent (derive the ID from the request that starts it). To
// drive an existing saga on, use [Orchestrator.Resume] or recovery.
func WithID(id uuid.UUID) StartOption {
	return func(s *start) { s.id = id }
}

// entryOf returns the binding of def, or an error matching
// [ErrNotRegistered].
func entryOf[S any](o *Orchestrator, def *Definition[S]) (*entry[S], error) {
	if o == nil {
		return nil, fmt.Errorf("%w: nil orchestrator", ErrNotRegistered)
	}
	if def != nil {
		if e, ok := o.byName[def.Name].(*entry[S]); ok && e.user == def {
			return e, nil
		}
	}
	return nil, fmt.Errorf("%w: %q (pass the *Definition given to New)", ErrNotRegistered, def.SagaName())
}

// Execute starts a new saga of def with the initial state and drives it to
// its end on the calling goroutine: every step in order, a checkpoint after
// each, and, if a step fails, the compensation of the completed steps in
// reverse order. The outcomes:
//
//   - every step succeeded: Status Completed and a nil error, or, when
//     some step's events could not be dispatched, an error joining one
//     *StepError per such step (the saga still completed);
//   - a step failed and every completed step was compensated: Status
//     Compensated and an *Error matching ErrCompensated;
//   - a compensation failed on every attempt: Status Failed and an *Error
//     matching ErrCompensationFailed, with every error;
//   - ctx was cancelled, the lease was lost or the store failed: Status
//     Running or Compensating and an error matching ErrInterrupted (and
//     ctx's error); the saga is left for recovery, nothing is compensated
//     because of the interruption;
//   - another driver took the saga over: an error matching ErrConflict;
//   - the saga could not be created: the store's error (ErrExists for an
//     ID given WithID that is taken) and a zero Status.
//
// Result.State is the state as of the last checkpoint.
func Execute[S any](ctx context.Context, o *Orchestrator, def *Definition[S], state S, opts ...StartOption) (Result[S], error) {
	e, err := entryOf(o, def)
	if err != nil {
		return Result[S]{State: state}, err
	}
	d, err := e.create(ctx, state, opts)
	if err != nil {
		return Result[S]{ID: d.rec.ID, State: state}, err
	}
	err = d.run(ctx)
	return Result[S]{ID: d.rec.ID, Status: d.rec.Status, State: d.state}, err
}

// Stream starts a new saga as [Execute] does and yields the result of each
// invocation as soon as its checkpoint is written and its events are
// dispatched: the forward steps, then, if one fails, its failure and the
// compensations. Every such pair has a nil error (a failed step is
// reported in StepResult.Err). If the saga does not complete, a last pair
// carries the error Execute would return, with the result of the
// invocation that was interrupted, or, for a saga that failed, only the
// saga's ID, name and status.
//
// The saga runs on the consumer's goroutine, one step per iteration.
// Stopping the loop early stops the saga where it is, as a cancellation
// does: it is left running (or compensating), its lease released, for
// recovery.
func Stream[S any](ctx context.Context, o *Orchestrator, def *Definition[S], state S, opts ...StartOption) iter.Seq2[StepResult, error] {
	return func(yield func(StepResult, error) bool) {
		e, err := entryOf(o, def)
		if err != nil {
			yield(StepResult{Saga: def.SagaName()}, err)
			return
		}
		d, err := e.create(ctx, state, opts)
		if err != nil {
			yield(StepResult{SagaID: d.rec.ID, Saga: e.def.Name}, err)
			return
		}
		d.emit = func(r StepResult) bool { return yield(r, nil) }
		if err := d.run(ctx); err != nil && !d.stopped && d.rec.Status != Completed {
			last := d.last
			if last.Outcome != Interrupted {
				last = StepResult{SagaID: d.rec.ID, Saga: e.def.Name}
			}
			last.Status = d.rec.Status
			yield(last, err)
		}
	}
}

// Load reads the saga id of def and decodes its state. It returns an error
// matching ErrNotFound for an unknown id, and ErrNotRegistered when the
// saga is not one of def.
func Load[S any](ctx context.Context, o *Orchestrator, def *Definition[S], id uuid.UUID) (Snapshot[S], error) {
	e, err := entryOf(o, def)
	if err != nil {
		return Snapshot[S]{}, err
	}
	rec, err := o.store.Load(ctx, id)
	if err != nil {
		return Snapshot[S]{}, err
	}
	if rec.Name != e.def.Name {
		return Snapshot[S]{Record: rec}, fmt.Errorf("%w: saga %s is a %q, not a %q", ErrNotRegistered, id, rec.Name, e.def.Name)
	}
	var s S
	if err := e.def.Codec.Unmarshal(rec.State, &s); err != nil {
		return Snapshot[S]{Record: rec}, fmt.Errorf("saga: decode state of %s: %w", id, err)
	}
	return Snapshot[S]{Record: rec, State: s}, nil
}

// History returns the step log of the saga id, oldest first.
func (o *Orchestrator) History(ctx context.Context, id uuid.UUID) ([]Entry, error) {
	return o.store.Log(ctx, id)
}

// Resume drives the saga id on, on the calling goroutine, as an operator
// would after fixing what stopped it:
//
//   - Failed: its compensation is retried from the step that failed, with
//     a fresh set of attempts;
//   - Halted: it goes back to running (or compensating, if it was halted
//     while compensating) with its recovery attempts reset;
//   - Running or Compensating and not leased by a live driver: it is
//     driven on, as recovery would (without counting an attempt).
//
// It returns what Execute returns for the rest of the drive: nil once the
// saga completed, an *Error otherwise. It returns an error matching
// ErrNotResumable for a saga that completed or was compensated,
// ErrLeased for one a live driver holds, ErrNotFound, or ErrNotRegistered
// for a saga of a definition the orchestrator does not have.
func (o *Orchestrator) Resume(ctx context.Context, id uuid.UUID) error {
	rec, err := o.store.Load(ctx, id)
	if err != nil {
		return err
	}
	b, ok := o.byName[rec.Name]
	if !ok {
		return fmt.Errorf("%w: saga %s is a %q", ErrNotRegistered, id, rec.Name)
	}
	status := rec.Status
	switch rec.Status {
	case Completed, Compensated:
		return fmt.Errorf("%w: saga %s is %v", ErrNotResumable, id, rec.Status)
	case Failed:
		status = Compensating
	case Halted:
		log, err := o.store.Log(ctx, id)
		if err != nil {
			return err
		}
		status = Running
		for _, e := range slices.Backward(log) {
			if e.Outcome == HaltedOutcome {
				if e.Phase == Compensation {
					status = Compensating
				}
				break
			}
		}
	default:
		if rec.LeaseOwner != "" && rec.LeaseUntil.After(o.clock.Now()) {
			return fmt.Errorf("%w: saga %s is held by %q until %v", ErrLeased, id, rec.LeaseOwner, rec.LeaseUntil)
		}
	}
	cp := Checkpoint{ID: id, Version: rec.Version, Status: status, Step: rec.Step, State: rec.State, Owner: o.owner, Lease: o.lease}
	if err := o.store.Save(ctx, cp); err != nil {
		return err
	}
	rec.Version++
	rec.Status, rec.Attempts, rec.LeaseOwner = status, 0, o.owner
	return b.drive(ctx, rec)
}
