// Package events defines events, event handlers, the event map and the
// Publisher of notification events.
//
// # Events
//
// An event is any Go value. A domain event is handled in process by the
// handlers bound to its exact dynamic type. A notification event implements
// [NotificationEvent] (use [Notification], which carries an ID (UUIDv7), a
// Name, a Topic, a Timestamp and a typed Payload): it is meant for other
// processes and is handed to the configured [Publisher], then to any
// in-process handler bound to its type. [MemoryPublisher] keeps published
// events in memory, for tests and single-process programs.
//
// # Emitting events
//
// A request handler or an event handler emits events by returning them:
//
//	func (h *PlaceOrder) Handle(ctx context.Context, req PlaceOrder) (OrderID, []events.Event, error) {
//		id := h.repo.Save(req)
//		return id, []events.Event{OrderPlaced{ID: id}}, nil
//	}
//
// There is no emitter to hold, so a handler keeps no per-request state and
// one handler value serves every concurrent call. An event cannot be emitted
// outside a mediator call and get lost: what a handler returns is exactly
// what is dispatched, and a unit test of a handler simply inspects the
// returned slice. Events returned together with a non-nil error are never
// dispatched. A nil slice costs nothing.
//
// # Handlers and the map
//
// [Bind] and [BindHandler] add a [Handler] for an event type to a [Map].
// Several handlers may be bound to one type; they run in bind order (or
// concurrently, if the mediator is configured so). Binding the same handler
// twice to one type is an error, reported by bootstrap with every other
// problem.
//
// # Middleware and fallbacks
//
// [Middleware] wraps every event-handler invocation (logging, timeouts,
// tracing); it is applied once per handler at bootstrap. [BindFallback]
// backs a handler with a fallback under a [FallbackPolicy], optionally
// behind a [CircuitBreaker]; the fallback's follow-ups replace the
// primary's. Handlers may declare the events they emit ([Declarer]) for
// wiring diagrams.
//
// # Lineage
//
// [Lineage] (a correlation id and a causation id) travels in the context:
// [WithLineage] sets it, [LineageFrom] reads it, [EnsureLineage] starts a
// correlation when there is none. The outbox stamps it on every event it
// stores, and a consumer (outbox.Decode) puts the received event's lineage
// back in the context, so one correlation follows a request across
// processes.
//
// # Concurrency contract
//
// The mediator calls handlers as follows (package mediator has the full
// contract):
//
//   - Handlers are built once, at bootstrap, and then called from many
//     goroutines at once: from concurrent requests, and from the parallel
//     fan-out of one request. They must be safe for concurrent use.
//   - Handle receives the ctx of the Send that caused it. When ctx is done,
//     Handle should return; the Send waits for it.
//   - The follow-up events a handler returns are dispatched after Handle
//     returns: breadth first in sequential mode, as soon as it returns in
//     parallel mode, and never beyond the mediator's maximum depth.
//   - A handler's error or panic is reported to the caller of Send, naming
//     the event type and the handler; it never stops the other handlers
//     unless fail-fast is configured.
//   - A handler may call the mediator again; see package mediator.
//   - Publish may be called from several goroutines at once.
package events
