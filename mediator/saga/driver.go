package saga

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/internal/panics"
	"github.com/gocqrs/cqrs/internal/registry"
	"github.com/gocqrs/cqrs/mediator"
)

// binding is a registered definition, its state type erased, as recovery
// and Resume need it.
type binding interface {
	mermaid() string
	// drive drives rec, which the orchestrator has just claimed or
	// reopened: rec.Version is current and the orchestrator holds the
	// lease.
	drive(ctx context.Context, rec Record) error
	// halt marks rec, claimed, Halted for reason.
	halt(ctx context.Context, rec Record, reason error) error
}

// entry is a definition registered with an orchestrator.
type entry[S any] struct {
	o        *Orchestrator
	user     *Definition[S] // the pointer given to New, for lookups
	def      *Definition[S] // the frozen copy that runs
	circuits []string
}

func (d *Definition[S]) bind(o *Orchestrator) binding {
	f := d.frozen()
	e := &entry[S]{o: o, user: d, def: f, circuits: make([]string, len(f.Steps))}
	for i := range f.Steps {
		if f.Steps[i].Fallback != nil {
			e.circuits[i] = circuit(f, i)
		}
	}
	return e
}

func (e *entry[S]) mermaid() string { return e.def.Mermaid() }

// driver drives one saga on one goroutine.
type driver[S any] struct {
	e     *entry[S]
	o     *Orchestrator
	rec   Record // as of the last write; State is the last checkpoint's
	state S      // the working state

	branches  []bool // per step: its fallback ran (forward succeeded by it)
	branchBuf [8]bool

	// recovered marks a drive that took over a saga; the invocation at
	// resumeIdx/resumePhase may have run before.
	recovered   bool
	resumeIdx   int
	resumePhase Phase

	errs       []*StepError
	failedStep string
	eventErrs  []error

	emit    func(StepResult) bool
	stopped bool       // the stream's consumer stopped
	last    StepResult // the last result reported, or the interruption

	cur      call[S]    // the invocation in progress
	out      outcome    // its outcome
	pending  Checkpoint // written, not yet committed
	logBuf   [1]Entry   // reused by every checkpoint
	halting  error      // the reason of a halt
	started  time.Time  // when the invocation in progress started
	finished time.Time  // and finished (zero until read)
	obsEnd   func(StepResult)
}

// call is what invoke passes to body.
type call[S any] struct {
	inv     Invocation
	act     Action[S]
	fb      *Fallback[S]
	prior   []error
	next    target
	timeout time.Duration
}

// target is where a successful invocation moves the saga.
type target struct {
	status Status
	step   int
}

// outcome is the result of invoke.
type outcome struct {
	evs         []events.Event
	actErr      error // the action failed (not a dispatch error)
	evErr       error // the action's *mediator.DispatchError
	useFallback bool
	saveErr     error // the checkpoint or the commit failed
	ctx         context.Context
}

func (e *entry[S]) newDriver() *driver[S] {
	d := &driver[S]{e: e, o: e.o, resumeIdx: -1}
	if n := len(e.def.Steps); n <= len(d.branchBuf) {
		d.branches = d.branchBuf[:n]
	} else {
		d.branches = make([]bool, n)
	}
	return d
}

// create starts a new saga with state.
func (e *entry[S]) create(ctx context.Context, state S, opts []StartOption) (*driver[S], error) {
	d := e.newDriver()
	if ctx == nil {
		return d, mediator.ErrNilContext
	}
	var id uuid.UUID
	if len(opts) > 0 {
		id = startID(opts)
	}
	if id == uuid.Nil {
		var err error
		if id, err = uuid.NewV7(); err != nil {
			return d, fmt.Errorf("saga %s: new ID: %w", e.def.Name, err)
		}
	}
	d.rec.ID = id
	d.state = state
	enc, err := e.def.Codec.Marshal(&d.state)
	if err != nil {
		return d, fmt.Errorf("saga %s %s: encode initial state: %w", e.def.Name, id, err)
	}
	d.rec = Record{ID: id, Name: e.def.Name, Status: Running, State: enc, LeaseOwner: e.o.owner}
	if err := e.o.store.Create(ctx, d.rec, e.o.lease); err != nil {
		return d, fmt.Errorf("saga %s %s: create: %w", e.def.Name, id, err)
	}
	d.rec.Version = 1
	return d, nil
}

