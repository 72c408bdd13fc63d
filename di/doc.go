// Package di connects the mediator to a dependency-injection container.
//
// # The contract
//
// The mediator needs one thing from a container: to call a constructor with
// its arguments supplied. [Container] captures exactly that, with the same
// method set as [go.uber.org/dig.Container] and [go.uber.org/dig.Scope], so a
// *dig.Container is passed as is:
//
//	c := dig.New()
//	_ = c.Provide(NewOrderRepo)
//	m, err := bootstrap.Bootstrap(c, ...)
//
// [Values] is a container backed by a plain map, for tests and small programs
// that do not want dig.
//
// # When resolution happens
//
// Handlers are built once, when a mediator is bootstrapped, never per
// request: dig is not safe for concurrent use and one Invoke costs micro-
// seconds and dozens of allocations. A constructor that cannot be satisfied
// therefore fails bootstrap, with dig's description of the missing dependency,
// and never fails the first request. Each handler is a singleton for the
// lifetime of the mediator that built it; a handler that needs per-request
// state must create it inside Handle.
//
// # Concurrency
//
// [Construct] and [Resolve] call the container and are not safe for concurrent
// use when the container is not (dig is not). [Values] is safe for concurrent
// reads once populated; Provide must not race with Invoke.
package di
