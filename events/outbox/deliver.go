package outbox

import (
	"context"

	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/events/wire"
)

// Decode returns a delivery function for [InProcessSender] (or a broker
// consumer): it decodes each envelope with dec and hands the typed event to
// handle (typically an EventMediator's Send) with a context carrying the
// envelope's lineage: its correlation id, and its own id as the causation
// id. So the notification events the event's handlers emit continue the
// correlation, in this process or another.
func Decode(dec *wire.Decoder, handle func(ctx context.Context, ev events.Event) error) func(ctx context.Context, env wire.Envelope) error {
	return func(ctx context.Context, env wire.Envelope) error {
		ev, err := dec.Decode(env)
		if err != nil {
			return Permanent(err) // retrying cannot decode it
		}
		corr := env.CorrelationID
		if corr == "" {
			corr = env.ID.String()
		}
		return handle(events.WithLineage(ctx, events.Lineage{CorrelationID: corr, CausationID: env.ID.String()}), ev)
	}
}