func (e *entry[S]) drive(ctx context.Context, rec Record) error {
	d := e.newDriver()
	d.rec, d.recovered = rec, true
	if err := e.def.Codec.Unmarshal(rec.State, &d.state); err != nil {
		return e.halt(ctx, rec, fmt.Errorf("decode state: %w", err))
	}
	if n := len(e.def.Steps); rec.Step > n || (rec.Status == Running && rec.Step == n) {
		return e.halt(ctx, rec, fmt.Errorf("the saga's cursor (%d) does not fit the definition, which has %d steps", rec.Step, n))
	}
	if err := d.loadHistory(ctx); err != nil {
		d.release(ctx, nil, err)
		return fmt.Errorf("saga %s %s: read step log: %w: %w", e.def.Name, rec.ID, ErrInterrupted, err)
	}
	if rec.Status == Running {
		d.resumeIdx, d.resumePhase = rec.Step, Forward
	} else {
		d.resumeIdx, d.resumePhase = d.prevCompensable(rec.Step), Compensation
	}
	return d.run(ctx)
}

func (e *entry[S]) halt(ctx context.Context, rec Record, reason error) error {
	d := e.newDriver()
	d.rec = rec
	// The history only enriches the report: the halt is written anyway.
	_ = d.loadHistory(ctx)
	idx, phase := rec.Step, Forward
	if rec.Status == Compensating {
		idx, phase = rec.Step-1, Compensation
	}
	name := ""
	if idx >= 0 && idx < len(e.def.Steps) {
		name = e.def.Steps[idx].Name
	}
	now := e.o.clock.Now()
	d.logBuf[0] = Entry{
		Step: name, Index: max(idx, 0), Phase: phase, Outcome: HaltedOutcome, Attempts: rec.Attempts,
		Errors: []string{reason.Error()}, Owner: e.o.owner, StartedAt: now, FinishedAt: now,
	}
	cp := Checkpoint{ID: rec.ID, Version: rec.Version, Status: Halted, Step: rec.Step, State: rec.State, Attempts: rec.Attempts, Log: d.logBuf[:1]}
	if err := e.o.store.Save(ctx, cp); err != nil {
		return fmt.Errorf("saga %s %s: halt: %w", e.def.Name, rec.ID, err)
	}
	d.pending = cp
	d.commit()
	d.halting = reason
	if phase == Compensation {
		d.rec.Status = Compensating // for the pending steps of the report
	}
	err := d.finalError(Halted)
	d.rec.Status = Halted
	e.o.logEnd(ctx, d.rec, err)
	return err
}

// loadHistory reads the step log of a saga taken over: which branch each
// completed step took, and the errors recorded so far.
func (d *driver[S]) loadHistory(ctx context.Context) error {
	log, err := d.o.store.Log(ctx, d.rec.ID)
	if err != nil {
		return err
	}
	n := len(d.e.def.Steps)
	for _, en := range log {
		if en.Index < 0 || en.Index >= n {
			continue
		}
		switch {
		case en.Phase == Forward && en.Outcome == Succeeded:
			d.branches[en.Index] = en.Fallback
		case en.Phase == Forward && en.Outcome == StepFailed:
			d.failedStep = en.Step
			for k, msg := range en.Errors {
				d.errs = append(d.errs, &StepError{Step: en.Step, Index: en.Index, Phase: Forward, Fallback: en.Fallback && k > 0, Attempt: 1, Err: errors.New(msg)})
			}
		case en.Phase == Compensation && (en.Outcome == Succeeded || en.Outcome == StepFailed):
			for k, msg := range en.Errors {
				d.errs = append(d.errs, &StepError{Step: en.Step, Index: en.Index, Phase: Compensation, Fallback: en.Fallback, Attempt: k + 1, Err: errors.New(msg)})
			}
		}
	}
	return nil
}

