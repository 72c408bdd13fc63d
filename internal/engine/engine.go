// Package engine is the event fan-out engine shared by every mediator: it
// dispatches the events a handler emitted, and their follow-ups, one by one
// or through a bounded pool of goroutines, and reports every failure.
//
// The public contract is written in the doc of package mediator; this
// comment records how the engine meets it.
//
// Sequential mode (concurrency disabled, or a limit of 1) runs on the
// caller's goroutine, level by level: the events of one level, each with its
// handlers in bind order, then all their follow-ups. It allocates only the
// follow-up slices, a frame per level after the first, and errors.
//
// Parallel mode keeps a FIFO queue of tasks and at most Limit workers: the
// caller's goroutine is one worker and the others are goroutines started
// only while there is queued work and a free slot, and waited for with a
// WaitGroup. run.workers counts the workers, the caller included, and keeps
// them at most Limit. A task is one handler invocation (handlers in
// parallel) or one event with all its handlers in bind order (handlers
// serial). Follow-ups are queued as soon as the invocation that produced
// them returns. Since each worker runs one invocation at a time, at most
// Limit invocations run at once, and no goroutine ever waits for a
// per-dispatch slot: queued work waits in the queue. A dispatch that starts
// with a single task runs it as sequential mode does, with no queue and no
// goroutine, and turns parallel only if the task's follow-ups give it more
// to do (Engine.widened).
//
// Handlers receive a frame (frame.go): the dispatch's context plus the depth
// of the events being handled and, with a mediator-wide limit, the slot the
// invocation holds. Nested dispatches read both from the context. Without a
// mediator-wide limit, the dispatches that share a context share its frame,
// so that a dispatch allocates nothing on the common path.
package engine

import (
	"context"
	"fmt"
	"log/slog"
	"reflect"
	"sync"
	"sync/atomic"
	"unsafe"

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
	routes *typeid.Table[*binding] // by typeid.OfValue of the event
	none   binding                 // the binding of an unbound type
	opt    Options
	slots  chan struct{} // the mediator-wide limit, as a counting semaphore; nil when none
	log    *slog.Logger

	// last is the frame of the last dispatch started outside any handler
	// (see Engine.frame). It keeps that dispatch's context reachable until
	// a dispatch with another context replaces it. It sits on a cache line
	// of its own: when concurrent dispatches have different contexts it is
	// written on each, and must not slow the reads of the fields above.
	_    [64]byte
	last atomic.Pointer[frame]
	_    [56]byte
}

// binding is the handlers of one event type.
type binding struct {
	hs      []registry.EventHandler
	nilable bool // a value of the type may be a nil pointer, map...
	direct  bool // ...and is held in an interface as itself (a pointer, map, chan or func)
	notify  bool // the type implements events.NotificationEvent
	plain   bool // bound to handlers, not notify: goes to its handlers only
}

// isNil reports whether ev, whose binding b was looked up, holds a nil
// value. For the types an interface holds as a pointer it reads that
// pointer; only a slice needs reflection.
func (b *binding) isNil(ev any) bool {
	if b.direct {
		return dataWord(ev) == nil
	}
	return registry.IsNil(ev)
}

// dataWord returns the data word of an interface holding v.
func dataWord(v any) unsafe.Pointer {
	type eface struct{ typ, data unsafe.Pointer }
	return (*eface)(unsafe.Pointer(&v)).data
}

var notificationType = reflect.TypeFor[events.NotificationEvent]()

// New returns an engine over routes, which it does not copy.
func New(routes map[reflect.Type][]registry.EventHandler, opt Options) *Engine {
	e := &Engine{byType: routes, opt: opt, log: opt.Logger}
	bs := make(map[typeid.ID]*binding, len(routes))
	for t, hs := range routes {
		if len(hs) > 0 && t.Kind() != reflect.Interface {
			notify := t.Implements(notificationType)
			bs[typeid.OfValueType(t)] = &binding{hs: hs, nilable: registry.Nilable(t), direct: pointerShaped(t), notify: notify, plain: !notify}
		}
	}
	e.routes = typeid.NewTable(bs)
	if e.log == nil {
		e.log = slog.Default()
	}
	if opt.GlobalLimit > 0 {
		e.slots = make(chan struct{}, opt.GlobalLimit)
	}
	return e
}

