package nats

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gocqrs/cqrs/events/brokers"
	"github.com/gocqrs/cqrs/events/outbox"
)

// Acknowledgement bodies (the JetStream protocol).
const (
	ackBody      = "+ACK"
	nakBody      = "-NAK"
	progressBody = "+WPI"
	termBody     = "+TERM"
)

// termTakesReason reports whether a server of version v terminates a
// message on "+TERM <reason>": servers before 2.10.4 acknowledge it and
// ignore it, leaving the message to be delivered again.
func termTakesReason(v string) bool { return versionAtLeast(v, 2, 10, 4) }

// releasesPromptly reports whether a server of version v delivers at once,
// to the next pull request, a message given back (Nak) while no pull
// request waits, as when a Source closes. Servers before 2.10.15 deliver it
// only once its AckWait runs out, and before 2.10.14 they may moreover
// deliver the consumer's last message a second time, as if new
// (nats-server pull requests 5305 and 5338).
func releasesPromptly(v string) bool { return versionAtLeast(v, 2, 10, 15) }

// versionAtLeast reports whether the server version v ("2.10.15",
// "2.11.0-beta.1") is at least major.minor.patch.
func versionAtLeast(v string, major, minor, patch int) bool {
	var a, b, c int
	if _, err := fmt.Sscanf(v, "%d.%d.%d", &a, &b, &c); err != nil {
		return false
	}
	switch {
	case a != major:
		return a > major
	case b != minor:
		return b > minor
	default:
		return c >= patch
	}
}

// maxHeartbeat bounds the interval of the server's heartbeats on a pull
// request. Two missed heartbeats make the client pull again: that bounds
// how long a Source waits for a pull request the server dropped without
// telling (nats-server 2.9 does, now and then, under load), and how long
// it takes to resume after the server restarted. A heartbeat is a few
// bytes: 500ms keeps the stall short (2s made stalls of 4s on 2.9.10).
const maxHeartbeat = 500 * time.Millisecond

// releaseTimeout bounds Close's releasing when its context has no
// deadline.
const releaseTimeout = 10 * time.Second

// maxBuffer caps the channel between the client's callback and Receive,
// whatever the consumer's MaxAckPending.
const maxBuffer = 1 << 16

// retryDelay spaces the attempts to open a subscription again.
func retryDelay(failures int) time.Duration {
	return outbox.Backoff{Base: 50 * time.Millisecond, Max: 5 * time.Second, Jitter: 0.2}.Delay(failures)
}

// source is a brokers.Source on a JetStream pull consumer.
//
// The client consumes (Consume: it pulls in batches of PullBatch, pulls
// again as messages arrive, after a reconnection and after missed
// heartbeats) and hands every message to receive, which holds it, leased,
// until Receive returns it and the runtime settles it: a keeper goroutine
// sends InProgress every ProgressInterval for every message held, returned
// or not, so that none is delivered again while this Source is open. The
// consumer's MaxAckPending bounds how many are held. The keeper also
// follows the connection: while it is down, Receive reports the loss once
// and then waits, and settles fail at once. A supervisor goroutine opens
// the subscription again when the client ends it (the consumer was
// deleted, and is provisioned again).
type source struct {
	sub      *Subscriber
	nc       *natsgo.Conn
	topo     Topology
	batch    int
	progress time.Duration
	// holdMax bounds the messages the Source holds: beyond it, the
	// client's callback waits for room, and the client pulls no more.
	holdMax int

	// The supervisor's; Close uses it once the supervisor has ended.
	cc jetstream.ConsumeContext
	// reopen asks the supervisor to open the subscription again
	// (capacity 1).
	reopen chan struct{}

	// msgs carries the held messages not yet returned, in delivery order.
	msgs chan *delivery
	// notify wakes Receive after a change of state (capacity 1).
	notify chan struct{}
	// freed wakes the client's callback when a held message is settled
	// (capacity 1).
	freed chan struct{}

	// ctx is cancelled by Close: it stops the keeper and the supervisor.
	ctx    context.Context
	stop   context.CancelFunc
	wg     sync.WaitGroup
	status chan natsgo.Status

	mu     sync.Mutex
	closed bool
	held   map[*delivery]struct{} // delivered and unsettled
	late   []string               // reply subjects of messages received while closing
	down   bool                   // the connection is down
	// conn is done once the connection in use is lost: settles in flight
	// then fail at once rather than wait for a reply that cannot come.
	conn      context.Context
	connLost  context.CancelFunc
	lost      bool  // a loss Receive has not reported yet
	transient error // an error Receive has not reported yet
	fatal     error // the subscription is gone for good
}

