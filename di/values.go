package di

import (
	"errors"
	"fmt"
	"reflect"

	"go.uber.org/dig"
)

// Values is a [Container] backed by a map from type to value: each parameter
// of an invoked function receives the value provided for exactly its type.
// It supports neither constructors nor parameter objects. The zero value is
// empty and ready to use.
type Values struct {
	m map[reflect.Type]reflect.Value
}

var _ Container = (*Values)(nil)

// Provide makes v the value for parameters of type T, replacing any earlier
// one. Use an explicit T to provide an interface:
//
//	di.Provide[Clock](vals, realClock{})
func Provide[T any](vals *Values, v T) {
	if vals.m == nil {
		vals.m = make(map[reflect.Type]reflect.Value)
	}
	t := reflect.TypeFor[T]()
	rv := reflect.New(t).Elem()
	rv.Set(reflect.ValueOf(&v).Elem())
	vals.m[t] = rv
}

// Invoke calls function with a value for each parameter. Every missing
// parameter type is reported in one error matching [ErrMissingDependency].
// Options are ignored.
func (vals *Values) Invoke(function any, _ ...dig.InvokeOption) error {
	fv := reflect.ValueOf(function)
	if fv.Kind() != reflect.Func || fv.IsNil() {
		return fmt.Errorf("di: Invoke needs a non-nil func, got %T", function)
	}
	ft := fv.Type()
	args := make([]reflect.Value, ft.NumIn())
	var missing []error
	for i := range args {
		v, ok := vals.m[ft.In(i)]
		if !ok {
			missing = append(missing, fmt.Errorf("%w: %v (parameter %d of %s)", ErrMissingDependency, ft.In(i), i, FuncName(function)))
			continue
		}
		args[i] = v
	}
	if len(missing) > 0 {
		return errors.Join(missing...)
	}
	if ft.IsVariadic() {
		return fmt.Errorf("di: %s is variadic", FuncName(function))
	}
	out := fv.Call(args)
	if n := len(out); n > 0 && ft.Out(n-1) == errorType && !out[n-1].IsNil() {
		err, _ := out[n-1].Interface().(error)
		return err
	}
	return nil
}
