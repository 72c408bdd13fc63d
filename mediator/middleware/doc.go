// Package middleware provides the built-in middleware: structured logging
// with log/slog, a per-handler timeout, and request validation.
//
// Each is a value that implements the middleware interfaces it makes sense
// for (requests.Middleware for Send, requests.StreamMiddleware for Stream,
// events.Middleware for event handlers); pass it to bootstrap.WithMiddleware
// and it is added wherever it applies:
//
//	m, err := bootstrap.Bootstrap(c,
//		bootstrap.WithMiddleware(
//			middleware.NewLogger(logger),          // outermost
//			middleware.Timeout(2*time.Second),
//			middleware.Validation{},
//		),
//		...
//	)
//
// # Concurrency and cost
//
// Middleware values are shared by every call and are safe for concurrent
// use. They are applied once per request type (and per event handler) at
// bootstrap, never per call, and a middleware that does not apply to a type
// (Validation for a request without a Validate method) leaves it unwrapped.
// Global request middleware sees requests and responses as any, which costs
// an allocation each for values larger than a pointer; event middleware
// costs none. A panic inside middleware is recovered like a handler's.
package middleware
