package brokers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/events/inbox"
	"github.com/gocqrs/cqrs/events/outbox"
	"github.com/gocqrs/cqrs/events/wire"
	"github.com/gocqrs/cqrs/internal/engine"
	"github.com/gocqrs/cqrs/internal/panics"
	"github.com/gocqrs/cqrs/internal/registry"
)

// PanicError is a panic recovered from a handler, a hook or an adapter; it
// is the same type as mediator.PanicError and outbox.PanicError.
type PanicError = panics.Error

// Consumer receives messages from a [Subscriber], decodes them, hands each
// event to a handler (typically an EventMediator's Send) and settles the
// message according to the outcome. See the package documentation for the
// guarantees. Create it with [NewConsumer]; it is safe for concurrent use.
type Consumer struct {
	sub      Subscriber
	dec      *wire.Decoder
	handle   func(ctx context.Context, ev events.Event) error
	cfg      Config
	classify func(error) Action
	log      *slog.Logger

	running atomic.Bool
	c       struct {
		received, handled, duplicates, retried, deadLettered atomic.Uint64
		dropped, released, settleErrors, receiveErrors       atomic.Uint64
		batches, batchesRolledBack                           atomic.Uint64
	}
}

// Counters counts what a consumer did since it was created, across runs.
// Handled, Duplicates, Dropped, Retried and Released count decisions, made
// once per attempt; when the settle call that carries a decision fails, it
// is counted in SettleErrors too, and the broker redelivers the message.
type Counters struct {
	// Received counts messages received from the Source.
	Received uint64
	// Handled counts attempts whose handler returned nil (the message is
	// then acknowledged).
	Handled uint64
	// Duplicates counts messages the inbox had already recorded,
	// acknowledged without calling the handler.
	Duplicates uint64
	// Retried counts failed attempts followed by another one, in place or
	// through the broker.
	Retried uint64
	// DeadLettered counts messages moved to the dead-letter destination.
	DeadLettered uint64
	// Dropped counts messages acknowledged after a failure classified
	// [Drop].
	Dropped uint64
	// Released counts messages given back unfinished when Run stopped.
	Released uint64
	// SettleErrors counts Ack, Retry and DeadLetter calls that failed.
	SettleErrors uint64
	// ReceiveErrors counts Receive calls that failed, and messages returned
	// without a Settler.
	ReceiveErrors uint64
	// Batches counts the transactions of several messages committed
	// ([Config.MaxBatch]); BatchesRolledBack those rolled back, whose
	// messages were then handled one by one.
	Batches, BatchesRolledBack uint64
}

// NewConsumer returns a consumer of the messages sub delivers: each is
// decoded with dec and handed to handle, typically an EventMediator's Send
// method value. It reports every problem with its arguments at once, each
// matching [ErrInvalidConfig]. A zero Logger or Classify takes its default.
func NewConsumer(sub Subscriber, dec *wire.Decoder, handle func(ctx context.Context, ev events.Event) error, cfg Config) (*Consumer, error) {
	var errs []error
	if registry.IsNil(sub) {
		errs = append(errs, fmt.Errorf("%w: nil Subscriber", ErrInvalidConfig))
	}
	if dec == nil {
		errs = append(errs, fmt.Errorf("%w: nil Decoder", ErrInvalidConfig))
	}
	if handle == nil {
		errs = append(errs, fmt.Errorf("%w: nil handler", ErrInvalidConfig))
	}
	if err := cfg.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	classify := cfg.Classify
	if classify == nil {
		classify = DefaultClassify
	}
	logger := cfg.Logger
	if cfg.Name != "" {
		logger = logger.With("consumer", cfg.Name)
	}
	return &Consumer{sub: sub, dec: dec, handle: handle, cfg: cfg, classify: classify, log: logger}, nil
}

// Name returns the consumer's name, [Config.Name].
func (c *Consumer) Name() string { return c.cfg.Name }

