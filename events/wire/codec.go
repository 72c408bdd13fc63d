package wire

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"
)

// ContentTypeJSON is the content type of the [JSON] codec.
const ContentTypeJSON = "application/json"

// Meta is what a body may say about its event besides the payload. A codec
// whose bodies carry no metadata (a bare protobuf message, say) returns the
// zero Meta from Unmarshal; the [Envelope] then supplies it.
type Meta struct {
	ID        uuid.UUID
	Name      string
	Topic     string
	Timestamp time.Time
}

// Codec turns an event's metadata and payload into a body and back. [JSON]
// is the default; others (protobuf, say) can live in their own modules.
//
// Decoding is in two steps because the payload type is known only once the
// event name is: Unmarshal parses the metadata and isolates the payload, the
// [Decoder] looks the name up in its [Registry], then UnmarshalPayload
// decodes the payload into a value of the registered type.
//
// A Codec must be safe for concurrent use. Its errors are wrapped by the
// encoder and the decoder, which make them match [ErrInvalidEvent] or
// [ErrMalformed].
type Codec interface {
	// ContentType is the media type of the bodies the codec writes, e.g.
	// "application/json"; it goes into [Envelope.ContentType].
	ContentType() string
	// Marshal returns the body of an event with metadata m and payload
	// payload. m.Timestamp is in UTC, truncated to the microsecond.
	Marshal(m Meta, payload any) ([]byte, error)
	// Unmarshal parses body and returns the metadata it carries (zero
	// fields for what it does not carry) and the payload, still encoded, or
	// nil if the body has none. The payload may alias body.
	Unmarshal(body []byte) (Meta, []byte, error)
	// UnmarshalPayload decodes payload, as returned by Unmarshal, into v,
	// a non-nil pointer.
	UnmarshalPayload(payload []byte, v any) error
}

// JSON is the [Codec] of python-cqrs's notification events. A body is one
// JSON object:
//
//	{"event_id":"0190c5a4-...","event_timestamp":"2024-05-01T12:34:56.123456Z",
//	 "event_name":"order.placed","topic":"orders","payload":{...}}
//
// event_id is a UUID string. event_timestamp is written in RFC 3339, in UTC
// with a "Z" and exactly six fractional digits (python's datetime holds
// microseconds); reading accepts RFC 3339 with any zone ("Z", "+00:00",
// "+02:00"), with or without fractional seconds, and python's naive
// isoformat() ("2024-05-01T12:34:56.123456", taken as UTC), with "T" or a
// space between date and time. The payload is the [encoding/json] encoding
// of the event's payload.
//
// Unmarshal rejects a body that is not a JSON object. Unknown members are
// ignored, so producers may add some; absent members are left zero, and a
// payload that is absent or null leaves the zero payload. The zero JSON is
// ready to use.
type JSON struct{}

// jsonBody is the body as written: the member order is python-cqrs's.
type jsonBody struct {
	ID        string `json:"event_id"`
	Timestamp string `json:"event_timestamp"`
	Name      string `json:"event_name"`
	Topic     string `json:"topic"`
	Payload   any    `json:"payload"`
}

// jsonBodyIn is the body as read: members may be missing or null. Payload
// holds a pointer to decode the payload into.
type jsonBodyIn struct {
	ID        *string `json:"event_id"`
	Timestamp *string `json:"event_timestamp"`
	Name      *string `json:"event_name"`
	Topic     *string `json:"topic"`
	Payload   any     `json:"payload"`
}

// ContentType returns [ContentTypeJSON].
func (JSON) ContentType() string { return ContentTypeJSON }

// Marshal returns the python-cqrs body of an event.
func (JSON) Marshal(m Meta, payload any) ([]byte, error) {
	return json.Marshal(jsonBody{
		ID:        m.ID.String(),
		Timestamp: formatTimestamp(m.Timestamp),
		Name:      m.Name,
		Topic:     m.Topic,
		Payload:   payload,
	})
}

