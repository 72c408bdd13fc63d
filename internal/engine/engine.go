// Package engine is the event fan-out engine shared by every mediator: it
// dispatches the events a handler emitted, and their follow-ups, one by one
// or through a bounded pool of goroutines, and reports every failure.
//
// The public contract is written in the doc of package mediator; this
// comment records how the engine meets it.
//
// Sequential mode (concurrency disabled, or a limit of 1) runs on the
// caller's goroutine, level by level: the events of one level, each with its
// handlers in bind order, then all their follow-ups. It allocates the frame
// its handlers receive (one per dispatch), the follow-up slices and errors.
//
// Parallel mode keeps a FIFO queue of tasks and at most Limit workers: the
// caller's goroutine is one worker and the others are errgroup goroutines,
// started only while there is queued work and a free slot. run.workers
// counts the workers, the caller included, and keeps them at most Limit; the
// group's own limit (SetLimit(Limit)) is a structural backstop. A task is one
// handler invocation (handlers in parallel) or one event with all its
// handlers in bind order (handlers serial). Follow-ups are queued
// as soon as the invocation that produced them returns. Since each worker runs
// one invocation at a time, at most Limit invocations run at once, and no
// goroutine ever waits for a per-dispatch slot: queued work waits in the
// queue.
//
// Handlers receive a frame (frame.go): the dispatch's context plus the depth
// of the events being handled and, with a mediator-wide limit, the slot the
// invocation holds. Nested dispatches read both from the context.
package engine

import (
	"context"
	"fmt"
	"log/slog"
	"reflect"
	"sync"

	"golang.org/x/sync/errgroup"

	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/internal/registry"
	"github.com/gocqrs/cqrs/internal/typeid"
)

// Options configures an Engine. The mediator validates them.
type Options struct {
	// Concurrent enables parallel mode when Limit > 1.
	Concurrent bool
	// Limit bounds the handler invocations running at once in one dispatch.
	Limit int
	// ParallelHandlers runs the handlers of one event concurrently.
	ParallelHandlers bool
	// FailFast stops the dispatch at the first failure.
	FailFast bool
	// MaxDepth bounds follow-up nesting; events deeper are refused.
	MaxDepth int
	// GlobalLimit, if > 0, bounds the invocations running at once across
	// every dispatch of this engine.
	GlobalLimit int
	// Publisher receives notification events.
	Publisher events.Publisher
	// PublishOnly sends notification events emitted in process to the
	// Publisher only, not to the handlers bound to their type (which get
	// them back from the outbox's relay, as incoming events).
	PublishOnly bool
	// Logger receives warnings about events with no handler.
	Logger *slog.Logger
}

// Engine dispatches events to resolved handlers. It is safe for concurrent
// use and holds no per-dispatch state.
type Engine struct {
	byType map[reflect.Type][]registry.EventHandler
	routes map[typeid.ID]binding // by typeid.OfValue of the event
	opt    Options
	slots  chan struct{} // the mediator-wide limit, as a counting semaphore; nil when none
	log    *slog.Logger
}

// binding is the handlers of one event type.
type binding struct {
	hs      []registry.EventHandler
	nilable bool // a value of the type may be a nil pointer, map...
	notify  bool // the type implements events.NotificationEvent
}

var notificationType = reflect.TypeFor[events.NotificationEvent]()

// New returns an engine over routes, which it does not copy.
func New(routes map[reflect.Type][]registry.EventHandler, opt Options) *Engine {
	e := &Engine{byType: routes, routes: make(map[typeid.ID]binding, len(routes)), opt: opt, log: opt.Logger}
	for t, hs := range routes {
		if len(hs) > 0 && t.Kind() != reflect.Interface {
			e.routes[typeid.OfValueType(t)] = binding{hs: hs, nilable: registry.Nilable(t), notify: t.Implements(notificationType)}
		}
	}
	if e.log == nil {
		e.log = slog.Default()
	}
	if opt.GlobalLimit > 0 {
		e.slots = make(chan struct{}, opt.GlobalLimit)
	}
	return e
}

