package rabbitmq

import (
	"context"
	"fmt"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// returnsBuffer is the capacity of a confirm channel's basic.return
// listener. amqp091-go drops a return it cannot hand over within five
// seconds; returns are drained after every publish and while confirmations
// are awaited, so the buffer only absorbs bursts.
const returnsBuffer = 256

// outgoing is one message to publish.
type outgoing struct {
	exchange, key string
	mandatory     bool
	msg           amqp.Publishing
}

// confirmChannel is a channel in confirm mode, used by one goroutine at a
// time. Publishing waits for RabbitMQ's confirmation of every message and
// attributes the basic.returns of mandatory messages to them.
type confirmChannel struct {
	conn    *amqp.Connection
	ch      *amqp.Channel
	returns chan amqp.Return
	closed  chan *amqp.Error
	// cause is why the channel closed, once known.
	cause *amqp.Error
	// broken is set once the channel's state is unknown (a publish was
	// abandoned): it must not be used again.
	broken bool
	// killed is set once the connection was closed because ctx ended
	// during a publish.
	killed bool
}

// openConfirm opens a channel in confirm mode on conn.
func openConfirm(conn *amqp.Connection) (*confirmChannel, error) {
	ch, err := conn.Channel()
	if err != nil {
		return nil, lost("opening a channel", err)
	}
	if err := ch.Confirm(false); err != nil {
		_ = ch.Close()
		return nil, lost("enabling publisher confirms", err)
	}
	return &confirmChannel{
		conn:    conn,
		ch:      ch,
		returns: ch.NotifyReturn(make(chan amqp.Return, returnsBuffer)),
		closed:  ch.NotifyClose(make(chan *amqp.Error, 1)),
	}, nil
}

// usable reports whether the channel can publish again.
func (c *confirmChannel) usable() bool {
	return !c.broken && !c.ch.IsClosed() && !c.conn.IsClosed()
}

// closeErr returns why the channel or its connection closed, as a lost
// connection.
func (c *confirmChannel) closeErr(op string) error {
	if c.cause == nil {
		select {
		case e, ok := <-c.closed:
			if ok && e != nil {
				c.cause = e
			}
		default:
		}
	}
	if c.cause != nil {
		return lost(op, c.cause)
	}
	return lost(op, amqp.ErrClosed)
}

// publish publishes out in order and waits for RabbitMQ to confirm each
// message. It returns nil if every message was confirmed (and, if
// mandatory, routed), else one error per message: nil for a confirmed
// one; a *ReturnedError for a mandatory message no queue took; an error
// matching ErrNacked for a message RabbitMQ refused; one matching
// ErrConnectionLost when the channel or connection closed first; ctx's
// error once ctx is done.
//
// If ctx is done before every confirmation arrived, the connection is
// closed at once (a write blocked by RabbitMQ's flow control cannot be
// interrupted otherwise, and the channel's pending confirmations and
// returns would be attributed to later messages); the owner re-dials.
func (c *confirmChannel) publish(ctx context.Context, out []outgoing) []error {
	var (
		errs     []error
		returned []amqp.Return
		dcs      = make([]*amqp.DeferredConfirmation, len(out))
	)
	fail := func(i int, err error) {
		if errs == nil {
			errs = make([]error, len(out))
		}
		errs[i] = err
	}
	drain := func() {
		for {
			select {
			case r, ok := <-c.returns:
				if !ok {
					return
				}
				returned = append(returned, r)
			default:
				return
			}
		}
	}
	if err := ctx.Err(); err != nil {
		errs = make([]error, len(out))
		for i := range errs {
			errs[i] = err
		}
		return errs
	}
	stop := killOnDone(ctx, c.conn)
	for i := range out {
		o := &out[i]
		if err := ctx.Err(); err != nil {
			for j := i; j < len(out); j++ {
				fail(j, err)
			}
			break
		}
		dc, err := c.ch.PublishWithDeferredConfirmWithContext(ctx, o.exchange, o.key, o.mandatory, false, o.msg)
		if err != nil {
			c.broken = true
			cause := c.closeErr("publish")
			if ctx.Err() != nil {
				cause = ctx.Err()
			}
			for j := i; j < len(out); j++ {
				fail(j, cause)
			}
			break
		}
		dcs[i] = dc
		drain()
	}
	abandoned := false
	for i, dc := range dcs {
		if dc == nil {
			continue
		}
		if !c.await(ctx, dc, &returned) {
			abandoned = true
			for j := i; j < len(dcs); j++ {
				if dcs[j] != nil && !dcs[j].Acked() {
					fail(j, fmt.Errorf("rabbitmq: waiting for the confirmation: %w", ctx.Err()))
					dcs[j] = nil
				}
			}
			break
		}
	}
	drain()
	if killing := !stop(); killing || abandoned {
		// ctx ended while publishing: confirmations and returns may still
		// come for this channel. Close the connection, if killOnDone has
		// not started to (ctx's Done channel closes before its AfterFuncs
		// run).
		if !killing {
			_ = c.conn.CloseDeadline(time.Now())
		}
		c.broken, c.killed = true, true
	}
	for i, dc := range dcs {
		if dc == nil || dc.Acked() {
			continue
		}
		if c.ch.IsClosed() || c.conn.IsClosed() {
			fail(i, c.closeErr("publish"))
		} else {
			fail(i, fmt.Errorf("rabbitmq: publish to exchange %q with routing key %q: %w", out[i].exchange, out[i].key, ErrNacked))
		}
	}
	// Returns come in publish order, each before the confirmation of its
	// message: match them in order.
	next := 0
	for _, r := range returned {
		for j := next; j < len(out); j++ {
			o := &out[j]
			if dcs[j] != nil && o.mandatory && o.exchange == r.Exchange && o.key == r.RoutingKey && o.msg.MessageId == r.MessageId {
				if errs == nil || errs[j] == nil {
					fail(j, &ReturnedError{Exchange: r.Exchange, RoutingKey: r.RoutingKey, ReplyCode: r.ReplyCode, ReplyText: r.ReplyText})
				}
				next = j + 1
				break
			}
		}
	}
	return errs
}

// await waits for dc, collecting returns meanwhile; it reports false if
// ctx ended first.
func (c *confirmChannel) await(ctx context.Context, dc *amqp.DeferredConfirmation, returned *[]amqp.Return) bool {
	returns := c.returns
	for {
		select {
		case <-dc.Done():
			return true
		case r, ok := <-returns:
			if !ok {
				returns = nil
				continue
			}
			*returned = append(*returned, r)
		case <-ctx.Done():
			return false
		}
	}
}
