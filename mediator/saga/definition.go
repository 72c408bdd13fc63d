package saga

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/gocqrs/cqrs/events"
)

// Action is what a step does, or what undoes it: a function of the saga's
// state, which it may change. The events it returns are dispatched after
// the step's checkpoint is written (see [Dispatcher]). An action built by
// [Send] sends a request through the mediator instead, whose handler's
// events the mediator dispatches itself.
//
// The context carries the [Invocation] ([InvocationFrom]): the saga, the
// step, the attempt and the idempotency key with which the action's effects
// are deduplicated when it runs again after a crash. It also reaches the
// handlers of the requests the action sends.
//
// An action that returns an error (or panics) has failed; the engine
// discards its changes to the state, which goes back to the last
// checkpoint. An error that is or wraps a *mediator.DispatchError is the
// exception: the work was done and only some of its events failed, so the
// step counts as done (the dispatch error is reported, not compensated).
type Action[S any] func(ctx context.Context, state *S) ([]events.Event, error)

// Do adapts a function that emits no events to an [Action].
func Do[S any](f func(ctx context.Context, state *S) error) Action[S] {
	if f == nil {
		return nil
	}
	return func(ctx context.Context, state *S) ([]events.Event, error) {
		return nil, f(ctx, state)
	}
}

// Step is one step of a saga: an action, and the compensation that undoes
// it once it has succeeded.
type Step[S any] struct {
	// Name names the step in logs, errors, diagrams and idempotency keys.
	// It must be unique within the saga, not empty, and without "/".
	Name string
	// Action does the step's work. Required.
	Action Action[S]
	// Compensation undoes a successful Action, when a later step fails.
	// Nil means there is nothing to undo (a read, a check, a last step).
	// It is retried with backoff, so it must be safe to run again.
	Compensation Action[S]
	// Fallback, when set, answers when Action fails with an error its
	// policy accepts (or its circuit breaker is open).
	Fallback *Fallback[S]
	// Timeout, when positive, bounds each invocation of the step's action,
	// fallback and compensation; running out of it is a failure of the
	// invocation, not an interruption of the saga.
	Timeout time.Duration
}

// Fallback replaces a step's action when it fails, as
// events.FallbackPolicy decides. The state is restored to the last
// checkpoint before the fallback runs.
type Fallback[S any] struct {
	// Action does the step's work instead. Required.
	Action Action[S]
	// Compensation undoes Action when a later step fails; nil means there
	// is nothing to undo. (The step's own Compensation undoes only the
	// step's Action.)
	Compensation Action[S]
	// Policy says which errors of the step's Action call the fallback, and
	// holds the optional circuit breaker guarding Action. The circuit is
	// named Policy.Name, or "saga <saga>/<step>" by default.
	Policy events.FallbackPolicy
}

// Codec encodes a saga's state for the store and decodes it on recovery.
// Encoding must round-trip: the engine restores the state from its last
// encoding after a failed invocation and when a saga is recovered.
type Codec[S any] interface {
	Marshal(state *S) ([]byte, error)
	Unmarshal(data []byte, state *S) error
}

// JSON is the default [Codec]: encoding/json.
type JSON[S any] struct{}

// Marshal encodes state with json.Marshal.
func (JSON[S]) Marshal(state *S) ([]byte, error) { return json.Marshal(state) }

// Unmarshal decodes data with json.Unmarshal.
func (JSON[S]) Unmarshal(data []byte, state *S) error { return json.Unmarshal(data, state) }

// Definition is a saga: a typed state S and an ordered list of steps. It is
// a plain value, checked when it is registered with [New], which copies
// it: changing it afterwards has no effect on the orchestrator.
//
//	var PlaceOrder = &saga.Definition[Order]{
//		Name: "place-order",
//		Steps: []saga.Step[Order]{
//			{Name: "reserve", Action: reserve, Compensation: release},
//			{Name: "charge", Action: saga.Send(chargeRequest, setPayment), Compensation: saga.Send(refundRequest, nil)},
//			{Name: "ship", Action: ship},
//		},
//	}
type Definition[S any] struct {
	// Name identifies the saga in the store: it must be unique among the
	// orchestrator's definitions and stable across releases (recovery finds
	// the definition of a stored saga by it).
	Name string
	// Steps run in order.
	Steps []Step[S]
	// Codec encodes the state (default [JSON]).
	Codec Codec[S]
}

// AnyDefinition is implemented by every *[Definition]; [New] takes them.
type AnyDefinition interface {
	// SagaName returns the definition's Name.
	SagaName() string
	// Validate reports every problem of the definition.
	Validate() error
	// Mermaid draws the definition.
	Mermaid() string

	bind(o *Orchestrator) binding
}

// SagaName returns d.Name.
func (d *Definition[S]) SagaName() string {
	if d == nil {
		return ""
	}
	return d.Name
}

// Validate reports every problem of d at once, each matching
// [ErrInvalidDefinition]: an empty name, no steps, a step with an empty or
// duplicate name, a name containing "/", a nil action, a fallback with a
// nil action, a negative timeout.
func (d *Definition[S]) Validate() error {
	if d == nil {
		return fmt.Errorf("%w: nil definition", ErrInvalidDefinition)
	}
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: saga %q: "+format, append([]any{ErrInvalidDefinition, d.Name}, args...)...))
	}
	if d.Name == "" {
		bad("empty name")
	}
	if len(d.Steps) == 0 {
		bad("no steps")
	}
	seen := make(map[string]int, len(d.Steps))
	for i, s := range d.Steps {
		label := fmt.Sprintf("step %d (%q)", i, s.Name)
		switch {
		case s.Name == "":
			bad("step %d: empty name", i)
		case strings.Contains(s.Name, "/"):
			bad("%s: name contains \"/\"", label)
		}
		if j, dup := seen[s.Name]; dup && s.Name != "" {
			bad("%s: duplicate name, already used by step %d", label, j)
		} else {
			seen[s.Name] = i
		}
		if s.Action == nil {
			bad("%s: nil action", label)
		}
		if s.Fallback != nil && s.Fallback.Action == nil {
			bad("%s: fallback with a nil action", label)
		}
		if s.Timeout < 0 {
			bad("%s: negative timeout %v", label, s.Timeout)
		}
	}
	return errors.Join(errs...)
}

// frozen returns a copy of d that later changes to d do not reach.
func (d *Definition[S]) frozen() *Definition[S] {
	c := *d
	c.Steps = slices.Clone(d.Steps)
	for i := range c.Steps {
		if f := c.Steps[i].Fallback; f != nil {
			fc := *f
			fc.Policy.On = slices.Clone(f.Policy.On)
			c.Steps[i].Fallback = &fc
		}
	}
	if c.Codec == nil {
		c.Codec = JSON[S]{}
	}
	return &c
}

// circuit names the circuit of step i's fallback breaker.
func circuit[S any](d *Definition[S], i int) string {
	if f := d.Steps[i].Fallback; f != nil && f.Policy.Name != "" {
		return f.Policy.Name
	}
	return "saga " + d.Name + "/" + d.Steps[i].Name
}
