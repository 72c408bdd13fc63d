package engine

import (
	"context"
	"errors"
	"fmt"
	"unsafe"
)

// frame is the context an event-handler invocation receives: the context it
// was dispatched with, plus what the engine needs when the handler calls a
// mediator again with it. It answers Value for frameKey itself; everything
// else is the embedded context's. A frame never changes once made.
//
//   - depth is the depth of the events being handled. A dispatch started
//     with a frame in its context numbers its events from depth+1, so
//     MaxDepth bounds a cycle of events whatever path it takes: a nested
//     Send, an EventMediator.Send, a publisher delivering in process, or
//     another mediator.
//   - With a mediator-wide limit, eng and lease describe the slot the
//     invocation holds (see lease).
//
// A frame without a lease depends only on its context, its depth and its
// engine, so the engine hands the same frame to the dispatches that share
// a context (Engine.frame): they allocate nothing.
type frame struct {
	context.Context
	depth int
	eng   *Engine
	lease *lease
}

type frameKey struct{}

// Value implements context.Context.
func (f *frame) Value(key any) any {
	if _, ok := key.(frameKey); ok {
		return f
	}
	return f.Context.Value(key)
}

func (f *frame) String() string {
	return fmt.Sprintf("%v.WithEventDepth(%d)", f.Context, f.depth)
}

func newFrame(ctx context.Context, depth int, e *Engine, l *lease) *frame {
	return &frame{Context: ctx, depth: depth, eng: e, lease: l}
}

// frame returns the frame of the handlers of events dispatched with ctx:
// the last one made for a dispatch started outside any handler, when ctx
// is the context it was made for, or a new one.
func (e *Engine) frame(ctx context.Context) *frame {
	if f := e.last.Load(); f != nil && sameContext(f.Context, ctx) {
		return f
	}
	f := newFrame(ctx, Depth(ctx)+1, e, nil)
	if f.depth == 1 {
		e.last.Store(f)
	}
	return f
}

// sameContext reports whether a and b are the same context value: the same
// dynamic type and the same data word. Unlike ==, it never panics on a
// context type that is not comparable, and never calls an Equal method.
func sameContext(a, b context.Context) bool {
	type iface struct{ tab, data unsafe.Pointer }
	return *(*iface)(unsafe.Pointer(&a)) == *(*iface)(unsafe.Pointer(&b))
}

func frameOf(ctx context.Context) *frame {
	f, _ := ctx.Value(frameKey{}).(*frame)
	return f
}

// Depth reports the depth of the events whose handler received ctx: 0
// outside any event handler.
func Depth(ctx context.Context) int {
	if f := frameOf(ctx); f != nil {
		return f.depth
	}
	return 0
}

// lease is the mediator-wide slot an invocation runs under, lendable to the
// dispatches started with the invocation's context while it runs.
//
// token holds one value while the slot is free to lend. A nested dispatch
// takes it for each invocation it runs under the slot and puts it back after;
// so at any moment the slot serves the invocation that holds it and at most
// one invocation of the dispatches it started, which is what lets a handler
// call Send on its own goroutine at a limit of 1 without deadlock. When the
// invocation returns, end takes the token back, waiting for a borrower still
// using it, and closes the channel: from then on the context grants nothing,
// and a Send made with it takes a slot of its own.
type lease struct {
	token chan struct{}
}

func newLease() *lease {
	l := &lease{token: make(chan struct{}, 1)}
	l.token <- struct{}{}
	return l
}

func (l *lease) end() {
	<-l.token
	close(l.token)
}

// leaseOf returns the lease of the innermost invocation of e whose context
// ctx derives from, or nil.
func (e *Engine) leaseOf(ctx context.Context) *lease {
	for f := frameOf(ctx); f != nil; f = frameOf(f.Context) {
		if f.eng == e && f.lease != nil {
			return f.lease
		}
	}
	return nil
}

// acquire takes a unit of the mediator-wide limit for one invocation: the
// slot lent by from, when it can be had, or a slot of its own. It returns
// the lease it borrowed from (nil for a slot of its own), or the context's
// error when ctx is done first. It waits for whichever comes first.
func (e *Engine) acquire(ctx context.Context, from *lease) (*lease, error) {
	var tok chan struct{}
	if from != nil {
		select {
		case _, ok := <-from.token:
			if ok {
				return from, nil
			}
		default:
			tok = from.token
		}
	}
	for {
		select {
		case _, ok := <-tok: // a nil tok never fires
			if ok {
				return from, nil
			}
			tok = nil
		case e.slots <- struct{}{}:
			return nil, nil
		case <-ctx.Done():
			return nil, CtxErr(ctx)
		}
	}
}

// release gives back what acquire took.
func (e *Engine) release(borrowed *lease) {
	if borrowed != nil {
		borrowed.token <- struct{}{}
		return
	}
	<-e.slots
}

// CtxErr returns ctx.Err(), joined with context.Cause(ctx) when a cause
// other than the error itself was given, so errors.Is finds both.
func CtxErr(ctx context.Context) error {
	err := ctx.Err()
	if err == nil {
		return nil
	}
	if cause := context.Cause(ctx); cause != nil && !errors.Is(err, cause) {
		return &causeError{err: err, cause: cause}
	}
	return err
}

type causeError struct{ err, cause error }

func (e *causeError) Error() string   { return e.err.Error() + ": " + e.cause.Error() }
func (e *causeError) Unwrap() []error { return []error{e.err, e.cause} }
