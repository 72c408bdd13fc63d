package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/gocqrs/cqrs/events/brokers"
	"github.com/gocqrs/cqrs/events/outbox"
	"github.com/gocqrs/cqrs/events/wire"
)

// DefaultChannels is the default of [SenderConfig.Channels].
const DefaultChannels = 4

// defaultCloseTimeout bounds a Close whose context has no deadline.
const defaultCloseTimeout = 5 * time.Second

// maxShortStr is the longest AMQP short string: header names and the
// message-id, correlation-id, type and content-type properties.
const maxShortStr = 255

// SenderConfig configures a [Sender].
type SenderConfig struct {
	// URL is the broker's AMQP URI, "amqp://user:password@host:5672/vhost".
	// Required.
	URL string
	// AMQP tunes the connection: TLS, heartbeat, SASL, client properties
	// (a connection_name shows in the management UI). Its Recovery must be
	// nil: the Sender re-dials by itself when its connection is lost.
	AMQP amqp.Config
	// Exchange receives every envelope, with the envelope's Topic as the
	// routing key. Empty means the default exchange, which routes to the
	// queue named by the routing key.
	Exchange string
	// DeclareExchange declares Exchange, as a durable topic exchange, on
	// every connection: for development and tests.
	DeclareExchange bool
	// AllowUnroutable turns off mandatory publishing: a message no queue is
	// bound to receive is then dropped by RabbitMQ and reported as sent. By
	// default (false) it is returned, and the Sender reports it as a
	// permanent failure (*ReturnedError, outbox.ErrPermanent).
	AllowUnroutable bool
	// Channels bounds how many Send calls publish at once, each on a
	// channel of its own (default [DefaultChannels]); further calls wait.
	Channels int
	// Logger receives connection events (default slog.Default()).
	Logger *slog.Logger
}

// Sender publishes envelopes to RabbitMQ: it is the outbox.Sender of an
// outbox relay, and the transport of a [Publisher]. It publishes on one
// connection, dialled on first use and again after it is lost, with
// publisher confirms, persistent delivery and (by default) mandatory
// routing. It is safe for concurrent use; it starts no goroutine of its
// own. Create it with [NewSender] and Close it when done.
type Sender struct {
	opts  SenderConfig
	dial  dialer
	log   *slog.Logger
	slots chan struct{}
	// dialing is held by the call that dials.
	dialing chan struct{}

	mu     sync.Mutex
	conn   *amqp.Connection
	idle   []*confirmChannel
	closed bool
}

var _ outbox.Sender = (*Sender)(nil)

// NewSender returns a Sender, or every problem with opts at once, each
// matching [ErrInvalidConfig]. It does not connect: the first Send does.
func NewSender(opts SenderConfig) (*Sender, error) {
	d, errs := newDialer(opts.URL, opts.AMQP)
	if opts.Channels == 0 {
		opts.Channels = DefaultChannels
	}
	if opts.Channels < 0 {
		errs = append(errs, fmt.Errorf("%w: Channels must be positive, got %d", ErrInvalidConfig, opts.Channels))
	}
	if opts.DeclareExchange && opts.Exchange == "" {
		errs = append(errs, fmt.Errorf("%w: DeclareExchange needs an Exchange (the default exchange always exists)", ErrInvalidConfig))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.Default()
	}
	return &Sender{opts: opts, dial: d, log: logger, slots: make(chan struct{}, opts.Channels),
		dialing: make(chan struct{}, 1)}, nil
}