// Routes returns the resolved handlers per event type. It must not be
// modified.
func (e *Engine) Routes() map[reflect.Type][]registry.EventHandler { return e.byType }

// Dispatch dispatches evs, emitted by a request handler, and every follow-up,
// and returns when all are done. It returns nil or a *DispatchError.
func (e *Engine) Dispatch(ctx context.Context, evs []any) error {
	if len(evs) == 0 {
		return nil
	}
	return e.dispatch(ctx, evs, nil, nil, false)
}

// DispatchIncoming dispatches one event received from outside the process:
// the event goes to its in-process handlers only (it is not published again),
// and its follow-ups are dispatched like those of any event.
func (e *Engine) DispatchIncoming(ctx context.Context, ev any) error {
	if ev == nil {
		return fmt.Errorf("%w", ErrNilEvent)
	}
	b, ok := e.routes[typeid.OfValue(ev)]
	if (b.nilable || !ok) && registry.IsNil(ev) {
		return fmt.Errorf("%w of type %T", ErrNilEvent, ev)
	}
	if !ok {
		return fmt.Errorf("%w for event %T", ErrHandlerNotFound, ev)
	}
	return e.dispatch(ctx, nil, ev, &b, true)
}

// dispatch dispatches evs, or the single event one, already looked up as
// ob, when evs is nil (which spares a slice and a lookup). The events are at
// the depth after that of the handler whose context ctx is, if any.
func (e *Engine) dispatch(ctx context.Context, evs []any, one any, ob *binding, incoming bool) error {
	depth := Depth(ctx) + 1
	var parent *lease
	if e.slots != nil {
		parent = e.leaseOf(ctx)
	}
	if !e.opt.Concurrent || e.opt.Limit <= 1 {
		return e.sequential(ctx, evs, one, ob, depth, parent, incoming)
	}
	if evs == nil {
		evs = []any{one}
	}
	return e.parallel(ctx, evs, depth, parent, incoming)
}

// route is what one event resolves to: an optional publish step followed by
// its handlers in bind order.
type route struct {
	ev      any
	t       reflect.Type
	hs      []registry.EventHandler
	publish bool
}

func (r *route) steps() int {
	if r.publish {
		return len(r.hs) + 1
	}
	return len(r.hs)
}

// route resolves ev at depth into r. It returns an error for a nil event or
// one nested too deep; an event with no handler resolves to zero steps.
func (e *Engine) route(ctx context.Context, r *route, ev any, depth int, incoming bool) error {
	if ev == nil {
		return &HandlerError{Event: ev, Handler: "(none)", Err: ErrNilEvent}
	}
	b := e.routes[typeid.OfValue(ev)]
	return e.fill(ctx, r, ev, &b, depth, incoming)
}

// refuse returns the error an event that cannot be dispatched is reported
// with, or nil: a nil event, or one deeper than the maximum.
func (e *Engine) refuse(ev any, b *binding, depth int) error {
	if ev == nil {
		return &HandlerError{Event: ev, Handler: "(none)", Err: ErrNilEvent}
	}
	// An unbound type is checked too: a nil *T must not be reported as an
	// event with no handler, nor a nil notification be published.
	if (b.nilable || b.hs == nil) && registry.IsNil(ev) {
		return &HandlerError{EventType: reflect.TypeOf(ev), Event: ev, Handler: "(none)", Err: ErrNilEvent}
	}
	if depth > e.opt.MaxDepth {
		return &DepthError{EventType: reflect.TypeOf(ev), Event: ev, Depth: depth, Max: e.opt.MaxDepth}
	}
	return nil
}

// fill resolves ev, whose binding b was looked up, into r.
func (e *Engine) fill(ctx context.Context, r *route, ev any, b *binding, depth int, incoming bool) error {
	if err := e.refuse(ev, b, depth); err != nil {
		return err
	}
	r.ev, r.t, r.hs, r.publish = ev, reflect.TypeOf(ev), b.hs, b.notify && !incoming
	if r.publish && e.opt.PublishOnly {
		r.hs = nil
	}
	if b.hs == nil {
		_, r.publish = ev.(events.NotificationEvent)
		r.publish = r.publish && !incoming
		if !r.publish {
			return e.warnUnhandled(ctx, r.t)
		}
	}
	return nil
}

