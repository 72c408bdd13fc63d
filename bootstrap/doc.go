// Package bootstrap wires a dependency-injection container, the command,
// query and event mappers and the fan-out options into a mediator, in one
// call made from main.
//
//	c := dig.New()
//	_ = c.Provide(NewOrderRepo)
//	m, err := bootstrap.Bootstrap(c,
//		bootstrap.WithCommands(func(r *requests.Map) { requests.Bind[PlaceOrder](r, NewPlaceOrderHandler) }),
//		bootstrap.WithDomainEvents(func(e *events.Map) { events.Bind[OrderPlaced](e, NewSendEmail) }),
//		bootstrap.WithMaxConcurrentEventHandlers(3),
//	)
//
// It is the Go form of python-cqrs's bootstrap(di_container, commands_mapper,
// queries_mapper, domain_events_mapper, message_broker, on_startup,
// max_concurrent_event_handlers, concurrent_event_handle_enable): each
// parameter is an [Option]; middlewares come with the middleware pipeline.
//
// Bootstrap reports every problem in one error: first everything that can be
// checked without running user code (option values, binding mistakes such as
// duplicate bindings or constructors of the wrong shape), then, once the
// start-up hooks have run, every handler that cannot be built (a missing
// dependency comes with dig's dependency path). Defaults live in
// mediator.DefaultConfig.
//
// Bootstrap and Events are meant to be called once, from main; they call the
// container and so are not safe to run concurrently with other uses of it.
package bootstrap
