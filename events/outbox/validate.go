package outbox

import (
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/gocqrs/cqrs/events/wire"
)

// The Validate functions check the arguments of store methods as the
// contract requires, reporting every problem at once; stores call them
// before touching anything, so that every store refuses the same calls.

// ValidateEnvelopes checks what [Adder.Add] requires of envelopes: a
// non-zero ID and a non-empty Name. It reports every problem at once, each
// matching [ErrInvalidEnvelope]. Stores call it before writing anything.
func ValidateEnvelopes(envs []wire.Envelope) error {
	var errs []error
	for i, e := range envs {
		if e.ID == uuid.Nil {
			errs = append(errs, fmt.Errorf("%w: envelope %d: zero ID", ErrInvalidEnvelope, i))
		}
		if e.Name == "" {
			errs = append(errs, fmt.Errorf("%w: envelope %d (%s): empty Name", ErrInvalidEnvelope, i, e.ID))
		}
	}
	return errors.Join(errs...)
}

// ValidateClaim checks the arguments of [Claimer.Claim]; each problem
// matches [ErrInvalidArgument].
func ValidateClaim(owner string, limit int, lease time.Duration) error {
	var errs []error
	if owner == "" {
		errs = append(errs, fmt.Errorf("%w: empty owner", ErrInvalidArgument))
	}
	if limit < 1 {
		errs = append(errs, fmt.Errorf("%w: limit must be at least 1, got %d", ErrInvalidArgument, limit))
	}
	if lease <= 0 {
		errs = append(errs, fmt.Errorf("%w: lease must be positive, got %v", ErrInvalidArgument, lease))
	}
	return errors.Join(errs...)
}

// ValidateFailures checks the failures given to [Claimer.MarkFailed]: each
// needs a non-zero ID and a Delay that is not negative. Each problem
// matches [ErrInvalidArgument].
func ValidateFailures(failures []Failure) error {
	var errs []error
	for i, f := range failures {
		if f.ID == uuid.Nil {
			errs = append(errs, fmt.Errorf("%w: failure %d: zero ID", ErrInvalidArgument, i))
		}
		if f.Delay < 0 {
			errs = append(errs, fmt.Errorf("%w: failure %d: negative delay %v", ErrInvalidArgument, i, f.Delay))
		}
	}
	return errors.Join(errs...)
}

// ValidateLimit checks the limit of [Admin.ListDead] and [Admin.DeleteSent]
// (and of inbox purges): at least 1. The error matches [ErrInvalidArgument].
func ValidateLimit(limit int) error {
	if limit < 1 {
		return fmt.Errorf("%w: limit must be at least 1, got %d", ErrInvalidArgument, limit)
	}
	return nil
}
