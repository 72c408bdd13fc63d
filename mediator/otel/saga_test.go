package otel_test

import (
	"context"
	"errors"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	cqrsotel "github.com/gocqrs/cqrs/mediator/otel"
	"github.com/gocqrs/cqrs/mediator/saga"
)

type trip struct{ Booked []string }

func TestSagaSpansNestStepsUnderTheDrive(t *testing.T) {
	t.Parallel()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer func() { require.NoError(t, tp.Shutdown(context.Background())) }()
	errFull := errors.New("hotel full")
	def := &saga.Definition[trip]{Name: "trip", Steps: []saga.Step[trip]{
		{
			Name:         "flight",
			Action:       saga.Do(func(_ context.Context, s *trip) error { s.Booked = append(s.Booked, "flight"); return nil }),
			Compensation: saga.Do(func(context.Context, *trip) error { return nil }),
		},
		{Name: "hotel", Action: saga.Do(func(context.Context, *trip) error { return errFull })},
	}}
	o, err := saga.New(saga.Options{
		Store:    saga.NewMemoryStore(saga.MemoryOptions{}),
		Observer: cqrsotel.New(tp),
		Logger:   slog.New(slog.DiscardHandler),
	}, def)
	require.NoError(t, err)
	_, err = saga.Execute(t.Context(), o, def, trip{})
	require.ErrorIs(t, err, saga.ErrCompensated)

	spans := rec.Ended()
	byName := map[string][]sdktrace.ReadOnlySpan{}
	for _, s := range spans {
		byName[s.Name()] = append(byName[s.Name()], s)
	}
	drive := byName["cqrs.saga trip"]
	require.Len(t, drive, 1)
	assert.Equal(t, codes.Error, drive[0].Status().Code)
	var steps []sdktrace.ReadOnlySpan
	steps = append(steps, byName["cqrs.saga.step trip/flight"]...)
	steps = append(steps, byName["cqrs.saga.step trip/hotel"]...)
	require.Len(t, steps, 3, "flight, hotel, flight's compensation")
	for _, s := range steps {
		assert.Equal(t, drive[0].SpanContext().SpanID(), s.Parent().SpanID())
	}
	assert.Equal(t, codes.Error, byName["cqrs.saga.step trip/hotel"][0].Status().Code)
}
