package middleware

import (
	"context"
	"errors"
	"fmt"
	"reflect"

	"github.com/gocqrs/cqrs/requests"
)

// ErrValidation is matched by the error returned for a request rejected by
// its Validate method.
var ErrValidation = errors.New("validation failed")

// Validator is implemented by requests that can check themselves.
type Validator interface {
	Validate() error
}

// ValidationError reports a request rejected by [Validation]. It matches
// ErrValidation, and unwraps to the error Validate returned.
type ValidationError struct {
	Request reflect.Type
	Err     error
}

func (e *ValidationError) Error() string {
	return fmt.Sprintf("%v: %v: %v", e.Request, ErrValidation, e.Err)
}

// Unwrap returns ErrValidation and the error Validate returned.
func (e *ValidationError) Unwrap() []error { return []error{ErrValidation, e.Err} }

// Validation rejects, before its handler runs, a request that implements
// [Validator] and whose Validate returns an error. Request types that do not
// implement Validator are left unwrapped (no cost); note that a request sent
// by value must have Validate on a value receiver to implement it. It
// applies to Send and Stream.
type Validation struct{}

var (
	_ requests.Middleware       = Validation{}
	_ requests.StreamMiddleware = Validation{}
)

var validatorType = reflect.TypeFor[Validator]()

// WrapRequest implements requests.Middleware.
func (Validation) WrapRequest(info requests.Info, next requests.AnyHandlerFunc) requests.AnyHandlerFunc {
	if !info.Request.Implements(validatorType) {
		return next
	}
	return func(ctx context.Context, req any) (any, error) {
		if err := validate(info, req); err != nil {
			return nil, err
		}
		return next(ctx, req)
	}
}

// WrapStream implements requests.StreamMiddleware.
func (Validation) WrapStream(info requests.Info, next requests.AnyStreamFunc) requests.AnyStreamFunc {
	if !info.Request.Implements(validatorType) {
		return next
	}
	return func(ctx context.Context, req any, yield func(any, error) bool) error {
		if err := validate(info, req); err != nil {
			return err
		}
		return next(ctx, req, yield)
	}
}

func validate(info requests.Info, req any) error {
	v, ok := req.(Validator)
	if !ok {
		return nil
	}
	if err := v.Validate(); err != nil {
		return &ValidationError{Request: info.Request, Err: err}
	}
	return nil
}
