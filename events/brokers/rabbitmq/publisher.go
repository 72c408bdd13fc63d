package rabbitmq

import (
	"context"
	"errors"
	"fmt"

	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/events/outbox"
	"github.com/gocqrs/cqrs/events/wire"
	"github.com/gocqrs/cqrs/internal/registry"
)

// Publisher is an events.Publisher that publishes each notification event
// straight to RabbitMQ through a [Sender], returning once RabbitMQ has
// confirmed it.
//
// It is not transactional: an event published by a handler whose
// transaction then rolls back is out anyway, and an event whose publish
// fails after the transaction committed is lost unless the caller retries.
// Use it where that is acceptable; otherwise write events to an outbox in
// the handler's transaction (outbox.Capture) and let a relay send them with
// the Sender. It is safe for concurrent use.
type Publisher struct {
	s     *Sender
	enc   *wire.Encoder
	stamp []func(ctx context.Context, env *wire.Envelope)
}

var _ events.Publisher = (*Publisher)(nil)

// PublisherOption configures a [Publisher].
type PublisherOption func(*Publisher)

// WithStamp adds f, called for every envelope once it is encoded and
// stamped with its lineage, before it is sent, with the publisher's
// context: for example to put the trace context in its headers
// (otel.InjectEnvelope in module mediator/otel writes traceparent).
func WithStamp(f func(ctx context.Context, env *wire.Envelope)) PublisherOption {
	return func(p *Publisher) {
		if f != nil {
			p.stamp = append(p.stamp, f)
		}
	}
}

// NewPublisher returns a Publisher sending through s and encoding with enc
// (nil: the zero wire.Encoder, JSON without compression).
func NewPublisher(s *Sender, enc *wire.Encoder, opts ...PublisherOption) (*Publisher, error) {
	if s == nil {
		return nil, fmt.Errorf("%w: nil Sender", ErrInvalidConfig)
	}
	if enc == nil {
		enc = &wire.Encoder{}
	}
	p := &Publisher{s: s, enc: enc}
	for _, o := range opts {
		o(p)
	}
	return p, nil
}

// Publish encodes ev, stamps it with ctx's lineage (events.LineageFrom: the
// correlation id, and the causation id; an event with none starts its own
// correlation), applies the stamps, and sends it. The error is the
// record's: it matches outbox.ErrPermanent when sending again cannot help
// (an unroutable message, an invalid event).
func (p *Publisher) Publish(ctx context.Context, ev events.NotificationEvent) error {
	if registry.IsNil(ev) {
		return outbox.Permanent(errors.New("rabbitmq: nil notification event"))
	}
	env, err := p.enc.Encode(ev)
	if err != nil {
		return outbox.Permanent(err)
	}
	lin, _ := events.LineageFrom(ctx)
	env.CorrelationID, env.CausationID = lin.CorrelationID, lin.CausationID
	if env.CorrelationID == "" {
		env.CorrelationID = env.ID.String()
	}
	if env.CausationID == "" {
		env.CausationID = env.CorrelationID
	}
	for _, f := range p.stamp {
		f(ctx, &env)
	}
	err = p.s.Send(ctx, []wire.Envelope{env})
	if be, ok := errors.AsType[*outbox.BatchError](err); ok && len(be.Errs) == 1 && be.Errs[0] != nil {
		return be.Errs[0]
	}
	return err
}
