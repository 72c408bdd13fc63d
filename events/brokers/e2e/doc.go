// Package e2e holds the end-to-end fault tests of the event transport: a
// PostgreSQL outbox relayed to RabbitMQ and consumed into a PostgreSQL
// inbox, with the relay and the consumer running in processes of their own
// that the tests kill (SIGKILL) mid-run. It has no API: run its tests with
// PostgreSQL (CQRS_POSTGRES_URL) and RabbitMQ (RABBITMQ_URL) reachable.
package e2e