// run drives the saga from where rec says until it ends or is
// interrupted.
func (d *driver[S]) run(ctx context.Context) (err error) {
	o := d.o
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if o.obs != nil {
		var end func(Status, error)
		ctx, end = o.obs.StartSaga(ctx, Drive{SagaID: d.rec.ID, Saga: d.e.def.Name, Status: d.rec.Status, Step: d.rec.Step, Owner: o.owner, Recovered: d.recovered})
		defer func() { end(d.rec.Status, err) }()
	}
	ren := o.startRenewer(ctx, d.rec.ID, cancel)
	defer ren.stop()

	if d.rec.Status == Running {
		err = d.forward(ctx)
	}
	if err == nil && d.rec.Status == Compensating {
		err = d.compensate(ctx)
	}
	if err != nil {
		return err
	}
	err = d.finalError(d.rec.Status)
	o.logEnd(ctx, d.rec, err)
	return err
}

func (d *driver[S]) forward(ctx context.Context) error {
	for i := d.rec.Step; i < len(d.e.def.Steps) && d.rec.Status == Running; i++ {
		if ctx.Err() != nil {
			return d.interrupt(ctx, nil, interruptCause(ctx))
		}
		if err := d.forwardStep(ctx, i); err != nil {
			return err
		}
		if d.stopped && d.rec.Status.Active() {
			return d.interrupt(ctx, nil, errStopped)
		}
	}
	return nil
}

var errStopped = errors.New("saga: the stream's consumer stopped")

// forwardStep runs step i (and its fallback), and writes its checkpoint:
// the next step, or, if it failed, the start of the compensation.
func (d *driver[S]) forwardStep(ctx context.Context, i int) error {
	s := &d.e.def.Steps[i]
	next := target{status: Running, step: i + 1}
	if i == len(d.e.def.Steps)-1 {
		next.status = Completed
	}
	d.begin()
	inv := d.invocation(i, Forward, false, 1)
	out := d.invoke(ctx, inv, s.Action, s.Fallback, s.Timeout, nil, next)
	var errs []error
	if out.actErr != nil && out.saveErr == nil {
		if ctx.Err() != nil {
			return d.interrupt(ctx, &inv, interruptCause(ctx))
		}
		errs = append(errs, out.actErr)
		if out.useFallback {
			d.endStep(d.result(inv, StepFailed, 1, out.actErr, nil))
			d.restore()
			inv = d.invocation(i, Forward, true, 1)
			out = d.invoke(ctx, inv, s.Fallback.Action, nil, s.Timeout, errs, next)
			if out.actErr != nil && out.saveErr == nil {
				if ctx.Err() != nil {
					return d.interrupt(ctx, &inv, interruptCause(ctx))
				}
				errs = append(errs, out.actErr)
			}
		}
	}
	if out.saveErr != nil {
		return d.storeFailed(ctx, &inv, out.saveErr)
	}
	if out.actErr != nil {
		return d.fail(ctx, i, inv, errs)
	}
	d.branches[i] = inv.Fallback
	evErr := d.dispatch(out, inv)
	d.report(ctx, d.result(inv, Succeeded, len(errs)+1, nil, evErr))
	return nil
}

// fail records the failure of step i: the saga starts compensating, or,
// with nothing to compensate, is compensated at once.
func (d *driver[S]) fail(ctx context.Context, i int, inv Invocation, errs []error) error {
	s := &d.e.def.Steps[i]
	for k, err := range errs {
		d.errs = append(d.errs, &StepError{Step: s.Name, Index: i, Phase: Forward, Fallback: k > 0, Attempt: 1, Err: err})
	}
	d.failedStep = s.Name
	d.restore()
	next := target{status: Compensating, step: i}
	if d.prevCompensable(i) < 0 {
		next = target{status: Compensated}
	}
	joined := errors.Join(errs...)
	if err := d.write(ctx, inv, StepFailed, len(errs), errs, next); err != nil {
		d.endStep(d.result(inv, Interrupted, len(errs), joined, nil))
		return d.storeFailed(ctx, &inv, err)
	}
	d.report(ctx, d.result(inv, StepFailed, len(errs), joined, nil))
	return nil
}

