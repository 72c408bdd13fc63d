module github.com/gocqrs/cqrs/events/brokers/rabbitmq

go 1.26.0

replace github.com/gocqrs/cqrs => ../../..

require (
	github.com/gocqrs/cqrs v0.0.0-00010101000000-000000000000
	github.com/google/uuid v1.6.0
	github.com/rabbitmq/amqp091-go v1.16.0
	github.com/stretchr/testify v1.12.1
	go.uber.org/goleak v1.3.0
	golang.org/x/sync v0.24.0
)

require (
	go.uber.org/dig v1.19.0 // indirect
	go.yaml.in/yaml/v3 v3.0.5 // indirect
)
