package wire_test

import (
	"bytes"
	"compress/zlib"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/events/wire"
)

type OrderPlaced struct {
	OrderID string   `json:"order_id"`
	Amount  int      `json:"amount"`
	Items   []string `json:"items"`
}

type OrderShipped struct {
	OrderID string `json:"order_id"`
	Carrier string `json:"carrier"`
}

var (
	fixedID   = uuid.MustParse("0190c5a4-3b1c-7d2e-9f00-5a6b7c8d9e0f")
	otherID   = uuid.MustParse("9b4c3a4e-2f7d-4c1e-8a55-3c2f1e0d9b7a")
	fixedTime = time.Date(2024, 5, 1, 12, 34, 56, 123456000, time.UTC)
)

// placed returns a fixed order.placed notification.
func placed() events.Notification[OrderPlaced] {
	return events.Notification[OrderPlaced]{
		ID:        fixedID,
		Name:      "order.placed",
		Topic:     "orders",
		Timestamp: fixedTime,
		Payload:   OrderPlaced{OrderID: "o-1", Amount: 3, Items: []string{"book", "pen"}},
		Key:       "customer-7",
	}
}

// newRegistry returns a registry of the test events.
func newRegistry(tb testing.TB) *wire.Registry {
	tb.Helper()
	var r wire.Registry
	if err := errors.Join(
		wire.Register[OrderPlaced](&r, "order.placed"),
		wire.Register[OrderShipped](&r, "order.shipped"),
		wire.Register[map[string]any](&r, "generic"),
	); err != nil {
		tb.Fatal(err)
	}
	return &r
}

func newDecoder(tb testing.TB, r *wire.Registry, opts wire.DecoderOptions) *wire.Decoder {
	tb.Helper()
	d, err := wire.NewDecoder(r, opts)
	if err != nil {
		tb.Fatal(err)
	}
	return d
}

func newEncoder(tb testing.TB, opts wire.EncoderOptions) *wire.Encoder {
	tb.Helper()
	e, err := wire.NewEncoder(opts)
	if err != nil {
		tb.Fatal(err)
	}
	return e
}

func mustEncode(tb testing.TB, e *wire.Encoder, ev events.NotificationEvent) wire.Envelope {
	tb.Helper()
	env, err := e.Encode(ev)
	if err != nil {
		tb.Fatal(err)
	}
	return env
}

func zlibBytes(tb testing.TB, b []byte) []byte {
	tb.Helper()
	var buf bytes.Buffer
	zw := zlib.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		tb.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// decodeSentinels are the errors a decode may match.
var decodeSentinels = []error{
	wire.ErrUnknownEvent, wire.ErrMalformed, wire.ErrMismatch,
	wire.ErrCompression, wire.ErrTooLarge, wire.ErrUnsupported,
}

// checkErr fails t unless err is a *wire.Error of operation op matching
// want and no other sentinel of sentinels.
func checkErr(tb testing.TB, err error, op string, want error, sentinels []error) wire.Error {
	tb.Helper()
	if err == nil {
		tb.Fatalf("got no error, want %v", want)
	}
	if !errors.Is(err, want) {
		tb.Fatalf("error %q does not match %v", err, want)
	}
	for _, s := range sentinels {
		if !errors.Is(s, want) && errors.Is(err, s) {
			tb.Errorf("error %q matches %v besides %v", err, s, want)
		}
	}
	var we *wire.Error
	if !errors.As(err, &we) {
		tb.Fatalf("error %q (%T) is not a *wire.Error", err, err)
	}
	if we.Op != op {
		tb.Errorf("Op = %q, want %q", we.Op, op)
	}
	if !strings.HasPrefix(err.Error(), "wire: "+op) {
		tb.Errorf("message %q does not start with %q", err, "wire: "+op)
	}
	return *we
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	reg := newRegistry(t)
	dec := newDecoder(t, reg, wire.DecoderOptions{})
	shipped := events.NewNotification("order.shipped", OrderShipped{OrderID: "o-2", Carrier: "post"}).WithTopic("shipping")
	generic := events.NewNotification("generic", map[string]any{"a": 1.5, "b": []any{"x", true, nil}})

	tests := []struct {
		name string
		opts wire.EncoderOptions
		ev   events.NotificationEvent
	}{
		{"plain", wire.EncoderOptions{}, placed()},
		{"no key", wire.EncoderOptions{}, shipped},
		{"map payload", wire.EncoderOptions{}, generic},
		{"compressed", wire.EncoderOptions{CompressMin: 1}, placed()},
		{"compressed best speed", wire.EncoderOptions{CompressMin: 1, CompressionLevel: zlib.BestSpeed}, placed()},
		{"compressed huffman only", wire.EncoderOptions{CompressMin: 1, CompressionLevel: zlib.HuffmanOnly}, placed()},
		{"below threshold", wire.EncoderOptions{CompressMin: 1 << 20}, placed()},
		{"registry checked", wire.EncoderOptions{Registry: reg}, shipped},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			enc := newEncoder(t, tt.opts)
			env := mustEncode(t, enc, tt.ev)
			if env.ID != tt.ev.EventID() || env.Name != tt.ev.EventName() || env.Topic != tt.ev.EventTopic() {
				t.Errorf("envelope metadata %v %q %q, want the event's", env.ID, env.Name, env.Topic)
			}
			if env.ContentType != wire.ContentTypeJSON {
				t.Errorf("ContentType = %q", env.ContentType)
			}
			got, err := dec.Decode(env)
			if err != nil {
				t.Fatal(err)
			}
			want := reflect.ValueOf(tt.ev).Interface()
			// The decoded timestamp is the event's, in UTC, to the microsecond.
			wantTS := tt.ev.EventTimestamp().UTC().Truncate(time.Microsecond)
			ne, ok := got.(events.NotificationEvent)
			if !ok {
				t.Fatalf("decoded a %T", got)
			}
			if ts := ne.EventTimestamp(); !ts.Equal(wantTS) || ts.Location() != time.UTC {
				t.Errorf("timestamp %v, want %v UTC", ts, wantTS)
			}
			want = withTimestamp(want, wantTS)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("decoded %#v\nwant    %#v", got, want)
			}
		})
	}
}