// compensate compensates the completed steps, from the cursor down.
func (d *driver[S]) compensate(ctx context.Context) error {
	for d.rec.Status == Compensating {
		if ctx.Err() != nil {
			return d.interrupt(ctx, nil, interruptCause(ctx))
		}
		j := d.prevCompensable(d.rec.Step)
		if j < 0 {
			// Nothing left to undo (possible only if the definition
			// changed since the saga started compensating).
			if err := d.write(ctx, Invocation{}, 0, 0, nil, target{status: Compensated}); err != nil {
				return d.storeFailed(ctx, nil, err)
			}
			return nil
		}
		if err := d.compensateStep(ctx, j); err != nil {
			return err
		}
		if d.stopped && d.rec.Status.Active() {
			return d.interrupt(ctx, nil, errStopped)
		}
	}
	return nil
}

// compensateStep runs the compensation of step j, retrying it with
// backoff; if every attempt fails the saga is marked Failed.
func (d *driver[S]) compensateStep(ctx context.Context, j int) error {
	s := &d.e.def.Steps[j]
	fb := d.branches[j]
	comp := d.compensationOf(j)
	next := target{status: Compensating, step: j}
	if d.prevCompensable(j) < 0 {
		next = target{status: Compensated}
	}
	d.begin()
	var errs []error
	var inv Invocation
	for a := 1; ; a++ {
		if a > 1 {
			d.restore()
		}
		inv = d.invocation(j, Compensation, fb, a)
		out := d.invoke(ctx, inv, comp, nil, s.Timeout, errs, next)
		if out.saveErr != nil {
			return d.storeFailed(ctx, &inv, out.saveErr)
		}
		if out.actErr == nil {
			evErr := d.dispatch(out, inv)
			d.report(ctx, d.result(inv, Succeeded, a, nil, evErr))
			return nil
		}
		if ctx.Err() != nil {
			return d.interrupt(ctx, &inv, interruptCause(ctx))
		}
		errs = append(errs, out.actErr)
		d.errs = append(d.errs, &StepError{Step: s.Name, Index: j, Phase: Compensation, Fallback: fb, Attempt: a, Err: out.actErr})
		d.endStep(d.result(inv, StepFailed, a, out.actErr, nil))
		if a >= d.o.compAttempts {
			break
		}
		delay := d.o.backoff.Delay(a)
		d.o.logRetry(ctx, inv, delay, out.actErr)
		if err := d.o.sleep(ctx, delay); err != nil {
			if ctx.Err() != nil {
				err = interruptCause(ctx)
			}
			inv.Attempt++
			return d.interrupt(ctx, &inv, err)
		}
	}
	d.restore()
	joined := errors.Join(errs...)
	if err := d.write(ctx, inv, StepFailed, len(errs), errs, target{status: Failed, step: j + 1}); err != nil {
		return d.storeFailed(ctx, &inv, err)
	}
	d.obsEnd = nil // each attempt was already reported to the observer
	d.report(ctx, d.result(inv, StepFailed, len(errs), joined, nil))
	return nil
}

// compensationOf returns the compensation that undoes step j as it ran.
func (d *driver[S]) compensationOf(j int) Action[S] {
	s := &d.e.def.Steps[j]
	if d.branches[j] {
		if s.Fallback == nil {
			return nil
		}
		return s.Fallback.Compensation
	}
	return s.Compensation
}

// prevCompensable returns the highest index below k of a step with a
// compensation, or -1.
func (d *driver[S]) prevCompensable(k int) int {
	for j := min(k, len(d.e.def.Steps)) - 1; j >= 0; j-- {
		if d.compensationOf(j) != nil {
			return j
		}
	}
	return -1
}

func (d *driver[S]) invocation(i int, phase Phase, fallback bool, attempt int) Invocation {
	return Invocation{
		SagaID:   d.rec.ID,
		Saga:     d.e.def.Name,
		Step:     d.e.def.Steps[i].Name,
		Index:    i,
		Phase:    phase,
		Fallback: fallback,
		Attempt:  attempt,
		Resumed:  d.recovered && i == d.resumeIdx && phase == d.resumePhase,
	}
}

