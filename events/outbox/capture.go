package outbox

import (
	"context"
	"errors"
	"fmt"

	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/events/wire"
	"github.com/gocqrs/cqrs/internal/registry"
)

// Capture connects a mediator to an outbox: it is the mediator's
// transactional capture (mediator.Config.Capture, bootstrap.WithOutbox) and
// its Publisher.
//
//   - As the capture, it runs a request handler in a transaction of its
//     Transactor, carried by the handler's context, so the handler's own
//     writes use it; it encodes the notification events the handler
//     returned, stamps them with the context's lineage, and adds them to
//     the outbox in that same transaction. The mediator dispatches the
//     handler's other events only after the commit. If the handler fails, or
//     an event cannot be encoded or added, the transaction rolls back:
//     neither the handler's writes nor its events exist.
//   - As a Publisher (notification events emitted later, by event
//     handlers), it adds each event in the transaction its context carries,
//     or in a transaction of its own.
//
// Either way an event is only ever sent by a relay, after its transaction
// committed. It is safe for concurrent use.
type Capture struct {
	tx    Transactor
	out   Adder
	enc   *wire.Encoder
	stamp []func(ctx context.Context, env *wire.Envelope)
}

// CaptureOption configures a [Capture].
type CaptureOption func(*Capture)

// WithStamp adds f, called for every envelope after it is encoded and
// stamped with its lineage and before it is added, with the context of the
// handler that emitted the event: for example to put the trace context in
// its headers (otel.InjectEnvelope in module mediator/otel).
func WithStamp(f func(ctx context.Context, env *wire.Envelope)) CaptureOption {
	return func(c *Capture) {
		if f != nil {
			c.stamp = append(c.stamp, f)
		}
	}
}

// NewCapture returns a Capture that writes to out in transactions of tx,
// encoding events with enc (nil: the zero wire.Encoder, JSON without
// compression). It reports every missing argument at once.
func NewCapture(tx Transactor, out Adder, enc *wire.Encoder, opts ...CaptureOption) (*Capture, error) {
	var errs []error
	if registry.IsNil(tx) {
		errs = append(errs, fmt.Errorf("%w: nil Transactor", ErrInvalidConfig))
	}
	if registry.IsNil(out) {
		errs = append(errs, fmt.Errorf("%w: nil Adder", ErrInvalidConfig))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if enc == nil {
		enc = &wire.Encoder{}
	}
	c := &Capture{tx: tx, out: out, enc: enc}
	for _, o := range opts {
		o(c)
	}
	return c, nil
}

// Capture implements mediator.Capturer: see [Capture].
func (c *Capture) Capture(ctx context.Context, handle func(ctx context.Context) ([]events.Event, error)) (context.Context, []events.Event, error) {
	ctx, lin := events.EnsureLineage(ctx)
	var rest []events.Event
	err := c.tx.InTx(ctx, func(ctx context.Context) error {
		evs, err := handle(ctx)
		if err != nil {
			return err
		}
		var envs []wire.Envelope
		for _, ev := range evs {
			ne, ok := ev.(events.NotificationEvent)
			if !ok || registry.IsNil(ne) {
				rest = append(rest, ev) // the mediator reports a nil event
				continue
			}
			env, err := c.encode(ctx, ne, lin)
			if err != nil {
				return err
			}
			envs = append(envs, env)
		}
		if len(envs) == 0 {
			return nil
		}
		return c.out.Add(ctx, envs...)
	})
	if err != nil {
		return ctx, nil, err
	}
	return ctx, rest, nil
}

// Publish implements events.Publisher: it adds ev to the outbox in the
// transaction ctx carries, or in one of its own, stamped with ctx's lineage
// (an event with none starts its own correlation).
func (c *Capture) Publish(ctx context.Context, ev events.NotificationEvent) error {
	if registry.IsNil(ev) {
		return fmt.Errorf("%w: nil notification event", ErrInvalidEnvelope)
	}
	lin, _ := events.LineageFrom(ctx)
	env, err := c.encode(ctx, ev, lin)
	if err != nil {
		return err
	}
	return c.tx.InTx(ctx, func(ctx context.Context) error { return c.out.Add(ctx, env) })
}

// encode encodes ev and stamps it with lin; an event without a lineage is
// the first of its correlation and its own cause.
func (c *Capture) encode(ctx context.Context, ev events.NotificationEvent, lin events.Lineage) (wire.Envelope, error) {
	env, err := c.enc.Encode(ev)
	if err != nil {
		return wire.Envelope{}, err
	}
	env.CorrelationID, env.CausationID = lin.CorrelationID, lin.CausationID
	if env.CorrelationID == "" {
		env.CorrelationID = env.ID.String()
	}
	if env.CausationID == "" {
		env.CausationID = env.CorrelationID
	}
	for _, f := range c.stamp {
		f(ctx, &env)
	}
	return env, nil
}