// withTimestamp returns n with its Timestamp set to ts.
func withTimestamp(n any, ts time.Time) any {
	v := reflect.New(reflect.TypeOf(n)).Elem()
	v.Set(reflect.ValueOf(n))
	v.FieldByName("Timestamp").Set(reflect.ValueOf(ts))
	return v.Interface()
}

func TestEncodeBody(t *testing.T) {
	t.Parallel()
	var enc wire.Encoder
	n := placed()
	n.Timestamp = time.Date(2024, 5, 1, 14, 34, 56, 123456789, time.FixedZone("CEST", 2*3600))
	env := mustEncode(t, &enc, n)
	const want = `{"event_id":"0190c5a4-3b1c-7d2e-9f00-5a6b7c8d9e0f",` +
		`"event_timestamp":"2024-05-01T12:34:56.123456Z",` +
		`"event_name":"order.placed","topic":"orders",` +
		`"payload":{"order_id":"o-1","amount":3,"items":["book","pen"]}}`
	if string(env.Payload) != want {
		t.Errorf("body\n%s\nwant\n%s", env.Payload, want)
	}
	wantEnv := wire.Envelope{
		ID:          fixedID,
		Name:        "order.placed",
		Topic:       "orders",
		Key:         "customer-7",
		Timestamp:   fixedTime,
		ContentType: "application/json",
		Payload:     []byte(want),
	}
	if !reflect.DeepEqual(env, wantEnv) {
		t.Errorf("envelope %+v\nwant     %+v", env, wantEnv)
	}

	// A whole second still has six fractional digits.
	n.Timestamp = time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	env = mustEncode(t, &enc, n)
	if !bytes.Contains(env.Payload, []byte(`"event_timestamp":"2024-05-01T12:00:00.000000Z"`)) {
		t.Errorf("body %s", env.Payload)
	}
}

