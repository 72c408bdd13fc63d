// Package engine is the event fan-out engine shared by every mediator: it
// dispatches the events a handler emitted, and their follow-ups, one by one
// or through a bounded pool of goroutines, and reports every failure.
//
// The public contract is written in the doc of package mediator; this
// comment records how the engine meets it.
//
// Sequential mode (concurrency disabled, a limit of 1, or a nested dispatch
// that inherits a mediator-wide slot) runs on the caller's goroutine, level by
// level: the events of one level, each with its handlers in bind order, then
// all their follow-ups. It allocates only the follow-up slices and errors.
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
// goroutine ever waits for a slot: queued work waits in the queue.
package engine

import (
	"context"
	"fmt"
	"log/slog"
	"reflect"
	"sync"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/semaphore"

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
	// Logger receives warnings about events with no handler.
	Logger *slog.Logger
}

// Engine dispatches events to resolved handlers. It is safe for concurrent
// use and holds no per-dispatch state.
type Engine struct {
	byType map[reflect.Type][]registry.EventHandler
	routes map[typeid.ID]binding // by typeid.OfValue of the event
	opt    Options
	global *semaphore.Weighted
	log    *slog.Logger
}

// binding is the handlers of one event type.
type binding struct {
	hs      []registry.EventHandler
	nilable bool // a value of the type may be a nil pointer, map...
	notify  bool // the type implements events.NotificationEvent
}

var notificationType = reflect.TypeFor[events.NotificationEvent]()