// Counters returns the consumer's counters.
func (c *Consumer) Counters() Counters {
	return Counters{
		Received:      c.c.received.Load(),
		Handled:       c.c.handled.Load(),
		Duplicates:    c.c.duplicates.Load(),
		Retried:       c.c.retried.Load(),
		DeadLettered:  c.c.deadLettered.Load(),
		Dropped:       c.c.dropped.Load(),
		Released:      c.c.released.Load(),
		SettleErrors:  c.c.settleErrors.Load(),
		ReceiveErrors: c.c.receiveErrors.Load(),

		Batches:           c.c.batches.Load(),
		BatchesRolledBack: c.c.batchesRolledBack.Load(),
	}
}

// Run subscribes, then receives and handles messages until ctx is done,
// and returns nil (also when ctx is done before Subscribe returned); or
// returns the error of Subscribe, or a Source error
// matching [ErrClosed] or outbox.ErrPermanent, after stopping as below. It
// returns [ErrRunning] at once if the consumer is already running; it may
// be run again after it returned (a restart: it subscribes again).
//
// Stopping: Run stops receiving; messages received but not started (queued
// behind their key, waiting for a slot, or waiting for a retry in place)
// are released (Retry with no delay, no attempt counted); handlers already
// running go on, with a context that is not cancelled, for up to
// [Config.DrainTimeout], and are then cancelled. A handler that returns nil
// is acknowledged; one cancelled or failing is released or retried as
// usual. Every settle call is bounded by [Config.SettleTimeout]. Run then
// closes the Source (which releases what it prefetched) and returns. Every
// goroutine Run started has ended when it returns; Run waits for running
// handlers, so a handler that ignores its context delays it.
func (c *Consumer) Run(ctx context.Context) error {
	if !c.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer c.running.Store(false)

	var src Source
	err := safe(func() (err error) {
		src, err = c.sub.Subscribe(ctx)
		return err
	})
	if err == nil && registry.IsNil(src) {
		err = errors.New("Subscribe returned a nil Source")
	}
	if err != nil && ctx.Err() != nil {
		// Stopped before it started: not a failure.
		if !registry.IsNil(src) {
			closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.SettleTimeout)
			defer cancel()
			_ = safe(func() error { return src.Close(closeCtx) })
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("brokers: consumer %q: subscribe: %w", c.cfg.Name, err)
	}

	// stop is done once ctx is, or when the Source fails for good: from
	// then on no handler starts.
	stop, stopNow := context.WithCancel(ctx)
	defer stopNow()
	base := context.WithoutCancel(ctx)
	work, stopWork := context.WithCancel(base)
	r := &run{
		c:        c,
		src:      src,
		log:      c.log,
		base:     base,
		work:     work,
		stopWork: stopWork,
		stopping: stop.Done(),
		inflight: make(chan struct{}, c.cfg.inFlight()),
		slots:    make(chan struct{}, c.cfg.MaxConcurrency),
		lanes:    make(map[string][]Message),
		tasks:    make(chan Message, c.cfg.inFlight()),
	}
	r.log.InfoContext(ctx, "consumer started", "max_concurrency", c.cfg.MaxConcurrency,
		"max_in_flight", c.cfg.inFlight(), "ordered", !c.cfg.Unordered, "inbox", c.cfg.Inbox != nil)

	runErr := r.receive(stop)
	stopNow()
	r.closeTasks()
	r.drain()

	closeCtx := r.settleCtx()
	defer r.endSettles()
	if err := safe(func() error { return src.Close(closeCtx) }); err != nil {
		r.log.WarnContext(base, "closing the source failed", "error", err)
	}
	if runErr != nil {
		r.log.ErrorContext(base, "consumer stopped", "error", runErr)
		return fmt.Errorf("brokers: consumer %q: receive: %w", c.cfg.Name, runErr)
	}
	r.log.InfoContext(base, "consumer stopped")
	return nil
}

