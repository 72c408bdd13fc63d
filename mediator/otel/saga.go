package otel

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/gocqrs/cqrs/mediator/saga"
)

// Attribute keys of saga spans.
const (
	SagaNameKey      = attribute.Key("cqrs.saga.name")
	SagaIDKey        = attribute.Key("cqrs.saga.id")
	SagaStatusKey    = attribute.Key("cqrs.saga.status")
	SagaStepKey      = attribute.Key("cqrs.saga.step")
	SagaPhaseKey     = attribute.Key("cqrs.saga.phase")
	SagaOutcomeKey   = attribute.Key("cqrs.saga.outcome")
	SagaFallbackKey  = attribute.Key("cqrs.saga.fallback")
	SagaRecoveredKey = attribute.Key("cqrs.saga.recovered")
	IdempotencyKey   = attribute.Key("cqrs.idempotency_key")
)

var _ saga.Observer = (*Tracing)(nil)

// StartSaga implements saga.Observer: a span "cqrs.saga <name>" for each
// drive of a saga (a start, a recovery, a resume), ended with the status
// the drive stopped in; it is an error span when the drive returned an
// error.
func (t *Tracing) StartSaga(ctx context.Context, d saga.Drive) (context.Context, func(saga.Status, error)) {
	ctx, span := t.tracer.Start(ctx, "cqrs.saga "+d.Saga, trace.WithAttributes(
		SagaNameKey.String(d.Saga),
		SagaIDKey.String(d.SagaID.String()),
		SagaRecoveredKey.Bool(d.Recovered),
	))
	return ctx, func(status saga.Status, err error) {
		span.SetAttributes(SagaStatusKey.String(status.String()))
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
	}
}

// StartStep implements saga.Observer: a span "cqrs.saga.step <saga>/<step>"
// for each invocation of an action, fallback or compensation, a child of
// the drive's span, carrying the idempotency key; an error span when the
// invocation failed.
func (t *Tracing) StartStep(ctx context.Context, inv saga.Invocation) (context.Context, func(saga.StepResult)) {
	ctx, span := t.tracer.Start(ctx, "cqrs.saga.step "+inv.Saga+"/"+inv.Step, trace.WithAttributes(
		SagaNameKey.String(inv.Saga),
		SagaIDKey.String(inv.SagaID.String()),
		SagaStepKey.String(inv.Step),
		SagaPhaseKey.String(inv.Phase.String()),
		SagaFallbackKey.Bool(inv.Fallback),
		IdempotencyKey.String(inv.Key()),
	))
	return ctx, func(r saga.StepResult) {
		span.SetAttributes(SagaOutcomeKey.String(r.Outcome.String()))
		if r.Err != nil {
			span.RecordError(r.Err)
			span.SetStatus(codes.Error, r.Err.Error())
		}
		span.End()
	}
}