func TestCompression(t *testing.T) {
	t.Parallel()
	reg := newRegistry(t)
	dec := newDecoder(t, reg, wire.DecoderOptions{})
	big := placed()
	big.Payload.Items = make([]string, 200)
	for i := range big.Payload.Items {
		big.Payload.Items[i] = "item"
	}
	var plain wire.Encoder
	plainLen := len(mustEncode(t, &plain, big).Payload)

	t.Run("off by default", func(t *testing.T) {
		t.Parallel()
		env := mustEncode(t, &plain, big)
		if env.Headers != nil || env.Payload[0] != '{' {
			t.Errorf("headers %v, body starts with %q", env.Headers, env.Payload[0])
		}
	})
	t.Run("at threshold", func(t *testing.T) {
		t.Parallel()
		env := mustEncode(t, newEncoder(t, wire.EncoderOptions{CompressMin: plainLen}), big)
		if got := env.Header(wire.HeaderContentEncoding); got != wire.EncodingZlib {
			t.Fatalf("content-encoding %q", got)
		}
		if len(env.Payload) >= plainLen {
			t.Errorf("compressed %d bytes, plain %d", len(env.Payload), plainLen)
		}
		got, err := wire.DecodeAs[OrderPlaced](dec, env)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, big) {
			t.Errorf("decoded %+v", got)
		}
	})
	t.Run("below threshold", func(t *testing.T) {
		t.Parallel()
		env := mustEncode(t, newEncoder(t, wire.EncoderOptions{CompressMin: plainLen + 1}), big)
		if env.Headers != nil {
			t.Errorf("headers %v", env.Headers)
		}
	})
	t.Run("not smaller", func(t *testing.T) {
		t.Parallel()
		// A short body does not shrink: it is sent as it is.
		n := events.Notification[int]{ID: otherID, Name: "n", Timestamp: fixedTime, Payload: 7}
		env := mustEncode(t, newEncoder(t, wire.EncoderOptions{CompressMin: 1, Codec: textCodec{"a/b"}}), n)
		if env.Headers != nil || string(env.Payload) != "7" {
			t.Errorf("headers %v, body %q", env.Headers, env.Payload)
		}
	})
	t.Run("python zlib.compress", func(t *testing.T) {
		t.Parallel()
		// zlib.compress(body) in python 3.11 of the python-cqrs body with a
		// naive timestamp.
		z := mustHex(t, "789c458ecb0a833010457f45b2ee489e5af31ddd973119413026d85828e2bfd758a1cb3b67cee56e8cde"+
			"34e7e7e899ad58d76ba75013c8a1f5a09d20b8a331a09c1c0471dff52db25b7539790cf4ca18525125971a"+
			"b8012e1e425aa5ad696a219536cd5f983150f98d8ba7a54e133af285e69846778235a7f5283ef301127ea6"+
			"8865daf693ae9d1144c118e23ae7e3a0f6fd0b33b33be8")
		env := wire.Envelope{Payload: z, Headers: map[string]string{"Content-Encoding": "ZLIB"}}
		got, err := wire.DecodeAs[OrderPlaced](dec, env)
		if err != nil {
			t.Fatal(err)
		}
		want := events.Notification[OrderPlaced]{
			ID: otherID, Name: "order.placed", Topic: "output_topic", Timestamp: fixedTime,
			Payload: OrderPlaced{OrderID: "o-1", Amount: 3},
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("decoded %+v", got)
		}
	})
	t.Run("identity", func(t *testing.T) {
		t.Parallel()
		env := mustEncode(t, &plain, placed())
		env.SetHeader(wire.HeaderContentEncoding, "identity")
		if _, err := dec.Decode(env); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("exactly the limit", func(t *testing.T) {
		t.Parallel()
		env := mustEncode(t, newEncoder(t, wire.EncoderOptions{CompressMin: 1}), big)
		exact := newDecoder(t, reg, wire.DecoderOptions{MaxBodySize: plainLen})
		if _, err := exact.Decode(env); err != nil {
			t.Fatal(err)
		}
		short := newDecoder(t, reg, wire.DecoderOptions{MaxBodySize: plainLen - 1})
		checkErr(t, mustFail(short.Decode(env)), "decode", wire.ErrTooLarge, decodeSentinels)
	})
}

func mustFail(_ events.Event, err error) error { return err }

func mustHex(tb testing.TB, s string) []byte {
	tb.Helper()
	b := make([]byte, len(s)/2)
	if _, err := fmt.Sscanf(s, "%x", &b); err != nil {
		tb.Fatal(err)
	}
	return b
}

func TestDecodeErrors(t *testing.T) {
	t.Parallel()
	reg := newRegistry(t)
	dec := newDecoder(t, reg, wire.DecoderOptions{})
	var enc wire.Encoder
	good := mustEncode(t, &enc, placed())
	body := func(s string) wire.Envelope { return wire.Envelope{Payload: []byte(s)} }
	const (
		id = `"event_id":"0190c5a4-3b1c-7d2e-9f00-5a6b7c8d9e0f"`
		ts = `"event_timestamp":"2024-05-01T12:34:56.123456"`
	)
	compressed := mustEncode(t, newEncoder(t, wire.EncoderOptions{CompressMin: 1}), placed())
	with := func(env wire.Envelope, f func(*wire.Envelope)) wire.Envelope {
		env.Payload = bytes.Clone(env.Payload)
		f(&env)
		return env
	}
	// 10 MiB of zeros compress to about 10 KiB.
	bomb := wire.Envelope{Payload: zlibBytes(t, make([]byte, 10<<20)), Headers: map[string]string{wire.HeaderContentEncoding: wire.EncodingZlib}}

	tests := []struct {
		name     string
		env      wire.Envelope
		want     error
		wantName string
		wantID   uuid.UUID
	}{
		{"unknown name in envelope", with(good, func(e *wire.Envelope) {
			e.Name = "order.cancelled"
			e.Payload = []byte(`{` + id + `,"payload":{}}`)
		}), wire.ErrUnknownEvent, "order.cancelled", fixedID},
		{"unknown name in body", body(`{` + id + `,` + ts + `,"event_name":"nope","payload":{}}`), wire.ErrUnknownEvent, "nope", fixedID},
		{"malformed JSON", body(`{` + id + `,"event_name":"order.placed",`), wire.ErrMalformed, "", uuid.Nil},
		{"not an object", body(`[1,2]`), wire.ErrMalformed, "", uuid.Nil},
		{"null body", body(`null`), wire.ErrMalformed, "", uuid.Nil},
		{"empty body", body(``), wire.ErrMalformed, "", uuid.Nil},
		{"trailing garbage", body(`{` + id + `,"event_name":"order.placed"} x`), wire.ErrMalformed, "", uuid.Nil},
		{"wrong payload shape", body(`{` + id + `,` + ts + `,"event_name":"order.placed","payload":"o-1"}`), wire.ErrMalformed, "order.placed", fixedID},
		{"wrong payload field type", body(`{` + id + `,` + ts + `,"event_name":"order.placed","payload":{"amount":"3"}}`), wire.ErrMalformed, "order.placed", fixedID},
		{"bad UUID", body(`{"event_id":"not-a-uuid",` + ts + `,"event_name":"order.placed","payload":{}}`), wire.ErrMalformed, "", uuid.Nil},
		{"UUID not a string", body(`{"event_id":42,"event_name":"order.placed","payload":{}}`), wire.ErrMalformed, "", uuid.Nil},
		{"bad timestamp", body(`{` + id + `,"event_timestamp":"yesterday","event_name":"order.placed"}`), wire.ErrMalformed, "", uuid.Nil},
		{"month 13", body(`{` + id + `,"event_timestamp":"2024-13-01T00:00:00","event_name":"order.placed"}`), wire.ErrMalformed, "", uuid.Nil},
		{"epoch timestamp", body(`{` + id + `,"event_timestamp":1714566896,"event_name":"order.placed"}`), wire.ErrMalformed, "", uuid.Nil},
		{"no name", body(`{` + id + `,` + ts + `,"payload":{}}`), wire.ErrMalformed, "", fixedID},
		{"no id", body(`{` + ts + `,"event_name":"order.placed","payload":{}}`), wire.ErrMalformed, "order.placed", uuid.Nil},
		{"nil id", body(`{"event_id":"00000000-0000-0000-0000-000000000000","event_name":"order.placed"}`), wire.ErrMalformed, "order.placed", uuid.Nil},
		{"name mismatch", with(good, func(e *wire.Envelope) { e.Name = "order.shipped" }), wire.ErrMismatch, "order.shipped", fixedID},
		{"id mismatch", with(good, func(e *wire.Envelope) { e.ID = otherID }), wire.ErrMismatch, "order.placed", otherID},
		{"truncated zlib", with(compressed, func(e *wire.Envelope) { e.Payload = e.Payload[:len(e.Payload)/2] }), wire.ErrCompression, "order.placed", fixedID},
		{"zlib without checksum", with(compressed, func(e *wire.Envelope) { e.Payload = e.Payload[:len(e.Payload)-2] }), wire.ErrCompression, "order.placed", fixedID},
		{"corrupted zlib", with(compressed, func(e *wire.Envelope) { e.Payload[len(e.Payload)-1] ^= 0xff }), wire.ErrCompression, "order.placed", fixedID},
		{"bad zlib header", with(compressed, func(e *wire.Envelope) { e.Payload[0] = 0x00 }), wire.ErrCompression, "order.placed", fixedID},
		{"empty zlib", with(compressed, func(e *wire.Envelope) { e.Payload = nil }), wire.ErrCompression, "order.placed", fixedID},
		{"plain body marked zlib", with(good, func(e *wire.Envelope) { e.SetHeader(wire.HeaderContentEncoding, "zlib") }), wire.ErrCompression, "order.placed", fixedID},
		{"trailing data after zlib", with(compressed, func(e *wire.Envelope) { e.Payload = append(e.Payload, 'x') }), wire.ErrCompression, "order.placed", fixedID},
		{"decompression bomb", bomb, wire.ErrTooLarge, "", uuid.Nil},
		{"unknown encoding", with(good, func(e *wire.Envelope) { e.SetHeader(wire.HeaderContentEncoding, "gzip") }), wire.ErrUnsupported, "order.placed", fixedID},
		{"unknown content type", with(good, func(e *wire.Envelope) { e.ContentType = "application/x-protobuf" }), wire.ErrUnsupported, "order.placed", fixedID},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ev, err := dec.Decode(tt.env)
			if ev != nil {
				t.Errorf("got event %v with error", ev)
			}
			we := checkErr(t, err, "decode", tt.want, decodeSentinels)
			if we.Name != tt.wantName || we.ID != tt.wantID {
				t.Errorf("error names %q %v, want %q %v (%v)", we.Name, we.ID, tt.wantName, tt.wantID, err)
			}
			// DecodeAs fails the same way.
			_, err2 := wire.DecodeAs[OrderPlaced](dec, tt.env)
			if err2 == nil || err2.Error() != err.Error() {
				t.Errorf("DecodeAs: %v, Decode: %v", err2, err)
			}
		})
	}
}

