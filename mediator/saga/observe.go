package saga

import (
	"context"
	"errors"
	"log/slog"
	"time"
)

// logStep writes the log line of one invocation.
func (o *Orchestrator) logStep(ctx context.Context, r StepResult) {
	level := slog.LevelInfo
	expected := r.Phase == Forward && IsExpected(r.Err) // a business outcome, not a fault
	if r.Outcome != Succeeded && !expected || r.EventsErr != nil {
		level = slog.LevelWarn
	}
	if !o.log.Enabled(ctx, level) {
		return
	}
	attrs := make([]slog.Attr, 0, 12)
	attrs = append(attrs,
		slog.String("saga", r.Saga),
		slog.String("saga_id", r.SagaID.String()),
		slog.String("step", r.Step),
		slog.Int("index", r.Index),
		slog.String("phase", r.Phase.String()),
		slog.String("outcome", r.Outcome.String()),
		slog.Int("attempts", r.Attempts),
		slog.Duration("duration", r.FinishedAt.Sub(r.StartedAt)),
		slog.String("status", r.Status.String()),
	)
	if r.Fallback {
		attrs = append(attrs, slog.Bool("fallback", true))
	}
	if r.Err != nil {
		attrs = append(attrs, slog.Any("error", r.Err))
	}
	if r.EventsErr != nil {
		attrs = append(attrs, slog.Any("events_error", r.EventsErr))
	}
	o.log.LogAttrs(ctx, level, "saga step", attrs...)
}

// logRetry logs a failed compensation attempt that will be retried.
func (o *Orchestrator) logRetry(ctx context.Context, inv Invocation, delay time.Duration, err error) {
	o.log.WarnContext(ctx, "saga compensation attempt failed; retrying",
		"saga", inv.Saga, "saga_id", inv.SagaID.String(), "step", inv.Step, "index", inv.Index,
		"attempt", inv.Attempt, "retry_in", delay, "error", err)
}

// logEnd logs how a drive ended.
func (o *Orchestrator) logEnd(ctx context.Context, rec Record, err error) {
	level := slog.LevelInfo
	switch rec.Status {
	case Compensated:
		if !expectedFailure(err) {
			level = slog.LevelWarn
		}
	case Failed, Halted:
		level = slog.LevelError
	}
	if rec.Status == Completed && err != nil {
		level = slog.LevelWarn // completed, but events failed
	}
	if !o.log.Enabled(ctx, level) {
		return
	}
	attrs := []slog.Attr{
		slog.String("saga", rec.Name),
		slog.String("saga_id", rec.ID.String()),
		slog.String("status", rec.Status.String()),
		slog.String("owner", o.owner),
	}
	if err != nil {
		attrs = append(attrs, slog.Any("error", err))
	}
	o.log.LogAttrs(ctx, level, "saga "+rec.Status.String(), attrs...)
}

func (o *Orchestrator) logInterrupted(ctx context.Context, rec Record, err error) {
	o.log.WarnContext(ctx, "saga interrupted; left for recovery",
		"saga", rec.Name, "saga_id", rec.ID.String(), "status", rec.Status.String(), "step", rec.Step, "owner", o.owner, "error", err)
}

func (o *Orchestrator) logLost(ctx context.Context, rec Record, err error) {
	o.log.WarnContext(ctx, "saga taken over by another driver",
		"saga", rec.Name, "saga_id", rec.ID.String(), "owner", o.owner, "error", err)
}

// expectedFailure reports whether err is the *Error of a saga compensated
// after a step failure marked [Expected], and nothing else failed.
func expectedFailure(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Status == Compensated && len(e.Errors) == 1 && IsExpected(e.Errors[0].Err)
}