// run is the state of one Run.
type run struct {
	c   *Consumer
	src Source
	log *slog.Logger

	// base carries Run's context values without its cancellation: settles
	// and logs use it.
	base context.Context
	// work is the context of handlers: base, cancelled DrainTimeout after
	// stopping begins.
	work     context.Context
	stopWork context.CancelFunc
	// stopping is closed when Run stops: when its context is done, or the
	// Source failed for good. No handler starts after it is closed.
	stopping <-chan struct{}

	// inflight holds a token per message received and not yet settled;
	// slots a token per message being handled.
	inflight chan struct{}
	slots    chan struct{}

	mu sync.Mutex
	// lanes holds, for each ordering key with a message in progress, the
	// messages queued behind it, in the order received.
	lanes map[string][]Message
	wg    sync.WaitGroup

	// tasks carries the messages to start to the workers. Every message
	// sent on it has a worker set aside for it: an idle one (idle counts
	// the workers that may be claimed) or one started for it, so a send
	// never waits for a busy worker to finish. Its capacity is
	// MaxInFlight, which bounds the messages sent and not yet taken, so a
	// send never blocks.
	tasks chan Message
	idle  atomic.Int64
	// tasksClosed is set, under mu, when tasks is closed.
	tasksClosed bool
	// ready holds, under mu, the first deliveries waiting for a handler
	// slot when batching.
	ready []Message

	// settleDL is the context settle calls use, shared while its deadline
	// is at least SettleTimeout away (see settleCtx).
	settleMu sync.Mutex
	settleDL atomic.Pointer[settleDeadline]
}

// settleDeadline is a context of settle calls and its deadline.
type settleDeadline struct {
	ctx    context.Context
	cancel context.CancelFunc
	at     time.Time
}

