package wire_test

import (
	"bytes"
	"compress/zlib"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/events/wire"
)

// FuzzDecode decodes arbitrary bodies. Decode must not panic; it fails with
// a *wire.Error matching exactly one sentinel, or returns an event that
// encodes and decodes back to itself (its timestamp truncated to the
// microsecond).
func FuzzDecode(f *testing.F) {
	var enc wire.Encoder
	zenc := newEncoder(f, wire.EncoderOptions{CompressMin: 1})
	good := mustEncode(f, &enc, placed())
	compressed := mustEncode(f, zenc, placed())
	generic := mustEncode(f, &enc, events.Notification[map[string]any]{
		ID: fixedID, Name: "generic", Timestamp: fixedTime,
		Payload: map[string]any{"a": []any{1.5, "x", nil, true, map[string]any{}}},
	})
	f.Add(good.Payload, "", "")
	f.Add(good.Payload, "", "order.placed")
	f.Add(good.Payload, "", "order.shipped")
	f.Add(compressed.Payload, "zlib", "")
	f.Add(compressed.Payload[:len(compressed.Payload)-3], "zlib", "")
	f.Add(zlibBytes(f, make([]byte, 1<<16)), "zlib", "")
	f.Add(generic.Payload, "", "")
	f.Add(pythonBody("2024-05-01T12:34:56.123456"), "", "")
	f.Add(pythonBody("2024-05-01 12:34:56+00:00"), "identity", "")
	f.Add(pythonBody("0001-01-01T00:00:00"), "", "")
	f.Add(pythonBody("9999-12-31T23:59:59.999999-01:00"), "", "")
	f.Add(pythonBody("9999-12-31T23:59:59.999999+01:00"), "", "")
	f.Add(pythonBody("0001-01-01T00:00:00.000001Z"), "", "")
	f.Add([]byte(`{"event_id":"9b4c3a4e-2f7d-4c1e-8a55-3c2f1e0d9b7a","event_name":"order.shipped","payload":{"order_id":"\ud800","carrier":"\u00e9"}}`), "", "")
	f.Add([]byte(`{"event_id":"9b4c3a4e-2f7d-4c1e-8a55-3c2f1e0d9b7a","event_name":"order.placed","payload":{"items":[]}}`), "", "")
	f.Add([]byte(`{"event_id":"x"}`), "", "")
	f.Add([]byte(`{"event_id":"9b4c3a4e-2f7d-4c1e-8a55-3c2f1e0d9b7a","event_name":"generic","payload":{"a":1},"PAYLOAD":{"b":2}}`), "", "")
	f.Add([]byte(`{"event_id":"9b4c3a4e-2f7d-4c1e-8a55-3c2f1e0d9b7a","event_name":"order.placed","payload":"x","payload":{}}`), "", "order.placed")
	f.Add([]byte(`[]`), "gzip", "")
	f.Add([]byte{}, "", "")

	reg := newRegistry(f)
	dec := newDecoder(f, reg, wire.DecoderOptions{MaxBodySize: 1 << 20})
	slow := newDecoder(f, reg, wire.DecoderOptions{MaxBodySize: 1 << 20, Codecs: []wire.Codec{slowJSON{}}})
	f.Fuzz(func(t *testing.T, body []byte, encoding, name string) {
		env := wire.Envelope{Name: name, Payload: body}
		if encoding != "" {
			env.SetHeader(wire.HeaderContentEncoding, encoding)
		}
		ev, err := dec.Decode(env)
		// The one-pass path for JSON agrees with the general one, except
		// on the value of a payload given more than once (RFC 8259 leaves
		// duplicate names unspecified).
		sev, serr := slow.Decode(env)
		if fmt.Sprint(err) != fmt.Sprint(serr) || (!reflect.DeepEqual(ev, sev) && !duplicatePayload(t, body, encoding)) {
			t.Fatalf("one pass: %#v, %v\ngeneral:  %#v, %v", ev, err, sev, serr)
		}
		if err != nil {
			if ev != nil {
				t.Fatalf("event %v with error %v", ev, err)
			}
			checkErr(t, err, "decode", matchedSentinel(t, err), decodeSentinels)
			return
		}
		ne, ok := ev.(events.NotificationEvent)
		if !ok {
			t.Fatalf("decoded a %T", ev)
		}
		// Naming the event in the envelope changes nothing.
		if name == "" {
			named := env
			named.Name = ne.EventName()
			if again, err := dec.Decode(named); err != nil || !reflect.DeepEqual(again, ev) {
				t.Fatalf("with the name in the envelope: %#v, %v\nwithout: %#v", again, err, ev)
			}
		}
		if ne.EventID() == uuid.Nil || ne.EventName() == "" {
			t.Fatalf("decoded %+v without id or name", ev)
		}
		if ts := ne.EventTimestamp(); !ts.IsZero() && ts.Location() != time.UTC {
			t.Fatalf("timestamp %v not in UTC", ts)
		}

		renv, err := zenc.Encode(ne)
		if err != nil {
			if !errors.Is(err, wire.ErrInvalidEvent) || encodable(ne.EventTimestamp()) {
				t.Fatalf("re-encoding %+v: %v", ev, err)
			}
			return
		}
		again, err := dec.Decode(renv)
		if err != nil {
			t.Fatalf("decoding re-encoded %+v: %v\n%s", ev, err, renv.Payload)
		}
		want := withTimestamp(ev, ne.EventTimestamp().Truncate(time.Microsecond))
		if !reflect.DeepEqual(again, want) {
			t.Fatalf("round trip\n got %#v\nwant %#v", again, want)
		}
	})
}