// warnUnhandled logs an event nobody handles. A panic of the logger is
// returned as a failure of the dispatch, never raised.
func (e *Engine) warnUnhandled(ctx context.Context, t reflect.Type) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = &HandlerError{EventType: t, Handler: "logger", Err: NewPanicError(v)}
		}
	}()
	e.log.LogAttrs(ctx, slog.LevelWarn, "cqrs: no handler for event", slog.String("event_type", t.String()))
	return nil
}

// skip settles evs, at depth, which will not be dispatched because the
// dispatch stopped: an event that would have been refused (nil, too deep) is
// reported as it would have been, and the invocations the others needed are
// counted and returned.
func (e *Engine) skip(evs []any, depth int, incoming bool, fails *[]error) int {
	n := 0
	for _, ev := range evs {
		var b binding
		if ev != nil {
			b = e.routes[typeid.OfValue(ev)]
		}
		if err := e.refuse(ev, &b, depth); err != nil {
			*fails = append(*fails, err)
			continue
		}
		if _, ok := ev.(events.NotificationEvent); ok && !incoming {
			n++
			if e.opt.PublishOnly {
				continue
			}
		}
		n += len(b.hs)
	}
	return n
}

// call runs step s of r: the publish, or one handler. The caller recovers
// panics.
func (e *Engine) call(ctx context.Context, r *route, s int) ([]any, error) {
	i := s
	if r.publish {
		if i == 0 {
			if e.opt.Publisher == nil {
				return nil, &HandlerError{EventType: r.t, Event: r.ev, Handler: "publisher", Err: ErrNoPublisher}
			}
			ne, _ := r.ev.(events.NotificationEvent)
			if err := e.opt.Publisher.Publish(ctx, ne); err != nil {
				return nil, &HandlerError{EventType: r.t, Event: r.ev, Handler: e.stepName(r, s), Err: err}
			}
			return nil, nil
		}
		i--
	}
	h := &r.hs[i]
	fus, err := h.Call(ctx, r.ev)
	if err != nil {
		return nil, &HandlerError{EventType: r.t, Event: r.ev, Handler: h.Name, Err: err}
	}
	return fus, nil
}

func (e *Engine) stepName(r *route, s int) string {
	if r.publish {
		if s == 0 {
			return fmt.Sprintf("publisher %T", e.opt.Publisher)
		}
		s--
	}
	if s < 0 || s >= len(r.hs) {
		return "(none)"
	}
	return r.hs[s].Name
}

// seq is the cursor of a sequential dispatch. It lives outside seqRun so
// that, after a recovered panic, the dispatch resumes with the next step:
// one deferred recover per dispatch instead of one per invocation.
//
// The event slices and the failures are kept apart from the cursor, in
// their own variables: escape analysis does not tell fields apart, and the
// cursor's route is stored into errors (so it escapes) while the slices,
// which may live on the caller's stack, need not.
type seq struct {
	depth, i, s int   // event level[i] at depth, its next step s
	r           route // route of level[i], valid while routed
	routed      bool
	incoming    bool   // level holds the event received from outside
	frame       *frame // what handlers receive, without a mediator-wide limit
	parent      *lease // the slot ctx may lend, with a mediator-wide limit
	borrowed    *lease // the slot held for the running step was lent by it
	own         *lease // the running step's own lease; nil when none is held
	notStarted  int
}

// seqLists are the event slices of a sequential dispatch: the level being
// dispatched and the follow-ups of the next level. The failures, which
// escape, are a third variable.
type seqLists struct {
	level, next []any
}

// sequential dispatches breadth first on the calling goroutine.
func (e *Engine) sequential(ctx context.Context, level []any, one any, ob *binding, depth int, parent *lease, incoming bool) error {
	l := seqLists{level: level}
	q := seq{depth: depth, incoming: incoming, parent: parent}
	var fails []error
	if level == nil {
		// One event: route it now; the cursor starts on it.
		if err := e.fill(ctx, &q.r, one, ob, depth, incoming); err != nil {
			return e.result(ctx, []error{err}, 0)
		}
		q.routed = true
	}
	if e.slots == nil {
		q.frame = newFrame(ctx, depth, e, nil)
	}
	for !e.seqRun(ctx, &q, &l, &fails) {
	}
	return e.result(ctx, fails, q.notStarted)
}