// receive receives messages and dispatches them until ctx is done (nil) or
// the Source fails for good (its error).
func (r *run) receive(ctx context.Context) error {
	failures := 0
	for {
		select {
		case r.inflight <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
		var msg Message
		err := safe(func() (err error) {
			msg, err = r.src.Receive(ctx)
			return err
		})
		if err != nil {
			<-r.inflight
			select {
			case <-ctx.Done(): // the error is the context's
				return nil
			default:
			}
			if errors.Is(err, ErrClosed) || errors.Is(err, outbox.ErrPermanent) {
				return err
			}
			r.c.c.receiveErrors.Add(1)
			failures++
			delay := r.c.cfg.Backoff.Delay(failures)
			r.log.WarnContext(ctx, "receive failed; retrying", "error", err, "failures", failures, "retry_in", delay)
			if !sleep(ctx.Done(), delay) {
				return nil
			}
			continue
		}
		failures = 0
		if msg.Settler == nil {
			<-r.inflight
			r.c.c.receiveErrors.Add(1)
			r.log.ErrorContext(ctx, "the source returned a message without a Settler; it cannot be settled and is left to the broker",
				"topic", msg.Topic, "key", msg.Key)
			continue
		}
		r.c.c.received.Add(1)
		r.dispatch(msg)
	}
}

// dispatch starts handling msg, or queues it behind the message in progress
// of its ordering key.
func (r *run) dispatch(msg Message) {
	if r.ordered(msg) {
		r.mu.Lock()
		if q, busy := r.lanes[msg.OrderKey]; busy {
			r.lanes[msg.OrderKey] = append(q, msg)
			r.mu.Unlock()
			return
		}
		r.lanes[msg.OrderKey] = nil
		r.mu.Unlock()
	}
	r.push(msg)
}

func (r *run) ordered(msg Message) bool { return !r.c.cfg.Unordered && msg.OrderKey != "" }

// push hands msg, ready to start (its key taken, if it has one), to a
// worker: an idle one, or one started for it. It reports false, and does
// nothing, once the workers are told to stop (tasks is closed).
func (r *run) push(msg Message) bool {
	r.mu.Lock()
	if r.tasksClosed {
		r.mu.Unlock()
		return false
	}
	r.tasks <- msg
	r.mu.Unlock()
	for {
		n := r.idle.Load()
		if n == 0 {
			r.wg.Go(r.worker)
			return true
		}
		if r.idle.CompareAndSwap(n, n-1) {
			return true
		}
	}
}

// closeTasks tells the workers to stop once they have taken what tasks
// holds.
func (r *run) closeTasks() {
	r.mu.Lock()
	r.tasksClosed = true
	close(r.tasks)
	r.mu.Unlock()
}

// worker handles the messages it takes from tasks (and, for an ordered
// one, the messages queued behind it) until tasks is closed. Workers are
// kept between messages rather than started per message: a goroutine is
// cheap, but each new one grows its stack again through the decoder and
// the handler, which cost about as much as the runtime's own work
// (BenchmarkRuntime).
func (r *run) worker() {
	for msg := range r.tasks {
		if r.c.cfg.MaxBatch > 1 && msg.Attempt <= 1 {
			r.batch(msg)
		} else {
			r.single(msg)
		}
		r.idle.Add(1)
	}
}

// single handles msg on its own, then the messages queued behind it.
func (r *run) single(msg Message) {
	if r.ordered(msg) {
		r.lane(msg.OrderKey, msg)
	} else {
		r.process(msg, false)
	}
}

// lane processes msg, then the messages queued behind it, one at a time.
func (r *run) lane(key string, msg Message) {
	for {
		r.process(msg, true)
		next, ok := r.advance(key)
		if !ok {
			return
		}
		msg = next
	}
}

// advance returns the message queued next behind key, or releases key.
func (r *run) advance(key string) (Message, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	q := r.lanes[key]
	if len(q) == 0 {
		delete(r.lanes, key)
		return Message{}, false
	}
	msg := q[0]
	q[0] = Message{}
	r.lanes[key] = q[1:]
	return msg, true
}

// batch handles first in a transaction with other first deliveries ready
// at the same time (see [Config.MaxBatch]). Messages wait for a handler
// slot in one queue, ready, rather than each with its worker: the worker
// that gets a slot takes up to MaxBatch of them. A worker that finds the
// queue emptied by others has nothing left to do. Every message in the
// queue has its worker still waiting for a slot, and each takes at least
// one message when the queue is not empty, so none is left behind.
func (r *run) batch(first Message) {
	r.mu.Lock()
	r.ready = append(r.ready, first)
	r.mu.Unlock()
	select {
	case r.slots <- struct{}{}:
	case <-r.stopping:
		r.singles(r.take(math.MaxInt)) // each is released
		return
	}
	msgs := r.take(r.c.cfg.MaxBatch)
	switch {
	case len(msgs) == 0:
		<-r.slots
		return
	case r.stopped():
		<-r.slots
		r.singles(msgs) // each is released
		return
	case len(msgs) == 1:
		<-r.slots
		r.single(msgs[0])
		return
	}
	outs, err := r.attemptBatch(msgs)
	<-r.slots
	if err != nil {
		r.c.c.batchesRolledBack.Add(1)
		r.log.DebugContext(r.base, "batch rolled back; handling its messages one by one", "messages", len(msgs), "error", err)
		r.singles(msgs)
		return
	}
	r.c.c.batches.Add(1)
	var acks sync.WaitGroup
	for i := range msgs {
		m, o := msgs[i], outs[i]
		if o.duplicate {
			r.c.c.duplicates.Add(1)
			r.log.DebugContext(r.base, "duplicate acknowledged", o.attrs(m, 1)...)
		} else {
			r.c.c.handled.Add(1)
		}
		// Acknowledgements are round trips on some brokers: in parallel.
		acks.Go(func() {
			defer func() { <-r.inflight }()
			r.ack(m, o, 1)
		})
	}
	acks.Wait()
	for _, m := range msgs {
		if !r.ordered(m) {
			continue
		}
		if next, ok := r.advance(m.OrderKey); ok && !r.push(next) {
			r.lane(m.OrderKey, next) // stopping: released there
		}
	}
}

// take removes and returns up to n messages from the head of ready.
func (r *run) take(n int) []Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	n = min(n, len(r.ready))
	if n == 0 {
		return nil
	}
	msgs := slices.Clone(r.ready[:n])
	clear(r.ready[:n])
	r.ready = r.ready[n:]
	return msgs
}

// singles handles each of msgs on its own.
func (r *run) singles(msgs []Message) {
	for _, m := range msgs {
		r.single(m)
	}
}

