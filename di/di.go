package di

import (
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"runtime"

	"go.uber.org/dig"

	"github.com/gocqrs/cqrs/internal/panics"
)

// Container calls functions with their parameters supplied from a set of
// known values. *dig.Container and *dig.Scope implement it.
type Container interface {
	// Invoke calls function, which must be a func, with its parameters
	// resolved by the container, and returns the error the function returned
	// as its last result, if it has one.
	Invoke(function any, opts ...dig.InvokeOption) error
}

// ErrMissingDependency is matched by the error [Values.Invoke] returns when a
// parameter type has no value.
var ErrMissingDependency = errors.New("di: missing dependency")

// ErrInvalidConstructor is matched by the error [Construct] returns when the
// constructor does not have a usable shape.
var ErrInvalidConstructor = errors.New("di: invalid constructor")

var errorType = reflect.TypeFor[error]()

// Resolve returns the value of type T held by c.
func Resolve[T any](c Container) (T, error) {
	var out T
	if c == nil {
		return out, fmt.Errorf("di: resolve %v: %w: nil container", reflect.TypeFor[T](), ErrMissingDependency)
	}
	err := c.Invoke(func(v T) { out = v })
	if err != nil {
		return out, fmt.Errorf("di: resolve %v: %w", reflect.TypeFor[T](), err)
	}
	return out, nil
}

// Construct calls ctor with its parameters resolved from c and returns its
// first result as a T. ctor must be a function whose first result is
// assignable to T and whose optional second result is an error; parameter
// objects (dig.In) work as they do with dig. A panic inside ctor is returned
// as an error. The returned error names ctor and, for dig, carries dig's
// description of the dependency path.
//
// Only ctor itself is protected against panics: a panic in a dig provider of
// one of its dependencies propagates unless the container was created with
// dig.RecoverFromPanics().
func Construct[T any](c Container, ctor any) (T, error) {
	var out T
	want := reflect.TypeFor[T]()
	if err := CheckConstructor(ctor, want); err != nil {
		return out, err
	}
	name := FuncName(ctor)
	if c == nil {
		return out, fmt.Errorf("di: construct with %s: %w: nil container", name, ErrMissingDependency)
	}
	fv := reflect.ValueOf(ctor)
	ft := fv.Type()
	in := make([]reflect.Type, ft.NumIn())
	for i := range in {
		in[i] = ft.In(i)
	}
	invoker := reflect.MakeFunc(reflect.FuncOf(in, []reflect.Type{errorType}, false),
		func(args []reflect.Value) (results []reflect.Value) {
			var err error
			defer func() {
				if r := recover(); r != nil {
					err = fmt.Errorf("constructor panicked: %w", panics.New(r))
				}
				results = []reflect.Value{reflect.ValueOf(&err).Elem()}
			}()
			res := fv.Call(args)
			if len(res) == 2 && !res[1].IsNil() {
				err, _ = res[1].Interface().(error)
				return nil
			}
			if isNil(res[0]) || res[0].Kind() == reflect.Interface && isNil(res[0].Elem()) {
				err = fmt.Errorf("di: %s returned a nil %v", name, ft.Out(0))
				return nil
			}
			v, ok := res[0].Interface().(T)
			if !ok {
				err = fmt.Errorf("di: %s returned %v, not %v", name, res[0].Type(), want)
				return nil
			}
			out = v
			return nil
		})
	if err := c.Invoke(invoker.Interface()); err != nil {
		var zero T
		return zero, fmt.Errorf("di: construct with %s: %w", name, &invokeError{ctor: ctor, err: err})
	}
	return out, nil
}

// invokeError is the container's error about a constructor, with the
// location of the constructor where the container names the reflect
// wrapper Construct invokes it through.
type invokeError struct {
	ctor any
	err  error
}

var stubLocation = regexp.MustCompile(`function "reflect"\.makeFuncStub \([^)]*\)`)

func (e *invokeError) Error() string {
	msg := e.err.Error()
	loc := FuncName(e.ctor)
	if f := runtime.FuncForPC(reflect.ValueOf(e.ctor).Pointer()); f != nil {
		file, line := f.FileLine(f.Entry())
		loc = fmt.Sprintf("%s (%s:%d)", loc, file, line)
	}
	return stubLocation.ReplaceAllLiteralString(msg, "constructor "+loc)
}

func (e *invokeError) Unwrap() error { return e.err }

// CheckConstructor reports whether ctor can be passed to [Construct] to build
// a value of type want, without calling it.
func CheckConstructor(ctor any, want reflect.Type) error {
	if ctor == nil {
		return fmt.Errorf("%w: nil constructor", ErrInvalidConstructor)
	}
	ft := reflect.TypeOf(ctor)
	if ft.Kind() != reflect.Func {
		return fmt.Errorf("%w: %v is not a function", ErrInvalidConstructor, ft)
	}
	if reflect.ValueOf(ctor).IsNil() {
		return fmt.Errorf("%w: nil %v", ErrInvalidConstructor, ft)
	}
	if ft.IsVariadic() {
		return fmt.Errorf("%w: %s is variadic", ErrInvalidConstructor, FuncName(ctor))
	}
	switch {
	case ft.NumOut() == 1:
	case ft.NumOut() == 2 && ft.Out(1) == errorType:
	default:
		return fmt.Errorf("%w: %s must return (%v) or (%v, error)", ErrInvalidConstructor, FuncName(ctor), want, want)
	}
	if !ft.Out(0).AssignableTo(want) {
		return fmt.Errorf("%w: %s returns %v, which does not implement %v", ErrInvalidConstructor, FuncName(ctor), ft.Out(0), want)
	}
	return nil
}

// FuncName returns the package-qualified name of the function fn, or its type
// when fn is not a named function.
func FuncName(fn any) string {
	v := reflect.ValueOf(fn)
	if v.Kind() != reflect.Func || v.IsNil() {
		return fmt.Sprintf("%T", fn)
	}
	if f := runtime.FuncForPC(v.Pointer()); f != nil {
		return f.Name()
	}
	return v.Type().String()
}

func isNil(v reflect.Value) bool {
	switch v.Kind() {
	case reflect.Chan, reflect.Func, reflect.Interface, reflect.Map, reflect.Pointer, reflect.Slice:
		return v.IsNil()
	default:
		return false
	}
}
