package mediator

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"reflect"

	"github.com/gocqrs/cqrs/di"
	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/internal/engine"
	"github.com/gocqrs/cqrs/internal/registry"
	"github.com/gocqrs/cqrs/internal/typeid"
	"github.com/gocqrs/cqrs/requests"
)

// DefaultMaxConcurrentStreamEventHandlers is the default per-item limit of a
// StreamingRequestMediator, from python-cqrs.
const DefaultMaxConcurrentStreamEventHandlers = 10

// DefaultStreamingConfig returns the defaults of a StreamingRequestMediator:
// those of [DefaultConfig] with MaxConcurrentEventHandlers 10.
func DefaultStreamingConfig() Config {
	c := DefaultConfig()
	c.MaxConcurrentEventHandlers = DefaultMaxConcurrentStreamEventHandlers
	return c
}

// StreamingRequestMediator runs stream handlers (requests.StreamHandler) and
// dispatches the events produced for each item before the item reaches the
// consumer. Build one with bootstrap.Streaming (or [NewStreaming]); use it
// with [Stream]. It is safe for concurrent use.
type StreamingRequestMediator struct {
	handlers *typeid.Table[any] // *registry.Stream[Req, Res] by typeid.Of[Req]
	engine   *engine.Engine
	failFast bool
	log      *slog.Logger
}

// NewStreaming resolves every handler bound in reqs and evs from c and
// returns a StreamingRequestMediator, reporting every problem at once.
// Request types bound to plain handlers are ignored by [Stream]. Most
// programs call bootstrap.Streaming instead.
func NewStreaming(c di.Container, reqs *requests.Map, evs *events.Map, cfg Config) (*StreamingRequestMediator, error) {
	p, err := build(c, reqs, evs, cfg)
	if err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &StreamingRequestMediator{handlers: p.handlers, engine: p.engine, failFast: cfg.FailFast, log: log}, nil
}

// Stream runs the stream handler bound to the type of req and returns its
// items as an iterator, for a range loop:
//
//	for p, err := range mediator.Stream(ctx, sm, Import{File: f}) {
//		if err != nil {
//			return err
//		}
//		fmt.Println(p.Percent)
//	}
//
// Nothing runs until the loop starts; each loop runs the handler anew. The
// contract, per item n:
//
//  1. the handler yields item n with its events;
//  2. those events, and their follow-ups, are dispatched with the same
//     fan-out engine and settings as [Send], and all are done;
//  3. only then does the consumer receive item n.
//
// Events the handler returns after its last item are dispatched before the
// stream ends. Errors end the stream, except event failures:
//
//   - the handler fails or panics: the stream ends with (zero, err); items
//     already delivered stay delivered, and the events it returned with the
//     error are not dispatched;
//   - the events of item n are not all handled: the consumer receives item n
//     together with the *DispatchError (the item is valid, as with Send).
//     The stream goes on if the consumer goes on, unless the fan-out was
//     interrupted by ctx or stopped by fail-fast: then that pair is the last.
//   - the events returned after the last item are not all handled: the
//     stream ends with (zero, *DispatchError);
//   - ctx is done: the handler's context is cancelled, the handler should
//     return, and the stream ends with (zero, ctx.Err()) unless the handler
//     returned an error of its own first; an item the handler yields after
//     that is neither dispatched nor delivered (yield returns false), the
//     events it returns after its last item are not dispatched, and an
//     error it returns after yield returned false is not reported;
//   - global stream middleware attached an error other than a
//     *DispatchError to an item: the consumer receives that pair, and it is
//     the last;
//   - no stream handler is bound to the type: (zero, ErrHandlerNotFound),
//     and likewise ErrNilRequest, ErrNilContext, ErrNilMediator.
//
// When the consumer leaves the loop early, yield returns false to the
// handler, the handler's context is cancelled, nothing more is dispatched,
// and the handler must return; the loop exits once it has. Nothing is
// delivered after that; a panic the handler raises after the consumer left
// is logged at Error (Config.Logger), since there is no one to return it to.
// No goroutine is started by the stream itself; those of a parallel fan-out
// are finished before each item is delivered.
func Stream[Req requests.Request[Res], Res any](ctx context.Context, m *StreamingRequestMediator, req Req) iter.Seq2[Res, error] {
	return func(yield func(Res, error) bool) {
		var zero Res
		h, err := lookupStream[Req, Res](ctx, m, req)
		if err != nil {
			yield(zero, err)
			return
		}
		sctx, cancel := context.WithCancel(ctx)
		defer cancel()
		s := streamRun[Res]{failFast: m.failFast, cancel: cancel, yield: yield}
		if d := h.Direct; d != nil {
			s.ctx, s.dispatch = sctx, h.Dispatch
			err = s.run(func() error { return runDirect(&s, d, req) }, h.Name)
		} else {
			err = s.run(func() error { return h.Stream(sctx, req, s.item) }, h.Name)
		}
		switch {
		case s.stopped:
			var pe *engine.PanicError
			if errors.As(err, &pe) {
				m.log.LogAttrs(ctx, slog.LevelError, "cqrs: stream handler panicked after the consumer stopped",
					slog.String("request_type", reflect.TypeFor[Req]().String()), slog.String("error", err.Error()))
			}
			return
		case err != nil:
			yield(zero, err)
		case ctx.Err() != nil:
			yield(zero, engine.CtxErr(ctx))
		}
	}
}