// attemptBatch decodes msgs and calls the handler for each in one
// transaction, with their inbox records. It returns each message's outcome
// once the transaction committed, or the first failure, the transaction
// rolled back.
func (r *run) attemptBatch(msgs []Message) (outs []outcome, err error) {
	cfg := &r.c.cfg
	outs = make([]outcome, len(msgs))
	err = safe(func() error {
		return cfg.Transactor.InTx(r.work, func(tx context.Context) error {
			for i, m := range msgs {
				ctx, ev, o := r.prepare(tx, m)
				outs[i] = o
				if o.err != nil {
					return o.err
				}
				if cfg.Inbox != nil {
					if err := inbox.ValidateRecord(cfg.Name, o.id); err != nil {
						return err
					}
					first, err := cfg.Inbox.Record(ctx, cfg.Name, o.id)
					if err != nil {
						return err
					}
					if !first {
						outs[i].duplicate = true
						continue
					}
				}
				if err := r.c.handle(ctx, ev); err != nil {
					return err
				}
			}
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return outs, nil
}

// drain waits, once stopping is closed, for every message to be settled,
// cancelling the handlers' context after the drain timeout.
func (r *run) drain() {
	done := make(chan struct{})
	var timer sync.WaitGroup
	timer.Go(func() {
		if !sleep(done, r.c.cfg.DrainTimeout) {
			return
		}
		r.stopWork()
	})
	r.wg.Wait()
	close(done)
	timer.Wait()
	r.stopWork()
}

func (r *run) stopped() bool {
	select {
	case <-r.stopping:
		return true
	default:
		return false
	}
}

// outcome is the result of one attempt.
type outcome struct {
	err       error
	duplicate bool
	name      string
	id        uuid.UUID
}

func (o outcome) attrs(msg Message, attempt int) []any {
	a := []any{"topic", msg.Topic, "key", msg.Key, "attempt", attempt}
	if o.name != "" {
		a = append(a, "event", o.name)
	}
	if o.id != uuid.Nil {
		a = append(a, "event_id", o.id.String())
	}
	if o.err != nil {
		a = append(a, "error", o.err)
	}
	return a
}

// process handles msg until it is settled: acknowledged, dead-lettered,
// retried through the broker, or released. inPlace retries it here,
// holding its ordering key, instead of through the broker.
func (r *run) process(msg Message, inPlace bool) {
	defer func() { <-r.inflight }()
	attempt := max(msg.Attempt, 1)
	if attempt > r.c.cfg.MaxDeliveries && !r.stopped() {
		// Earlier deliveries ended without a failure being recorded: the
		// message may crash the process. Do not hand it out again.
		o := outcome{err: fmt.Errorf("brokers: delivered %d times, more than MaxDeliveries (%d), without a recorded outcome: "+
			"an earlier delivery may have crashed the consumer", attempt, r.c.cfg.MaxDeliveries)}
		if env, err := wire.FromHeaders(msg.Headers); err == nil {
			o.name, o.id = env.Name, env.ID
		}
		r.deadLetter(msg, o, attempt, ReasonExhausted, inPlace)
		return
	}
	for {
		if r.stopped() {
			r.release(msg, attempt)
			return
		}
		select {
		case r.slots <- struct{}{}:
		case <-r.stopping:
			r.release(msg, attempt)
			return
		}
		if r.stopped() { // both were ready
			<-r.slots
			r.release(msg, attempt)
			return
		}
		o := r.attempt(msg)
		<-r.slots

		if o.err == nil {
			if o.duplicate {
				r.c.c.duplicates.Add(1)
				r.log.DebugContext(r.base, "duplicate acknowledged", o.attrs(msg, attempt)...)
			} else {
				r.c.c.handled.Add(1)
			}
			r.ack(msg, o, attempt)
			return
		}
		if r.work.Err() != nil { // cancelled by the drain timeout
			r.release(msg, attempt)
			return
		}
		switch action := r.classify(o.err); action {
		case Drop:
			r.c.c.dropped.Add(1)
			r.log.WarnContext(r.base, "message dropped", o.attrs(msg, attempt)...)
			r.ack(msg, o, attempt)
			return
		case Reject:
			r.deadLetter(msg, o, attempt, reasonFor(o.err), inPlace)
			return
		default:
			if attempt >= r.c.cfg.MaxDeliveries {
				r.deadLetter(msg, o, attempt, ReasonExhausted, inPlace)
				return
			}
			delay := r.c.cfg.Backoff.Delay(attempt)
			r.c.c.retried.Add(1)
			r.log.WarnContext(r.base, "handling failed; retrying", append(o.attrs(msg, attempt), "retry_in", delay, "in_place", inPlace)...)
			if !inPlace {
				r.retry(msg, o, attempt, delay)
				return
			}
			if !sleep(r.stopping, delay) {
				r.release(msg, attempt)
				return
			}
			attempt++
		}
	}
}

// attempt decodes msg and calls the handler once.
func (r *run) attempt(msg Message) (o outcome) {
	defer func() {
		if v := recover(); v != nil {
			o.err = panics.New(v)
		}
	}()
	ctx, ev, o := r.prepare(r.work, msg)
	if o.err != nil {
		return o
	}
	o.duplicate, o.err = r.handle(ctx, o.id, ev)
	return o
}

// prepare decodes msg and returns the event and its handler's context,
// derived from parent; o names the event, and o.err is set if msg cannot
// be handled.
func (r *run) prepare(parent context.Context, msg Message) (ctx context.Context, ev events.Event, o outcome) {
	env, err := wire.FromHeaders(msg.Headers)
	if err != nil {
		o.err = fmt.Errorf("%w: %w", ErrUndecodable, err)
		return nil, nil, o
	}
	env.Topic, env.Key, env.Payload = msg.Topic, msg.Key, msg.Body
	o.name, o.id = env.Name, env.ID
	ev, err = r.c.dec.Decode(env)
	if err != nil {
		o.err = fmt.Errorf("%w: %w", ErrUndecodable, err)
		return nil, nil, o
	}
	if n, ok := ev.(events.NotificationEvent); ok {
		o.name, o.id = n.EventName(), n.EventID()
	}
	ctx = parent
	if r.c.cfg.Extract != nil {
		if ctx = r.c.cfg.Extract(ctx, env.Headers); ctx == nil {
			o.err = errors.New("brokers: Extract returned a nil context")
			return nil, nil, o
		}
	}
	// The event's lineage: its correlation continues; the event itself is
	// the cause of what its handlers emit. An event with no correlation id
	// (python-cqrs sends none) starts one: its own id.
	cause := o.id.String()
	corr := env.CorrelationID
	if corr == "" {
		corr = cause
	}
	return events.WithLineage(ctx, events.Lineage{CorrelationID: corr, CausationID: cause}), ev, o
}

// handle calls the handler, in a transaction with the inbox record when
// configured.
func (r *run) handle(ctx context.Context, id uuid.UUID, ev events.Event) (duplicate bool, err error) {
	cfg := &r.c.cfg
	if cfg.Inbox == nil && cfg.Transactor == nil {
		return false, r.c.handle(ctx, ev)
	}
	call := func(ctx context.Context) error { return r.c.handle(ctx, ev) }
	if cfg.Inbox != nil {
		d := inbox.Deduplicator{Consumer: cfg.Name, Store: cfg.Inbox, Transactor: cfg.Transactor}
		return d.Process(ctx, id, call)
	}
	return false, cfg.Transactor.InTx(ctx, call)
}

func (r *run) classify(err error) (a Action) {
	defer func() {
		if v := recover(); v != nil {
			r.log.ErrorContext(r.base, "Classify panicked; retrying", "panic", v)
			a = Retry
		}
	}()
	return r.c.classify(err)
}

// reasonFor returns the reason a message rejected with err is
// dead-lettered for.
func reasonFor(err error) Reason {
	switch {
	case errors.Is(err, ErrUndecodable):
		return ReasonUndecodable
	case errors.Is(err, engine.ErrHandlerNotFound):
		return ReasonUnhandled
	default:
		return ReasonRejected
	}
}

// settleCtx returns the context of a settle call: Run's values without its
// cancellation, and a deadline between SettleTimeout and 1.25 times it from
// now. The context is shared by the calls of a quarter of SettleTimeout,
// rather than made per call: a context with a deadline costs a timer and
// four allocations, as much as the rest of the runtime's work per message.
func (r *run) settleCtx() context.Context {
	limit := r.c.cfg.SettleTimeout
	now := time.Now()
	if d := r.settleDL.Load(); d != nil && d.at.Sub(now) >= limit {
		return d.ctx
	}
	r.settleMu.Lock()
	defer r.settleMu.Unlock()
	if d := r.settleDL.Load(); d != nil && d.at.Sub(now) >= limit {
		return d.ctx
	}
	at := now.Add(limit + limit/4)
	ctx, cancel := context.WithDeadline(r.base, at)
	// The context replaced may still be in use: it is left to expire.
	r.settleDL.Store(&settleDeadline{ctx: ctx, cancel: cancel, at: at})
	return ctx
}

// endSettles cancels the current settle context, once no settle call is
// running; those it replaced expire by themselves.
func (r *run) endSettles() {
	if d := r.settleDL.Load(); d != nil {
		d.cancel()
	}
}

// settle calls one settle method with a bounded context, and counts and
// logs its failure.
func (r *run) settle(op string, msg Message, o outcome, attempt int, fn func(ctx context.Context) error) bool {
	ctx := r.settleCtx()
	err := safe(func() error { return fn(ctx) })
	if err == nil {
		return true
	}
	r.c.c.settleErrors.Add(1)
	o.err = err
	r.log.WarnContext(r.base, op+" failed; the broker will deliver the message again", o.attrs(msg, attempt)...)
	return false
}

func (r *run) ack(msg Message, o outcome, attempt int) {
	r.settle("ack", msg, o, attempt, msg.Settler.Ack)
}

func (r *run) retry(msg Message, o outcome, attempt int, delay time.Duration) {
	r.settle("retry", msg, o, attempt, func(ctx context.Context) error { return msg.Settler.Retry(ctx, delay) })
}

// release gives msg back to the broker unfinished, at shutdown.
func (r *run) release(msg Message, attempt int) {
	r.c.c.released.Add(1)
	r.settle("release", msg, outcome{}, attempt, func(ctx context.Context) error { return msg.Settler.Retry(ctx, 0) })
}

// deadLetter moves msg to the dead-letter destination. If that fails, an
// ordered message (inPlace) tries again after a backoff, holding its key,
// until it succeeds or Run stops (it is then released); an unordered one
// is retried through the broker, and will be dead-lettered on its next
// delivery. It reports whether the message was dead-lettered.
func (r *run) deadLetter(msg Message, o outcome, attempt int, reason Reason, inPlace bool) bool {
	d := DeadLetter{Reason: reason, Err: o.err, Attempts: attempt, Consumer: r.c.cfg.Name, Topic: msg.Topic}
	for failures := 1; ; failures++ {
		d.Time = time.Now().UTC()
		if r.settle("dead-letter", msg, o, attempt, func(ctx context.Context) error { return msg.Settler.DeadLetter(ctx, d) }) {
			r.c.c.deadLettered.Add(1)
			r.log.ErrorContext(r.base, "message dead-lettered", append(o.attrs(msg, attempt), "reason", string(reason))...)
			return true
		}
		delay := r.c.cfg.Backoff.Delay(failures)
		if !inPlace {
			r.retry(msg, o, attempt, delay)
			return false
		}
		if !sleep(r.stopping, delay) {
			r.release(msg, attempt)
			return false
		}
	}
}

// sleep waits for d, or until done is closed; it reports whether d
// elapsed.
func sleep(done <-chan struct{}, d time.Duration) bool {
	if d <= 0 {
		select {
		case <-done:
			return false
		default:
			return true
		}
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-done:
		return false
	}
}

// safe calls fn, turning a panic into a *PanicError.
func safe(fn func() error) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = panics.New(v)
		}
	}()
	return fn()
}
