module github.com/gocqrs/cqrs/events/brokers/e2e

go 1.26.0

replace (
	github.com/gocqrs/cqrs => ../../..
	github.com/gocqrs/cqrs/events/brokers/kafka => ../kafka
	github.com/gocqrs/cqrs/events/brokers/nats => ../nats
	github.com/gocqrs/cqrs/events/brokers/rabbitmq => ../rabbitmq
	github.com/gocqrs/cqrs/events/outbox/postgres => ../../outbox/postgres
)

require (
	github.com/gocqrs/cqrs v0.0.0-00010101000000-000000000000
	github.com/gocqrs/cqrs/events/brokers/kafka v0.0.0-00010101000000-000000000000
	github.com/gocqrs/cqrs/events/brokers/nats v0.0.0-00010101000000-000000000000
	github.com/gocqrs/cqrs/events/brokers/rabbitmq v0.0.0-00010101000000-000000000000
	github.com/gocqrs/cqrs/events/outbox/postgres v0.0.0-00010101000000-000000000000
	github.com/google/uuid v1.6.0
	github.com/jackc/pgx/v5 v5.13.0
	github.com/nats-io/nats.go v1.55.0
	github.com/rabbitmq/amqp091-go v1.16.0
	github.com/stretchr/testify v1.12.1
	github.com/twmb/franz-go v1.22.3
	github.com/twmb/franz-go/pkg/kfake v0.0.0-20260918054303-01f206a7e32c
	go.uber.org/goleak v1.3.0
)

require (
	github.com/antithesishq/antithesis-sdk-go v0.9.0-default-no-op // indirect
	github.com/google/go-tpm v0.9.8 // indirect
	github.com/jackc/pgpassfile v1.0.0 // indirect
	github.com/jackc/pgservicefile v0.0.0-20240606120523-5a60cdf6a761 // indirect
	github.com/jackc/puddle/v2 v2.2.3 // indirect
	github.com/klauspost/compress v1.20.4 // indirect
	github.com/minio/highwayhash v1.0.4 // indirect
	github.com/nats-io/jwt/v2 v2.8.3 // indirect
	github.com/nats-io/nats-server/v2 v2.15.3 // indirect
	github.com/nats-io/nkeys v0.4.17 // indirect
	github.com/nats-io/nuid v1.0.1 // indirect
	github.com/pierrec/lz4/v4 v4.1.33 // indirect
	github.com/twmb/franz-go/pkg/kadm v1.20.0 // indirect
	github.com/twmb/franz-go/pkg/kmsg v1.15.1 // indirect
	go.uber.org/dig v1.19.0 // indirect
	go.yaml.in/yaml/v3 v3.0.5 // indirect
	golang.org/x/crypto v0.58.0 // indirect
	golang.org/x/sync v0.24.0 // indirect
	golang.org/x/sys v0.50.0 // indirect
	golang.org/x/text v0.43.0 // indirect
	golang.org/x/time v0.16.0 // indirect
)
