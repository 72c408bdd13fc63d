package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/gocqrs/cqrs/events/brokers"
	"github.com/gocqrs/cqrs/events/outbox"
)

// Defaults of [SubscriberConfig].
const (
	// DefaultPrefetch is the default of [SubscriberConfig.Prefetch].
	DefaultPrefetch = 64
	// DefaultReconnectBase, DefaultReconnectMax and DefaultReconnectJitter
	// make the default of [SubscriberConfig.Reconnect].
	DefaultReconnectBase   = 100 * time.Millisecond
	DefaultReconnectMax    = 30 * time.Second
	DefaultReconnectJitter = 0.5
)

// redelayTimeout bounds the publish that sends a delayed copy round the
// delay queues again, from Receive.
const redelayTimeout = 10 * time.Second

// SubscriberConfig configures a [Subscriber].
type SubscriberConfig struct {
	// URL is the broker's AMQP URI. Required.
	URL string
	// AMQP tunes the connections (see [SenderConfig.AMQP]); its Recovery
	// must be nil.
	AMQP amqp.Config
	// Topology is the subscription: its queue, bindings, dead-letter
	// destination and delay queues. Topology.Queue is required.
	Topology Topology
	// Declare creates the topology (idempotently) on every connection,
	// before consuming: for development and tests. In production, leave it
	// off and create the topology with [Subscriber.Declare] or the
	// deployment's own tools; the Subscriber then only consumes.
	Declare bool
	// Prefetch is the channel's prefetch count (basic.qos): how many
	// unacknowledged messages RabbitMQ sends a Source ahead (default
	// [DefaultPrefetch], at most 65535). Make it at least the consumer's
	// MaxInFlight.
	Prefetch int
	// Reconnect spaces the attempts to reconnect after a lost connection
	// (default 100ms doubling to 30s, jitter 0.5). The first attempt is
	// made at once.
	Reconnect outbox.Backoff
	// Logger receives connection events (default slog.Default()).
	Logger *slog.Logger
}

// Subscriber is the brokers.Subscriber of one RabbitMQ queue. Each Source
// it opens consumes the queue on a connection of its own, with manual
// acknowledgements and a bounded prefetch; Sources of one queue, in one
// process or many, share its messages (competing consumers), unless
// Topology.SingleActiveConsumer is set. Create it with [NewSubscriber].
type Subscriber struct {
	opts SubscriberConfig
	dial dialer
	log  *slog.Logger
}

var _ brokers.Subscriber = (*Subscriber)(nil)

// NewSubscriber returns a Subscriber, or every problem with opts at once,
// each matching [ErrInvalidConfig]. It does not connect.
func NewSubscriber(opts SubscriberConfig) (*Subscriber, error) {
	d, errs := newDialer(opts.URL, opts.AMQP)
	opts.Topology = opts.Topology.withDefaults()
	errs = append(errs, opts.Topology.validate()...)
	if opts.Prefetch == 0 {
		opts.Prefetch = DefaultPrefetch
	}
	if opts.Prefetch < 1 || opts.Prefetch > 65535 {
		errs = append(errs, fmt.Errorf("%w: Prefetch must be in [1, 65535], got %d", ErrInvalidConfig, opts.Prefetch))
	}
	if opts.Reconnect == (outbox.Backoff{}) {
		opts.Reconnect = outbox.Backoff{Base: DefaultReconnectBase, Max: DefaultReconnectMax, Jitter: DefaultReconnectJitter}
	}
	if b := opts.Reconnect; b.Base <= 0 || b.Max < b.Base || !(b.Jitter >= 0 && b.Jitter <= 1) {
		errs = append(errs, fmt.Errorf("%w: Reconnect needs 0 < Base <= Max and Jitter in [0, 1], got %+v", ErrInvalidConfig, b))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.Default()
	}
	return &Subscriber{opts: opts, dial: d, log: logger.With("queue", opts.Topology.Queue)}, nil
}

// Topology returns the subscription's topology, with its defaults filled
// in.
func (s *Subscriber) Topology() Topology { return s.opts.Topology.withDefaults() }

// Subscribe implements brokers.Subscriber: it connects, declares the
// topology if [SubscriberConfig.Declare] is set, and starts consuming. It
// fails if the broker cannot be reached or the queue does not exist.
func (s *Subscriber) Subscribe(ctx context.Context) (brokers.Source, error) {
	sess, err := s.open(ctx)
	if err != nil {
		return nil, err
	}
	s.log.DebugContext(ctx, "rabbitmq: subscribed")
	return &source{sub: s, topo: s.opts.Topology, log: s.log, sess: sess, done: make(chan struct{})}, nil
}