func TestDecodeTooLargeUncompressed(t *testing.T) {
	t.Parallel()
	reg := newRegistry(t)
	var enc wire.Encoder
	env := mustEncode(t, &enc, placed())
	dec := newDecoder(t, reg, wire.DecoderOptions{MaxBodySize: len(env.Payload) - 1})
	checkErr(t, mustFail(dec.Decode(env)), "decode", wire.ErrTooLarge, decodeSentinels)
	dec = newDecoder(t, reg, wire.DecoderOptions{MaxBodySize: len(env.Payload)})
	if _, err := dec.Decode(env); err != nil {
		t.Fatal(err)
	}
}

func TestDecodeAs(t *testing.T) {
	t.Parallel()
	reg := newRegistry(t)
	dec := newDecoder(t, reg, wire.DecoderOptions{})
	var enc wire.Encoder
	env := mustEncode(t, &enc, placed())

	got, err := wire.DecodeAs[OrderPlaced](dec, env)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, placed()) {
		t.Errorf("decoded %+v", got)
	}
	_, err = wire.DecodeAs[OrderShipped](dec, env)
	we := checkErr(t, err, "decode", wire.ErrUnknownEvent, decodeSentinels)
	if we.Name != "order.placed" || we.ID != fixedID {
		t.Errorf("error names %q %v", we.Name, we.ID)
	}
}

