// Package requests defines requests (commands and queries), their handlers
// and the request map.
//
// A request type embeds [Returns] to declare its response type; a command
// that answers with nothing embeds Returns[[Unit]]. Exactly one [Handler] is
// bound to each request type, with [Bind] (a constructor resolved from the
// container at bootstrap) or [BindHandler] (a ready value). A handler emits
// events by returning them together with its response; see package events.
//
// Beyond one handler per type, a request type may be bound to a stream
// handler ([StreamHandler], [BindStream]) for mediator.Stream, to a chain of
// responsibility ([ChainHandler], [BindChain]) whose links answer or pass
// on, or to a primary handler backed by a fallback ([BindFallback]) under a
// [FallbackPolicy], optionally behind a [CircuitBreaker].
//
// Middleware comes in two forms. Global middleware ([Middleware],
// [StreamMiddleware]) wraps every request type and sees requests and
// responses as any; it wraps the whole mediated call, the dispatch of the
// handler's events included. Typed middleware ([TypedMiddleware],
// [TypedStreamMiddleware], added with [Use] and [UseStream]) wraps the
// handler of one request type, with no any, and sees the events before they
// are dispatched. Chains are built once, at bootstrap: global middleware
// outermost in registration order, then typed middleware in Use order.
//
// # Concurrency contract
//
// A handler is built once, at bootstrap, and called by mediator.Send on the
// caller's goroutine, possibly by many goroutines at once: it must be safe for
// concurrent use and keep no per-request state. It receives the caller's ctx.
// If it returns an error, the caller gets that error and the zero response,
// and none of the events it returned is dispatched. A panic is recovered and
// returned as a mediator.PanicError. A handler may itself call mediator.Send.
// Middleware, chain links and fallbacks follow the same rules: built once,
// shared by concurrent calls, run on the caller's goroutine.
package requests