// slowJSON is the JSON codec under another type, which the decoder does
// not recognise as JSON: it takes the general, two-pass path.
type slowJSON struct{ wire.JSON }

// duplicatePayload reports whether body, once decompressed if encoding says
// so, is a JSON object with more than one member named payload (compared as
// encoding/json does, ignoring case).
func duplicatePayload(t *testing.T, body []byte, encoding string) bool {
	t.Helper()
	if strings.EqualFold(strings.TrimSpace(encoding), wire.EncodingZlib) {
		zr, err := zlib.NewReader(bytes.NewReader(body))
		if err != nil {
			return false
		}
		if body, err = io.ReadAll(io.LimitReader(zr, 1<<20)); err != nil {
			return false
		}
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return false
	}
	n := 0
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return false
		}
		if k, ok := tok.(string); ok && strings.EqualFold(k, "payload") {
			n++
		}
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return false
		}
	}
	return n > 1
}

// encodable reports whether an Encoder accepts timestamp ts.
func encodable(ts time.Time) bool {
	y := ts.UTC().Year()
	return !ts.IsZero() && y >= 1 && y <= 9999
}

// matchedSentinel returns the decode sentinel err matches.
func matchedSentinel(t *testing.T, err error) error {
	t.Helper()
	for _, s := range decodeSentinels {
		if errors.Is(err, s) {
			return s
		}
	}
	t.Fatalf("error %q matches no sentinel", err)
	return nil
}