func lookupStream[Req requests.Request[Res], Res any](ctx context.Context, m *StreamingRequestMediator, req Req) (*registry.Stream[Req, Res], error) {
	if m == nil {
		return nil, ErrNilMediator
	}
	if ctx == nil {
		return nil, ErrNilContext
	}
	b, ok := m.handlers.Get(typeid.Of[Req]())
	if !ok {
		return nil, fmt.Errorf("%w for stream request %v", ErrHandlerNotFound, reflect.TypeFor[Req]())
	}
	h, ok := b.(*registry.Stream[Req, Res])
	if !ok {
		return nil, fmt.Errorf("%w: %v is bound to a plain handler, not a stream handler; use Send", ErrHandlerNotFound, reflect.TypeFor[Req]())
	}
	if h.Nilable && registry.IsNil(req) {
		return nil, fmt.Errorf("%w of type %v", ErrNilRequest, reflect.TypeFor[Req]())
	}
	if err := engine.CtxErr(ctx); err != nil {
		return nil, err
	}
	return h, nil
}

// streamRun is the state of one iteration of a stream.
type streamRun[Res any] struct {
	failFast   bool
	cancel     context.CancelFunc // cancels the handler's context
	yield      func(Res, error) bool
	stopped    bool // the consumer will receive nothing more
	inConsumer bool // the consumer's loop body is running

	// For a handler run directly (registry.Stream.Direct): the handler's
	// context, the dispatch of its events, and the error that ended the
	// stream when that context was done before an item.
	ctx       context.Context
	dispatch  func(context.Context, []any) error
	cancelled error
}

// runDirect runs d, a stream handler bound with no middleware, doing what
// the pipeline of package requests does around a handler: each item's
// events are dispatched before the item is delivered, nothing produced after
// the context is done is dispatched or delivered, and the events returned
// after the last item are dispatched unless the stream ended early.
func runDirect[Req, Res any](s *streamRun[Res], d registry.StreamHandler[Req, Res], req Req) error {
	late, err := d.Stream(s.ctx, req, s.each)
	switch {
	case s.cancelled != nil:
		return s.cancelled
	case err != nil || s.stopped || len(late) == 0:
		return err
	case s.ctx.Err() != nil:
		return s.ctx.Err()
	}
	return s.dispatch(s.ctx, late)
}

// each receives each item from a handler run directly, with its events.
func (s *streamRun[Res]) each(v Res, evs []any) bool {
	if s.stopped || s.cancelled != nil {
		return false
	}
	if err := s.ctx.Err(); err != nil {
		s.cancelled = err
		return false
	}
	if len(evs) == 0 {
		return s.deliver(v, nil, false) // as item does, one call fewer
	}
	return s.item(v, s.dispatch(s.ctx, evs))
}

// item receives each item from the pipeline, after its events were
// dispatched, with the error of that dispatch.
func (s *streamRun[Res]) item(v Res, err error) bool {
	if s.stopped {
		return false
	}
	if err == nil {
		// The pipeline yields no item produced after ctx is done; this
		// one's events, if any, are all done, so it is delivered even if
		// ctx was cancelled during their fan-out, as Send returns its
		// response.
		return s.deliver(v, nil, false)
	}
	// The item is valid. The stream goes on after a fan-out failure unless
	// fail-fast is set or the fan-out was cut short; any other error that
	// middleware attached to an item ends it.
	var de *engine.DispatchError
	last := s.failFast || !errors.As(err, &de) || de.NotStarted > 0
	return s.deliver(v, err, last)
}

// deliver hands a pair to the consumer; last ends the stream after it.
func (s *streamRun[Res]) deliver(v Res, err error, last bool) bool {
	s.inConsumer = true
	more := s.yield(v, err)
	s.inConsumer = false
	if !more || last {
		s.stopped = true
		s.cancel()
		return false
	}
	return true
}

// run calls the handler, turning its panics into errors while letting the
// consumer's own panics through.
func (s *streamRun[Res]) run(f func() error, name string) (err error) {
	defer func() {
		if v := recover(); v != nil {
			if s.inConsumer {
				panic(v)
			}
			err = fmt.Errorf("stream handler %s: %w", name, engine.NewPanicError(v))
		}
	}()
	return f()
}
