package kafka

import (
	"context"
	"errors"
	"fmt"
	"reflect"

	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/events/outbox"
	"github.com/gocqrs/cqrs/events/wire"
)

// Publisher publishes notification events straight to Kafka, through a
// [Sender], without an outbox: an events.Publisher for services that
// accept the risk. An event published by a handler whose transaction then
// rolls back is out nonetheless, and one whose Publish fails (the broker is
// down) is lost unless the caller retries: the transactional outbox
// (outbox.Capture and outbox.Relay with the Sender) has neither problem.
// Publish returns once the record is acknowledged by all in-sync replicas.
// It is safe for concurrent use.
type Publisher struct {
	s     *Sender
	enc   *wire.Encoder
	stamp []func(ctx context.Context, env *wire.Envelope)
}

var _ events.Publisher = (*Publisher)(nil)

// PublisherOption configures a [Publisher].
type PublisherOption func(*Publisher)

// WithStamp adds f, called for every envelope after it is encoded and
// stamped with its lineage and before it is sent, with the publishing
// context: for example to put the trace context in its headers
// (otel.InjectEnvelope in module mediator/otel).
func WithStamp(f func(ctx context.Context, env *wire.Envelope)) PublisherOption {
	return func(p *Publisher) {
		if f != nil {
			p.stamp = append(p.stamp, f)
		}
	}
}

// NewPublisher returns a Publisher that encodes events with enc (nil: the
// zero wire.Encoder, JSON without compression) and sends them with s. It
// fails, matching [ErrInvalidConfig], if s is nil.
func NewPublisher(s *Sender, enc *wire.Encoder, opts ...PublisherOption) (*Publisher, error) {
	if s == nil {
		return nil, invalid("nil Sender")
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

// Publish implements events.Publisher: it encodes ev, stamps it with ctx's
// lineage (events.LineageFrom; an event with none starts its own
// correlation, and is its own cause) and sends it. Its error is the
// record's: see [Sender.Send].
func (p *Publisher) Publish(ctx context.Context, ev events.NotificationEvent) error {
	if isNil(ev) {
		return fmt.Errorf("kafka: publish: %w", outbox.Permanent(errors.New("nil notification event")))
	}
	env, err := p.enc.Encode(ev)
	if err != nil {
		return fmt.Errorf("kafka: publish: %w", err)
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
	if be, ok := errors.AsType[*outbox.BatchError](err); ok && len(be.Errs) == 1 {
		err = be.Errs[0]
	}
	if err != nil {
		return fmt.Errorf("kafka: publish %s %s: %w", env.Name, env.ID, err)
	}
	return nil
}

// isNil reports whether v is nil or a nil pointer, map, slice, func,
// channel or interface.
func isNil(v any) bool {
	if v == nil {
		return true
	}
	switch rv := reflect.ValueOf(v); rv.Kind() {
	case reflect.Pointer, reflect.Map, reflect.Slice, reflect.Func, reflect.Chan, reflect.Interface:
		return rv.IsNil()
	default:
		return false
	}
}
