package wire

import (
	"encoding/json"
	"reflect"
	"testing"
)

// FuzzJSONFastPath checks that the fast path and encoding/json agree: when
// the fast path reads a body, the full decoder reads it too, with the same
// metadata and the same payload.
func FuzzJSONFastPath(f *testing.F) {
	for _, body := range []string{
		`{"event_id":"0190c5a4-7b1e-7c3e-9d2a-5f6e7d8c9b0a","event_timestamp":"2024-05-01T12:34:56.123456Z","event_name":"order.placed","topic":"orders","payload":{"id":"o-1","n":[1,2.5,{"x":"}\"]"}]}}`,
		`{"payload":"a string","event_name":"x"}`,
		` { "event_name" : "x" , "payload" : null , "topic" : null } `,
		`{}`,
		`{"payload":{"a":1}}trailing`,
		`{"payload":1 2}`,
		`{"payload":{"a":1},"payload":{"b":2}}`,
		`{"EVENT_NAME":"x"}`,
		`{"event_name":"caf\u00e9"}`,
		`{"event_name":"café"}`,
		`{"event_id":"not a uuid"}`,
		`{"event_timestamp":"2024-05-01 12:34:56"}`,
		`{"payload":[1,2,]}`,
		`{"payload":tru}`,
		`{"payload":true,"unknown":1}`,
		`{"payload":"\"}"}`,
		`{"event_name":"x",}`,
		`[]`,
		``,
	} {
		f.Add([]byte(body))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var fastPayload any
		fm, ok := fastJSON(body, &fastPayload, Meta{Name: "x", Topic: "orders"})
		if !ok {
			return
		}
		var fullPayload any
		m, err := fullJSON(body, &fullPayload)
		if err != nil {
			t.Fatalf("the fast path read %q, the full decoder failed: %v", body, err)
		}
		if fm != m {
			t.Fatalf("metadata of %q: fast %+v, full %+v", body, fm, m)
		}
		if !reflect.DeepEqual(fastPayload, fullPayload) {
			t.Fatalf("payload of %q: fast %#v, full %#v", body, fastPayload, fullPayload)
		}
		var raw json.RawMessage
		if _, ok := fastJSON(body, &raw, Meta{}); !ok {
			t.Fatalf("the fast path read %q into any, not into a RawMessage", body)
		}
	})
}

// TestJSONFastPathTakesWhatJSONWrites checks that bodies as [JSON] writes
// them take the fast path.
func TestJSONFastPathTakesWhatJSONWrites(t *testing.T) {
	t.Parallel()
	body, err := JSON{}.Marshal(Meta{Name: "order.placed", Topic: "orders"}, map[string]any{"id": "o-1", "q": `"quoted"`})
	if err != nil {
		t.Fatal(err)
	}
	var p map[string]any
	if _, ok := fastJSON(body, &p, Meta{}); !ok {
		t.Fatalf("%s did not take the fast path", body)
	}
	if p["q"] != `"quoted"` {
		t.Fatalf("payload %v", p)
	}
}