// abandon counts as not started the rest of the current event and every
// event not reached yet.
func (e *Engine) abandon(q *seq, l *seqLists, fails *[]error) {
	if q.routed {
		q.notStarted += q.r.steps() - q.s
		q.i++
		q.routed = false
	}
	if q.i < len(l.level) {
		q.notStarted += e.skip(l.level[q.i:], q.depth, q.incoming, fails)
		q.i = len(l.level)
	}
	q.notStarted += e.skip(l.next, q.depth+1, false, fails)
	l.next = nil
}

// settle records the outcome of the step just run: a failure, or its
// follow-ups for the next level. It reports whether the dispatch stops
// (fail-fast).
func (e *Engine) settle(q *seq, l *seqLists, fails *[]error, fus []any, err error) (stop bool) {
	if err != nil {
		*fails = append(*fails, err)
		if e.opt.FailFast {
			e.abandon(q, l, fails)
			return true
		}
		return false
	}
	if len(fus) > 0 {
		l.next = append(l.next, fus...)
	}
	return false
}

// unhold gives back the mediator-wide slot held for the step just run.
func (e *Engine) unhold(q *seq) {
	q.own.end()
	e.release(q.borrowed)
	q.own, q.borrowed = nil, nil
}

// seqRun advances q until the dispatch is over (true), or until a step
// panics (false: the panic is recorded and q points past that step). If a
// step ends its goroutine (runtime.Goexit), the slot it held is given back
// and the goroutine goes on ending: there is no caller left to report to.
func (e *Engine) seqRun(ctx context.Context, q *seq, l *seqLists, fails *[]error) (over bool) {
	defer func() {
		if over {
			return
		}
		v := recover()
		if q.own != nil {
			e.unhold(q)
		}
		if v == nil {
			return // runtime.Goexit
		}
		*fails = append(*fails, &HandlerError{EventType: q.r.t, Event: q.r.ev, Handler: e.stepName(&q.r, q.s), Err: NewPanicError(v)})
		q.s++
		if e.opt.FailFast {
			e.abandon(q, l, fails)
			over = true
		}
	}()
	for {
		for q.routed || q.i < len(l.level) {
			if !q.routed {
				if ctx.Err() != nil {
					e.abandon(q, l, fails)
					return true
				}
				if err := e.route(ctx, &q.r, l.level[q.i], q.depth, q.incoming); err != nil {
					q.i++
					*fails = append(*fails, err)
					if e.opt.FailFast {
						e.abandon(q, l, fails)
						return true
					}
					continue
				}
				q.routed, q.s = true, 0
			}
			if !q.r.publish && e.slots == nil {
				// The common case, handlers only and no slot to take, in a
				// loop with fewer loads; the general one follows.
				hs, ev, hctx := q.r.hs, q.r.ev, q.frame
				for q.s < len(hs) {
					if ctx.Err() != nil {
						e.abandon(q, l, fails)
						return true
					}
					fus, err := hs[q.s].Call(hctx, ev)
					q.s++
					if err == nil && len(fus) == 0 {
						continue
					}
					if err != nil {
						err = &HandlerError{EventType: q.r.t, Event: ev, Handler: hs[q.s-1].Name, Err: err}
					}
					if e.settle(q, l, fails, fus, err) {
						return true
					}
				}
			}
			for n := q.r.steps(); q.s < n; {
				if ctx.Err() != nil {
					e.abandon(q, l, fails)
					return true
				}
				var hctx context.Context = q.frame
				if e.slots != nil {
					b, err := e.acquire(ctx, q.parent)
					if err != nil {
						e.abandon(q, l, fails)
						return true
					}
					q.borrowed, q.own = b, newLease()
					hctx = newFrame(ctx, q.depth, e, q.own)
				}
				fus, err := e.call(hctx, &q.r, q.s)
				if q.own != nil {
					e.unhold(q)
				}
				q.s++
				if e.settle(q, l, fails, fus, err) {
					return true
				}
			}
			q.routed = false
			q.i++
		}
		if len(l.next) == 0 {
			return true
		}
		l.level, l.next, q.i = l.next, nil, 0
		q.depth++
		q.incoming = false
		if q.frame != nil {
			q.frame.depth.Store(int32(q.depth))
		}
	}
}