// binding returns the binding of the dynamic type of ev (e.none for an
// unbound type or a nil ev).
func (e *Engine) binding(ev any) *binding {
	if b, ok := e.routes.Get(typeid.OfValue(ev)); ok {
		return b
	}
	return &e.none
}

// pointerShaped reports whether an interface holds a value of t as the
// value itself, a pointer: then the value is nil when that word is.
func pointerShaped(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Pointer, reflect.Map, reflect.Chan, reflect.Func, reflect.UnsafePointer:
		return true
	default:
		return false
	}
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
	bp, ok := e.routes.Get(typeid.OfValue(ev))
	if !ok {
		if registry.IsNil(ev) {
			return fmt.Errorf("%w of type %T", ErrNilEvent, ev)
		}
		return fmt.Errorf("%w for event %T", ErrHandlerNotFound, ev)
	}
	if bp.nilable && bp.isNil(ev) {
		return fmt.Errorf("%w of type %T", ErrNilEvent, ev)
	}
	b := *bp
	b.nilable = false // checked: the dispatch need not check again
	return e.dispatch(ctx, nil, ev, &b, true)
}

// dispatch dispatches evs, or the single event one, already looked up as
// ob, when evs is nil (which spares a slice and a lookup). The events are at
// the depth after that of the handler whose context ctx is, if any.
func (e *Engine) dispatch(ctx context.Context, evs []any, one any, ob *binding, incoming bool) error {
	// Handlers receive the dispatch's frame, or, with a mediator-wide
	// limit, a frame of their own holding their slot.
	var f *frame
	var depth int
	var parent *lease
	if e.slots != nil {
		depth, parent = Depth(ctx)+1, e.leaseOf(ctx)
	} else {
		f = e.frame(ctx)
		depth = f.depth
	}
	parallel := e.opt.Concurrent && e.opt.Limit > 1
	if !parallel || e.oneUnit(evs, ob) {
		return e.sequential(ctx, evs, one, ob, depth, f, parent, incoming, parallel)
	}
	r := e.newRun(ctx, depth, f, parent)
	if r.cancel != nil {
		defer r.cancel(nil)
	}
	r.mu.Lock()
	if evs == nil {
		r.push(one, depth, incoming)
	} else {
		r.pushAll(evs, depth, incoming)
	}
	return r.drive()
}

// oneUnit reports whether a parallel dispatch of evs, or of the single
// event bound as ob when evs is nil, starts with a single unit of work: one
// event whose handlers run in bind order, or that has one step. Such a
// dispatch starts on the caller's goroutine, as a sequential one, and
// becomes parallel only if follow-ups give it more to do.
func (e *Engine) oneUnit(evs []any, ob *binding) bool {
	if evs != nil && len(evs) != 1 {
		return false
	}
	if !e.opt.ParallelHandlers {
		return true
	}
	if evs != nil {
		ob = e.binding(evs[0])
	}
	steps := len(ob.hs)
	if ob.notify {
		steps++
	}
	return steps <= 1
}

// route is what one event resolves to: an optional publish step followed by
// its handlers in bind order.
type route struct {
	ev      any
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
	return e.fill(ctx, r, ev, e.binding(ev), depth, incoming)
}

// refuse returns the error an event that cannot be dispatched is reported
// with, or nil: a nil event, or one deeper than the maximum.
func (e *Engine) refuse(ev any, b *binding, depth int) error {
	if ev == nil {
		return &HandlerError{Event: ev, Handler: "(none)", Err: ErrNilEvent}
	}
	// An unbound type is checked too: a nil *T must not be reported as an
	// event with no handler, nor a nil notification be published.
	if (b.nilable || b.hs == nil) && b.isNil(ev) {
		return &HandlerError{EventType: reflect.TypeOf(ev), Event: ev, Handler: "(none)", Err: ErrNilEvent}
	}
	if depth > e.opt.MaxDepth {
		return &DepthError{EventType: reflect.TypeOf(ev), Event: ev, Depth: depth, Max: e.opt.MaxDepth}
	}
	return nil
}

