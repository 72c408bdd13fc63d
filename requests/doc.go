// Package requests defines requests (commands and queries), their handlers
// and the request map.
//
// A request type embeds [Returns] to declare its response type; a command
// that answers with nothing embeds Returns[[Unit]]. Exactly one [Handler] is
// bound to each request type, with [Bind] (a constructor resolved from the
// container at bootstrap) or [BindHandler] (a ready value). A handler emits
// events by returning them together with its response; see package events.
//
// # Concurrency contract
//
// A handler is built once, at bootstrap, and called by mediator.Send on the
// caller's goroutine, possibly by many goroutines at once: it must be safe for
// concurrent use and keep no per-request state. It receives the caller's ctx.
// If it returns an error, the caller gets that error and the zero response,
// and none of the events it returned is dispatched. A panic is recovered and
// returned as a mediator.PanicError. A handler may itself call mediator.Send.
package requests
