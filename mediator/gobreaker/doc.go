// Package gobreaker adapts github.com/sony/gobreaker/v2 to the mediator's
// events.CircuitBreaker (also requests.CircuitBreaker), for fallbacks:
//
//	cb := gobreaker.New(sgb.Settings{Timeout: 30 * time.Second})
//	requests.BindFallback[Quote](r, NewPricingService, NewCachedPrices,
//		requests.FallbackPolicy{Breaker: cb})
//
// It is a separate module so that the core module does not depend on
// gobreaker.
//
// # Concurrency
//
// A Breaker keeps one gobreaker circuit per name (the mediator passes the
// primary handler's type), created on first use from the Settings given to
// New, with Settings.Name set to that name. It is safe for concurrent use.
package gobreaker