// newSource opens a Source on cons, whose MaxAckPending is maxAckPending.
// It pulls in batches of at most a quarter of maxAckPending, and holds at
// most maxAckPending minus two batches: the messages the client has asked
// for and not handed on yet never take the consumer to its MaxAckPending
// (nats-server 2.9 stalls pull requests there), and other Sources of the
// consumer get their share.
func newSource(s *Subscriber, cons jetstream.Consumer, maxAckPending, pullBatch int, progress time.Duration) (*source, error) {
	batch := max(1, min(pullBatch, maxAckPending/4))
	holdMax := min(max(1, maxAckPending-2*batch), maxBuffer)
	src := &source{
		sub:      s,
		nc:       s.nc,
		topo:     s.opts.Topology,
		batch:    batch,
		progress: progress,
		holdMax:  holdMax,
		msgs:     make(chan *delivery, holdMax+1),
		notify:   make(chan struct{}, 1),
		freed:    make(chan struct{}, 1),
		reopen:   make(chan struct{}, 1),
		held:     make(map[*delivery]struct{}),
	}
	src.ctx, src.stop = context.WithCancel(context.Background())
	src.conn, src.connLost = context.WithCancel(context.Background())
	src.status = s.nc.StatusChanged(natsgo.CONNECTED, natsgo.RECONNECTING, natsgo.DISCONNECTED, natsgo.CLOSED)
	if src.down = !s.nc.IsConnected(); src.down {
		src.connLost()
	}
	cc, err := src.open(cons)
	if err != nil {
		src.stop()
		s.nc.RemoveStatusListener(src.status)
		return nil, fmt.Errorf("nats: consuming from %q of stream %q: %w", src.topo.Consumer, src.topo.Stream, err)
	}
	src.cc = cc
	src.wg.Go(src.keep)
	src.wg.Go(src.supervise)
	return src, nil
}

func (s *source) open(cons jetstream.Consumer) (jetstream.ConsumeContext, error) {
	expiry := s.sub.opts.PullExpiry
	return cons.Consume(s.receive,
		jetstream.PullMaxMessages(s.batch),
		jetstream.PullExpiry(expiry),
		jetstream.PullHeartbeat(min(expiry/2, maxHeartbeat)),
		jetstream.ConsumeErrHandler(s.consumeError),
	)
}

// Receive implements brokers.Source.
func (s *source) Receive(ctx context.Context) (brokers.Message, error) {
	for {
		s.mu.Lock()
		switch {
		case s.closed:
			s.mu.Unlock()
			return brokers.Message{}, fmt.Errorf("%w: receive", brokers.ErrClosed)
		case s.fatal != nil:
			err := s.fatal
			s.mu.Unlock()
			return brokers.Message{}, err
		case s.lost:
			s.lost = false
			s.mu.Unlock()
			return brokers.Message{}, fmt.Errorf("%w: receive: the connection was lost; the client is reconnecting", ErrDisconnected)
		case s.transient != nil:
			err := s.transient
			s.transient = nil
			s.mu.Unlock()
			return brokers.Message{}, err
		}
		var msgs chan *delivery
		if !s.down {
			msgs = s.msgs
		}
		s.mu.Unlock()
		if err := ctx.Err(); err != nil {
			return brokers.Message{}, err
		}
		select {
		case d := <-msgs:
			return d.m, nil
		case <-s.notify:
		case <-ctx.Done():
			return brokers.Message{}, ctx.Err()
		}
	}
}

