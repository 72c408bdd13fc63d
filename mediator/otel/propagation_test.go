package otel_test

import (
	"context"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/gocqrs/cqrs/events/wire"
	cqrsotel "github.com/gocqrs/cqrs/mediator/otel"
)

func TestTraceContextCrossesTheEnvelope(t *testing.T) {
	t.Parallel()
	tp := sdktrace.NewTracerProvider()
	defer func() { require.NoError(t, tp.Shutdown(context.Background())) }()
	ctx, span := tp.Tracer("test").Start(t.Context(), "producer")
	defer span.End()

	env := wire.Envelope{ID: uuid.Must(uuid.NewV7()), Name: "x"}
	cqrsotel.InjectEnvelope(ctx, &env)
	require.NotEmpty(t, env.Header(wire.HeaderTraceparent))

	headers, err := wire.ToHeaders(env)
	require.NoError(t, err)
	got := trace.SpanContextFromContext(cqrsotel.ExtractHeaders(context.Background(), headers))
	assert.Equal(t, span.SpanContext().TraceID(), got.TraceID())
	assert.Equal(t, span.SpanContext().SpanID(), got.SpanID())
	assert.True(t, got.IsRemote())
}

func TestInjectWithoutSpanWritesNothing(t *testing.T) {
	t.Parallel()
	env := wire.Envelope{}
	cqrsotel.InjectEnvelope(context.Background(), &env)
	assert.Empty(t, env.Headers)
	ctx := context.Background()
	assert.Equal(t, ctx, cqrsotel.ExtractHeaders(ctx, map[string]string{"event-name": "x"}))
}
