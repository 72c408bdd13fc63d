package otel

import (
	"context"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/requests"
)

// ScopeName is the instrumentation scope of the tracer.
const ScopeName = "github.com/gocqrs/cqrs/mediator/otel"

// Attribute keys set on every span.
const (
	RequestTypeKey = attribute.Key("cqrs.request.type")
	EventTypeKey   = attribute.Key("cqrs.event.type")
	HandlerKey     = attribute.Key("cqrs.handler")
	ItemsKey       = attribute.Key("cqrs.stream.items")
)

// Tracing is middleware for Send, Stream and event handlers that records
// spans.
type Tracing struct {
	tracer trace.Tracer
}

var (
	_ requests.Middleware       = (*Tracing)(nil)
	_ requests.StreamMiddleware = (*Tracing)(nil)
	_ events.Middleware         = (*Tracing)(nil)
)

// New returns tracing middleware using tp, or the global TracerProvider when
// tp is nil.
func New(tp trace.TracerProvider) *Tracing {
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	return &Tracing{tracer: tp.Tracer(ScopeName)}
}

func end(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// WrapRequest implements requests.Middleware: a span "cqrs.send <type>".
func (t *Tracing) WrapRequest(info requests.Info, next requests.AnyHandlerFunc) requests.AnyHandlerFunc {
	name := "cqrs.send " + info.Request.String()
	opts := []trace.SpanStartOption{
		trace.WithSpanKind(trace.SpanKindInternal),
		trace.WithAttributes(RequestTypeKey.String(info.Request.String()), HandlerKey.String(info.Handler)),
	}
	return func(ctx context.Context, req any) (any, error) {
		ctx, span := t.tracer.Start(ctx, name, opts...)
		res, err := next(ctx, req)
		end(span, err)
		return res, err
	}
}

// WrapStream implements requests.StreamMiddleware: a span "cqrs.stream
// <type>" around the whole stream, with the number of items delivered.
func (t *Tracing) WrapStream(info requests.Info, next requests.AnyStreamFunc) requests.AnyStreamFunc {
	name := "cqrs.stream " + info.Request.String()
	opts := []trace.SpanStartOption{
		trace.WithSpanKind(trace.SpanKindInternal),
		trace.WithAttributes(RequestTypeKey.String(info.Request.String()), HandlerKey.String(info.Handler)),
	}
	return func(ctx context.Context, req any, yield func(any, error) bool) error {
		ctx, span := t.tracer.Start(ctx, name, opts...)
		items := 0
		err := next(ctx, req, func(item any, err error) bool {
			items++
			return yield(item, err)
		})
		span.SetAttributes(ItemsKey.Int(items))
		end(span, err)
		return err
	}
}

// WrapEvent implements events.Middleware: a span "cqrs.event <type>" per
// handler invocation.
func (t *Tracing) WrapEvent(inv events.Invocation, next events.InvocationFunc) events.InvocationFunc {
	name := "cqrs.event " + inv.EventType.String()
	opts := []trace.SpanStartOption{
		trace.WithSpanKind(trace.SpanKindInternal),
		trace.WithAttributes(EventTypeKey.String(inv.EventType.String()), HandlerKey.String(inv.Handler)),
	}
	return func(ctx context.Context, ev events.Event) ([]events.Event, error) {
		ctx, span := t.tracer.Start(ctx, name, opts...)
		fus, err := next(ctx, ev)
		end(span, err)
		return fus, err
	}
}