// invoke runs act for inv and, if it succeeds, writes the checkpoint that
// moves the saga to next, in one transaction when the orchestrator has a
// Transactor. prior are the errors of earlier attempts of the invocation.
func (d *driver[S]) invoke(ctx context.Context, inv Invocation, act Action[S], fb *Fallback[S], timeout time.Duration, prior []error, next target) outcome {
	o := d.o
	d.obsEnd, d.finished = nil, time.Time{}
	if o.obs != nil {
		ctx, d.obsEnd = o.obs.StartStep(ctx, inv)
	}
	d.out = outcome{ctx: ctx}
	d.cur = call[S]{inv: inv, act: act, fb: fb, prior: prior, next: next, timeout: timeout}
	if o.tx == nil {
		_ = d.body(ctx)
		if d.out.actErr == nil && d.out.saveErr == nil {
			d.commit()
		}
		return d.out
	}
	err := o.tx.InTx(ctx, d.body)
	switch {
	case d.out.actErr != nil || d.out.saveErr != nil:
		// Rolled back.
	case err != nil:
		d.out.saveErr = err // the commit failed
	default:
		d.commit()
	}
	return d.out
}

// body runs the action and writes the checkpoint; its error rolls the
// transaction back.
func (d *driver[S]) body(ctx context.Context) error {
	c, out := &d.cur, &d.out
	out.evs, out.useFallback, out.actErr = d.call(ctx, c.inv, c.act, c.fb, c.timeout)
	if out.actErr != nil {
		if !isDispatchError(out.actErr) {
			return out.actErr
		}
		out.evErr, out.actErr = out.actErr, nil
	}
	attempts := c.inv.Attempt
	if c.inv.Phase == Forward {
		attempts = len(c.prior) + 1
	}
	if err := d.write(ctx, c.inv, Succeeded, attempts, c.prior, c.next); err != nil {
		if errors.Is(err, errEncode) {
			out.actErr = err
		} else {
			out.saveErr = err
		}
		return err
	}
	return nil
}

var errEncode = errors.New("saga: cannot encode the state")

// write saves the checkpoint that moves the saga to next, with a log entry
// for inv (none when outcome is 0), leaving it in d.pending. Without a
// Transactor the caller commits; invoke does with one.
func (d *driver[S]) write(ctx context.Context, inv Invocation, outcome Outcome, attempts int, errs []error, next target) error {
	state := d.rec.State
	if outcome == Succeeded {
		enc, err := d.e.def.Codec.Marshal(&d.state)
		if err != nil {
			return fmt.Errorf("%w: %w", errEncode, err)
		}
		state = enc
	}
	d.pending = Checkpoint{ID: d.rec.ID, Version: d.rec.Version, Status: next.status, Step: next.step, State: state}
	if next.status.Active() {
		d.pending.Owner, d.pending.Lease = d.o.owner, d.o.lease
	}
	if outcome != 0 {
		d.logBuf[0] = Entry{
			Step: inv.Step, Index: inv.Index, Phase: inv.Phase, Fallback: inv.Fallback,
			Outcome: outcome, Attempts: attempts, Errors: errorStrings(errs), Owner: d.o.owner,
			StartedAt: d.started, FinishedAt: d.finish(),
		}
		d.pending.Log = d.logBuf[:1]
	}
	err := d.o.store.Save(ctx, d.pending)
	if err == nil && outcome != Succeeded {
		d.commit()
	}
	return err
}

// commit records in d.rec the checkpoint written last.
func (d *driver[S]) commit() {
	p := &d.pending
	d.rec.Version = p.Version + 1
	d.rec.Status, d.rec.Step, d.rec.State, d.rec.Attempts = p.Status, p.Step, p.State, p.Attempts
	d.rec.LeaseOwner = p.Owner
	p.Log = nil
}

func errorStrings(errs []error) []string {
	if len(errs) == 0 {
		return nil
	}
	out := make([]string, len(errs))
	for i, err := range errs {
		out[i] = err.Error()
	}
	return out
}

// call runs act (through fb's breaker when fb is set) with the
// invocation's context, turning a panic into an error. useFallback reports
// that fb must answer instead.
func (d *driver[S]) call(ctx context.Context, inv Invocation, act Action[S], fb *Fallback[S], timeout time.Duration) (evs []events.Event, useFallback bool, err error) {
	sc := &stepCtx{Context: ctx, inv: inv, o: d.o}
	defer func() {
		if v := recover(); v != nil {
			evs, useFallback, err = nil, false, panics.At("saga "+inv.Saga+" step "+inv.Step, v)
		}
	}()
	if fb == nil {
		evs, err = d.act(sc, act, timeout)
		return evs, false, err
	}
	return d.callPrimary(sc, inv, act, fb, timeout)
}

