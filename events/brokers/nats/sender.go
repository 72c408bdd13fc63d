package nats

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gocqrs/cqrs/events/outbox"
	"github.com/gocqrs/cqrs/events/wire"
)

// Defaults of [SenderConfig].
const (
	// DefaultMaxPending bounds the publishes of a Sender awaiting their
	// acknowledgement.
	DefaultMaxPending = 256
	// DefaultAckTimeout bounds the wait for one acknowledgement.
	DefaultAckTimeout = 10 * time.Second
)

// SenderConfig configures a [Sender]. The zero value takes every default.
type SenderConfig struct {
	// MaxPending bounds the publishes awaiting their acknowledgement, over
	// every Send in progress (default [DefaultMaxPending]); it is also the
	// client's PublishAsyncMaxPending.
	MaxPending int
	// AckTimeout bounds the wait for each acknowledgement (default
	// [DefaultAckTimeout]): a record not acknowledged by then is reported
	// as not sent (it may have been stored; sent again, it is dropped as a
	// duplicate within the stream's window).
	AckTimeout time.Duration
	// Subject returns the subject an envelope is published to (default:
	// its Topic). Consumers receive the subject as the message's topic.
	// An error fails the record for good (outbox.Permanent).
	Subject func(env wire.Envelope) (string, error)
}

// Sender publishes envelopes to JetStream: the outbox.Sender of the relay.
// Each envelope becomes a message on the subject env.Topic, with the body
// env.Payload, the headers wire.ToHeaders(env), the key in the header
// brokers.HeaderKey ("event-key"), and Nats-Msg-Id set to the event id, so
// that the stream drops a second publish of the event within its duplicate
// window. Create it with [NewSender]; it is safe for concurrent use.
//
// Send publishes asynchronously, with at most MaxPending publishes
// awaiting their acknowledgement, and returns once every record is
// acknowledged by the stream, failed, or ctx is done. Records of one
// non-empty key are published one at a time: the next one only once the
// stream has acknowledged the previous one, so that the stream stores them
// in batch order and never stores a record after an earlier one of its key
// failed. Records of different keys, and records without a key, are in
// flight together.
type Sender struct {
	nc      *natsgo.Conn
	js      jetstream.JetStream
	subject func(wire.Envelope) (string, error)
	// sem holds a token per publish awaiting its acknowledgement.
	sem chan struct{}

	mu      sync.Mutex
	waiting map[*natsgo.Msg]waiter
}

// waiter is where the result of one publish goes.
type waiter struct {
	results chan<- result
	index   int
}

type result struct {
	index int
	err   error
}

var _ outbox.Sender = (*Sender)(nil)

// NewSender returns a Sender publishing on nc. It reports every problem
// with its arguments at once, each matching [ErrInvalidConfig].
//
// The Sender starts no goroutine of its own; the client's asynchronous
// publishing does (a subscription for acknowledgements, and a watcher of
// the connection), and those end when nc is closed. The reconnection
// policy is nc's: connect with nats.MaxReconnects(-1) so that the client
// never gives up, and nats.ReconnectBufSize(-1) so that nothing is buffered
// while it is disconnected (Send then fails at once with [ErrDisconnected],
// and the relay sends again later).
func NewSender(nc *natsgo.Conn, opts SenderConfig) (*Sender, error) {
	var errs []error
	if nc == nil {
		errs = append(errs, fmt.Errorf("%w: nil connection", ErrInvalidConfig))
	}
	if opts.MaxPending < 0 {
		errs = append(errs, fmt.Errorf("%w: SenderConfig.MaxPending must not be negative, got %d", ErrInvalidConfig, opts.MaxPending))
	}
	if opts.AckTimeout < 0 {
		errs = append(errs, fmt.Errorf("%w: SenderConfig.AckTimeout must not be negative, got %v", ErrInvalidConfig, opts.AckTimeout))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if opts.MaxPending == 0 {
		opts.MaxPending = DefaultMaxPending
	}
	if opts.AckTimeout == 0 {
		opts.AckTimeout = DefaultAckTimeout
	}
	s := &Sender{
		nc:      nc,
		subject: opts.Subject,
		sem:     make(chan struct{}, opts.MaxPending),
		waiting: make(map[*natsgo.Msg]waiter),
	}
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(opts.MaxPending),
		jetstream.WithPublishAsyncTimeout(opts.AckTimeout),
		jetstream.WithPublishAsyncAckHandler(s.acked),
		jetstream.WithPublishAsyncErrHandler(s.failed),
	)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	s.js = js
	return s, nil
}

// acked is the client's callback for an acknowledged publish. It runs on
// the client's goroutine and must not block: results has room for every
// record of its batch.
func (s *Sender) acked(_ jetstream.JetStream, m *natsgo.Msg, _ *jetstream.PubAck) {
	s.resolve(m, nil)
}

// failed is the client's callback for a publish that failed after it was
// handed to the client: the stream refused it, the acknowledgement timed
// out, or the connection was lost.
func (s *Sender) failed(_ jetstream.JetStream, m *natsgo.Msg, err error) {
	s.resolve(m, err)
}

func (s *Sender) resolve(m *natsgo.Msg, err error) {
	s.mu.Lock()
	w, ok := s.waiting[m]
	delete(s.waiting, m)
	s.mu.Unlock()
	if !ok {
		return
	}
	<-s.sem
	if err != nil {
		err = &PublishError{Subject: m.Subject, EventID: eventID(m), Err: classify(err)}
	}
	w.results <- result{index: w.index, err: err}
}

// classify marks the server's refusals that no retry can fix as
// permanent.
func classify(err error) error {
	var api *jetstream.APIError
	if errors.As(err, &api) && api.ErrorCode == jetstream.JSErrCodeStreamMessageExceedsMaximum {
		return outbox.Permanent(err)
	}
	if errors.Is(err, natsgo.ErrMaxPayload) {
		return outbox.Permanent(err)
	}
	return err
}

