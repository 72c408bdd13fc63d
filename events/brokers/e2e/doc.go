// Package e2e holds the end-to-end fault tests and benchmarks of the event
// transport: a PostgreSQL outbox relayed to a broker (RabbitMQ, NATS
// JetStream or Kafka) and consumed into a PostgreSQL inbox. The relay and
// the consumer are killed (SIGKILL) mid-run in processes of their own, and
// the brokers are restarted or cut off mid-stream. It has no API: run its
// tests with PostgreSQL (CQRS_POSTGRES_URL), RabbitMQ (RABBITMQ_URL) and
// NATS (NATS_URL) reachable; Kafka runs in process (kfake).
package e2e
