package saga

import (
	"context"

	"github.com/google/uuid"
)

// Invocation describes one invocation of a step's action, fallback or
// compensation. Actions read it with [InvocationFrom], and so do the
// handlers of the requests they send.
type Invocation struct {
	// SagaID and Saga identify the saga.
	SagaID uuid.UUID
	Saga   string
	// Step and Index name the step.
	Step  string
	Index int
	// Phase is forward (the action or the fallback) or compensation.
	Phase Phase
	// Fallback reports the step's fallback (or the fallback's
	// compensation).
	Fallback bool
	// Attempt counts the attempts of this invocation in this process, from
	// 1 (compensations are retried).
	Attempt int
	// Resumed reports that the invocation is the first of a recovered
	// saga: the same invocation may already have run, in full or in part,
	// in the process that crashed. Its idempotency key is the same.
	Resumed bool
}

// Key is the invocation's idempotency key: "<saga id>/<step>" for an
// action, with "/fallback" for a fallback and "/compensate" for a
// compensation ("/fallback/compensate" for the fallback's). It is the same
// on every attempt and on every run of the invocation, in every process,
// so a handler can record it with its effects and skip work already done.
func (inv Invocation) Key() string {
	n := 37 + len(inv.Step)
	if inv.Fallback {
		n += len("/fallback")
	}
	if inv.Phase == Compensation {
		n += len("/compensate")
	}
	b := make([]byte, 0, n)
	b = append(b, inv.SagaID.String()...)
	b = append(b, '/')
	b = append(b, inv.Step...)
	if inv.Fallback {
		b = append(b, "/fallback"...)
	}
	if inv.Phase == Compensation {
		b = append(b, "/compensate"...)
	}
	return string(b)
}

// invocationKey is the context key of the current *stepCtx.
type invocationKey struct{}

// stepCtx is the context an invocation runs with: one allocation carries
// the invocation and the orchestrator.
type stepCtx struct {
	context.Context
	inv Invocation
	o   *Orchestrator
}

func (c *stepCtx) Value(key any) any {
	if key == (invocationKey{}) {
		return c
	}
	return c.Context.Value(key)
}

// InvocationFrom returns the invocation ctx belongs to: the context of an
// action or compensation, or one derived from it (the context a request
// handler receives when the action sends it through the mediator).
func InvocationFrom(ctx context.Context) (Invocation, bool) {
	if c, ok := ctx.Value(invocationKey{}).(*stepCtx); ok {
		return c.inv, true
	}
	return Invocation{}, false
}

// KeyFrom returns the idempotency key of the invocation ctx belongs to, or
// "" outside of one. It is InvocationFrom(ctx) followed by Key.
func KeyFrom(ctx context.Context) string {
	if inv, ok := InvocationFrom(ctx); ok {
		return inv.Key()
	}
	return ""
}

func orchestratorFrom(ctx context.Context) *Orchestrator {
	if c, ok := ctx.Value(invocationKey{}).(*stepCtx); ok {
		return c.o
	}
	return nil
}