// session is one connection of a Source: the consuming channel and, opened
// on first use, the confirm channel that publishes delayed copies and dead
// letters.
type session struct {
	conn       *amqp.Connection
	consume    *amqp.Channel
	deliveries <-chan amqp.Delivery
	closed     chan *amqp.Error
	// pubLock is held by the settle that publishes: one at a time, so that
	// a basic.return is attributed to its message.
	pubLock chan struct{}
	pub     *confirmChannel
}

// open connects and starts consuming.
func (s *Subscriber) open(ctx context.Context) (*session, error) {
	conn, err := s.dial.dial(ctx)
	if err != nil {
		return nil, err
	}
	sess, err := s.start(ctx, conn)
	if err != nil {
		_ = conn.CloseDeadline(time.Now())
		return nil, err
	}
	return sess, nil
}

func (s *Subscriber) start(ctx context.Context, conn *amqp.Connection) (_ *session, err error) {
	stop := killOnDone(ctx, conn)
	defer func() {
		if !stop() {
			err = errors.Join(err, ctx.Err())
		}
	}()
	closed := conn.NotifyClose(make(chan *amqp.Error, 1))
	if s.opts.Declare {
		ch, err := conn.Channel()
		if err != nil {
			return nil, lost("opening a channel", err)
		}
		if err := s.opts.Topology.declare(ch); err != nil {
			return nil, err
		}
		if err := ch.Close(); err != nil {
			return nil, lost("closing the declaring channel", err)
		}
	}
	ch, err := conn.Channel()
	if err != nil {
		return nil, lost("opening a channel", err)
	}
	if err := ch.Qos(s.opts.Prefetch, 0, false); err != nil {
		return nil, fmt.Errorf("rabbitmq: setting the prefetch: %w", err)
	}
	deliveries, err := ch.Consume(s.opts.Topology.Queue, "", false, false, false, false, nil)
	if err != nil {
		return nil, fmt.Errorf("rabbitmq: consuming queue %q: %w", s.opts.Topology.Queue, err)
	}
	return &session{conn: conn, consume: ch, deliveries: deliveries, closed: closed, pubLock: make(chan struct{}, 1)}, nil
}

// publish publishes one message on the session's confirm channel and waits
// for RabbitMQ's confirmation; a message no queue took is an error.
func (sess *session) publish(ctx context.Context, o outgoing) error {
	select {
	case sess.pubLock <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-sess.pubLock }()
	if sess.pub == nil || !sess.pub.usable() {
		if sess.conn.IsClosed() {
			return lost("publish", amqp.ErrClosed)
		}
		stop := killOnDone(ctx, sess.conn)
		c, err := openConfirm(sess.conn)
		if !stop() {
			return errors.Join(err, ctx.Err())
		}
		if err != nil {
			return err
		}
		sess.pub = c
	}
	if errs := sess.pub.publish(ctx, []outgoing{o}); errs != nil {
		return errs[0]
	}
	return nil
}

// permanent reports whether err, from connecting or consuming, will not go
// away by trying again: the queue or an exchange is missing (404), access
// is refused (403), the topology conflicts with what exists (406).
func permanent(err error) bool {
	e, ok := errors.AsType[*amqp.Error](err)
	if !ok {
		return false
	}
	switch e.Code {
	case amqp.NotFound, amqp.AccessRefused, amqp.PreconditionFailed:
		return true
	}
	return false
}

// source is a brokers.Source: one consumer of the queue, re-established
// after a lost connection.
type source struct {
	sub  *Subscriber
	topo Topology
	log  *slog.Logger
	done chan struct{}

	closed atomic.Bool

	// Used by Receive, and by Close once Receive has returned.
	sess     *session
	failures int
	retryAt  time.Time
}