// Close implements brokers.Source: it stops the keeper and the supervisor,
// drains the client's subscription, and gives back (Nak) every message
// held, and those the client had received
// and not handed on yet, so that the server delivers them again at once.
// While the connection is down it cannot, and on servers before 2.10.15 it
// does not (see releasesPromptly): they come back once their AckWait runs
// out.
func (s *source) Close(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	release := make([]string, 0, len(s.held))
	for d := range s.held {
		release = append(release, d.msg.Reply())
	}
	clear(s.held)
	s.mu.Unlock()

	s.stop()
	s.wg.Wait()
	s.nc.RemoveStatusListener(s.status)
	s.mu.Lock()
	s.connLost()
	s.mu.Unlock()
	if !s.nc.IsConnected() {
		s.cc.Stop()
		return nil
	}
	if _, ok := ctx.Deadline(); !ok { // the client's flush needs one
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, releaseTimeout)
		defer cancel()
	}
	// Drain the client's subscription, and wait until it is done: until
	// then the server may still deliver to this Source's pull request.
	// What arrives meanwhile is released too.
	closed := s.cc.Closed()
	s.cc.Drain()
	select {
	case <-closed:
	case <-ctx.Done():
	}
	s.cc.Stop()
	s.mu.Lock()
	release = append(release, s.late...)
	s.late = nil
	s.mu.Unlock()
	if !releasesPromptly(s.nc.ConnectedServerVersion()) {
		return nil
	}
	var errs []error
	for _, reply := range release {
		if err := s.nc.Publish(reply, []byte(nakBody)); err != nil {
			errs = append(errs, err)
			break
		}
	}
	if len(errs) == 0 && len(release) > 0 {
		if err := s.nc.FlushWithContext(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("nats: releasing %d messages of %q (the server delivers them again after AckWait): %w",
			len(release), s.topo.Consumer, err)
	}
	return nil
}

// receive is the client's callback for each message: it holds the
// message for Receive, then waits until the Source holds at most holdMax
// messages. It runs on the client's goroutine, which pulls no more
// meanwhile.
func (s *source) receive(m jetstream.Msg) {
	d := s.deliver(m)
	if d == nil {
		return
	}
	select {
	case s.msgs <- d:
	case <-s.ctx.Done(): // closing: Close releases it with the others held
		return
	}
	for {
		s.mu.Lock()
		room := len(s.held) <= s.holdMax
		s.mu.Unlock()
		if room {
			return
		}
		select {
		case <-s.freed:
		case <-s.ctx.Done():
			return
		}
	}
}

// unhold ends the hold of d; the lock is held.
func (s *source) unhold(d *delivery) {
	delete(s.held, d)
	select {
	case s.freed <- struct{}{}:
	default:
	}
}

// consumeError is the client's callback for the errors of Consume.
func (s *source) consumeError(_ jetstream.ConsumeContext, err error) {
	switch {
	case errors.Is(err, jetstream.ErrConnectionClosed), errors.Is(err, natsgo.ErrConnectionClosed):
		s.fail(permanent(fmt.Errorf("nats: receive: %w", natsgo.ErrConnectionClosed)))
	case errors.Is(err, jetstream.ErrConsumerDeleted), errors.Is(err, jetstream.ErrBadRequest):
		// The client has ended the subscription.
		s.report(fmt.Errorf("nats: receive: %w", err))
		select {
		case s.reopen <- struct{}{}:
		default:
		}
	case errors.Is(err, jetstream.ErrNoHeartbeat):
		// The client pulls again; the server may be restarting.
		s.report(fmt.Errorf("nats: receive: %w", err))
	default:
		s.sub.log.Warn("pull subscription", "error", err)
	}
}

// supervise opens the subscription again each time the client ends it,
// until Close.
func (s *source) supervise() {
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-s.reopen:
			if !s.resubscribe() {
				return
			}
		}
	}
}

// resubscribe replaces the subscription the client ended, looking the
// consumer up again (provisioning it first if asked to), until it
// succeeds or the source closes; it reports false when the supervisor
// must end.
func (s *source) resubscribe() bool {
	s.cc.Stop()
	s.sub.log.Warn("the pull subscription ended; opening it again")
	for failures := 1; ; failures++ {
		if s.nc.IsClosed() {
			s.fail(permanent(fmt.Errorf("nats: receive: %w", natsgo.ErrConnectionClosed)))
			return false
		}
		err := s.provision()
		var cons jetstream.Consumer
		if err == nil {
			cons, err = s.sub.consumer(s.ctx)
		}
		if err == nil {
			var cc jetstream.ConsumeContext
			if cc, err = s.open(cons); err == nil {
				s.cc = cc
				return true
			}
		}
		if s.ctx.Err() != nil {
			return false
		}
		if errors.Is(err, ErrTopology) {
			s.fail(permanent(err))
			return false
		}
		s.report(fmt.Errorf("nats: receive: re-opening the pull subscription: %w", err))
		if !s.wait(retryDelay(failures)) {
			return false
		}
	}
}

func (s *source) provision() error {
	if !s.sub.opts.Provision {
		return nil
	}
	return s.topo.Provision(s.ctx, s.sub.js)
}

