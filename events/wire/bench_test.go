package wire_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/events/wire"
)

// benchEvent is a typical event: a few fields and a short list.
func benchEvent() events.Notification[OrderPlaced] {
	n := placed()
	n.Payload.Items = []string{"book", "pen", "notebook", "ink", "stamp"}
	return n
}

// bigEvent has a body of a few KiB, worth compressing.
func bigEvent() events.Notification[OrderPlaced] {
	n := placed()
	n.Payload.Items = make([]string, 100)
	for i := range n.Payload.Items {
		n.Payload.Items[i] = strings.Repeat("item ", 4)
	}
	return n
}

// BenchmarkEncode compares Encode with the baseline, json.Marshal of the same
// events.Notification.
func BenchmarkEncode(b *testing.B) {
	zenc := newEncoder(b, wire.EncoderOptions{CompressMin: 1})
	for _, ev := range []struct {
		name string
		n    events.Notification[OrderPlaced]
	}{{"small", benchEvent()}, {"big", bigEvent()}} {
		b.Run(ev.name+"/baseline-json.Marshal", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := json.Marshal(ev.n); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(ev.name+"/wire", func(b *testing.B) {
			var enc wire.Encoder
			b.ReportAllocs()
			for b.Loop() {
				if _, err := enc.Encode(ev.n); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(ev.name+"/wire-zlib", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := zenc.Encode(ev.n); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkDecode compares Decode with the baseline, json.Unmarshal of the
// same body into an events.Notification.
func BenchmarkDecode(b *testing.B) {
	dec := newDecoder(b, newRegistry(b), wire.DecoderOptions{})
	zenc := newEncoder(b, wire.EncoderOptions{CompressMin: 1})
	for _, ev := range []struct {
		name string
		n    events.Notification[OrderPlaced]
	}{{"small", benchEvent()}, {"big", bigEvent()}} {
		var enc wire.Encoder
		env := mustEncode(b, &enc, ev.n)
		zenv := mustEncode(b, zenc, ev.n)
		b.Run(ev.name+"/baseline-json.Unmarshal", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				var n events.Notification[OrderPlaced]
				if err := json.Unmarshal(env.Payload, &n); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(ev.name+"/wire-Decode", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := dec.Decode(env); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(ev.name+"/wire-DecodeAs", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := wire.DecodeAs[OrderPlaced](dec, env); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(ev.name+"/wire-zlib", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := dec.Decode(zenv); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkHeaders measures a ToHeaders and FromHeaders round trip.
func BenchmarkHeaders(b *testing.B) {
	env := fullEnvelope()
	b.ReportAllocs()
	for b.Loop() {
		h, err := wire.ToHeaders(env)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := wire.FromHeaders(h); err != nil {
			b.Fatal(err)
		}
	}
}
