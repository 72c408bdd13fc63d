package outbox

import (
	"context"
	"errors"

	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/events/wire"
)

// Decode returns a delivery function for [InProcessSender] (or a broker
// consumer): it decodes each envelope with dec and hands the typed event to
// handle (typically an EventMediator's Send) with a context carrying the
// envelope's lineage: its correlation id, and its own id as the causation
// id. So the notification events the event's handlers emit continue the
// correlation, in this process or another.
//
// An envelope whose name dec does not know is delivered to nobody and
// reported sent: no consumer of this process wants it, and it must not hold
// back its key. One dec cannot decode (a malformed body for a known name) is
// a permanent failure: the row goes dead at once, since retrying cannot
// decode it.
func Decode(dec *wire.Decoder, handle func(ctx context.Context, ev events.Event) error) func(ctx context.Context, env wire.Envelope) error {
	return func(ctx context.Context, env wire.Envelope) error {
		ev, err := dec.Decode(env)
		switch {
		case errors.Is(err, wire.ErrUnknownEvent):
			return nil // no consumer here knows the event: nothing to deliver
		case err != nil:
			return Permanent(err) // retrying cannot decode it
		}
		corr := env.CorrelationID
		if corr == "" {
			corr = env.ID.String()
		}
		return handle(events.WithLineage(ctx, events.Lineage{CorrelationID: corr, CausationID: env.ID.String()}), ev)
	}
}
