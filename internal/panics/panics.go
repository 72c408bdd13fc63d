// Package panics holds the error a recovered panic becomes, shared by every
// package that calls user code.
package panics

import (
	"fmt"
	"runtime/debug"
)

// Error is a panic recovered from a handler.
type Error struct {
	// Value is the value passed to panic.
	Value any
	// Stack is the stack of the panicking goroutine.
	Stack []byte
	// Site names the stage of a pipeline the panic was raised in (a
	// middleware, the handler), when the pipeline tracked it.
	Site string
}

// At returns v as an *Error raised at site: v itself when it already is an
// *Error with a site (raised further in and passed on), a new one
// otherwise. Call it from the deferred function that recovered v.
func At(site string, v any) *Error {
	if e, ok := v.(*Error); ok && e.Site != "" {
		return e
	}
	return &Error{Value: v, Stack: debug.Stack(), Site: site}
}

// New captures the current stack; call it from the deferred function that
// recovered v.
func New(v any) *Error { return &Error{Value: v, Stack: debug.Stack()} }

func (e *Error) Error() string { return fmt.Sprintf("panic: %v", e.Value) }

// Unwrap returns the panic value when it is an error, so errors.Is sees
// through panic(err).
func (e *Error) Unwrap() error {
	if err, ok := e.Value.(error); ok {
		return err
	}
	return nil
}
