package otel_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/gocqrs/cqrs/bootstrap"
	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/mediator"
	cqrsotel "github.com/gocqrs/cqrs/mediator/otel"
	"github.com/gocqrs/cqrs/requests"
)

type placeOrder struct {
	requests.Returns[int]
}

type orderPlaced struct{}

type stockReserved struct{}

type watchOrder struct {
	requests.Returns[int]
}

var errMail = errors.New("mail down")

func setup(t *testing.T, parallel bool) (*tracetest.SpanRecorder, *sdktrace.TracerProvider, *mediator.RequestMediator, *mediator.StreamingRequestMediator) {
	t.Helper()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	limit := 1
	if parallel {
		limit = 4
	}
	opts := []bootstrap.Option{
		bootstrap.WithMiddleware(cqrsotel.New(tp)),
		bootstrap.WithMaxConcurrentEventHandlers(limit),
		bootstrap.WithCommands(func(r *requests.Map) {
			requests.BindHandler(r, requests.HandlerFunc[placeOrder, int](func(context.Context, placeOrder) (int, []events.Event, error) {
				return 7, []events.Event{orderPlaced{}}, nil
			}))
			requests.BindStreamHandler(r, requests.StreamHandlerFunc[watchOrder, int](func(_ context.Context, _ watchOrder, yield func(int, []events.Event) bool) ([]events.Event, error) {
				for i := range 2 {
					if !yield(i, []events.Event{stockReserved{}}) {
						return nil, nil
					}
				}
				return nil, nil
			}))
		}),
		bootstrap.WithDomainEvents(func(m *events.Map) {
			events.BindHandler(m, events.HandlerFunc[orderPlaced](func(context.Context, orderPlaced) ([]events.Event, error) {
				return []events.Event{stockReserved{}}, nil
			}))
			events.BindHandler(m, events.HandlerFunc[orderPlaced](func(context.Context, orderPlaced) ([]events.Event, error) {
				return nil, errMail
			}))
			events.BindHandler(m, events.HandlerFunc[stockReserved](func(context.Context, stockReserved) ([]events.Event, error) {
				return nil, nil
			}))
		}),
	}
	m, err := bootstrap.Bootstrap(nil, opts...)
	require.NoError(t, err)
	sm, err := bootstrap.Streaming(nil, opts...)
	require.NoError(t, err)
	return rec, tp, m, sm
}

func TestSendSpanIsParentOfEventSpans(t *testing.T) {
	t.Parallel()
	for _, parallel := range []bool{false, true} {
		t.Run(map[bool]string{false: "sequential", true: "parallel"}[parallel], func(t *testing.T) {
			t.Parallel()
			rec, tp, m, _ := setup(t, parallel)
			ctx, root := tp.Tracer("test").Start(context.Background(), "root")
			res, err := mediator.Send(ctx, m, placeOrder{})
			root.End()
			require.ErrorIs(t, err, errMail)
			assert.Equal(t, 7, res)

			spans := rec.Ended()
			byName := map[string][]sdktrace.ReadOnlySpan{}
			for _, s := range spans {
				byName[s.Name()] = append(byName[s.Name()], s)
			}
			send := byName["cqrs.send otel_test.placeOrder"]
			require.Len(t, send, 1)
			assert.Equal(t, root.SpanContext().SpanID(), send[0].Parent().SpanID(), "Send is a child of the caller's span")
			assert.Contains(t, send[0].Attributes(), cqrsotel.RequestTypeKey.String("otel_test.placeOrder"))
			assert.Equal(t, codes.Error, send[0].Status().Code, "a fan-out failure is recorded on the Send span")

			placed := byName["cqrs.event otel_test.orderPlaced"]
			require.Len(t, placed, 2)
			reserved := byName["cqrs.event otel_test.stockReserved"]
			require.Len(t, reserved, 1)
			for _, s := range append(placed, reserved...) {
				assert.Equal(t, send[0].SpanContext().SpanID(), s.Parent().SpanID(), "%s is a child of the Send span", s.Name())
				assert.Equal(t, send[0].SpanContext().TraceID(), s.SpanContext().TraceID())
				var handler string
				for _, kv := range s.Attributes() {
					if kv.Key == cqrsotel.HandlerKey {
						handler = kv.Value.AsString()
					}
				}
				// A HandlerFunc is named after its function: here a closure of setup.
				assert.True(t, strings.HasPrefix(handler, "otel_test.setup."), "named handler %q", handler)
			}
			failed := 0
			for _, s := range placed {
				if s.Status().Code == codes.Error {
					failed++
				}
			}
			assert.Equal(t, 1, failed, "the failing handler's span records the error")
		})
	}
}

func TestStreamSpanIsParentOfItemEventSpans(t *testing.T) {
	t.Parallel()
	rec, _, _, sm := setup(t, true)
	n := 0
	for _, err := range mediator.Stream(context.Background(), sm, watchOrder{}) {
		require.NoError(t, err)
		n++
	}
	require.Equal(t, 2, n)
	var stream sdktrace.ReadOnlySpan
	var children int
	for _, s := range rec.Ended() {
		if s.Name() == "cqrs.stream otel_test.watchOrder" {
			stream = s
		}
	}
	require.NotNil(t, stream)
	assert.Contains(t, stream.Attributes(), cqrsotel.ItemsKey.Int(2))
	for _, s := range rec.Ended() {
		if s.Name() == "cqrs.event otel_test.stockReserved" {
			assert.Equal(t, stream.SpanContext().SpanID(), s.Parent().SpanID())
			children++
		}
	}
	assert.Equal(t, 2, children)
}