// quick resolves ev, bound as b, into r when it goes to handlers only and
// refuse would accept it, and reports whether it did; fill decides the
// other cases. It routes the events fast did not take, and the levels of
// follow-ups. When it also routed the first level (before fast), it took 6%
// of the instructions off EventMediator.Send to 4 no-op handlers and 14%
// off a Send emitting 4 events (callgrind, BenchmarkEventMediator and
// BenchmarkSendEvents).
func (e *Engine) quick(r *route, ev any, b *binding, depth int) bool {
	// A nil ev has the binding e.none, which is not plain; a nil value of
	// a type held indirectly (a slice) is left to fill.
	if !b.plain || depth > e.opt.MaxDepth || b.nilable && (!b.direct || dataWord(ev) == nil) {
		return false
	}
	*r = route{ev: ev, hs: b.hs}
	return true
}

// fill resolves ev, whose binding b was looked up, into r.
func (e *Engine) fill(ctx context.Context, r *route, ev any, b *binding, depth int, incoming bool) error {
	if err := e.refuse(ev, b, depth); err != nil {
		return err
	}
	r.ev, r.hs, r.publish = ev, b.hs, b.notify && !incoming
	if r.publish && e.opt.PublishOnly {
		r.hs = nil
	}
	if b.hs == nil {
		_, r.publish = ev.(events.NotificationEvent)
		r.publish = r.publish && !incoming
		if !r.publish {
			return e.warnUnhandled(ctx, reflect.TypeOf(ev))
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
		b := e.binding(ev)
		if err := e.refuse(ev, b, depth); err != nil {
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
				return nil, &HandlerError{EventType: reflect.TypeOf(r.ev), Event: r.ev, Handler: "publisher", Err: ErrNoPublisher}
			}
			ne, _ := r.ev.(events.NotificationEvent)
			if err := e.opt.Publisher.Publish(ctx, ne); err != nil {
				return nil, &HandlerError{EventType: reflect.TypeOf(r.ev), Event: r.ev, Handler: e.stepName(r, s), Err: err}
			}
			return nil, nil
		}
		i--
	}
	h := &r.hs[i]
	fus, err := h.Call(ctx, r.ev)
	if err != nil {
		return nil, &HandlerError{EventType: reflect.TypeOf(r.ev), Event: r.ev, Handler: h.Name, Err: err}
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
	done        <-chan struct{} // ctx.Done(); nil when ctx is never done
	id          typeid.ID       // the type of the last event routed...
	b           *binding        // ...and its binding
	// widen is set when the dispatch runs in parallel mode and started as
	// one unit: the first follow-ups stop the cursor (grown set) and the
	// dispatch goes on in parallel (Engine.widened).
	widen, grown bool
}

// stopped reports whether the dispatch's context is done. Reading Done once
// per dispatch, and not calling Err per step, saves a dynamic call per
// invocation; a context that can never be done has a nil Done.
func (q *seq) stopped() bool { return stopped(q.done) }

// seqLists are the event slices of a sequential dispatch: the level being
// dispatched and the follow-ups of the next level. The failures, which
// escape, are a third variable.
type seqLists struct {
	level, next []any
}

// sequential dispatches breadth first on the calling goroutine. widen
// tells that the dispatch is in parallel mode and starts as one unit of
// work: it goes on in parallel as soon as that unit emits follow-ups.
func (e *Engine) sequential(ctx context.Context, level []any, one any, ob *binding, depth int, f *frame, parent *lease, incoming, widen bool) error {
	done := ctx.Done()
	var h halt
	if e.slots == nil && e.fast(done, f, level, one, ob, depth, &h) {
		return nil
	}
	l := seqLists{level: level}
	q := seq{depth: depth, incoming: incoming, frame: f, parent: parent, done: done, widen: widen}
	var fails []error
	stop := false
	switch {
	case h.routed:
		// fast stopped on a step of event h.i: go on from there.
		q.i, q.s, q.r, q.routed = h.i, h.s, route{ev: h.ev, hs: h.hs}, true
		if h.ran {
			q.s++
			stop = e.settle(&q, &l, &fails, h.fus, h.err)
		}
	case level == nil:
		// One event that fast did not take: route it now; the cursor
		// starts on it.
		if !e.quick(&q.r, one, ob, depth) {
			if err := e.fill(ctx, &q.r, one, ob, depth, incoming); err != nil {
				return e.result(ctx, []error{err}, 0)
			}
		}
		q.routed = true
	default:
		q.i = h.i
	}
	for !stop && !e.seqRun(ctx, &q, &l, &fails) {
	}
	if q.grown {
		return e.widened(ctx, &q, l.next, fails)
	}
	return e.result(ctx, fails, q.notStarted)
}

// halt is where fast stopped: before routing event i of the level, or, when
// routed, before step s of its handlers hs (the context was done), or after
// it (ran): the step returned the follow-ups fus, or failed or panicked
// with err.
type halt struct {
	i, s   int
	routed bool
	ev     any
	hs     []registry.EventHandler
	ran    bool
	fus    []any
	err    error
}

// fast runs the events of level, or the single event one bound as ob when
// level is nil, on the common path: each goes to its handlers only, and
// each handler returns nothing. It reports true when the whole level ran so.
// Otherwise it stops where seqRun must take over (an event it does not
// route, a step with follow-ups, a failure or a panic, a done context) and
// says where in h. It keeps its cursor in registers, not in a seq: the
// cursor's setup and seqRun's cost more than the loop. fast takes 9% of
// the instructions off EventMediator.Send to 4 no-op handlers (742 → 672 a
// call) and 26% off a Send emitting 4 events (1223 → 908), callgrind on
// mediator's BenchmarkEventMediator and BenchmarkSendEvents.
func (e *Engine) fast(done <-chan struct{}, f *frame, level []any, one any, ob *binding, depth int, h *halt) (over bool) {
	returned := false
	defer func() {
		if returned {
			return
		}
		if v := recover(); v != nil {
			h.ran, h.err = true, &HandlerError{EventType: reflect.TypeOf(h.ev), Event: h.ev, Handler: h.hs[h.s].Name, Err: NewPanicError(v)}
		}
		// Otherwise runtime.Goexit: nothing is held, the goroutine goes on
		// ending.
	}()
	n, b, id := 1, ob, typeid.ID(0)
	if level != nil {
		n = len(level)
	}
	for h.i = 0; h.i < n; h.i++ {
		ev := one
		if level != nil {
			ev = level[h.i]
			if t := typeid.OfValue(ev); t != id || b == nil {
				id, b = t, e.binding(ev)
			}
		}
		if !b.plain || depth > e.opt.MaxDepth || b.nilable && (!b.direct || dataWord(ev) == nil) {
			returned = true
			return false
		}
		h.ev, h.hs, h.routed = ev, b.hs, true
		for h.s = 0; h.s < len(h.hs); h.s++ {
			if stopped(done) {
				returned = true
				return false
			}
			fus, err := h.hs[h.s].Call(f, ev)
			if err != nil || len(fus) > 0 {
				h.ran, h.fus = true, fus
				if err != nil {
					h.err = &HandlerError{EventType: reflect.TypeOf(ev), Event: ev, Handler: h.hs[h.s].Name, Err: err}
				}
				returned = true
				return false
			}
		}
		h.routed = false
	}
	returned = true
	return true
}

// stopped reports whether done, a context's Done channel, is closed; a nil
// done never is.
func stopped(done <-chan struct{}) bool {
	if done == nil {
		return false
	}
	select {
	case <-done:
		return true
	default:
		return false
	}
}

// widened goes on in parallel with a dispatch that started as one unit on
// the caller's goroutine, now that it has follow-ups fus: the rest of the
// unit is queued first, then fus, and the caller's goroutine becomes the
// first worker.
func (e *Engine) widened(ctx context.Context, q *seq, fus []any, fails []error) error {
	r := e.newRun(ctx, q.depth, q.frame, q.parent)
	if r.cancel != nil {
		defer r.cancel(nil)
	}
	r.mu.Lock()
	r.fails = fails
	if n := q.r.steps(); q.s < n {
		r.queue = append(r.queue, task{r: q.r, depth: q.depth, from: q.s, to: n})
	}
	r.pushAll(fus, q.depth+1, false)
	return r.drive()
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
		if q.widen {
			q.grown = true
			return true
		}
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
		*fails = append(*fails, &HandlerError{EventType: reflect.TypeOf(q.r.ev), Event: q.r.ev, Handler: e.stepName(&q.r, q.s), Err: NewPanicError(v)})
		q.s++
		if e.opt.FailFast {
			e.abandon(q, l, fails)
			over = true
		}
	}()
	for {
		for q.routed || q.i < len(l.level) {
			if !q.routed {
				if q.stopped() {
					e.abandon(q, l, fails)
					return true
				}
				// Events of one type often come in a row: the binding of
				// the last one is kept.
				ev := l.level[q.i]
				if id := typeid.OfValue(ev); id != q.id || q.b == nil {
					q.id, q.b = id, e.binding(ev)
				}
				if !e.quick(&q.r, ev, q.b, q.depth) {
					if err := e.fill(ctx, &q.r, ev, q.b, q.depth, q.incoming); err != nil {
						q.i++
						*fails = append(*fails, err)
						if e.opt.FailFast {
							e.abandon(q, l, fails)
							return true
						}
						continue
					}
				}
				q.routed, q.s = true, 0
			}
			if !q.r.publish && e.slots == nil {
				// The common case, handlers only and no slot to take, in a
				// loop with fewer loads; the general one follows.
				hs, ev, hctx := q.r.hs, q.r.ev, q.frame
				for q.s < len(hs) {
					if q.stopped() {
						e.abandon(q, l, fails)
						return true
					}
					fus, err := hs[q.s].Call(hctx, ev)
					q.s++
					if err == nil && len(fus) == 0 {
						continue
					}
					if err != nil {
						err = &HandlerError{EventType: reflect.TypeOf(q.r.ev), Event: ev, Handler: hs[q.s-1].Name, Err: err}
					}
					if e.settle(q, l, fails, fus, err) {
						return true
					}
				}
			}
			for n := q.r.steps(); q.s < n; {
				if q.stopped() {
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
			q.frame = newFrame(ctx, q.depth, e, nil)
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
	outer  context.Context // the dispatch's context
	ctx    context.Context // outer, cancelled on the first failure in fail-fast mode
	cancel context.CancelCauseFunc
	parent *lease // the slot the dispatch's context may lend
	depth  int    // of the first events
	limit  int
	wg     sync.WaitGroup // the workers but the caller

	mu         sync.Mutex
	queue      []task
	head       int
	workers    int
	fails      []error
	notStarted int
	frames     []*frame // by depth, from r.depth; without a mediator-wide limit

	// The first tasks and frames live in the run itself: a dispatch of up
	// to 4 tasks allocates the run and its goroutines, nothing else.
	taskBuf  [4]task
	frameBuf [2]*frame
}

// newRun returns the state of a parallel dispatch whose first events are at
// depth, f being their frame (nil with a mediator-wide limit).
func (e *Engine) newRun(ctx context.Context, depth int, f *frame, parent *lease) *run {
	r := &run{e: e, outer: ctx, ctx: ctx, limit: e.opt.Limit, parent: parent, depth: depth}
	r.queue, r.frames = r.taskBuf[:0], r.frameBuf[:0]
	if e.opt.FailFast {
		r.ctx, r.cancel = context.WithCancelCause(ctx)
	} else if f != nil {
		// The handlers of the first events get the dispatch's frame; in
		// fail-fast mode they need one over r.ctx.
		r.frames = append(r.frames, f)
	}
	return r
}

// drive works the queue with the caller's goroutine as the first worker
// until the dispatch is over, and returns its result. r.mu must be held.
func (r *run) drive() error {
	for {
		r.workers++ // this goroutine
		n := r.spawnable(true)
		r.mu.Unlock()
		r.spawn(n)
		r.work()
		r.wg.Wait()
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
	return r.e.result(r.outer, fails, notStarted)
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

// spawn starts n workers. r.workers, which spawnable keeps at most r.limit,
// is the only bound they need: an errgroup with a limit, used before, cost
// a channel and an allocation per goroutine more and bounded nothing more.
func (r *run) spawn(n int) {
	for range n {
		r.wg.Add(1)
		go r.worker()
	}
}

// worker is the body of a spawned worker. Done is deferred so that a worker
// that ends its goroutine (runtime.Goexit) is waited for too.
func (r *run) worker() {
	defer r.wg.Done()
	r.work()
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
			fus, err, started = nil, &HandlerError{EventType: reflect.TypeOf(t.r.ev), Event: t.r.ev, Handler: e.stepName(&t.r, s), Err: NewPanicError(v)}, true
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
	r.fail(&HandlerError{EventType: reflect.TypeOf(t.r.ev), Event: t.r.ev, Handler: r.e.stepName(&t.r, s), Err: ErrGoexit})
	if s+1 < t.to {
		r.queue = append(r.queue, task{r: t.r, depth: t.depth, from: s + 1, to: t.to})
	}
	r.workers--
}
