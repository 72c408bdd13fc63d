package wire_test

import (
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/events/wire"
)

// OrderPaid is the payload of the "order.paid" notification event.
type OrderPaid struct {
	OrderID string `json:"order_id"`
	Cents   int    `json:"cents"`
}

// Encode a notification event to python-cqrs's JSON body, then decode it
// back to the registered type.
func Example() {
	var reg wire.Registry
	if err := wire.Register[OrderPaid](&reg, "order.paid"); err != nil {
		panic(err)
	}
	dec, err := wire.NewDecoder(&reg, wire.DecoderOptions{})
	if err != nil {
		panic(err)
	}

	n := events.Notification[OrderPaid]{
		ID:        uuid.MustParse("0190c5a4-3b1c-7d2e-9f00-5a6b7c8d9e0f"),
		Name:      "order.paid",
		Topic:     "payments",
		Timestamp: time.Date(2024, 5, 1, 12, 34, 56, 123456789, time.UTC),
		Payload:   OrderPaid{OrderID: "o-1", Cents: 4200},
	}.WithKey("o-1") // normally events.NewNotification(...).WithKey(...)

	var enc wire.Encoder // JSON, no compression
	env, err := enc.Encode(n)
	if err != nil {
		panic(err)
	}
	env.CorrelationID = "req-42" // lineage is the caller's to set
	fmt.Println(env.ContentType, env.Key)
	fmt.Println(string(env.Payload))

	ev, err := dec.Decode(env)
	if err != nil {
		panic(err)
	}
	// ev is an events.Notification[OrderPaid]: an EventMediator routes it
	// to the handlers bound to that type.
	fmt.Printf("%T\n", ev)
	if got, ok := ev.(events.Notification[OrderPaid]); ok {
		fmt.Println(got.Name, got.Payload.Cents, got.Key, got.Timestamp.Format(time.RFC3339Nano))
	}
	// Output:
	// application/json o-1
	// {"event_id":"0190c5a4-3b1c-7d2e-9f00-5a6b7c8d9e0f","event_timestamp":"2024-05-01T12:34:56.123456Z","event_name":"order.paid","topic":"payments","payload":{"order_id":"o-1","cents":4200}}
	// events.Notification[github.com/gocqrs/cqrs/events/wire_test.OrderPaid]
	// order.paid 4200 o-1 2024-05-01T12:34:56.123456Z
}

// Decode a body written by python-cqrs: no headers, a naive timestamp.
func ExampleDecodeAs_python() {
	var reg wire.Registry
	if err := wire.Register[OrderPaid](&reg, "order.paid"); err != nil {
		panic(err)
	}
	dec, err := wire.NewDecoder(&reg, wire.DecoderOptions{})
	if err != nil {
		panic(err)
	}

	// orjson.dumps(event.to_dict()) of a python-cqrs NotificationEvent.
	body := []byte(`{"event_id":"9b4c3a4e-2f7d-4c1e-8a55-3c2f1e0d9b7a",` +
		`"event_timestamp":"2024-05-01T12:34:56.123456","event_name":"order.paid",` +
		`"topic":"output_topic","payload":{"order_id":"o-7","cents":1999}}`)

	n, err := wire.DecodeAs[OrderPaid](dec, wire.Envelope{Payload: body})
	if err != nil {
		panic(err)
	}
	fmt.Println(n.ID, n.Name, n.Topic)
	fmt.Println(n.Timestamp) // naive: taken as UTC
	fmt.Printf("%+v\n", n.Payload)
	// Output:
	// 9b4c3a4e-2f7d-4c1e-8a55-3c2f1e0d9b7a order.paid output_topic
	// 2024-05-01 12:34:56.123456 +0000 UTC
	// {OrderID:o-7 Cents:1999}
}

// Errors say what went wrong and, where known, which event it was.
func ExampleDecoder_Decode_errors() {
	var reg wire.Registry
	dec, err := wire.NewDecoder(&reg, wire.DecoderOptions{})
	if err != nil {
		panic(err)
	}
	body := []byte(`{"event_id":"9b4c3a4e-2f7d-4c1e-8a55-3c2f1e0d9b7a","event_name":"order.refunded","payload":{}}`)

	_, err = dec.Decode(wire.Envelope{Payload: body})
	var we *wire.Error
	if errors.As(err, &we) {
		fmt.Println(errors.Is(err, wire.ErrUnknownEvent), we.Name, we.ID)
	}
	fmt.Println(err)

	_, err = dec.Decode(wire.Envelope{Payload: []byte(`{"event_id":`)})
	fmt.Println(errors.Is(err, wire.ErrMalformed))
	// Output:
	// true order.refunded 9b4c3a4e-2f7d-4c1e-8a55-3c2f1e0d9b7a
	// wire: decode event "order.refunded" id 9b4c3a4e-2f7d-4c1e-8a55-3c2f1e0d9b7a: unknown event: name not registered
	// true
}

// Compress large bodies, and carry the metadata in broker headers.
func ExampleToHeaders() {
	enc, err := wire.NewEncoder(wire.EncoderOptions{CompressMin: 64})
	if err != nil {
		panic(err)
	}
	n := events.Notification[OrderPaid]{
		ID:        uuid.MustParse("0190c5a4-3b1c-7d2e-9f00-5a6b7c8d9e0f"),
		Name:      "order.paid",
		Topic:     "payments",
		Timestamp: time.Date(2024, 5, 1, 12, 34, 56, 0, time.UTC),
		Payload:   OrderPaid{OrderID: "o-1", Cents: 4200},
	}
	env, err := enc.Encode(n)
	if err != nil {
		panic(err)
	}
	env.CorrelationID = "req-42"
	env.SetHeader(wire.HeaderTraceparent, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")

	h, err := wire.ToHeaders(env)
	if err != nil {
		panic(err)
	}
	for _, k := range []string{
		wire.HeaderEventName, wire.HeaderEventID, wire.HeaderEventTimestamp, wire.HeaderCorrelationID,
		wire.HeaderContentType, wire.HeaderContentEncoding, wire.HeaderTraceparent,
	} {
		fmt.Printf("%s: %s\n", k, h[k])
	}

	// On the consumer side: headers back to an Envelope; the broker gives
	// topic, key and body.
	back, err := wire.FromHeaders(h)
	if err != nil {
		panic(err)
	}
	back.Topic, back.Payload = "payments", env.Payload
	fmt.Println(back.Name, back.CorrelationID, back.Header(wire.HeaderContentEncoding))
	// Output:
	// event-name: order.paid
	// event-id: 0190c5a4-3b1c-7d2e-9f00-5a6b7c8d9e0f
	// event-timestamp: 2024-05-01T12:34:56Z
	// correlation-id: req-42
	// content-type: application/json
	// content-encoding: zlib
	// traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01
	// order.paid req-42 zlib
}
