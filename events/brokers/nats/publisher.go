package nats

import (
	"context"
	"errors"
	"fmt"

	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/events/outbox"
	"github.com/gocqrs/cqrs/events/wire"
)

// PublisherConfig configures a [Publisher].
type PublisherConfig struct {
	// Encoder encodes the events (default: the zero wire.Encoder, JSON
	// without compression).
	Encoder *wire.Encoder
	// Stamp, if set, is called for every envelope after it is encoded and
	// stamped with its lineage, with the publisher's context: for example
	// to put the trace context in its headers (otel.InjectEnvelope in
	// module mediator/otel).
	Stamp func(ctx context.Context, env *wire.Envelope)
}

// Publisher publishes notification events straight to JetStream, without
// an outbox: an events.Publisher for services that accept the risk. An
// event published from a handler whose transaction then rolls back is
// sent anyway, and one whose transaction commits is lost if the process
// dies before Publish returns; the outbox (outbox.Capture and a relay
// calling a [Sender]) has neither problem. Publish returns once the stream
// has acknowledged the event. It is safe for concurrent use.
type Publisher struct {
	sender *Sender
	enc    *wire.Encoder
	stamp  func(ctx context.Context, env *wire.Envelope)
}

var _ events.Publisher = (*Publisher)(nil)

// NewPublisher returns a Publisher sending through sender.
func NewPublisher(sender *Sender, opts PublisherConfig) (*Publisher, error) {
	if sender == nil {
		return nil, fmt.Errorf("%w: nil Sender", ErrInvalidConfig)
	}
	enc := opts.Encoder
	if enc == nil {
		enc = &wire.Encoder{}
	}
	return &Publisher{sender: sender, enc: enc, stamp: opts.Stamp}, nil
}

// Publish encodes ev, stamps it with ctx's lineage (events.LineageFrom;
// an event published outside any lineage starts its own correlation: its
// own id), calls PublisherConfig.Stamp, and sends it to its topic,
// waiting for the stream's acknowledgement. The error is the record's (a
// *[PublishError], possibly permanent) or the encoder's.
func (p *Publisher) Publish(ctx context.Context, ev events.NotificationEvent) error {
	env, err := p.enc.Encode(ev)
	if err != nil {
		return err
	}
	lin, _ := events.LineageFrom(ctx)
	env.CorrelationID, env.CausationID = lin.CorrelationID, lin.CausationID
	if env.CorrelationID == "" {
		env.CorrelationID = env.ID.String()
	}
	if env.CausationID == "" {
		env.CausationID = env.CorrelationID
	}
	if p.stamp != nil {
		p.stamp(ctx, &env)
	}
	err = p.sender.Send(ctx, []wire.Envelope{env})
	if be, ok := errors.AsType[*outbox.BatchError](err); ok && len(be.Errs) == 1 {
		return be.Errs[0]
	}
	return err
}
