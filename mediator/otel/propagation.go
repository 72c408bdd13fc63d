package otel

import (
	"context"

	"go.opentelemetry.io/otel/propagation"

	"github.com/gocqrs/cqrs/events/wire"
)

// InjectEnvelope writes the W3C trace context of ctx (its current span) into
// env's headers, so the consumer's spans continue the trace. Use it as an
// outbox stamp: outbox.NewCapture(tx, store, enc, outbox.WithStamp(otel.InjectEnvelope)).
// Without a span in ctx it writes nothing.
func InjectEnvelope(ctx context.Context, env *wire.Envelope) {
	carrier := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(ctx, carrier)
	for k, v := range carrier {
		env.SetHeader(k, v)
	}
}

// ExtractHeaders returns ctx carrying the remote span context found in
// headers (traceparent, tracestate), so a consumer's handler spans are
// children of the producer's. It fits brokers.Config.Extract. Headers
// without a valid traceparent leave ctx unchanged.
func ExtractHeaders(ctx context.Context, headers map[string]string) context.Context {
	carrier := propagation.MapCarrier{}
	for k, v := range headers {
		switch k {
		case wire.HeaderTraceparent, wire.HeaderTracestate:
			carrier[k] = v
		}
	}
	if len(carrier) == 0 {
		return ctx
	}
	return propagation.TraceContext{}.Extract(ctx, carrier)
}
