// Package saga runs orchestrated sagas: a typed state and an ordered list
// of steps, each with an action and the compensation that undoes it. The
// state is checkpointed in a [Store] after every step, so that a saga whose
// process died is taken over and finished by another.
//
// # Definition
//
// A [Definition] is a plain value: a name, the steps, and optionally a
// [Codec] for the state (JSON by default).
//
//	var PlaceOrder = &saga.Definition[Order]{
//		Name: "place-order",
//		Steps: []saga.Step[Order]{
//			{Name: "reserve", Action: saga.Send(reserve, setReservation), Compensation: saga.Send(release, nil)},
//			{Name: "charge", Action: saga.Do(charge), Compensation: saga.Do(refund),
//				Fallback: &saga.Fallback[Order]{Action: saga.Do(invoice), Compensation: saga.Do(cancelInvoice),
//					Policy: events.FallbackPolicy{On: []error{ErrProviderDown}, Breaker: breaker}}},
//			{Name: "ship", Action: saga.Do(ship)},
//		},
//	}
//	o, err := saga.New(saga.Options{Store: store, Mediator: m}, PlaceOrder)
//	res, err := saga.Execute(ctx, o, PlaceOrder, Order{ID: "o-1"})
//
// An [Action] is a function of the state (*S), which it may change, that
// returns events; [Do] adapts one that returns only an error, and [Send]
// builds one that sends a request through the mediator, typed end to end.
// [New] validates every definition (a name, at least one step, unique step
// names without "/", no nil action, ...) and the options, and reports every
// problem at once. It copies the definitions: changing one afterwards has
// no effect.
//
// # Execution, and what is checkpointed when
//
// [Execute] (or [Stream]) runs a saga on the calling goroutine:
//
//  1. The saga is created: status Running, cursor 0, the initial state,
//     leased to the orchestrator for Options.Lease. One write.
//  2. Each step in order: its action runs with the state; if it succeeds,
//     one checkpoint records the new state, the cursor moved past the step
//     and a log entry, and extends the lease. The last step's checkpoint
//     sets Completed and releases the lease. With Options.Transactor, the
//     action and its checkpoint run in one transaction: the step's own
//     writes, made with the transaction its context carries, and the outbox
//     rows of the requests it sends commit with the checkpoint, or not at
//     all.
//  3. Events: a step built by [Send] sends its request through the
//     mediator, which dispatches the handler's events as any Send does.
//     Events a plain action returns are dispatched by Options.Dispatcher
//     after the checkpoint is written. A dispatch failure is reported
//     (StepResult.EventsErr, the log, the error Execute returns beside a
//     completed saga) and does not fail the step, whose work is done. An
//     action error that wraps a *mediator.DispatchError likewise means
//     done.
//  4. A step fails when its action returns an error (or panics, or runs
//     out of Step.Timeout). Its changes to the state are discarded: the
//     state goes back to the last checkpoint. If the step has a
//     [Fallback] whose policy accepts the error (or whose circuit breaker
//     is open: events.FallbackPolicy), the fallback runs instead, from that
//     state; if it succeeds the step is done. Otherwise one checkpoint
//     records the failure and sets Compensating (or Compensated when no
//     completed step has a compensation). An action error marked with
//     [Expected] (a business outcome: a payment declined) is handled the
//     same way and only logged at Info instead of Warn.
//  5. Compensation: the completed steps are compensated in reverse order,
//     each by the compensation of the branch that ran (the step's, or its
//     fallback's); steps without one are skipped. Each compensation that
//     succeeds is checkpointed; the last sets Compensated and releases the
//     lease. A compensation that fails is retried, from the last
//     checkpoint's state, up to Options.CompensationAttempts times, waiting
//     Options.CompensationBackoff between attempts (exponential, with
//     jitter). If every attempt fails, the saga stops there: status Failed,
//     the steps before it left uncompensated, every error kept. Stopping
//     keeps the reverse order strict; [Orchestrator.Resume] retries from
//     that step once a human has fixed the cause.
//
// The failed step itself is never compensated: it is assumed to have had
// no effect (with a Transactor, its writes were rolled back).
//
// # Outcomes and errors
//
// Execute returns a [Result] (ID, Status, State as of the last checkpoint)
// and:
//
//   - Completed: nil, or an error joining one *[StepError] per step whose
//     events failed to dispatch;
//   - Compensated: an *[Error] matching [ErrCompensated];
//   - Failed: an *Error matching [ErrCompensationFailed], whose Pending
//     names the steps left uncompensated;
//   - interrupted (see below): an error matching [ErrInterrupted];
//   - taken over by another driver: an error matching [ErrConflict].
//
// An *Error lists every failure in order (the step that failed, each failed
// compensation attempt) as *StepError values; Unwrap returns them all, so
// errors.Is and errors.As reach each step's own error. The step log
// ([Orchestrator.History]) keeps the same errors as text, with attempts and
// times, across processes.
//
// # Idempotency keys
//
// Every invocation has a key ([Invocation.Key], [KeyFrom]): the saga ID and
// the step name, with "/fallback" for a fallback and "/compensate" for a
// compensation. It is the same on every retry and in every process. A step
// whose effects live outside the saga's transaction records its key with
// them and skips work already done: that is what makes a re-run harmless.
//
// # Cancellation
//
// When the context of Execute is done, the step in progress sees it; the
// drive then stops without compensating anything: the saga stays Running
// (or Compensating) at its last checkpoint, an Interrupted entry is logged
// and the lease is released, so a recoverer can take it over at once (the
// release is written with a context that is not cancelled, bounded by
// Options.FinishTimeout; if it fails, the lease expires). A step that
// completed but whose checkpoint could not be written because the context
// was done runs again on recovery. Stopping a [Stream] loop early does the
// same between two steps.
//
// # Crashes and recovery
//
// A driver holds a lease on the saga it drives, in the store, and renews it
// every Options.RenewEvery while it runs, long steps included. If its
// process dies, the lease expires. [Orchestrator.Recover], or a
// [Recoverer] running it periodically, claims each saga that is Running or
// Compensating with a released or expired lease (a saga whose lease is
// alive is never taken), one at a time, under a lease of its own, and
// drives it on from its last checkpoint:
//
//   - Running: the step at the cursor runs again, with the same
//     idempotency key and Invocation.Resumed set. It may have run, in full
//     or in part, before the crash: steps are run at least once.
//   - Compensating: compensation goes on from the cursor; the compensation
//     that was running runs again.
//
// Each claim counts an attempt; a checkpoint that makes progress resets
// the count. A saga claimed more than Options.MaxRecoveryAttempts times
// without progress (a step that takes its process down every time), or
// whose state cannot be decoded, is marked Halted with a log entry saying
// why: it waits for a human, who may [Orchestrator.Resume] it. Failed and
// Halted sagas are never picked up by recovery.
//
// A driver that lost its lease (it stalled past it and a recoverer claimed
// the saga) notices when its renewal fails, and the context of its step is
// cancelled with [ErrLeaseLost] as its cause; in any case its next
// checkpoint is refused (a claim changes the saga's version), so it stops
// without touching the saga.
//
// # What is guaranteed across processes
//
// Guaranteed, with any conforming store:
//
//   - every step's action runs at least once until it succeeds or fails,
//     and a step whose success was checkpointed never runs again;
//   - at most one driver moves a saga on: every write checks the version
//     read (optimistic locking), and a stale writer gets [ErrConflict];
//   - a saga whose lease is alive is never claimed; two recoverers never
//     claim the same saga at once;
//   - compensations run in strict reverse order, each at least once, and
//     a failure is never dropped: it is logged, kept in the step log and
//     returned;
//   - with a Transactor, and the step's data, the outbox and the saga store
//     in one database: a step's writes, its outbox rows and its checkpoint
//     commit together.
//
// Not guaranteed:
//
//   - exactly once: a step (or compensation) runs again after a crash
//     before its checkpoint, or when its driver stalls past its lease
//     while a recoverer takes over (the stale driver's checkpoint is then
//     refused, but what the step did outside the saga's transaction is
//     not undone). Deduplicate with the idempotency key;
//   - events a plain action returns are dispatched in process after the
//     checkpoint: a crash between the two loses them, and a re-run step
//     returns them again. Send events that must not be lost through the
//     outbox (a request whose handler emits them, with the mediator's
//     outbox capture, and a Transactor);
//   - leases compare times read from each process's clock: clocks must
//     agree within much less than the lease;
//   - no order between different sagas.
//
// # Observation
//
// [Stream] yields the result of each invocation as it is checkpointed
// (iter.Seq2[StepResult, error]). Every invocation is one log line
// (log/slog, Options.Logger), and an optional [Observer] is told of every
// drive and invocation, for tracing. [Definition.Mermaid] draws a sequence
// diagram of the steps and compensations.
//
// # Stores
//
// [Store] is the storage contract; [MemoryStore] implements it in memory,
// and package sagatest holds the conformance kit every store passes. A
// checkpoint is one conditional update plus an insert of its log entries,
// one round trip on a SQL database (see Store).
package saga