// wait waits for d, or until Close; it reports whether d elapsed.
func (s *source) wait(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.ctx.Done():
		return false
	}
}

// deliver makes the delivery of m and holds it; it returns nil if the
// source is closing, for Close to release m.
func (s *source) deliver(m jetstream.Msg) *delivery {
	d := &delivery{src: s, msg: m}
	attempt := 0
	if meta, err := m.Metadata(); err == nil {
		d.seq = meta.Sequence.Stream
		attempt = int(min(meta.NumDelivered, uint64(1<<31-1)))
	}
	headers, key := flatten(m.Headers())
	d.m = brokers.Message{
		Topic:    m.Subject(),
		Key:      key,
		OrderKey: key,
		Headers:  headers,
		Body:     m.Data(),
		Attempt:  attempt,
		Settler:  d,
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		s.late = append(s.late, m.Reply())
		return nil
	}
	s.held[d] = struct{}{}
	return d
}

// keep extends the lease of every held message, and follows the
// connection, until Close.
func (s *source) keep() {
	t := time.NewTicker(s.progress)
	defer t.Stop()
	status := s.status
	for {
		select {
		case <-s.ctx.Done():
			return
		case st, ok := <-status:
			if !ok {
				status = nil
				continue
			}
			s.follow(st, true)
		case <-t.C:
			s.follow(0, false)
			s.touch()
		}
	}
}

// follow updates the connection state from the client's, after the
// client reported status st (if reported; else on a tick).
func (s *source) follow(st natsgo.Status, reported bool) {
	now := s.nc.Status()
	if now == natsgo.CLOSED || (reported && st == natsgo.CLOSED) {
		s.fail(permanent(fmt.Errorf("nats: receive: %w", natsgo.ErrConnectionClosed)))
		s.mu.Lock()
		s.down = true
		s.connLost()
		s.mu.Unlock()
		return
	}
	// A loss the client reported counts even if it has reconnected since.
	lostNow := reported && (st == natsgo.RECONNECTING || st == natsgo.DISCONNECTED)
	up := now == natsgo.CONNECTED
	s.mu.Lock()
	was := s.down
	if lostNow || (!was && !up) {
		if s.conn.Err() == nil {
			s.lost = true
			s.connLost()
		}
	}
	if up && s.conn.Err() != nil {
		s.conn, s.connLost = context.WithCancel(context.Background())
	}
	s.down = !up
	s.mu.Unlock()
	if was != !up || lostNow {
		s.poke()
	}
	switch {
	case up && (was || lostNow):
		s.sub.log.Info("connection re-established")
		s.touch() // the leases may be close to running out
	case !up && !was:
		s.sub.log.Warn("connection lost; the client is reconnecting")
	}
}

// touch sends InProgress for every held message.
func (s *source) touch() {
	if !s.nc.IsConnected() {
		return
	}
	s.mu.Lock()
	replies := make([]string, 0, len(s.held))
	for d := range s.held {
		replies = append(replies, d.msg.Reply())
	}
	s.mu.Unlock()
	for _, r := range replies {
		if err := s.nc.Publish(r, []byte(progressBody)); err != nil {
			return
		}
	}
}

// report records a transient error for Receive to return.
func (s *source) report(err error) {
	s.mu.Lock()
	s.transient = err
	s.mu.Unlock()
	s.poke()
}

// fail records the error that ends the subscription.
func (s *source) fail(err error) {
	s.mu.Lock()
	if s.fatal == nil {
		s.fatal = err
	}
	s.mu.Unlock()
	s.poke()
}

