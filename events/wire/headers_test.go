package wire_test

import (
	"maps"
	"reflect"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/gocqrs/cqrs/events/wire"
)

// fullEnvelope has every field set.
func fullEnvelope() wire.Envelope {
	return wire.Envelope{
		ID:            fixedID,
		Name:          "order.placed",
		Topic:         "orders",
		Key:           "customer-7",
		Timestamp:     time.Date(2024, 5, 1, 12, 34, 56, 123456789, time.UTC),
		CorrelationID: "req-42",
		CausationID:   "0190c5a4-0000-7000-8000-000000000001",
		ContentType:   "application/json",
		Headers: map[string]string{
			wire.HeaderContentEncoding: wire.EncodingZlib,
			wire.HeaderTraceparent:     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
			wire.HeaderTracestate:      "congo=t61rcWkgMzE",
			"tenant":                   "acme",
			"X-Mixed-Case":             "kept as is",
		},
		Payload: []byte("body"),
	}
}

func TestHeadersRoundTrip(t *testing.T) {
	t.Parallel()
	env := fullEnvelope()
	h, err := wire.ToHeaders(env)
	if err != nil {
		t.Fatal(err)
	}
	wantH := map[string]string{
		"event-name":       "order.placed",
		"event-id":         "0190c5a4-3b1c-7d2e-9f00-5a6b7c8d9e0f",
		"event-timestamp":  "2024-05-01T12:34:56.123456789Z",
		"correlation-id":   "req-42",
		"causation-id":     "0190c5a4-0000-7000-8000-000000000001",
		"content-type":     "application/json",
		"content-encoding": "zlib",
		"traceparent":      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"tracestate":       "congo=t61rcWkgMzE",
		"tenant":           "acme",
		"X-Mixed-Case":     "kept as is",
	}
	if !maps.Equal(h, wantH) {
		t.Errorf("headers %v\nwant    %v", h, wantH)
	}
	// The envelope is not modified.
	if !reflect.DeepEqual(env, fullEnvelope()) {
		t.Errorf("ToHeaders modified the envelope: %+v", env)
	}

	back, err := wire.FromHeaders(h)
	if err != nil {
		t.Fatal(err)
	}
	want := fullEnvelope()
	want.Topic, want.Key, want.Payload = "", "", nil
	if !reflect.DeepEqual(back, want) {
		t.Errorf("round trip %+v\nwant       %+v", back, want)
	}
	if !maps.Equal(h, wantH) {
		t.Error("FromHeaders modified its input")
	}
}

func TestHeadersRoundTripSparse(t *testing.T) {
	t.Parallel()
	for _, env := range []wire.Envelope{
		{},
		{Name: "n"},
		{ID: fixedID},
		{Timestamp: time.Date(2024, 5, 1, 12, 0, 0, 0, time.FixedZone("X", 3600))},
		{Headers: map[string]string{}},
		{Headers: map[string]string{"a": ""}},
	} {
		h, err := wire.ToHeaders(env)
		if err != nil {
			t.Fatal(err)
		}
		back, err := wire.FromHeaders(h)
		if err != nil {
			t.Fatal(err)
		}
		if len(env.Headers) == 0 {
			env.Headers = nil
		}
		if !back.Timestamp.Equal(env.Timestamp) {
			t.Errorf("timestamp %v, want %v", back.Timestamp, env.Timestamp)
		}
		back.Timestamp, env.Timestamp = time.Time{}, time.Time{}
		if !reflect.DeepEqual(back, env) {
			t.Errorf("round trip %+v, want %+v", back, env)
		}
	}
}

func TestFromHeadersCase(t *testing.T) {
	t.Parallel()
	// As a broker that canonicalises names (MIME style) delivers them.
	h := map[string]string{
		"Event-Name":       "order.placed",
		"Event-Id":         "0190c5a4-3b1c-7d2e-9f00-5a6b7c8d9e0f",
		"EVENT-TIMESTAMP":  "2024-05-01T12:34:56.123456+00:00",
		"Correlation-Id":   "c",
		"Causation-Id":     "d",
		"Content-Type":     "application/json",
		"Content-Encoding": "zlib",
		"Traceparent":      "tp",
		"Tenant":           "acme",
	}
	env, err := wire.FromHeaders(h)
	if err != nil {
		t.Fatal(err)
	}
	want := wire.Envelope{
		ID: fixedID, Name: "order.placed", Timestamp: fixedTime, CorrelationID: "c", CausationID: "d",
		ContentType: "application/json",
		Headers:     map[string]string{"content-encoding": "zlib", "traceparent": "tp", "Tenant": "acme"},
	}
	if !reflect.DeepEqual(env, want) {
		t.Errorf("envelope %+v\nwant     %+v", env, want)
	}
	if env.Header("CONTENT-ENCODING") != "zlib" || env.Header("tenant") != "acme" || env.Header("nope") != "" {
		t.Errorf("Header lookups failed: %v", env.Headers)
	}

	// The same value under two spellings is fine.
	if _, err := wire.FromHeaders(map[string]string{"event-name": "a", "Event-Name": "a"}); err != nil {
		t.Error(err)
	}
}