// heldKey marks a context whose goroutine holds a mediator-wide slot of e.
type heldKey struct{ e *Engine }

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
		e.global = semaphore.NewWeighted(int64(opt.GlobalLimit))
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
// ob, when evs is nil (which spares a slice and a lookup).
func (e *Engine) dispatch(ctx context.Context, evs []any, one any, ob *binding, incoming bool) error {
	inherited := false
	hctx := ctx
	if e.global != nil {
		if ctx.Value(heldKey{e}) != nil {
			// A handler holding one of our slots dispatches again: run
			// inline within that slot, or a cap of 1 would deadlock.
			inherited = true
		} else {
			hctx = context.WithValue(ctx, heldKey{e}, struct{}{})
		}
	}
	if !e.opt.Concurrent || e.opt.Limit <= 1 || inherited {
		return e.sequential(ctx, hctx, evs, one, ob, incoming, inherited)
	}
	if evs == nil {
		evs = []any{one}
	}
	return e.parallel(ctx, evs, incoming)
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
func (e *Engine) route(r *route, ev any, depth int, incoming bool) error {
	if ev == nil {
		return &HandlerError{Event: ev, Handler: "(none)", Err: ErrNilEvent}
	}
	b := e.routes[typeid.OfValue(ev)]
	return e.fill(r, ev, &b, depth, incoming)
}

// fill resolves ev, whose binding b was looked up, into r.
func (e *Engine) fill(r *route, ev any, b *binding, depth int, incoming bool) error {
	// An unbound type is checked too: a nil *T must not be reported as an
	// event with no handler, nor a nil notification be published.
	if (b.nilable || b.hs == nil) && registry.IsNil(ev) {
		return &HandlerError{EventType: reflect.TypeOf(ev), Event: ev, Handler: "(none)", Err: ErrNilEvent}
	}
	if depth > e.opt.MaxDepth {
		return &DepthError{EventType: reflect.TypeOf(ev), Event: ev, Depth: depth, Max: e.opt.MaxDepth}
	}
	r.ev, r.t, r.hs, r.publish = ev, reflect.TypeOf(ev), b.hs, b.notify && !incoming
	if b.hs == nil {
		_, r.publish = ev.(events.NotificationEvent)
		r.publish = r.publish && !incoming
		if !r.publish {
			e.warnUnhandled(r.t)
		}
	}
	return nil
}

func (e *Engine) warnUnhandled(t reflect.Type) {
	e.log.LogAttrs(context.Background(), slog.LevelWarn, "cqrs: no handler for event",
		slog.String("event_type", t.String()))
}

// countSteps counts the invocations evs would need, for reporting work that
// was never started.
func (e *Engine) countSteps(evs []any, incoming bool) int {
	n := 0
	for _, ev := range evs {
		if registry.IsNil(ev) {
			continue
		}
		n += len(e.routes[typeid.OfValue(ev)].hs)
		if _, ok := ev.(events.NotificationEvent); ok && !incoming {
			n++
		}
	}
	return n
}

// step runs step s of r, turning a panic into a *HandlerError wrapping a
// *PanicError.
func (e *Engine) step(ctx context.Context, r *route, s int) (fus []any, err error) {
	defer func() {
		if v := recover(); v != nil {
			fus, err = nil, &HandlerError{EventType: r.t, Event: r.ev, Handler: e.stepName(r, s), Err: NewPanicError(v)}
		}
	}()
	return e.call(ctx, r, s)
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
	return r.hs[s].Name
}

// acquire takes a mediator-wide slot, if there is such a limit and the
// caller does not already hold one. The caller has checked ctx.Err().
func (e *Engine) acquire(ctx context.Context, inherited bool) error {
	if e.global == nil || inherited {
		return nil
	}
	return e.global.Acquire(ctx, 1)
}

func (e *Engine) release(inherited bool) {
	if e.global != nil && !inherited {
		e.global.Release(1)
	}
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
	held        bool // a mediator-wide slot is held
	notStarted  int
}

// seqLists are the event slices of a sequential dispatch: the level being
// dispatched and the follow-ups of the next level. The failures, which
// escape, are a third variable.
type seqLists struct {
	level, next []any
}

// sequential dispatches breadth first on the calling goroutine.
func (e *Engine) sequential(ctx, hctx context.Context, level []any, one any, ob *binding, incoming, inherited bool) error {
	l := seqLists{level: level}
	q := seq{depth: 1}
	var fails []error
	if level == nil {
		// One event: route it now; the cursor starts on it.
		if err := e.fill(&q.r, one, ob, 1, incoming); err != nil {
			return e.result(ctx, []error{err}, 0)
		}
		q.routed = true
	}
	for !e.seqRun(ctx, hctx, &q, &l, &fails, incoming, inherited) {
	}
	return e.result(ctx, fails, q.notStarted)
}

// abandon counts as not started the rest of the current event and every
// event not reached yet.
func (e *Engine) abandon(q *seq, l *seqLists, incoming bool) {
	if q.routed {
		q.notStarted += q.r.steps() - q.s
		q.i++
		q.routed = false
	}
	if q.i < len(l.level) {
		q.notStarted += e.countSteps(l.level[q.i:], incoming && q.depth == 1)
	}
	q.notStarted += e.countSteps(l.next, false)
}

// settle records the outcome of the step just run: a failure, or its
// follow-ups for the next level. It reports whether the dispatch stops
// (fail-fast).
func (e *Engine) settle(q *seq, l *seqLists, fails *[]error, fus []any, err error, incoming bool) (stop bool) {
	if err != nil {
		*fails = append(*fails, err)
		if e.opt.FailFast {
			e.abandon(q, l, incoming)
			return true
		}
		return false
	}
	if len(fus) > 0 {
		l.next = append(l.next, fus...)
	}
	return false
}

// seqRun advances q until the dispatch is over (true), or until a step
// panics (false: the panic is recorded and q points past that step).
func (e *Engine) seqRun(ctx, hctx context.Context, q *seq, l *seqLists, fails *[]error, incoming, inherited bool) (over bool) {
	defer func() {
		v := recover()
		if v == nil {
			return
		}
		if q.held {
			e.release(inherited)
			q.held = false
		}
		*fails = append(*fails, &HandlerError{EventType: q.r.t, Event: q.r.ev, Handler: e.stepName(&q.r, q.s), Err: NewPanicError(v)})
		q.s++
		over = false
		if e.opt.FailFast {
			e.abandon(q, l, incoming)
			over = true
		}
	}()
	for {
		for q.routed || q.i < len(l.level) {
			if !q.routed {
				if ctx.Err() != nil {
					e.abandon(q, l, incoming)
					return true
				}
				if err := e.route(&q.r, l.level[q.i], q.depth, incoming && q.depth == 1); err != nil {
					q.i++
					*fails = append(*fails, err)
					if e.opt.FailFast {
						e.abandon(q, l, incoming)
						return true
					}
					continue
				}
				q.routed, q.s = true, 0
			}
			if !q.r.publish && (e.global == nil || inherited) {
				// The common case, handlers only and no slot to take, in a
				// loop with fewer loads; the general one follows.
				hs, ev := q.r.hs, q.r.ev
				for q.s < len(hs) {
					if ctx.Err() != nil {
						e.abandon(q, l, incoming)
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
					if e.settle(q, l, fails, fus, err, incoming) {
						return true
					}
				}
			}
			for n := q.r.steps(); q.s < n; {
				err := ctx.Err()
				if err == nil && e.global != nil && !inherited {
					if err = e.global.Acquire(ctx, 1); err == nil {
						q.held = true
					}
				}
				if err != nil {
					e.abandon(q, l, incoming)
					return true
				}
				fus, err := e.call(hctx, &q.r, q.s)
				if q.held {
					e.release(inherited)
					q.held = false
				}
				q.s++
				if e.settle(q, l, fails, fus, err, incoming) {
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
	}
}

func (e *Engine) result(ctx context.Context, fails []error, notStarted int) error {
	if len(fails) == 0 && notStarted == 0 {
		return nil
	}
	de := &DispatchError{Failures: fails, NotStarted: notStarted}
	if notStarted > 0 {
		de.Interrupted = ctx.Err()
	}
	return de
}

// task is a unit of parallel work: steps [from, to) of one routed event.
type task struct {
	r        route
	depth    int
	from, to int
}

// run is the state of one parallel dispatch.
type run struct {
	e      *Engine
	ctx    context.Context // cancelled on the first failure in fail-fast mode
	hctx   context.Context // ctx, marked as holding a mediator-wide slot
	cancel context.CancelCauseFunc
	limit  int
	g      errgroup.Group

	mu         sync.Mutex
	queue      []task
	head       int
	workers    int
	fails      []error
	notStarted int
}

func (e *Engine) parallel(ctx context.Context, evs []any, incoming bool) error {
	r := &run{e: e, ctx: ctx, limit: e.opt.Limit}
	if e.opt.FailFast {
		r.ctx, r.cancel = context.WithCancelCause(ctx)
		defer r.cancel(nil)
	}
	r.hctx = r.ctx
	if e.global != nil {
		r.hctx = context.WithValue(r.ctx, heldKey{e}, struct{}{})
	}
	// r.workers bounds the workers, the caller included, to r.limit. The
	// group's limit must leave room for r.limit goroutines, not r.limit-1:
	// once the caller has run out of work and left, the other workers may
	// spawn up to r.limit of them, and a worker waiting in g.Go for a slot
	// only it could free would deadlock. With r.limit, g.Go waits at most for
	// a worker that has already left the loop and is returning.
	r.g.SetLimit(r.limit)
	r.mu.Lock()
	for _, ev := range evs {
		r.push(ev, 1, incoming)
	}
	r.workers = 1 // this goroutine
	n := r.spawnable(true)
	r.mu.Unlock()
	r.spawn(n)
	r.work()
	_ = r.g.Wait() // workers always return nil
	for _, t := range r.queue[r.head:] {
		r.notStarted += t.to - t.from
	}
	return e.result(ctx, r.fails, r.notStarted)
}

// push routes ev and queues its work. r.mu must be held.
func (r *run) push(ev any, depth int, incoming bool) {
	var rt route
	if err := r.e.route(&rt, ev, depth, incoming); err != nil {
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
		r.mu.Unlock()
		r.exec(&t)
	}
}

// exec runs the steps of t, queueing follow-ups as each step returns.
func (r *run) exec(t *task) {
	e := r.e
	for s := t.from; s < t.to; s++ {
		if err := r.ctx.Err(); err == nil {
			err = e.acquire(r.ctx, false)
			if err == nil {
				fus, err := e.step(r.hctx, &t.r, s)
				e.release(false)
				r.mu.Lock()
				if err != nil {
					r.fail(err)
				} else {
					for _, fu := range fus {
						r.push(fu, t.depth+1, false)
					}
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
