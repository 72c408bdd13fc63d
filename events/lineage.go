package events

import (
	"context"

	"github.com/google/uuid"
)

// Lineage ties an event to what caused it, across processes.
type Lineage struct {
	// CorrelationID is shared by everything one incoming request or message
	// caused, in every process it reached.
	CorrelationID string
	// CausationID is the id of the event or request that directly caused
	// the current work: the request's id (its correlation id, for the
	// request that started a correlation) or the id of the event being
	// handled.
	CausationID string
}

type lineageKey struct{}

// WithLineage returns a copy of ctx carrying l. A broker consumer calls it
// with the received event's correlation id and the event's own id as the
// causation id, so that what the event's handlers emit continues the
// correlation.
func WithLineage(ctx context.Context, l Lineage) context.Context {
	return context.WithValue(ctx, lineageKey{}, l)
}

// LineageFrom returns the lineage ctx carries, if any. Handlers and log
// lines read it; the outbox stamps it on the events it stores.
func LineageFrom(ctx context.Context) (Lineage, bool) {
	l, ok := ctx.Value(lineageKey{}).(Lineage)
	return l, ok
}

// EnsureLineage returns ctx and its lineage, starting a correlation (a new
// UUIDv7, which is also the causation id: the request that started it)
// when ctx carries none.
func EnsureLineage(ctx context.Context) (context.Context, Lineage) {
	if l, ok := LineageFrom(ctx); ok && l.CorrelationID != "" {
		return ctx, l
	}
	id := uuid.Must(uuid.NewV7()).String()
	l := Lineage{CorrelationID: id, CausationID: id}
	return WithLineage(ctx, l), l
}
