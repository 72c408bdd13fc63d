// Package otel traces the mediator with OpenTelemetry: one span per Send,
// per Stream and per event-handler invocation, named after the request or
// event type, with the type and the handler as attributes.
//
//	tr := otel.New(tracerProvider)
//	m, err := bootstrap.Bootstrap(c, bootstrap.WithMiddleware(tr), ...)
//
// Spans are linked parent to child: the span of a Send (or a Stream) is the
// child of the span in the caller's context, and the spans of the event
// handlers it caused, follow-ups included, are children of it, because
// global middleware wraps the whole Send, fan-out included, and the context
// it passes on is the one event handlers receive. A failure is recorded on
// the span (RecordError, status Error).
//
// It is a separate module so that the core module does not depend on
// OpenTelemetry.
//
// # Concurrency
//
// A Tracing value is safe for concurrent use; its spans are started and
// ended on the goroutine that runs the traced call.
package otel