// Send implements outbox.Sender. Each envelope is published to the
// Exchange with its Topic as the routing key, its Payload as the body,
// wire.ToHeaders(env) plus brokers.HeaderKey (its Key) as headers, as a
// persistent message whose message-id is the event ID (and correlation-id,
// type, content-type and timestamp its CorrelationID, Name, ContentType and
// Timestamp, for other clients). Send returns once RabbitMQ has confirmed
// every message (for a durable queue: written to disk, or replicated by a
// quorum queue), or failed.
//
// Records of one Key are published one after the other, each once the
// previous one is confirmed; records of different keys, and records
// without a key, are published together and confirmed together. After a
// record fails, the later records of its key are not published
// ([outbox.ErrNotAttempted]).
//
// Per-record failures come in an *outbox.BatchError: an envelope without
// Topic, or whose headers cannot be written, fails with a permanent error
// (outbox.Permanent), as does a message no queue is bound to receive
// (*[ReturnedError]), unless AllowUnroutable; a message RabbitMQ refused
// ([ErrNacked]) or whose confirmation was lost ([ErrConnectionLost]) fails
// with a transient error; once ctx is done, unsent records fail with ctx's
// error. If ctx ends while messages await their confirmation the connection
// is closed (and re-dialled by the next Send), since nothing else
// interrupts a publish held by RabbitMQ's flow control. Any other error
// (the broker cannot be reached) means no record was sent.
func (s *Sender) Send(ctx context.Context, envs []wire.Envelope) error {
	if err := ctx.Err(); err != nil || len(envs) == 0 {
		return err
	}
	out := make([]outgoing, len(envs))
	bad := make([]error, len(envs))
	for i, env := range envs {
		out[i], bad[i] = s.outgoing(env)
	}
	select {
	case s.slots <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-s.slots }()
	c, err := s.channel(ctx)
	if err != nil {
		return err
	}
	defer s.release(c)
	return sendRounds(ctx, c, envs, out, bad)
}

// sendRounds publishes the records in rounds: each round holds at most one
// record per key (the first not yet sent), in batch order, and every record
// without a key; a round is published at once and its confirmations
// awaited before the next round starts.
func sendRounds(ctx context.Context, c *confirmChannel, envs []wire.Envelope, out []outgoing, bad []error) error {
	var (
		errs   []error
		failed map[string]bool
	)
	fail := func(i int, err error) {
		if errs == nil {
			errs = make([]error, len(envs))
		}
		errs[i] = err
		if k := envs[i].Key; k != "" {
			if failed == nil {
				failed = make(map[string]bool)
			}
			failed[k] = true
		}
	}
	pending := make([]int, len(envs))
	for i := range pending {
		pending[i] = i
	}
	var (
		round   []int
		batch   []outgoing
		inRound map[string]bool
	)
	for len(pending) > 0 {
		round, batch = round[:0], batch[:0]
		clear(inRound)
		next := pending[:0:0]
		for _, i := range pending {
			k := envs[i].Key
			switch {
			case k != "" && failed[k]:
				errs = setErr(errs, len(envs), i, outbox.ErrNotAttempted)
			case bad[i] != nil:
				fail(i, outbox.Permanent(bad[i]))
			case k != "" && inRound[k]:
				next = append(next, i)
			default:
				if k != "" {
					if inRound == nil {
						inRound = make(map[string]bool)
					}
					inRound[k] = true
				}
				round = append(round, i)
				batch = append(batch, out[i])
			}
		}
		if len(round) > 0 {
			if !c.usable() {
				err := c.closeErr("publish")
				for _, i := range round {
					fail(i, err)
				}
			} else if res := c.publish(ctx, batch); res != nil {
				for j, err := range res {
					if err == nil {
						continue
					}
					if errors.Is(err, ErrUnroutable) {
						err = outbox.Permanent(err)
					}
					fail(round[j], err)
				}
			}
		}
		pending = next
	}
	if errs == nil {
		return nil
	}
	return &outbox.BatchError{Errs: errs}
}

func setErr(errs []error, n, i int, err error) []error {
	if errs == nil {
		errs = make([]error, n)
	}
	errs[i] = err
	return errs
}

// outgoing returns the message of env, or why it cannot be published.
func (s *Sender) outgoing(env wire.Envelope) (outgoing, error) {
	if env.Topic == "" {
		return outgoing{}, errors.New("rabbitmq: envelope has no topic (the routing key)")
	}
	msg, err := publishing(env)
	if err != nil {
		return outgoing{}, err
	}
	return outgoing{exchange: s.opts.Exchange, key: env.Topic, mandatory: !s.opts.AllowUnroutable, msg: msg}, nil
}

