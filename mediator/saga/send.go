package saga

import (
	"context"
	"errors"
	"fmt"

	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/mediator"
	"github.com/gocqrs/cqrs/requests"
)

// Send returns an action that sends a request through the orchestrator's
// mediator (Options.Mediator): build makes the request from the state, and
// apply, when not nil, records the response in the state. Both type
// parameters of the request are inferred:
//
//	Action: saga.Send(
//		func(o *Order) Charge { return Charge{Order: o.ID, Amount: o.Total} },
//		func(o *Order, p PaymentID) { o.Payment = p },
//	),
//
// The mediator dispatches the events the handler returns, as for any Send.
// The handler receives the step's context, so saga.KeyFrom(ctx) gives it
// the idempotency key. If Send returns a *mediator.DispatchError, the
// handler succeeded: the response is applied and the step counts as done.
func Send[S any, Req requests.Request[Res], Res any](build func(state *S) Req, apply func(state *S, res Res)) Action[S] {
	return func(ctx context.Context, state *S) ([]events.Event, error) {
		o := orchestratorFrom(ctx)
		if o == nil || o.mediator == nil {
			return nil, ErrNoMediator
		}
		res, err := mediator.Send(ctx, o.mediator, build(state))
		if err != nil && !isDispatchError(err) {
			return nil, err
		}
		if apply != nil {
			apply(state, res)
		}
		return nil, err
	}
}

func isDispatchError(err error) bool {
	var de *mediator.DispatchError
	return errors.As(err, &de)
}

// Dispatcher dispatches the events a step's action returned, after the
// step's checkpoint is written, with the step's context. A failure is
// reported with the step's result (StepResult.EventsErr), logged, and
// returned by Execute beside the result; it does not fail the step, whose
// work is done and checkpointed.
type Dispatcher interface {
	Dispatch(ctx context.Context, evs ...events.Event) error
}

// DispatchFunc adapts a function to a [Dispatcher].
type DispatchFunc func(ctx context.Context, evs ...events.Event) error

// Dispatch calls f(ctx, evs...).
func (f DispatchFunc) Dispatch(ctx context.Context, evs ...events.Event) error { return f(ctx, evs...) }

// EventMediatorDispatcher returns a [Dispatcher] that sends each event, in
// order, with m.Send: the event's in-process handlers run and their
// follow-ups are dispatched as usual. It differs from the events a request
// handler returns in two ways: an event with no handler is ignored (as the
// mediator does for emitted events) rather than an error, and a
// notification event is refused with an error, because EventMediator.Send
// handles events in process and never publishes them. To publish
// notification events from a step, send a request whose handler returns
// them (with [Send]), or write them to the outbox in the step's
// transaction. Every event is tried; the errors are joined.
func EventMediatorDispatcher(m *mediator.EventMediator) Dispatcher {
	return DispatchFunc(func(ctx context.Context, evs ...events.Event) error {
		var errs []error
		for i, ev := range evs {
			if _, ok := ev.(events.NotificationEvent); ok {
				errs = append(errs, fmt.Errorf("saga: event %d (%T) is a notification event, which an EventMediator does not publish: %w", i, ev, ErrNoDispatcher))
				continue
			}
			if err := m.Send(ctx, ev); err != nil && !errors.Is(err, mediator.ErrHandlerNotFound) {
				errs = append(errs, err)
			}
		}
		return errors.Join(errs...)
	})
}