func (s *source) poke() {
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// delivery is one delivery of a message, and its brokers.Settler.
type delivery struct {
	src *source
	msg jetstream.Msg
	seq uint64
	m   brokers.Message
	// settled is guarded by src.mu.
	settled bool
}

// Ack implements brokers.Settler: it waits for the server's confirmation
// (the JetStream "double ack").
func (d *delivery) Ack(ctx context.Context) error {
	return d.settle(ctx, "ack", []byte(ackBody))
}

// Retry implements brokers.Settler: a Nak, with the delay if positive; it
// waits for the server's confirmation.
func (d *delivery) Retry(ctx context.Context, delay time.Duration) error {
	body := []byte(nakBody)
	if delay > 0 {
		body = fmt.Appendf(nil, `-NAK {"delay": %d}`, delay.Nanoseconds())
	}
	return d.settle(ctx, "retry", body)
}

// DeadLetter implements brokers.Settler: it publishes the message (body,
// headers, key) with the dead-letter headers to the dead-letter subject,
// waits for the dead-letter stream's acknowledgement, then terminates the
// original (Term, with the reason on servers from 2.10.4), waiting for the
// server's confirmation. The dead letter's Nats-Msg-Id is made of the
// original's stream, consumer and stream sequence: dead-lettering the same
// message twice within the duplicate window stores one copy.
func (d *delivery) DeadLetter(ctx context.Context, dl brokers.DeadLetter) error {
	bound, release, err := d.check(ctx, "dead-letter")
	if err != nil {
		return err
	}
	defer release()
	if _, err := d.src.sub.js.PublishMsg(bound, d.deadLetter(dl)); err != nil {
		return d.failed("dead-letter", lostOr(ctx, bound, err))
	}
	body := []byte(termBody)
	if termTakesReason(d.src.nc.ConnectedServerVersion()) {
		body = append([]byte("+TERM "), dl.Reason...)
	}
	if _, err := d.src.nc.RequestWithContext(bound, d.msg.Reply(), body); err != nil {
		return d.failed("dead-letter", lostOr(ctx, bound, err))
	}
	d.done()
	return nil
}

func (d *delivery) deadLetter(dl brokers.DeadLetter) *natsgo.Msg {
	src := d.msg.Headers()
	h := make(natsgo.Header, len(src)+8)
	for k, vs := range src {
		if !isServerHeader(k) {
			h[k] = slices.Clone(vs)
		}
	}
	for k, v := range dl.Headers() {
		h[k] = []string{v}
	}
	if d.seq > 0 {
		t := d.src.topo
		h[jetstream.MsgIDHeader] = []string{t.Stream + "/" + t.Consumer + "/" + strconv.FormatUint(d.seq, 10)}
	}
	return &natsgo.Msg{Subject: d.src.topo.DeadLetterSubject, Header: h, Data: d.msg.Data()}
}

// settle sends body to the server as the settle op and waits for its
// confirmation.
func (d *delivery) settle(ctx context.Context, op string, body []byte) error {
	bound, release, err := d.check(ctx, op)
	if err != nil {
		return err
	}
	defer release()
	if _, err := d.src.nc.RequestWithContext(bound, d.msg.Reply(), body); err != nil {
		return d.failed(op, lostOr(ctx, bound, err))
	}
	d.done()
	return nil
}

// check reports why the delivery cannot be settled now; if it can, it
// returns ctx bound to the connection in use: cancelled when it is lost.
func (d *delivery) check(ctx context.Context, op string) (context.Context, context.CancelFunc, error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, d.failed(op, err)
	}
	s := d.src
	s.mu.Lock()
	closed, settled, down, conn := s.closed, d.settled, s.down, s.conn
	s.mu.Unlock()
	switch {
	case closed:
		return nil, nil, fmt.Errorf("%w: %s", brokers.ErrClosed, op)
	case settled:
		return nil, nil, fmt.Errorf("%w: %s", brokers.ErrSettled, op)
	case down || conn.Err() != nil || !s.nc.IsConnected():
		return nil, nil, d.failed(op, ErrDisconnected)
	}
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(conn, cancel)
	return ctx, func() { stop(); cancel() }, nil
}

// lostOr returns err, marked as [ErrDisconnected] if it is the
// cancellation of bound by the loss of the connection rather than ctx's.
func lostOr(ctx, bound context.Context, err error) error {
	if bound.Err() != nil && ctx.Err() == nil {
		return fmt.Errorf("%w: %w", ErrDisconnected, err)
	}
	return err
}

// failed returns the error of a failed settle op. After a failed Ack or
// Retry the runtime gives the message up: the Source stops extending its
// lease, so that the server delivers it again once AckWait runs out. After
// a failed DeadLetter the runtime tries again: the lease is kept.
func (d *delivery) failed(op string, err error) error {
	if op != "dead-letter" {
		d.src.mu.Lock()
		d.src.unhold(d)
		d.src.mu.Unlock()
	}
	return &SettleError{Op: op, Stream: d.src.topo.Stream, Consumer: d.src.topo.Consumer, Sequence: d.seq, Err: err}
}

// done records a successful settle.
func (d *delivery) done() {
	d.src.mu.Lock()
	d.settled = true
	d.src.unhold(d)
	d.src.mu.Unlock()
}