// callPrimary runs act through the breaker of fb.
func (d *driver[S]) callPrimary(ctx context.Context, inv Invocation, act Action[S], fb *Fallback[S], timeout time.Duration) ([]events.Event, bool, error) {
	var evs []events.Event
	var dispatchErr error
	useFallback, err := registry.TryPrimary(ctx, fb.Policy.Breaker, d.e.circuits[inv.Index], func(ctx context.Context) error {
		var err error
		evs, err = d.act(ctx, act, timeout)
		if err != nil && isDispatchError(err) {
			// The work was done: a success for the breaker.
			dispatchErr = err
			return nil
		}
		return err
	}, fb.Policy.Triggers)
	if err == nil {
		err = dispatchErr
	}
	return evs, useFallback, err
}

func (d *driver[S]) act(ctx context.Context, act Action[S], timeout time.Duration) ([]events.Event, error) {
	if act == nil {
		return nil, nil
	}
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	return act(ctx, &d.state)
}

// restore puts the state back to the last checkpoint.
func (d *driver[S]) restore() {
	var s S
	if err := d.e.def.Codec.Unmarshal(d.rec.State, &s); err != nil {
		// The state was encoded by the same codec moments ago; a codec
		// that cannot decode its own output keeps the working state.
		d.o.log.Error("saga: cannot restore the state from its checkpoint", "saga", d.e.def.Name, "saga_id", d.rec.ID, "error", err)
		return
	}
	d.state = s
}

// dispatch dispatches the events an invocation returned, after its
// checkpoint, and returns every dispatch failure.
func (d *driver[S]) dispatch(out outcome, inv Invocation) error {
	err := out.evErr
	if len(out.evs) > 0 {
		var derr error
		if d.o.dispatcher == nil {
			derr = fmt.Errorf("%w: %d event(s) returned", ErrNoDispatcher, len(out.evs))
		} else {
			derr = d.dispatchSafe(&stepCtx{Context: out.ctx, inv: inv, o: d.o}, out.evs)
		}
		err = errors.Join(err, derr)
	}
	if err != nil {
		d.eventErrs = append(d.eventErrs, &StepError{Step: inv.Step, Index: inv.Index, Phase: inv.Phase, Fallback: inv.Fallback, Attempt: inv.Attempt, Err: err})
	}
	return err
}

func (d *driver[S]) dispatchSafe(ctx context.Context, evs []events.Event) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = panics.At("saga event dispatcher", v)
		}
	}()
	return d.o.dispatcher.Dispatch(ctx, evs...)
}

func (d *driver[S]) result(inv Invocation, outcome Outcome, attempts int, err, evErr error) StepResult {
	return StepResult{
		SagaID: inv.SagaID, Saga: d.e.def.Name, Step: inv.Step, Index: inv.Index, Phase: inv.Phase,
		Fallback: inv.Fallback, Outcome: outcome, Attempts: attempts, Err: err, EventsErr: evErr,
		Status: d.rec.Status, StartedAt: d.started, FinishedAt: d.finish(),
	}
}

// finish returns when the invocation in progress finished: read once,
// when its checkpoint is written or its result reported.
func (d *driver[S]) finish() time.Time {
	if d.finished.IsZero() {
		d.finished = d.o.clock.Now()
	}
	return d.finished
}

// begin starts the clock of an invocation.
func (d *driver[S]) begin() {
	d.started, d.finished = d.o.clock.Now(), time.Time{}
}

// endStep ends the observer's span of the invocation in progress.
func (d *driver[S]) endStep(r StepResult) {
	if d.obsEnd != nil {
		d.obsEnd(r)
		d.obsEnd = nil
	}
}

// report ends the invocation: observer, log line, stream.
func (d *driver[S]) report(ctx context.Context, r StepResult) {
	d.endStep(r)
	d.o.logStep(ctx, r)
	d.last = r
	if d.emit != nil && !d.stopped && !d.emit(r) {
		d.stopped = true
	}
}