func TestHeadersErrors(t *testing.T) {
	t.Parallel()
	sentinels := []error{wire.ErrMalformed, wire.ErrReservedHeader}
	for _, name := range []string{"event-name", "Event-Id", "EVENT-TIMESTAMP", "correlation-id", "causation-id", "Content-Type"} {
		env := fullEnvelope()
		env.Headers[name] = "x"
		h, err := wire.ToHeaders(env)
		if h != nil {
			t.Errorf("%s: headers %v with an error", name, h)
		}
		we := checkErr(t, err, "headers", wire.ErrReservedHeader, sentinels)
		if we.Name != "order.placed" || we.ID != fixedID {
			t.Errorf("error names %q %v", we.Name, we.ID)
		}
	}

	tests := []struct {
		name string
		h    map[string]string
	}{
		{"bad event id", map[string]string{"event-id": "nope"}},
		{"bad timestamp", map[string]string{"event-timestamp": "noon"}},
		{"conflicting field", map[string]string{"event-name": "a", "Event-Name": "b"}},
		{"conflicting header", map[string]string{"content-encoding": "zlib", "Content-Encoding": "identity"}},
	}
	for _, tt := range tests {
		env, err := wire.FromHeaders(tt.h)
		checkErr(t, err, "headers", wire.ErrMalformed, sentinels)
		if !reflect.DeepEqual(env, wire.Envelope{}) {
			t.Errorf("%s: envelope %+v with an error", tt.name, env)
		}
	}
}

// TestThroughHeaders sends an event the way a broker does: headers, topic,
// key and body apart, then put back together.
func TestThroughHeaders(t *testing.T) {
	t.Parallel()
	reg := newRegistry(t)
	dec := newDecoder(t, reg, wire.DecoderOptions{})
	enc := newEncoder(t, wire.EncoderOptions{CompressMin: 1})
	big := placed()
	big.Payload.Items = []string{"a", "a", "a", "a", "a", "a", "a", "a", "a", "a", "a", "a"}

	env := mustEncode(t, enc, big)
	env.CorrelationID = "req-1"
	env.CausationID = uuid.NewString()
	env.SetHeader(wire.HeaderTraceparent, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	if env.Header(wire.HeaderContentEncoding) != wire.EncodingZlib {
		t.Fatal("not compressed")
	}

	h, err := wire.ToHeaders(env)
	if err != nil {
		t.Fatal(err)
	}
	topic, key, body := env.Topic, env.Key, env.Payload

	got, err := wire.FromHeaders(h)
	if err != nil {
		t.Fatal(err)
	}
	got.Topic, got.Key, got.Payload = topic, key, body
	if !reflect.DeepEqual(got, env) {
		t.Errorf("envelope %+v\nwant     %+v", got, env)
	}
	n, err := wire.DecodeAs[OrderPlaced](dec, got)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(n, big) {
		t.Errorf("decoded %+v", n)
	}
}

func TestSetHeader(t *testing.T) {
	t.Parallel()
	var env wire.Envelope
	env.SetHeader("a", "1")
	env.SetHeader("a", "2")
	if !maps.Equal(env.Headers, map[string]string{"a": "2"}) {
		t.Errorf("headers %v", env.Headers)
	}
	// Exact matches win over case-insensitive ones; among those the first
	// name in sorted order wins.
	env.Headers = map[string]string{"B": "upper", "b": "lower"}
	if env.Header("b") != "lower" || env.Header("B") != "upper" {
		t.Errorf("exact lookups: %v", env.Headers)
	}
	env.Headers = map[string]string{"Xy": "1", "XY": "2", "xY": "3"}
	for range 20 {
		if got := env.Header("xy"); got != "2" {
			t.Fatalf("Header(xy) = %q", got)
		}
	}
}

func TestToHeadersTimestampRange(t *testing.T) {
	t.Parallel()
	env := wire.Envelope{Name: "n", Timestamp: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}
	_, err := wire.ToHeaders(env)
	checkErr(t, err, "headers", wire.ErrInvalidEvent, []error{wire.ErrReservedHeader, wire.ErrMalformed})
	env.Timestamp = time.Date(0, 12, 31, 23, 0, 0, 0, time.UTC)
	_, err = wire.ToHeaders(env)
	checkErr(t, err, "headers", wire.ErrInvalidEvent, []error{wire.ErrReservedHeader, wire.ErrMalformed})
	// Year 1 in UTC, year 0 where it was written.
	back, err := wire.FromHeaders(map[string]string{wire.HeaderEventTimestamp: "0000-12-31T23:00:00-01:00"})
	if err != nil || !back.Timestamp.Equal(time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("year 1: %v %v", back.Timestamp, err)
	}
	_, err = wire.FromHeaders(map[string]string{wire.HeaderEventTimestamp: "0001-01-01T00:30:00+01:00"})
	checkErr(t, err, "headers", wire.ErrMalformed, []error{wire.ErrReservedHeader, wire.ErrInvalidEvent})
}
