// Package mediator sends requests to their handlers and dispatches the
// events those handlers emit.
//
// A [RequestMediator] is built once, in main, by bootstrap.Bootstrap. [Send]
// routes a request to the one handler bound to its type and returns the
// handler's response, typed by the request's requests.Returns marker. An
// [EventMediator] dispatches events received from outside the process (a
// broker consumer calls it) to their handlers.
//
// # Usage
//
//	m, err := bootstrap.Bootstrap(container,
//		bootstrap.WithCommands(func(r *requests.Map) {
//			requests.Bind[PlaceOrder](r, NewPlaceOrderHandler)
//		}),
//		bootstrap.WithDomainEvents(func(e *events.Map) {
//			events.Bind[OrderPlaced](e, NewSendEmail)
//			events.Bind[OrderPlaced](e, NewReserveStock)
//		}),
//		bootstrap.WithMaxConcurrentEventHandlers(3),
//	)
//	...
//	id, err := mediator.Send(ctx, m, PlaceOrder{Item: "book"})
//
// # What Send does
//
//  1. It looks up the pipeline bound to the request's static type. Handlers
//     and their middleware chains were built once, at bootstrap; Send never
//     touches the container and builds nothing.
//  2. It runs the pipeline on the caller's goroutine with the caller's ctx:
//     global middleware (requests.Middleware) in registration order, then
//     typed middleware (requests.Use), then the handler.
//  3. If the handler returns an error (or panics) Send returns that error
//     and the zero response, and none of the handler's events is
//     dispatched. Otherwise the events it returned, and their follow-ups
//     (events returned by event handlers), are dispatched as described
//     below, inside the global middleware: a span or a timeout set by global
//     middleware covers the fan-out, and event handlers receive the context
//     it passed on.
//  4. It returns the response only when every one of those events has been
//     handled or has failed: no event handler started by a Send is still
//     running when Send returns, and Send starts no goroutine that outlives
//     it.
//
// A Send whose handler emits no event costs a map lookup and a few calls; it
// allocates nothing of its own and starts no goroutine. Typed middleware adds
// no allocation; global middleware sees the request and the response as any,
// which allocates for values larger than a pointer.
//
// # Streams
//
// A [StreamingRequestMediator] runs stream handlers (requests.StreamHandler)
// through [Stream], which returns an iter.Seq2 for a range loop. For each
// item, the events the handler produced with it are dispatched with the same
// engine and settings as Send, and all are done, before the consumer
// receives the item; events the handler returns after its last item are
// dispatched before the loop ends. The stream runs on the consumer's
// goroutine. The godoc of Stream lists every outcome.
//
// # Event fan-out
//
// A unit of work is one event-handler invocation: one handler called with one
// event, or the publication of one notification event to the Publisher.
//
// Sequential mode (Config.ConcurrentEventHandleEnable false, or
// Config.MaxConcurrentEventHandlers 1) runs every invocation on the caller's
// goroutine, breadth first: the emitted events in emission order, each with
// its handlers in bind order (a notification event is published first), then
// all the follow-ups of that level in the order they were returned, and so
// on. No goroutine is started.
//
// Parallel mode (enabled, and a limit N > 1) runs invocations on at most N
// goroutines, the caller's included, taken from a semaphore-bounded errgroup:
//
//   - At most N invocations of one Send run at once. The bound is per Send:
//     two concurrent Sends may run up to 2N. Config.MediatorWideLimit adds a
//     bound shared by every Send of the mediator; waiting for such a slot
//     honours the context.
//   - With Config.EventHandlerOrder Serial (the default), the handlers of
//     one event run one after the other, in bind order, within one unit of
//     scheduling; different events run in parallel. With Parallel, each
//     handler of each event is scheduled on its own.
//   - Events start in emission order, but may finish in any order.
//   - Follow-ups are queued as soon as the invocation that returned them
//     finishes, without waiting for its siblings.
//   - Goroutines are started only while work is queued and a slot is free;
//     work never blocks a goroutine waiting for a slot.
//
// Follow-ups nested deeper than Config.MaxEventDepth (default 16) are not
// dispatched; each is reported as a *DepthError matching ErrMaxDepth, so a
// cycle of events ends instead of looping forever.
//
// An event whose type has no handler and that is not a notification event is
// logged at Warn level and otherwise ignored: emitting a fact nobody listens
// to is not an error. A notification event (events.NotificationEvent) goes to
// the configured Publisher and to any handler bound to its type; with no
// Publisher it is a failure (ErrNoPublisher), never a silent drop.
//
// # Errors
//
// By default one failing invocation never stops the others: every handler of
// every event runs, and after the fan-out Send returns the response together
// with a *DispatchError whose Unwrap yields one *HandlerError per failure
// (each naming the event type and the handler) and any *DepthError. This
// default is the safe one for in-process events: a handler's failure is
// reported, and unrelated handlers, which may already have committed work of
// their own, are not left half done. Config.FailFast selects the other
// policy: after the first failure no invocation is started
// (DispatchError.NotStarted counts them); in parallel mode the context of the
// handlers still running is cancelled, with the failure as its cause, and
// Send returns once they have returned. Those handlers may report
// context.Canceled themselves; DispatchError.Interrupted, not errors.Is, tells
// whether the caller's context was done.
//
// A panic in a request handler, an event handler or a publisher is recovered
// and reported as a *PanicError carrying the panic value and stack; the
// process never crashes because of a handler. A follow-up returned together
// with an error (or a panic) is discarded.
//
// # Cancellation
//
// If ctx is done when Send is called, the handler is not called. Once ctx is
// done during the fan-out, invocations not yet started are not started,
// waiting for a mediator-wide slot stops, and Send returns, after the running
// invocations have returned, a *DispatchError whose Interrupted field is
// ctx.Err() (errors.Is(err, context.Canceled) holds). If every invocation had
// already started, nothing was skipped and Send reports only what the
// handlers returned. Handlers receive the
// caller's ctx (in fail-fast mode, a child of it) and should return promptly
// when it is done; Send cannot return before they do.
//
// # Event middleware
//
// events.Middleware wraps each event-handler invocation. It runs inside the
// fan-out, on the goroutine and under the slot of the invocation it wraps;
// its panics are recovered like a handler's.
//
// # Calling back into the mediator
//
// Request handlers and event handlers may call Send (or EventMediator.Send)
// on the same mediator. A nested Send gets its own per-Send limit, so nesting
// cannot exhaust it. When a MediatorWideLimit is set, an event handler holds
// one of its slots while it runs; a nested Send made from it (with the ctx it
// received) dispatches its events inline on that goroutine, within the slot
// already held, so nesting cannot deadlock even with a limit of 1.
package mediator