func TestEnvelopeAndBody(t *testing.T) {
	t.Parallel()
	reg := newRegistry(t)
	dec := newDecoder(t, reg, wire.DecoderOptions{})
	var enc wire.Encoder
	env := mustEncode(t, &enc, placed())

	t.Run("bare body", func(t *testing.T) {
		t.Parallel()
		// As python-cqrs sends it: the body alone.
		got, err := wire.DecodeAs[OrderPlaced](dec, wire.Envelope{Payload: env.Payload})
		if err != nil {
			t.Fatal(err)
		}
		want := placed()
		want.Key = ""
		if !reflect.DeepEqual(got, want) {
			t.Errorf("decoded %+v", got)
		}
	})
	t.Run("envelope topic and timestamp win", func(t *testing.T) {
		t.Parallel()
		e := env
		e.Topic = "mirror.orders"
		e.Timestamp = fixedTime.Add(time.Second)
		got, err := wire.DecodeAs[OrderPlaced](dec, e)
		if err != nil {
			t.Fatal(err)
		}
		if got.Topic != "mirror.orders" || !got.Timestamp.Equal(fixedTime.Add(time.Second)) {
			t.Errorf("topic %q, timestamp %v", got.Topic, got.Timestamp)
		}
	})
	t.Run("envelope supplies what the body lacks", func(t *testing.T) {
		t.Parallel()
		e := wire.Envelope{
			ID: fixedID, Name: "order.shipped", Topic: "t", Key: "k", Timestamp: fixedTime,
			Payload: []byte(`{"payload":{"order_id":"o-9","carrier":"post"}}`),
		}
		got, err := wire.DecodeAs[OrderShipped](dec, e)
		if err != nil {
			t.Fatal(err)
		}
		want := events.Notification[OrderShipped]{
			ID: fixedID, Name: "order.shipped", Topic: "t", Key: "k", Timestamp: fixedTime,
			Payload: OrderShipped{OrderID: "o-9", Carrier: "post"},
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("decoded %+v", got)
		}
	})
	t.Run("content type with parameters", func(t *testing.T) {
		t.Parallel()
		e := env
		e.ContentType = "Application/JSON; charset=utf-8"
		if _, err := dec.Decode(e); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("absent or null payload", func(t *testing.T) {
		t.Parallel()
		for _, b := range []string{
			`{"event_id":"0190c5a4-3b1c-7d2e-9f00-5a6b7c8d9e0f","event_name":"order.placed"}`,
			`{"event_id":"0190c5a4-3b1c-7d2e-9f00-5a6b7c8d9e0f","event_name":"order.placed","payload":null}`,
		} {
			got, err := wire.DecodeAs[OrderPlaced](dec, wire.Envelope{Payload: []byte(b)})
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got.Payload, OrderPlaced{}) || !got.Timestamp.IsZero() || got.Topic != "" {
				t.Errorf("decoded %+v", got)
			}
		}
	})
	t.Run("decoded value routes by type", func(t *testing.T) {
		t.Parallel()
		ev, err := dec.Decode(env)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := ev.(events.Notification[OrderPlaced]); !ok {
			t.Errorf("decoded a %T", ev)
		}
		if k, ok := ev.(events.Keyed); !ok || k.EventKey() != "customer-7" {
			t.Errorf("key not restored: %v", ev)
		}
	})
}

func TestEncodeErrors(t *testing.T) {
	t.Parallel()
	reg := newRegistry(t)
	checked := newEncoder(t, wire.EncoderOptions{Registry: reg})
	var plain wire.Encoder
	sentinels := []error{wire.ErrInvalidEvent, wire.ErrUnknownEvent, wire.ErrInvalidOption, wire.ErrCompression}
	mod := func(f func(*events.Notification[OrderPlaced])) events.Notification[OrderPlaced] {
		n := placed()
		f(&n)
		return n
	}

	tests := []struct {
		name string
		enc  *wire.Encoder
		ev   events.NotificationEvent
		want error
	}{
		{"nil event", &plain, nil, wire.ErrInvalidEvent},
		{"nil pointer", &plain, (*events.Notification[OrderPlaced])(nil), wire.ErrInvalidEvent},
		{"empty name", &plain, mod(func(n *events.Notification[OrderPlaced]) { n.Name = "" }), wire.ErrInvalidEvent},
		{"control character in name", &plain, mod(func(n *events.Notification[OrderPlaced]) { n.Name = "order\nplaced" }), wire.ErrInvalidEvent},
		{"nil id", &plain, mod(func(n *events.Notification[OrderPlaced]) { n.ID = uuid.Nil }), wire.ErrInvalidEvent},
		{"zero timestamp", &plain, mod(func(n *events.Notification[OrderPlaced]) { n.Timestamp = time.Time{} }), wire.ErrInvalidEvent},
		{"year 10000", &plain, mod(func(n *events.Notification[OrderPlaced]) { n.Timestamp = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) }), wire.ErrInvalidEvent},
		{"year 0", &plain, mod(func(n *events.Notification[OrderPlaced]) { n.Timestamp = time.Date(0, 6, 1, 0, 0, 0, 0, time.UTC) }), wire.ErrInvalidEvent},
		{"payload not marshallable", &plain, events.NewNotification("x", make(chan int)), wire.ErrInvalidEvent},
		{"unregistered name", checked, events.NewNotification("order.cancelled", OrderPlaced{}), wire.ErrUnknownEvent},
		{"registered for another type", checked, events.NewNotification("order.placed", OrderShipped{}), wire.ErrUnknownEvent},
		{"registered for a value, got a pointer", checked, events.NewNotification("order.placed", &OrderPlaced{}), wire.ErrUnknownEvent},
		{"nil payload for a struct", checked, events.NewNotification[any]("order.placed", nil), wire.ErrUnknownEvent},
		{"nil encoder", nil, placed(), wire.ErrInvalidOption},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			env, err := tt.enc.Encode(tt.ev)
			checkErr(t, err, "encode", tt.want, sentinels)
			if !reflect.DeepEqual(env, wire.Envelope{}) {
				t.Errorf("envelope %+v with error", env)
			}
		})
	}

	// A nil payload fits a payload type whose zero value is nil.
	var r wire.Registry
	if err := wire.Register[*OrderPlaced](&r, "p"); err != nil {
		t.Fatal(err)
	}
	enc := newEncoder(t, wire.EncoderOptions{Registry: &r})
	if _, err := enc.Encode(events.NewNotification[*OrderPlaced]("p", nil)); err != nil {
		t.Fatal(err)
	}
}