func (e *Engine) result(ctx context.Context, fails []error, notStarted int) error {
	if len(fails) == 0 && notStarted == 0 {
		return nil
	}
	de := &DispatchError{Failures: fails, NotStarted: notStarted}
	if notStarted > 0 {
		de.Interrupted = CtxErr(ctx)
	}
	return de
}

// task is a unit of parallel work: steps [from, to) of one routed event.
type task struct {
	r        route
	depth    int
	from, to int
}

// pushCheck is how many events are queued between two checks of the
// context, so that a large batch does not delay noticing a cancellation.
const pushCheck = 64

// run is the state of one parallel dispatch.
type run struct {
	e      *Engine
	ctx    context.Context // cancelled on the first failure in fail-fast mode
	cancel context.CancelCauseFunc
	parent *lease // the slot the dispatch's context may lend
	depth  int    // of the first events
	limit  int
	g      errgroup.Group

	mu         sync.Mutex
	queue      []task
	head       int
	workers    int
	fails      []error
	notStarted int
	frames     []*frame // by depth, from r.depth; without a mediator-wide limit
}

func (e *Engine) parallel(ctx context.Context, evs []any, depth int, parent *lease, incoming bool) error {
	r := &run{e: e, ctx: ctx, limit: e.opt.Limit, parent: parent, depth: depth}
	if e.opt.FailFast {
		r.ctx, r.cancel = context.WithCancelCause(ctx)
		defer r.cancel(nil)
	}
	// r.workers bounds the workers, the caller included, to r.limit. The
	// group's limit must leave room for r.limit goroutines, not r.limit-1:
	// once the caller has run out of work and left, the other workers may
	// spawn up to r.limit of them, and a worker waiting in g.Go for a slot
	// only it could free would deadlock. With r.limit, g.Go waits at most for
	// a worker that has already left the loop and is returning.
	r.g.SetLimit(r.limit)
	r.mu.Lock()
	r.pushAll(evs, depth, incoming)
	for {
		r.workers++ // this goroutine
		n := r.spawnable(true)
		r.mu.Unlock()
		r.spawn(n)
		r.work()
		_ = r.g.Wait() // workers always return nil
		r.mu.Lock()
		// Work is left only if a worker ended its goroutine
		// (runtime.Goexit) and gave its task back after the others had
		// left: take it up again.
		if r.head == len(r.queue) || r.ctx.Err() != nil {
			break
		}
	}
	for _, t := range r.queue[r.head:] {
		r.notStarted += t.to - t.from
	}
	fails, notStarted := r.fails, r.notStarted
	r.mu.Unlock()
	return e.result(ctx, fails, notStarted)
}

// pushAll routes evs at depth and queues their work. Every pushCheck
// events it checks whether the dispatch has stopped, and settles the events
// left if so. r.mu must be held.
func (r *run) pushAll(evs []any, depth int, incoming bool) {
	for i, ev := range evs {
		if i > 0 && i%pushCheck == 0 && r.ctx.Err() != nil {
			r.notStarted += r.e.skip(evs[i:], depth, incoming, &r.fails)
			return
		}
		r.push(ev, depth, incoming)
	}
}

// push routes ev and queues its work. r.mu must be held.
func (r *run) push(ev any, depth int, incoming bool) {
	var rt route
	if err := r.e.route(r.ctx, &rt, ev, depth, incoming); err != nil {
		r.fail(err)
		return
	}
	n := rt.steps()
	if n == 0 {
		return
	}
	if r.e.opt.ParallelHandlers {
		for s := range n {
			r.queue = append(r.queue, task{r: rt, depth: depth, from: s, to: s + 1})
		}
		return
	}
	r.queue = append(r.queue, task{r: rt, depth: depth, from: 0, to: n})
}

