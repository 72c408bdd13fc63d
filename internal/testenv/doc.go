// Package testenv is what the tests of every module of the repository
// share to reach real servers and to break connections to them: the
// address of a service from its environment variable, the rule for a
// service that cannot be reached, and a TCP proxy that cuts, refuses and
// stalls connections. It is internal: only the repository's tests use it.
//
// # Unreachable services
//
// A test that needs a server (PostgreSQL, NATS, RabbitMQ, Kafka) takes its
// address from an environment variable, with a local default ([URL]). When
// the server cannot be reached, [Unavailable] skips the test with a
// message naming the variable, except when the environment variable CI is
// set: there the test fails, since CI must run every test.
//
// # The proxy
//
// [Proxy] forwards TCP connections to a target. [Proxy.Cut] closes every
// connection in progress at once (clients see a dropped connection,
// mid-request); [Proxy.SetDown] cuts them and refuses new ones until it is
// called with false; [Proxy.Hold] stops forwarding bytes without closing
// anything (a server that stopped answering) until [Proxy.Resume]. Counters
// and Wait methods let a test wait for a client to reconnect, or to have
// been refused, instead of sleeping. Every goroutine of a Proxy has ended
// when [Proxy.Close] returns; NewProxy registers Close with the test's
// Cleanup.
package testenv
