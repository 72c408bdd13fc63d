module github.com/gocqrs/cqrs/mediator/gobreaker

go 1.26.0

replace github.com/gocqrs/cqrs => ../..

require (
	github.com/gocqrs/cqrs v0.0.0-00010101000000-000000000000
	github.com/sony/gobreaker/v2 v2.4.0
)

require (
	github.com/google/uuid v1.6.0 // indirect
	go.uber.org/dig v1.19.0 // indirect
)
