package gobreaker

import (
	"context"
	"errors"
	"sync"

	sgb "github.com/sony/gobreaker/v2"

	"github.com/gocqrs/cqrs/events"
)

// Breaker is an events.CircuitBreaker backed by one sony/gobreaker circuit
// per name.
type Breaker struct {
	settings sgb.Settings

	mu       sync.Mutex
	circuits map[string]*sgb.CircuitBreaker[struct{}]
}

var _ events.CircuitBreaker = (*Breaker)(nil)

// New returns a Breaker whose circuits use settings (Name is replaced by
// each circuit's name). Use Settings.IsSuccessful to keep business errors
// from tripping the circuit.
func New(settings sgb.Settings) *Breaker {
	return &Breaker{settings: settings, circuits: map[string]*sgb.CircuitBreaker[struct{}]{}}
}

func (b *Breaker) circuit(name string) *sgb.CircuitBreaker[struct{}] {
	b.mu.Lock()
	defer b.mu.Unlock()
	c, ok := b.circuits[name]
	if !ok {
		s := b.settings
		s.Name = name
		c = sgb.NewCircuitBreaker[struct{}](s)
		b.circuits[name] = c
	}
	return c
}

// Call runs fn through the circuit named name. While the circuit is open
// (or half-open and saturated) fn is not called and the error matches
// gobreaker.ErrOpenState or gobreaker.ErrTooManyRequests.
func (b *Breaker) Call(ctx context.Context, name string, fn func(ctx context.Context) error) error {
	_, err := b.circuit(name).Execute(func() (struct{}, error) { return struct{}{}, fn(ctx) })
	return err
}

// IsOpen reports whether err means the circuit refused the call.
func (b *Breaker) IsOpen(err error) bool {
	return errors.Is(err, sgb.ErrOpenState) || errors.Is(err, sgb.ErrTooManyRequests)
}

// State returns the state of the circuit named name (closed if it was never
// used).
func (b *Breaker) State(name string) sgb.State {
	return b.circuit(name).State()
}
