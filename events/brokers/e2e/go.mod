module github.com/gocqrs/cqrs/events/brokers/e2e

go 1.26.0

replace (
	github.com/gocqrs/cqrs => ../../..
	github.com/gocqrs/cqrs/events/brokers/rabbitmq => ../rabbitmq
	github.com/gocqrs/cqrs/events/outbox/postgres => ../../outbox/postgres
)

require (
	github.com/gocqrs/cqrs v0.0.0-00010101000000-000000000000
	github.com/gocqrs/cqrs/events/brokers/rabbitmq v0.0.0-00010101000000-000000000000
	github.com/gocqrs/cqrs/events/outbox/postgres v0.0.0-00010101000000-000000000000
	github.com/google/uuid v1.6.0
	github.com/jackc/pgx/v5 v5.13.0
	github.com/rabbitmq/amqp091-go v1.16.0
	github.com/stretchr/testify v1.12.1
)

require (
	github.com/jackc/pgpassfile v1.0.0 // indirect
	github.com/jackc/pgservicefile v0.0.0-20240606120523-5a60cdf6a761 // indirect
	github.com/jackc/puddle/v2 v2.2.3 // indirect
	go.uber.org/dig v1.19.0 // indirect
	go.yaml.in/yaml/v3 v3.0.5 // indirect
	golang.org/x/sync v0.24.0 // indirect
	golang.org/x/text v0.41.0 // indirect
)