// FuzzRoundTrip encodes arbitrary events and decodes them back.
func FuzzRoundTrip(f *testing.F) {
	f.Add("o-1", int64(3), "book", "orders", "customer-7", fixedTime.Unix(), int64(fixedTime.Nanosecond()), false)
	f.Add("", int64(-1), "", "", "", int64(0), int64(0), true)
	f.Add("\xff\xfe", int64(1)<<62, "\u2028<&>", "t\x00", "k\n", int64(-62135596800), int64(999999999), true)
	f.Add("o", int64(0), "i", "t", "k", int64(253402300799), int64(999999999), true)

	reg := newRegistry(f)
	dec := newDecoder(f, reg, wire.DecoderOptions{})
	plain := newEncoder(f, wire.EncoderOptions{Registry: reg})
	compressing := newEncoder(f, wire.EncoderOptions{CompressMin: 1, Registry: reg})
	f.Fuzz(func(t *testing.T, orderID string, amount int64, item, topic, key string, sec, nsec int64, compress bool) {
		n := events.Notification[OrderPlaced]{
			ID:        uuid.NewSHA1(uuid.NameSpaceOID, []byte(orderID+item)),
			Name:      "order.placed",
			Topic:     topic,
			Timestamp: time.Unix(sec, nsec),
			Payload:   OrderPlaced{OrderID: orderID, Amount: int(amount), Items: []string{item}},
			Key:       key,
		}
		enc := plain
		if compress {
			enc = compressing
		}
		env, err := enc.Encode(n)
		if err != nil {
			if !errors.Is(err, wire.ErrInvalidEvent) || encodable(n.Timestamp) {
				t.Fatalf("encoding %+v: %v", n, err)
			}
			return
		}
		got, err := wire.DecodeAs[OrderPlaced](dec, env)
		if err != nil {
			t.Fatalf("decoding %+v: %v", env, err)
		}
		want := n
		want.Timestamp = n.Timestamp.UTC().Truncate(time.Microsecond)
		// encoding/json replaces each invalid UTF-8 byte with U+FFFD, as a
		// conversion to []rune does.
		want.Payload.OrderID = string([]rune(orderID))
		want.Payload.Items = []string{string([]rune(item))}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("round trip\n got %#v\nwant %#v", got, want)
		}

		// Through broker headers.
		h, err := wire.ToHeaders(env)
		if err != nil {
			t.Fatal(err)
		}
		back, err := wire.FromHeaders(h)
		if err != nil {
			t.Fatal(err)
		}
		back.Topic, back.Key, back.Payload = env.Topic, env.Key, env.Payload
		if !reflect.DeepEqual(back, env) {
			t.Fatalf("headers round trip\n got %+v\nwant %+v", back, env)
		}
	})
}

// FuzzHeaders reads arbitrary header maps. FromHeaders must not panic; it
// fails with ErrMalformed, or returns an Envelope that ToHeaders and
// FromHeaders give back unchanged.
func FuzzHeaders(f *testing.F) {
	f.Add("event-id", "0190c5a4-3b1c-7d2e-9f00-5a6b7c8d9e0f", "Event-Timestamp", "2024-05-01T12:34:56.123456", "tenant", "acme")
	f.Add("Content-Encoding", "zlib", "content-encoding", "zlib", "event-name", "x")
	f.Add("EVENT-NAME", "a", "event-name", "b", "", "")
	f.Add("event-timestamp", "0000-12-31T23:00:00-01:00", "traceparent", "tp", "TRACESTATE", "ts")
	f.Add("event-timestamp", "0001-01-01T00:00:00+01:00", "", "", "", "")
	f.Add("event-timestamp", "9999-12-31T23:59:59.999999999-01:00", "", "", "", "")
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2, k3, v3 string) {
		h := map[string]string{k1: v1, k2: v2, k3: v3}
		orig := map[string]string{k1: v1, k2: v2, k3: v3}
		env, err := wire.FromHeaders(h)
		if !reflect.DeepEqual(h, orig) {
			t.Fatal("FromHeaders modified its input")
		}
		if err != nil {
			checkErr(t, err, "headers", wire.ErrMalformed, []error{wire.ErrReservedHeader, wire.ErrInvalidEvent})
			return
		}
		h2, err := wire.ToHeaders(env)
		if err != nil {
			t.Fatalf("ToHeaders(%+v): %v", env, err)
		}
		again, err := wire.FromHeaders(h2)
		if err != nil {
			t.Fatalf("FromHeaders(%v): %v", h2, err)
		}
		if !reflect.DeepEqual(again, env) {
			t.Fatalf("round trip\n got %+v\nwant %+v", again, env)
		}
	})
}

func TestFuzzHelpers(t *testing.T) {
	t.Parallel()
	// The replacement FuzzRoundTrip expects is the one encoding/json makes.
	var enc wire.Encoder
	n := placed()
	n.Payload.OrderID = "a\xff\xfeb"
	env := mustEncode(t, &enc, n)
	if !bytes.Contains(env.Payload, []byte(`"order_id":"a\ufffd\ufffdb"`)) {
		t.Errorf("body %s", env.Payload)
	}
	if string([]rune(n.Payload.OrderID)) != "a\uFFFD\uFFFDb" {
		t.Error("conversion to []rune replaces differently")
	}
}