// publishing returns the AMQP message of env.
func publishing(env wire.Envelope) (amqp.Publishing, error) {
	h, err := wire.ToHeaders(env)
	if err != nil {
		return amqp.Publishing{}, err
	}
	t := make(amqp.Table, len(h)+1)
	for k, v := range h {
		if len(k) > maxShortStr {
			return amqp.Publishing{}, fmt.Errorf("rabbitmq: header name of %d bytes, longer than AMQP's %d", len(k), maxShortStr)
		}
		t[k] = v
	}
	delete(t, brokers.HeaderKey)
	if env.Key != "" {
		t[brokers.HeaderKey] = env.Key
	}
	p := amqp.Publishing{
		Headers:       t,
		DeliveryMode:  amqp.Persistent,
		Body:          env.Payload,
		ContentType:   shortStr(env.ContentType),
		CorrelationId: shortStr(env.CorrelationID),
		Type:          shortStr(env.Name),
	}
	if env.ID != uuid.Nil {
		p.MessageId = env.ID.String()
	}
	if !env.Timestamp.IsZero() {
		p.Timestamp = env.Timestamp
	}
	return p, nil
}

// shortStr returns s if it fits an AMQP short string, else "" (the value
// travels in the headers anyway).
func shortStr(s string) string {
	if len(s) > maxShortStr {
		return ""
	}
	return s
}

// channel returns an idle confirm channel, or opens one, dialling if the
// connection is lost.
func (s *Sender) channel(ctx context.Context) (*confirmChannel, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, ErrClosed
	}
	for len(s.idle) > 0 {
		c := s.idle[len(s.idle)-1]
		s.idle = s.idle[:len(s.idle)-1]
		if c.usable() {
			s.mu.Unlock()
			return c, nil
		}
	}
	conn := s.conn
	s.mu.Unlock()
	if conn == nil || conn.IsClosed() {
		var err error
		if conn, err = s.connect(ctx); err != nil {
			return nil, err
		}
	}
	stop := killOnDone(ctx, conn)
	c, err := openConfirm(conn)
	if !stop() {
		err = errors.Join(err, ctx.Err())
	}
	return c, err
}

// connect dials a new connection unless another call just did.
func (s *Sender) connect(ctx context.Context) (*amqp.Connection, error) {
	select {
	case s.dialing <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-s.dialing }()
	s.mu.Lock()
	conn, closed := s.conn, s.closed
	s.mu.Unlock()
	switch {
	case closed:
		return nil, ErrClosed
	case conn != nil && !conn.IsClosed():
		return conn, nil
	case conn != nil:
		s.log.WarnContext(ctx, "rabbitmq: sender connection lost; re-dialling")
	}
	conn, err := s.dial.dial(ctx)
	if err != nil {
		return nil, err
	}
	if s.opts.DeclareExchange {
		if err := declareExchange(ctx, conn, s.opts.Exchange); err != nil {
			_ = conn.Close()
			return nil, err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		_ = conn.Close()
		return nil, ErrClosed
	}
	s.conn, s.idle = conn, nil
	s.log.DebugContext(ctx, "rabbitmq: sender connected")
	return conn, nil
}

// release puts c back among the idle channels, or drops it if it cannot be
// used again (its connection is closed, or being closed).
func (s *Sender) release(c *confirmChannel) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed || c.conn != s.conn:
	case c.usable():
		s.idle = append(s.idle, c)
	case c.killed:
		s.conn, s.idle = nil, nil // the next Send dials
	}
}

// Close closes the connection; Sends in progress fail and later ones
// return [ErrClosed]. ctx bounds the closing handshake.
func (s *Sender) Close(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	conn := s.conn
	s.closed, s.conn, s.idle = true, nil, nil
	s.mu.Unlock()
	if conn == nil || conn.IsClosed() {
		return nil
	}
	return closeConn(ctx, conn)
}

// closeConn closes conn, bounded by ctx (or defaultCloseTimeout).
func closeConn(ctx context.Context, conn *amqp.Connection) error {
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(defaultCloseTimeout)
	}
	if err := conn.CloseDeadline(deadline); err != nil && !errors.Is(err, amqp.ErrClosed) {
		return fmt.Errorf("rabbitmq: closing the connection: %w", err)
	}
	return nil
}

// declareExchange declares a durable topic exchange on a channel of its own.
func declareExchange(ctx context.Context, conn *amqp.Connection, name string) error {
	stop := killOnDone(ctx, conn)
	defer stop()
	ch, err := conn.Channel()
	if err != nil {
		return errors.Join(lost("opening a channel", err), ctx.Err())
	}
	if err := ch.ExchangeDeclare(name, amqp.ExchangeTopic, true, false, false, false, nil); err != nil {
		return errors.Join(fmt.Errorf("rabbitmq: declaring exchange %q: %w", name, err), ctx.Err())
	}
	return ch.Close()
}