// storeFailed handles a failed write: an interruption if ctx is done or
// the store failed, the loss of the saga on a conflict.
func (d *driver[S]) storeFailed(ctx context.Context, inv *Invocation, err error) error {
	if ctx.Err() != nil {
		return d.interrupt(ctx, inv, interruptCause(ctx))
	}
	if errors.Is(err, ErrConflict) {
		r := StepResult{SagaID: d.rec.ID, Saga: d.e.def.Name, Outcome: Interrupted, Err: err, Status: d.rec.Status, StartedAt: d.started, FinishedAt: d.o.clock.Now()}
		if inv != nil {
			r = d.result(*inv, Interrupted, inv.Attempt, err, nil)
		}
		d.endStep(r)
		d.last = r
		d.restore()
		d.o.logLost(ctx, d.rec, err)
		return fmt.Errorf("saga %s %s was taken over by another driver: %w", d.e.def.Name, d.rec.ID, err)
	}
	return d.interrupt(ctx, inv, err)
}

// interrupt stops the drive: the saga is released, still active, with an
// Interrupted entry for inv (when an invocation was in progress).
func (d *driver[S]) interrupt(ctx context.Context, inv *Invocation, cause error) error {
	var entry *Entry
	r := StepResult{SagaID: d.rec.ID, Saga: d.e.def.Name, Outcome: Interrupted, Err: cause, Status: d.rec.Status, StartedAt: d.started, FinishedAt: d.o.clock.Now()}
	if inv != nil {
		r = d.result(*inv, Interrupted, inv.Attempt, cause, nil)
		entry = &Entry{
			Step: inv.Step, Index: inv.Index, Phase: inv.Phase, Fallback: inv.Fallback, Outcome: Interrupted,
			Attempts: inv.Attempt, Errors: []string{cause.Error()}, Owner: d.o.owner, StartedAt: d.started, FinishedAt: r.FinishedAt,
		}
	}
	d.endStep(r)
	d.last = r
	if inv != nil {
		d.restore() // the invocation's changes were not checkpointed
	}
	d.release(ctx, entry, cause)
	err := fmt.Errorf("saga %s %s: %w: %w", d.e.def.Name, d.rec.ID, ErrInterrupted, cause)
	if !errors.Is(cause, errStopped) {
		d.o.logInterrupted(ctx, d.rec, err)
	}
	return err
}

// release writes the saga back without a lease, so that a recoverer may
// take it over at once. Not after a lost lease: the saga is someone
// else's.
func (d *driver[S]) release(ctx context.Context, entry *Entry, cause error) {
	if errors.Is(cause, ErrLeaseLost) || errors.Is(cause, ErrConflict) {
		return
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), d.o.finishTimeout)
	defer cancel()
	d.pending = Checkpoint{ID: d.rec.ID, Version: d.rec.Version, Status: d.rec.Status, Step: d.rec.Step, State: d.rec.State, Attempts: d.rec.Attempts}
	if entry != nil {
		d.logBuf[0] = *entry
		d.pending.Log = d.logBuf[:1]
	}
	if err := d.o.store.Save(rctx, d.pending); err != nil {
		d.o.log.WarnContext(ctx, "saga could not be released; it is recoverable once its lease expires",
			"saga", d.e.def.Name, "saga_id", d.rec.ID, "error", err)
		return
	}
	d.commit()
}

// interruptCause is why ctx is done.
func interruptCause(ctx context.Context) error {
	err, cause := ctx.Err(), context.Cause(ctx)
	switch {
	case cause == nil || errors.Is(err, cause):
		return err
	case errors.Is(cause, ErrLeaseLost):
		return cause
	default:
		return errors.Join(err, cause)
	}
}

// finalError is what a drive that ended in status returns.
func (d *driver[S]) finalError(status Status) error {
	if status == Completed {
		if len(d.eventErrs) == 0 {
			return nil
		}
		errs := make([]error, len(d.eventErrs))
		copy(errs, d.eventErrs)
		return errors.Join(errs...)
	}
	e := &Error{SagaID: d.rec.ID, Saga: d.e.def.Name, Status: status, FailedStep: d.failedStep, Errors: d.errs, Reason: d.halting}
	if d.rec.Status == Compensating || d.rec.Status == Failed {
		for j := d.prevCompensable(d.rec.Step); j >= 0; j = d.prevCompensable(j) {
			e.Pending = append(e.Pending, d.e.def.Steps[j].Name)
		}
	}
	return e
}