// Send implements outbox.Sender: see [Sender].
//
// A record that cannot become a NATS message (no topic, an invalid
// subject, a header NATS cannot carry unchanged, an error from
// SenderConfig.Subject) fails with a permanent error (outbox.ErrPermanent)
// matching [ErrInvalidMessage]; one larger than the server or the stream
// accepts fails with a permanent error too. While the connection is down, records
// fail at once with [ErrDisconnected]. Once ctx is done, the records not
// yet acknowledged fail with ctx's error. After a record of a key failed,
// the later records of that key are not published (outbox.ErrNotAttempted).
// Failures are reported per record in an *outbox.BatchError, each but
// ErrNotAttempted in a *[PublishError].
func (s *Sender) Send(ctx context.Context, envs []wire.Envelope) error {
	n := len(envs)
	if n == 0 {
		return nil
	}
	b := batch{
		envs:    envs,
		next:    make([]int, n),
		settled: make([]bool, n),
		ready:   make([]int, 0, n),
	}
	// Chain the records of each key; the first of each key, and every
	// record without a key, may be published at once.
	var last map[string]int
	for i, env := range envs {
		b.next[i] = -1
		if env.Key == "" {
			b.ready = append(b.ready, i)
			continue
		}
		if last == nil {
			last = make(map[string]int)
		}
		if j, ok := last[env.Key]; ok {
			b.next[j] = i
		} else {
			b.ready = append(b.ready, i)
		}
		last[env.Key] = i
	}
	results := make(chan result, n)
	for b.done < n {
		if len(b.ready) > 0 && ctx.Err() == nil {
			select {
			case s.sem <- struct{}{}:
				b.publish(s, results)
				continue
			default:
			}
		}
		var acquire chan struct{}
		if len(b.ready) > 0 {
			acquire = s.sem
		}
		select {
		case acquire <- struct{}{}:
			if ctx.Err() != nil {
				<-s.sem
				continue
			}
			b.publish(s, results)
		case r := <-results:
			b.settle(r.index, r.err)
		case <-ctx.Done():
			for i := range n {
				if !b.settled[i] {
					b.fail(i, &PublishError{Subject: envs[i].Topic, EventID: envs[i].ID, Err: ctx.Err()})
				}
			}
			b.done = n
		}
	}
	if b.errs == nil {
		return nil
	}
	return &outbox.BatchError{Errs: b.errs}
}

// batch is the state of one Send.
type batch struct {
	envs []wire.Envelope
	// next[i] is the index of the record after i with the same key, or -1.
	next []int
	// ready holds the records that may be published now, in batch order.
	ready   []int
	settled []bool
	done    int
	errs    []error
}

// publish publishes the first ready record; the caller holds a token of
// s.sem for it, which the record's result gives back.
func (b *batch) publish(s *Sender, results chan<- result) {
	i := b.ready[0]
	b.ready = b.ready[1:]
	env := b.envs[i]
	m, err := s.message(env)
	if err != nil {
		<-s.sem
		b.settle(i, err)
		return
	}
	if !s.nc.IsConnected() {
		<-s.sem
		b.settle(i, &PublishError{Subject: m.Subject, EventID: env.ID, Err: ErrDisconnected})
		return
	}
	s.mu.Lock()
	s.waiting[m] = waiter{results: results, index: i}
	s.mu.Unlock()
	if _, err := s.js.PublishMsgAsync(m); err != nil {
		// Refused before it was sent: no callback comes for it.
		s.mu.Lock()
		_, ours := s.waiting[m]
		delete(s.waiting, m)
		s.mu.Unlock()
		if ours {
			<-s.sem
			b.settle(i, &PublishError{Subject: m.Subject, EventID: env.ID, Err: classify(err)})
		}
	}
}

// settle records the result of record i and, by its outcome, releases or
// gives up the next record of its key.
func (b *batch) settle(i int, err error) {
	if b.settled[i] {
		return
	}
	if err == nil {
		b.settled[i] = true
		b.done++
		if j := b.next[i]; j >= 0 {
			b.ready = append(b.ready, j)
		}
		return
	}
	b.fail(i, err)
	for j := b.next[i]; j >= 0; j = b.next[j] {
		b.fail(j, outbox.ErrNotAttempted)
	}
}

func (b *batch) fail(i int, err error) {
	if b.settled[i] {
		return
	}
	if b.errs == nil {
		b.errs = make([]error, len(b.envs))
	}
	b.settled[i] = true
	b.errs[i] = err
	b.done++
}

// message returns the NATS message of env, or a permanent error.
func (s *Sender) message(env wire.Envelope) (*natsgo.Msg, error) {
	subject := env.Topic
	if s.subject != nil {
		var err error
		if subject, err = s.subject(env); err != nil {
			return nil, outbox.Permanent(&PublishError{Subject: subject, EventID: env.ID, Err: fmt.Errorf("%w: %w", ErrInvalidMessage, err)})
		}
	}
	if err := checkSubject(subject, false); err != nil {
		return nil, outbox.Permanent(&PublishError{Subject: subject, EventID: env.ID, Err: fmt.Errorf("%w: %w", ErrInvalidMessage, err)})
	}
	h, err := headerOf(env)
	if err != nil {
		return nil, outbox.Permanent(&PublishError{Subject: subject, EventID: env.ID, Err: err})
	}
	// The client keeps the message until it is acknowledged, and publishes
	// it again on its own after a "no responders" answer, possibly after
	// Send returned: it gets a copy of the body, not the caller's.
	return &natsgo.Msg{Subject: subject, Header: h, Data: slices.Clone(env.Payload)}, nil
}