func TestRegister(t *testing.T) {
	t.Parallel()
	var r wire.Registry
	regSentinels := []error{wire.ErrInvalidName, wire.ErrDuplicateName}
	if err := wire.Register[OrderPlaced](&r, "order.placed"); err != nil {
		t.Fatal(err)
	}
	// One type may have several names.
	if err := wire.Register[OrderPlaced](&r, "order.placed.v1"); err != nil {
		t.Fatal(err)
	}
	we := checkErr(t, wire.Register[OrderShipped](&r, "order.placed"), "register", wire.ErrDuplicateName, regSentinels)
	if we.Name != "order.placed" {
		t.Errorf("error names %q", we.Name)
	}
	checkErr(t, wire.Register[OrderPlaced](&r, "order.placed"), "register", wire.ErrDuplicateName, regSentinels)
	checkErr(t, wire.Register[OrderPlaced](&r, ""), "register", wire.ErrInvalidName, regSentinels)
	checkErr(t, wire.Register[OrderPlaced](&r, "a\tb"), "register", wire.ErrInvalidName, regSentinels)
	checkErr(t, wire.Register[OrderPlaced](&r, "bad\xffutf8"), "register", wire.ErrInvalidName, regSentinels)
	checkErr(t, wire.Register[OrderPlaced](nil, "x"), "register", wire.ErrInvalidName, regSentinels)

	// Joined, every problem is reported.
	err := errors.Join(wire.Register[OrderPlaced](&r, ""), wire.Register[OrderPlaced](&r, "order.placed"))
	if !errors.Is(err, wire.ErrInvalidName) || !errors.Is(err, wire.ErrDuplicateName) {
		t.Errorf("joined: %v", err)
	}

	if got, want := r.Names(), []string{"order.placed", "order.placed.v1"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Names() = %q, want %q", got, want)
	}
	typ, ok := r.Type("order.placed")
	if !ok || typ != reflect.TypeFor[events.Notification[OrderPlaced]]() {
		t.Errorf("Type = %v, %v", typ, ok)
	}
	if _, ok := r.Type("nope"); ok {
		t.Error("Type found an unregistered name")
	}
	var nilReg *wire.Registry
	if nilReg.Names() != nil {
		t.Error("nil registry has names")
	}
	if _, ok := nilReg.Type("x"); ok {
		t.Error("nil registry has a type")
	}

	// A decoder made before a registration sees it.
	dec := newDecoder(t, &r, wire.DecoderOptions{})
	var enc wire.Encoder
	env := mustEncode(t, &enc, events.NewNotification("late", OrderShipped{OrderID: "o"}))
	checkErr(t, mustFail(dec.Decode(env)), "decode", wire.ErrUnknownEvent, decodeSentinels)
	if err := wire.Register[OrderShipped](&r, "late"); err != nil {
		t.Fatal(err)
	}
	if _, err := wire.DecodeAs[OrderShipped](dec, env); err != nil {
		t.Fatal(err)
	}
}

// textCodec is a codec whose body is the bare JSON payload: the envelope
// carries the metadata, as a protobuf codec might.
type textCodec struct{ ct string }