// Unmarshal parses a python-cqrs body. Its errors match [ErrMalformed].
func (JSON) Unmarshal(body []byte) (Meta, []byte, error) {
	var raw json.RawMessage
	m, err := unmarshalJSON(body, &raw, Meta{})
	if err != nil {
		return Meta{}, nil, err
	}
	payload := []byte(raw)
	if bytes.Equal(payload, []byte("null")) {
		payload = nil
	}
	return m, payload, nil
}

// unmarshalJSON parses a python-cqrs body, decoding its payload into
// payload, a non-nil pointer (left untouched if the payload is absent or
// null). Its errors match ErrMalformed. hint's Name and Topic, when the
// body has the same, are returned rather than copies.
func unmarshalJSON(body []byte, payload any, hint Meta) (Meta, error) {
	if m, ok := fastJSON(body, payload, hint); ok {
		return m, nil
	}
	return fullJSON(body, payload)
}

// fullJSON is unmarshalJSON without the fast path.
func fullJSON(body []byte, payload any) (Meta, error) {
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return Meta{}, fmt.Errorf("%w: body is not a JSON object", ErrMalformed)
	}
	// An interface holding a non-nil pointer is decoded into the pointee.
	in := jsonBodyIn{Payload: payload}
	if err := json.Unmarshal(body, &in); err != nil {
		return Meta{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	var m Meta
	if in.ID != nil {
		id, err := uuid.Parse(*in.ID)
		if err != nil {
			return Meta{}, fmt.Errorf("%w: event_id %s: %w", ErrMalformed, quote(*in.ID), err)
		}
		m.ID = id
	}
	if in.Timestamp != nil {
		ts, err := parseTimestamp(*in.Timestamp)
		if err != nil {
			return Meta{}, fmt.Errorf("%w: event_timestamp: %w", ErrMalformed, err)
		}
		m.Timestamp = ts
	}
	if in.Name != nil {
		m.Name = *in.Name
	}
	if in.Topic != nil {
		m.Topic = *in.Topic
	}
	return m, nil
}

// UnmarshalPayload decodes a JSON payload into v. Its errors match
// [ErrMalformed].
func (JSON) UnmarshalPayload(payload []byte, v any) error {
	if err := json.Unmarshal(payload, v); err != nil {
		return fmt.Errorf("%w: payload: %w", ErrMalformed, err)
	}
	return nil
}

// timestampLayout is what [JSON] writes: RFC 3339, UTC, microseconds.
const timestampLayout = "2006-01-02T15:04:05.000000Z07:00"

// formatTimestamp formats t as the JSON codec writes it.
func formatTimestamp(t time.Time) string {
	return t.UTC().Format(timestampLayout)
}

// parseTimestamp parses an RFC 3339 timestamp with or without a zone (a
// naive one is UTC), and returns it in UTC.
func parseTimestamp(s string) (time.Time, error) {
	// "YYYY-MM-DD" then a separator: python's isoformat(sep=" ") and
	// str(datetime) use a space.
	if len(s) > 10 && (s[10] == ' ' || s[10] == 't') {
		s = s[:10] + "T" + s[11:]
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		// Naive: no zone. time.Parse accepts fractional seconds after the
		// seconds even though the layout has none, and returns UTC.
		if t, err = time.Parse("2006-01-02T15:04:05", s); err != nil {
			return time.Time{}, fmt.Errorf("%s is neither RFC 3339 nor a naive ISO 8601 date and time", quote(s))
		}
	}
	t = t.UTC()
	if !inRange(t) {
		return time.Time{}, fmt.Errorf("%s is not within years 1 to 9999 in UTC", quote(s))
	}
	return t, nil
}

// inRange reports whether t (in UTC) is within years 1 to 9999: the range
// of python's datetime, which RFC 3339 can write.
func inRange(t time.Time) bool {
	y := t.UTC().Year()
	return y >= 1 && y <= 9999
}