// fail records a failure. r.mu must be held.
func (r *run) fail(err error) {
	r.fails = append(r.fails, err)
	if r.cancel != nil {
		r.cancel(err)
	}
}

// frame returns the frame of the handlers at depth. r.mu must be held.
func (r *run) frame(depth int) *frame {
	i := depth - r.depth
	for len(r.frames) <= i {
		r.frames = append(r.frames, nil)
	}
	if r.frames[i] == nil {
		r.frames[i] = newFrame(r.ctx, depth, r.e, nil)
	}
	return r.frames[i]
}

// spawnable reports how many workers to start now, and counts them as
// started. selfFree tells whether the calling worker is about to take a task
// from the queue. r.mu must be held.
func (r *run) spawnable(selfFree bool) int {
	pending := len(r.queue) - r.head
	if selfFree {
		pending--
	}
	n := min(pending, r.limit-r.workers)
	if n <= 0 {
		return 0
	}
	r.workers += n
	return n
}

func (r *run) spawn(n int) {
	for range n {
		r.g.Go(func() error {
			r.work()
			return nil
		})
	}
}

// work runs queued tasks until the queue is empty or the dispatch stops.
func (r *run) work() {
	for {
		r.mu.Lock()
		if r.head == len(r.queue) || r.ctx.Err() != nil {
			r.workers--
			r.mu.Unlock()
			return
		}
		t := r.queue[r.head]
		r.queue[r.head] = task{}
		r.head++
		var f *frame
		if r.e.slots == nil {
			f = r.frame(t.depth)
		}
		r.mu.Unlock()
		r.exec(&t, f)
	}
}

// exec runs the steps of t, queueing follow-ups as each step returns.
func (r *run) exec(t *task, f *frame) {
	for s := t.from; s < t.to; s++ {
		if r.ctx.Err() == nil {
			if fus, err, ok := r.step(t, s, f); ok {
				r.mu.Lock()
				if err != nil {
					r.fail(err)
				} else {
					r.pushAll(fus, t.depth+1, false)
				}
				n := r.spawnable(s == t.to-1)
				r.mu.Unlock()
				r.spawn(n)
				continue
			}
		}
		r.mu.Lock()
		r.notStarted += t.to - s
		r.mu.Unlock()
		return
	}
}

// step runs step s of t with f as its context, or, with a mediator-wide
// limit, under a slot taken first and with a frame of its own. It reports
// false when no slot could be had before the dispatch stopped. A panic
// becomes a *HandlerError wrapping a *PanicError; a step that ends its
// goroutine (runtime.Goexit) is reported as failed with ErrGoexit, and the
// rest of its task goes back to the queue.
func (r *run) step(t *task, s int, f *frame) (fus []any, err error, started bool) {
	e := r.e
	var ctx context.Context = f
	var borrowed, own *lease
	if e.slots != nil {
		b, aerr := e.acquire(r.ctx, r.parent)
		if aerr != nil {
			return nil, nil, false
		}
		borrowed, own = b, newLease()
		ctx = newFrame(r.ctx, t.depth, e, own)
	}
	returned := false
	defer func() {
		if own != nil {
			own.end()
			e.release(borrowed)
		}
		if returned {
			return
		}
		if v := recover(); v != nil {
			fus, err, started = nil, &HandlerError{EventType: t.r.t, Event: t.r.ev, Handler: e.stepName(&t.r, s), Err: NewPanicError(v)}, true
			return
		}
		r.goexit(t, s)
	}()
	fus, err = e.call(ctx, &t.r, s)
	returned = true
	return fus, err, true
}

// goexit records that step s of t ended its worker's goroutine, and gives
// the rest of t back to the queue.
func (r *run) goexit(t *task, s int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.fail(&HandlerError{EventType: t.r.t, Event: t.r.ev, Handler: r.e.stepName(&t.r, s), Err: ErrGoexit})
	if s+1 < t.to {
		r.queue = append(r.queue, task{r: t.r, depth: t.depth, from: s + 1, to: t.to})
	}
	r.workers--
}
