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
// A Send whose handler emits no event costs a table lookup and a few calls;
// it allocates nothing of its own and starts no goroutine. Typed middleware adds
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
// # Depth
//
// Every event has a depth: 1 for the events a request handler emits (or an
// EventMediator receives), 2 for their follow-ups, and so on. The depth is
// carried in the context handlers receive, so a dispatch started from inside
// an event handler continues its numbering: a nested Send, an
// EventMediator.Send, a Publisher that delivers in process, even another
// mediator. Events deeper than Config.MaxEventDepth (default 16) are not
// dispatched; each is reported as a *DepthError matching ErrMaxDepth. A
// cycle of events therefore ends, whatever path it takes. A context kept by
// a handler past its invocation reports the depth of that handler's events.
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
// A panic in anything plugged into the mediator (a Logger, a Publisher,
// middleware, a circuit breaker) is recovered and reported the same way,
// naming what panicked; none can crash the process or leave a goroutine
// behind. A handler that ends its goroutine with runtime.Goexit (as
// t.FailNow does) on a worker goroutine of a parallel fan-out is reported as
// failed with ErrGoexit, and the rest of the fan-out goes on; on the
// caller's goroutine, that goroutine ends, as Goexit does, and the slot it
// held is given back.
//
// # Cancellation
//
// If ctx is done when Send is called, the handler is not called and Send
// returns ctx.Err() (joined with context.Cause(ctx) when a cause was given).
// Once ctx is done during the fan-out, invocations not yet started are not
// started (a large batch of events is checked every few dozen events while
// it is queued), waiting for a mediator-wide slot stops, and Send returns,
// after the running invocations have returned, a *DispatchError whose
// Interrupted field is ctx.Err() joined with its cause
// (errors.Is(err, context.Canceled) holds). Events that were not dispatched
// are reported as they would have been had they been reached: a nil event or
// one beyond the maximum depth as a failure, the others counted in
// NotStarted. If every invocation had already started, nothing was skipped
// and Send reports only what the handlers returned.
//
// Handlers receive a context derived from the caller's: it carries the
// event depth and, with a mediator-wide limit, the slot the invocation holds
// (see below); in parallel fail-fast mode it is also cancelled, with the
// failure as its cause, at the first failure. Handlers should return
// promptly when it is done; Send cannot return before they do.
//
// # Transactional outbox
//
// With Config.Capture (bootstrap.WithOutbox, outbox.NewCapture), a request
// handler that can emit events runs inside a transaction of the outbox's
// database, carried by its context; the notification events it returns are
// written to the outbox in that transaction, and the handler's domain events
// are dispatched only after the commit. If the handler fails or the commit
// does not happen, nothing is written and nothing is dispatched. Notification
// events then leave the process only through the outbox and its relay; a
// handler bound to a notification type receives it from the relay as an
// incoming event, not from the Send that emitted it. Every captured event
// carries the request's lineage (events.LineageFrom): a Send whose context
// has none starts a correlation. Delivery to other processes is
// at-least-once, in commit order per partition key; see package
// events/outbox.
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
// cannot exhaust it, and runs in the mode the configuration says.
//
// With a MediatorWideLimit of N, every event-handler invocation of every
// Send runs under one of N slots, and the rules are:
//
//   - An invocation holds a slot from before it starts until it returns.
//   - While it runs, its slot may be lent to the invocations of the
//     dispatches started with its context (nested Sends, EventMediator.Send,
//     a publisher delivering in process), one invocation at a time: a
//     nested invocation takes the lent slot when it is free, or a slot of
//     its own, whichever comes first. So a handler that calls Send on its
//     own goroutine never waits for a slot it holds itself, and nesting
//     cannot deadlock even with N = 1.
//   - Goroutines a handler starts and that call Send with its context share
//     that one lent slot (one of them at a time) and otherwise take slots of
//     their own: a handler running ten such Sends at once gets at most N of
//     their invocations running together, not ten.
//   - The loan ends when the invocation returns (after any borrower still
//     using the slot has returned): a Send made later with a kept context,
//     context.WithoutCancel included, takes a slot like any other Send.
//
// So at most N invocations hold slots at once; beyond them, only the
// invocations that lent their slot to a nested call, which wait for it or
// run beside it, are in flight. A mediator-wide limit costs one small
// allocation per invocation (the loan). Without one, the handlers of a
// dispatch share one context (48 bytes). A dispatch started outside any
// event handler with the same context as the last such dispatch of the
// mediator reuses that one and allocates nothing: a consumer, a loop or a
// benchmark that sends with one context pays it once.
//
// # Handler names
//
// Errors (HandlerError.Handler), logs, spans, event middleware
// (events.Invocation.Handler) and Mermaid diagrams name each handler by its
// type, or, for a function (a HandlerFunc), by the function's name
// ("orders.sendEmail"); a fallback is "primary (fallback F)". Handlers of
// one event type that would share a name get " #n", n being the bind
// position from 1, so every name is distinct and stable across runs of the
// same program. Each fallback binding has a circuit of its own in its
// breaker, named after the bound type, the binding's position and the
// primary, unless FallbackPolicy.Name names it.
package mediator