// Receive implements brokers.Source. After the connection is lost it
// returns an error matching [ErrConnectionLost] (transient); the next call
// reconnects, at once the first time and then after [SubscriberConfig.Reconnect]
// backoffs, returning the error of each failed attempt. It returns an
// error matching outbox.ErrPermanent if the queue no longer exists (and
// Declare is off), access is refused, or the topology conflicts with the
// broker's.
func (s *source) Receive(ctx context.Context) (brokers.Message, error) {
	for {
		if s.closed.Load() {
			return brokers.Message{}, fmt.Errorf("%w: receive", brokers.ErrClosed)
		}
		if err := ctx.Err(); err != nil {
			return brokers.Message{}, err
		}
		if s.sess == nil {
			if err := s.reconnect(ctx); err != nil {
				return brokers.Message{}, err
			}
		}
		sess := s.sess
		select {
		case d, ok := <-sess.deliveries:
			if !ok {
				return brokers.Message{}, s.drop(ctx, "the consumer was cancelled or its channel closed", nil)
			}
			if sess.consume.IsClosed() {
				continue // RabbitMQ has requeued it
			}
			if s.redelay(ctx, sess, &d) {
				continue
			}
			return s.message(sess, &d), nil
		case cause := <-sess.closed:
			return brokers.Message{}, s.drop(ctx, "the connection closed", cause)
		case <-ctx.Done():
			return brokers.Message{}, ctx.Err()
		case <-s.done:
			return brokers.Message{}, fmt.Errorf("%w: receive", brokers.ErrClosed)
		}
	}
}

// drop ends the current session and returns the error Receive reports;
// cause, if known, is why the connection closed.
func (s *source) drop(ctx context.Context, what string, cause *amqp.Error) error {
	sess := s.sess
	s.sess = nil
	if cause == nil {
		select {
		case e, ok := <-sess.closed:
			if ok {
				cause = e
			}
		default:
		}
	}
	var err error = amqp.ErrClosed
	if cause != nil {
		err = cause
	}
	_ = sess.conn.CloseDeadline(time.Now())
	s.failures, s.retryAt = 0, time.Now()
	s.log.WarnContext(ctx, "rabbitmq: connection lost; reconnecting", "reason", what, "error", err)
	return lost("receive: "+what, err)
}

// reconnect waits for the backoff, then opens a new session.
func (s *source) reconnect(ctx context.Context) error {
	if wait := time.Until(s.retryAt); wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		case <-s.done:
			return fmt.Errorf("%w: receive", brokers.ErrClosed)
		}
	}
	sess, err := s.sub.open(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		s.failures++
		wait := s.sub.opts.Reconnect.Delay(s.failures)
		s.retryAt = time.Now().Add(wait)
		s.log.WarnContext(ctx, "rabbitmq: reconnecting failed", "attempt", s.failures, "retry_in", wait, "error", err)
		if permanent(err) {
			return outbox.Permanent(err)
		}
		if errors.Is(err, ErrConnectionLost) {
			return err
		}
		return lost("reconnect", err)
	}
	s.sess, s.failures = sess, 0
	s.log.InfoContext(ctx, "rabbitmq: reconnected")
	return nil
}

// message returns the brokers.Message of d.
func (s *source) message(sess *session, d *amqp.Delivery) brokers.Message {
	headers := flatten(d.Headers)
	topic := d.RoutingKey
	if t, ok := headerString(d.Headers, HeaderTopic); ok && t != "" {
		topic = t
	}
	key := keyOf(headers)
	n := attempt(d)
	return brokers.Message{
		Topic:    topic,
		Key:      key,
		OrderKey: key,
		Headers:  headers,
		Body:     d.Body,
		Attempt:  n,
		Settler:  &settler{src: s, sess: sess, d: *d, topic: topic, attempt: n},
	}
}

// redelay sends a delayed copy whose time has not come round the delay
// queues again, and acknowledges it; it reports whether it did. If the
// copy cannot be published, it is returned early rather than held.
func (s *source) redelay(ctx context.Context, sess *session, d *amqp.Delivery) bool {
	v, ok := headerString(d.Headers, HeaderNotBefore)
	if !ok {
		return false
	}
	at, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return false
	}
	wait := time.Until(at)
	if wait <= 0 {
		return false
	}
	tier := s.topo.tier(wait)
	extra := map[string]string{HeaderTopic: d.RoutingKey}
	if t, ok := headerString(d.Headers, HeaderTopic); ok {
		extra[HeaderTopic] = t
	}
	if n, ok := integer(d.Headers[HeaderAttempts]); ok {
		extra[HeaderAttempts] = strconv.FormatInt(n, 10)
	}
	if wait > tier {
		extra[HeaderNotBefore] = v
	}
	pctx, cancel := context.WithTimeout(ctx, redelayTimeout)
	defer cancel()
	if err := sess.publish(pctx, outgoing{key: s.topo.RetryQueue(tier), mandatory: true, msg: copyOf(d, extra)}); err != nil {
		s.log.WarnContext(ctx, "rabbitmq: delaying a retry further failed; delivering it early", "error", err)
		return false
	}
	if err := d.Ack(false); err != nil {
		// The copy will come back; RabbitMQ requeues this one too.
		s.log.WarnContext(ctx, "rabbitmq: acknowledging a message delayed further failed", "error", err)
	}
	return true
}