func (c textCodec) ContentType() string { return c.ct }

func (textCodec) Marshal(_ wire.Meta, payload any) ([]byte, error) { return json.Marshal(payload) }

func (textCodec) Unmarshal(body []byte) (wire.Meta, []byte, error) { return wire.Meta{}, body, nil }

func (textCodec) UnmarshalPayload(payload []byte, v any) error { return json.Unmarshal(payload, v) }

type nilCodec struct{}

func (nilCodec) ContentType() string                    { return "" }
func (nilCodec) Marshal(wire.Meta, any) ([]byte, error) { return nil, errors.New("no") }
func (nilCodec) Unmarshal([]byte) (wire.Meta, []byte, error) {
	return wire.Meta{}, nil, errors.New("no")
}
func (nilCodec) UnmarshalPayload([]byte, any) error { return errors.New("no") }

// failingCodec fails to unmarshal with an error of its own.
type failingCodec struct{}

func (failingCodec) ContentType() string                    { return "application/x-fail" }
func (failingCodec) Marshal(wire.Meta, any) ([]byte, error) { return []byte("x"), nil }
func (failingCodec) Unmarshal([]byte) (wire.Meta, []byte, error) {
	return wire.Meta{}, nil, errors.New("cannot parse")
}
func (failingCodec) UnmarshalPayload([]byte, any) error { return errors.New("cannot parse") }

func TestCustomCodec(t *testing.T) {
	t.Parallel()
	reg := newRegistry(t)
	codec := textCodec{ct: "application/x-test"}
	enc := newEncoder(t, wire.EncoderOptions{Codec: codec, CompressMin: 1})
	dec := newDecoder(t, reg, wire.DecoderOptions{Codecs: []wire.Codec{codec, failingCodec{}}})

	n := placed()
	env := mustEncode(t, enc, n)
	if env.ContentType != "application/x-test" {
		t.Fatalf("ContentType %q", env.ContentType)
	}
	got, err := wire.DecodeAs[OrderPlaced](dec, env)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, n) {
		t.Errorf("decoded %+v", got)
	}
	// JSON is still accepted.
	var plain wire.Encoder
	if _, err := dec.Decode(mustEncode(t, &plain, n)); err != nil {
		t.Fatal(err)
	}
	// A codec's own error is made to match ErrMalformed.
	env.ContentType = "application/x-fail"
	we := checkErr(t, mustFail(dec.Decode(env)), "decode", wire.ErrMalformed, decodeSentinels)
	if !strings.Contains(we.Error(), "cannot parse") {
		t.Errorf("error %q", we)
	}
	// Without the metadata the envelope carries, the event has no name.
	env.ContentType = "application/x-test"
	env.Name = ""
	checkErr(t, mustFail(dec.Decode(env)), "decode", wire.ErrMalformed, decodeSentinels)

	// A codec replacing JSON decodes envelopes with no content type: here
	// it reads the whole python-cqrs body as the payload, whose members
	// then match no field of OrderPlaced.
	jsonish := textCodec{ct: "application/json"}
	dec2 := newDecoder(t, reg, wire.DecoderOptions{Codecs: []wire.Codec{jsonish}})
	for _, ct := range []string{"", "application/json"} {
		e := mustEncode(t, &plain, n)
		e.ContentType = ct
		got, err := wire.DecodeAs[OrderPlaced](dec2, e)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got.Payload, OrderPlaced{}) {
			t.Errorf("content type %q: JSON was used: %+v", ct, got)
		}
	}
}

func TestOptions(t *testing.T) {
	t.Parallel()
	_, err := wire.NewEncoder(wire.EncoderOptions{CompressMin: -1, CompressionLevel: 42, Codec: nilCodec{}})
	if !errors.Is(err, wire.ErrInvalidOption) {
		t.Fatalf("NewEncoder: %v", err)
	}
	for _, s := range []string{"CompressMin -1", "CompressionLevel 42", "empty content type"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not report %q", err, s)
		}
	}
	for _, level := range []int{zlib.HuffmanOnly, zlib.DefaultCompression, 0, zlib.BestSpeed, zlib.BestCompression} {
		if _, err := wire.NewEncoder(wire.EncoderOptions{CompressMin: 1, CompressionLevel: level}); err != nil {
			t.Errorf("level %d: %v", level, err)
		}
	}

	_, err = wire.NewDecoder(nil, wire.DecoderOptions{
		MaxBodySize: -1,
		Codecs:      []wire.Codec{nil, nilCodec{}, textCodec{"a/b"}, textCodec{"A/B; q=1"}},
	})
	if !errors.Is(err, wire.ErrInvalidOption) {
		t.Fatalf("NewDecoder: %v", err)
	}
	for _, s := range []string{"nil registry", "MaxBodySize -1", "Codecs[0] is nil", "Codecs[1]", "Codecs[3]"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not report %q", err, s)
		}
	}
	if strings.Contains(err.Error(), "Codecs[2]") {
		t.Errorf("error %q reports a valid codec", err)
	}

	// Methods on nil values report errors rather than panic.
	var dec *wire.Decoder
	checkErr(t, mustFail(dec.Decode(wire.Envelope{})), "decode", wire.ErrInvalidOption, nil)
	_, err = wire.DecodeAs[OrderPlaced](dec, wire.Envelope{})
	checkErr(t, err, "decode", wire.ErrInvalidOption, nil)

	// The zero Decoder decodes JSON but knows no name.
	var zero wire.Decoder
	var enc wire.Encoder
	env := mustEncode(t, &enc, placed())
	checkErr(t, mustFail(zero.Decode(env)), "decode", wire.ErrUnknownEvent, decodeSentinels)
	env.ContentType = ""
	checkErr(t, mustFail(zero.Decode(env)), "decode", wire.ErrUnknownEvent, decodeSentinels)
}

