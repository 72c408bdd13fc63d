package wire_test

import (
	"reflect"
	"testing"
	"time"

	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/events/wire"
)

// pythonBody is a body as python-cqrs writes it (orjson of to_dict(); json
// module separators would add spaces, which change nothing).
func pythonBody(timestamp string) []byte {
	return []byte(`{"event_id":"9b4c3a4e-2f7d-4c1e-8a55-3c2f1e0d9b7a","event_timestamp":"` + timestamp +
		`","event_name":"order.placed","topic":"output_topic","payload":{"order_id":"o-1","amount":3}}`)
}

func TestPythonBodies(t *testing.T) {
	t.Parallel()
	dec := newDecoder(t, newRegistry(t), wire.DecoderOptions{})
	tests := []struct {
		name      string
		timestamp string
		want      time.Time
	}{
		{"naive with microseconds", "2024-05-01T12:34:56.123456", fixedTime},
		{"naive whole second", "2024-05-01T12:34:56", time.Date(2024, 5, 1, 12, 34, 56, 0, time.UTC)},
		{"naive milliseconds", "2024-05-01T12:34:56.123", time.Date(2024, 5, 1, 12, 34, 56, 123000000, time.UTC)},
		{"naive with a space", "2024-05-01 12:34:56.123456", fixedTime},
		{"+00:00", "2024-05-01T12:34:56.123456+00:00", fixedTime},
		{"Z", "2024-05-01T12:34:56.123456Z", fixedTime},
		{"+02:00", "2024-05-01T14:34:56.123456+02:00", fixedTime},
		{"-05:30", "2024-05-01T07:04:56.123456-05:30", fixedTime},
		{"+00:00 with a space", "2024-05-01 12:34:56.123456+00:00", fixedTime},
		{"nanoseconds", "2024-05-01T12:34:56.123456789Z", fixedTime.Add(789)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := wire.DecodeAs[OrderPlaced](dec, wire.Envelope{Payload: pythonBody(tt.timestamp)})
			if err != nil {
				t.Fatal(err)
			}
			want := events.Notification[OrderPlaced]{
				ID: otherID, Name: "order.placed", Topic: "output_topic", Timestamp: tt.want,
				Payload: OrderPlaced{OrderID: "o-1", Amount: 3},
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("decoded %+v\nwant    %+v", got, want)
			}
			if got.Timestamp.Location() != time.UTC {
				t.Errorf("timestamp in %v", got.Timestamp.Location())
			}
		})
	}
}

func TestPythonBodyVariants(t *testing.T) {
	t.Parallel()
	dec := newDecoder(t, newRegistry(t), wire.DecoderOptions{})
	bodies := map[string]string{
		// python's json.dumps puts spaces after separators.
		"json.dumps": `{"event_id": "9b4c3a4e-2f7d-4c1e-8a55-3c2f1e0d9b7a", "event_timestamp": "2024-05-01T12:34:56.123456", ` +
			`"event_name": "order.placed", "topic": "output_topic", "payload": {"order_id": "o-1", "amount": 3}}`,
		// Members in another order, an unknown member, surrounding space.
		"reordered": "\n {\"payload\":{\"amount\":3,\"order_id\":\"o-1\",\"note\":\"x\"},\"topic\":\"output_topic\",\"extra\":[1]," +
			`"event_name":"order.placed","event_timestamp":"2024-05-01T12:34:56.123456","event_id":"9b4c3a4e-2f7d-4c1e-8a55-3c2f1e0d9b7a"} `,
		// UUID in upper case.
		"upper-case UUID": `{"event_id":"9B4C3A4E-2F7D-4C1E-8A55-3C2F1E0D9B7A","event_timestamp":"2024-05-01T12:34:56.123456",` +
			`"event_name":"order.placed","topic":"output_topic","payload":{"order_id":"o-1","amount":3}}`,
	}
	want := events.Notification[OrderPlaced]{
		ID: otherID, Name: "order.placed", Topic: "output_topic", Timestamp: fixedTime,
		Payload: OrderPlaced{OrderID: "o-1", Amount: 3},
	}
	for name, body := range bodies {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			got, err := wire.DecodeAs[OrderPlaced](dec, wire.Envelope{Payload: []byte(body)})
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("decoded %+v", got)
			}
		})
	}
}

func TestJSONCodec(t *testing.T) {
	t.Parallel()
	var c wire.JSON
	if c.ContentType() != "application/json" {
		t.Errorf("ContentType %q", c.ContentType())
	}
	m, payload, err := c.Unmarshal(pythonBody("2024-05-01T12:34:56.123456"))
	if err != nil {
		t.Fatal(err)
	}
	want := wire.Meta{ID: otherID, Name: "order.placed", Topic: "output_topic", Timestamp: fixedTime}
	if m != want {
		t.Errorf("meta %+v", m)
	}
	if string(payload) != `{"order_id":"o-1","amount":3}` {
		t.Errorf("payload %s", payload)
	}
	type payloadV1 struct {
		OrderID string `json:"order_id"`
		Amount  int    `json:"amount"`
	}
	body, err := c.Marshal(want, payloadV1{OrderID: "o-1", Amount: 3})
	if err != nil {
		t.Fatal(err)
	}
	if got := string(body); got != string(pythonBody("2024-05-01T12:34:56.123456Z")) {
		t.Errorf("body %s", got)
	}
	// A bare {} has no metadata and no payload.
	m, payload, err = c.Unmarshal([]byte(`{}`))
	if err != nil || m != (wire.Meta{}) || payload != nil {
		t.Errorf("{}: %+v %q %v", m, payload, err)
	}
	// Members set to null count as absent.
	m, payload, err = c.Unmarshal([]byte(`{"event_id":null,"event_timestamp":null,"event_name":null,"topic":null,"payload":null}`))
	if err != nil || m != (wire.Meta{}) || payload != nil {
		t.Errorf("nulls: %+v %q %v", m, payload, err)
	}
}