// Close implements brokers.Source: it closes the connection, so RabbitMQ
// requeues every message the Source holds unacknowledged, received or
// prefetched.
func (s *source) Close(ctx context.Context) error {
	if !s.closed.CompareAndSwap(false, true) {
		return nil
	}
	close(s.done)
	sess := s.sess
	s.sess = nil
	if sess == nil || sess.conn.IsClosed() {
		return nil
	}
	return closeConn(ctx, sess.conn)
}

// settler settles one delivery.
type settler struct {
	src     *source
	sess    *session
	d       amqp.Delivery
	topic   string
	attempt int

	mu      sync.Mutex
	settled bool
}

// begin locks the settler and checks that the message may be settled; on
// error it is unlocked.
func (m *settler) begin(ctx context.Context) error {
	m.mu.Lock()
	switch {
	case m.src.closed.Load():
		m.mu.Unlock()
		return fmt.Errorf("%w: settle", brokers.ErrClosed)
	case m.settled:
		m.mu.Unlock()
		return brokers.ErrSettled
	}
	if err := ctx.Err(); err != nil {
		m.mu.Unlock()
		return err
	}
	return nil
}

// Ack implements brokers.Settler: basic.ack. RabbitMQ does not answer an
// ack; it fails only if the channel is closed, and RabbitMQ has then
// requeued the message.
func (m *settler) Ack(ctx context.Context) error {
	if err := m.begin(ctx); err != nil {
		return err
	}
	defer m.mu.Unlock()
	if err := m.d.Ack(false); err != nil {
		return lost("ack", err)
	}
	m.settled = true
	return nil
}

// Retry implements brokers.Settler. With no delay, the message is
// requeued (basic.reject with requeue, which quorum queues count as a
// failed delivery) and delivered again at once: in its place in a classic
// queue, behind the messages not yet delivered in a quorum queue. With a delay, a copy is published to the delay queue of the
// shortest tier at least delay (or of the longest, with the time it is due
// in [HeaderNotBefore]), with [HeaderAttempts] and [HeaderTopic]; once
// RabbitMQ confirms it, the message is acknowledged. If the copy cannot be
// published the message is requeued at once rather than held, and the
// error returned.
func (m *settler) Retry(ctx context.Context, delay time.Duration) error {
	if err := m.begin(ctx); err != nil {
		return err
	}
	defer m.mu.Unlock()
	if delay <= 0 {
		if err := m.d.Reject(true); err != nil {
			return lost("requeue", err)
		}
		m.settled = true
		return nil
	}
	tier := m.src.topo.tier(delay)
	extra := map[string]string{
		HeaderAttempts: strconv.Itoa(m.attempt),
		HeaderTopic:    m.topic,
	}
	if delay > tier {
		extra[HeaderNotBefore] = time.Now().Add(delay).UTC().Format(time.RFC3339Nano)
	}
	err := m.sess.publish(ctx, outgoing{key: m.src.topo.RetryQueue(tier), mandatory: true, msg: copyOf(&m.d, extra)})
	if err != nil {
		err = fmt.Errorf("rabbitmq: publishing the delayed copy: %w", err)
		if nerr := m.d.Reject(true); nerr != nil {
			return errors.Join(err, lost("requeue", nerr))
		}
		m.settled = true
		return fmt.Errorf("%w (requeued without delay)", err)
	}
	if err := m.d.Ack(false); err != nil {
		return lost("ack after publishing the delayed copy", err)
	}
	m.settled = true
	return nil
}

// DeadLetter implements brokers.Settler: it publishes the message, with
// its producer's headers plus d's, to the dead-letter exchange with its
// topic as the routing key (mandatory: a dead letter no queue takes is an
// error), waits for RabbitMQ's confirmation, then acknowledges it.
func (m *settler) DeadLetter(ctx context.Context, dl brokers.DeadLetter) error {
	if err := m.begin(ctx); err != nil {
		return err
	}
	defer m.mu.Unlock()
	msg := copyOf(&m.d, dl.Headers())
	if err := m.sess.publish(ctx, outgoing{exchange: m.src.topo.DeadLetterExchange, key: m.topic, mandatory: true, msg: msg}); err != nil {
		return fmt.Errorf("rabbitmq: publishing the dead letter: %w", err)
	}
	if err := m.d.Ack(false); err != nil {
		return lost("ack after publishing the dead letter", err)
	}
	m.settled = true
	return nil
}