func TestErrorMessage(t *testing.T) {
	t.Parallel()
	e := &wire.Error{Op: "decode", Name: strings.Repeat("é", 40), ID: fixedID, Err: wire.ErrMalformed}
	msg := e.Error()
	if !strings.HasPrefix(msg, `wire: decode event "éé`) || !strings.Contains(msg, `…" id 0190c5a4-3b1c-7d2e-9f00-5a6b7c8d9e0f: malformed event`) {
		t.Errorf("message %q", msg)
	}
	if got := (&wire.Error{Op: "register", Name: "a\nb"}).Error(); got != `wire: register event "a\nb": unknown error` {
		t.Errorf("message %q", got)
	}
}

func TestConcurrentUse(t *testing.T) {
	t.Parallel()
	reg := newRegistry(t)
	dec := newDecoder(t, reg, wire.DecoderOptions{})
	enc := newEncoder(t, wire.EncoderOptions{CompressMin: 1, Registry: reg})
	big := placed()
	big.Payload.Items = []string{strings.Repeat("book ", 50)}

	const goroutines, rounds = 8, 50
	errs := make(chan error, goroutines*rounds+goroutines)
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			// Registration may run alongside decoding.
			if err := wire.Register[OrderShipped](reg, fmt.Sprintf("late.%d", g)); err != nil {
				errs <- err
			}
			for i := range rounds {
				n := big
				n.ID = uuid.New()
				n.Payload.Amount = g*rounds + i
				env, err := enc.Encode(n)
				if err != nil {
					errs <- err
					continue
				}
				got, err := wire.DecodeAs[OrderPlaced](dec, env)
				if err != nil {
					errs <- err
					continue
				}
				if !reflect.DeepEqual(got, n) {
					errs <- fmt.Errorf("decoded %+v, want %+v", got, n)
				}
				if _, err := dec.Decode(wire.Envelope{Payload: env.Payload[:len(env.Payload)/2], Headers: env.Headers}); !errors.Is(err, wire.ErrCompression) {
					errs <- fmt.Errorf("truncated: %w", err)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := len(reg.Names()); got != 3+goroutines {
		t.Errorf("%d names registered", got)
	}
}

// TestOnePass checks that the one-pass decoding of JSON bodies, used when the
// envelope names a registered event, agrees with the general path.
func TestOnePass(t *testing.T) {
	t.Parallel()
	reg := newRegistry(t)
	fast := newDecoder(t, reg, wire.DecoderOptions{})
	slow := newDecoder(t, reg, wire.DecoderOptions{Codecs: []wire.Codec{slowJSON{}}})
	var enc wire.Encoder
	good := mustEncode(t, &enc, placed())
	envs := map[string]wire.Envelope{
		"good":          good,
		"null payload":  {Name: "order.placed", Payload: []byte(`{"event_id":"0190c5a4-3b1c-7d2e-9f00-5a6b7c8d9e0f","payload":null}`)},
		"wrong shape":   {Name: "order.placed", Payload: []byte(`{"event_id":"0190c5a4-3b1c-7d2e-9f00-5a6b7c8d9e0f","payload":[]}`)},
		"bad id":        {Name: "order.placed", Payload: []byte(`{"event_id":"x","payload":[]}`)},
		"name mismatch": {Name: "order.shipped", Payload: good.Payload},
		"generic":       {Name: "generic", Payload: []byte(`{"event_id":"0190c5a4-3b1c-7d2e-9f00-5a6b7c8d9e0f","payload":{"a":[1,"b"]}}`)},
	}
	for name, env := range envs {
		ev, err := fast.Decode(env)
		sev, serr := slow.Decode(env)
		if !reflect.DeepEqual(ev, sev) || fmt.Sprint(err) != fmt.Sprint(serr) {
			t.Errorf("%s: one pass %#v, %v\ngeneral %#v, %v", name, ev, err, sev, serr)
		}
		n, err := wire.DecodeAs[OrderPlaced](fast, env)
		sn, serr := wire.DecodeAs[OrderPlaced](slow, env)
		if !reflect.DeepEqual(n, sn) || fmt.Sprint(err) != fmt.Sprint(serr) {
			t.Errorf("%s: DecodeAs one pass %#v, %v\ngeneral %#v, %v", name, n, err, sn, serr)
		}
	}
}
