package wire

import (
	"fmt"
	"maps"
	"strings"
	"time"

	"github.com/google/uuid"
)

// Header names: what a broker message carries beside its body. Names are
// lower case; [FromHeaders] and [Envelope.Header] match them ignoring ASCII
// case, because some brokers change the case of header names.
const (
	// HeaderEventName carries [Envelope.Name].
	HeaderEventName = "event-name"
	// HeaderEventID carries [Envelope.ID], as a UUID string.
	HeaderEventID = "event-id"
	// HeaderEventTimestamp carries [Envelope.Timestamp], in RFC 3339 with
	// nanoseconds, in UTC.
	HeaderEventTimestamp = "event-timestamp"
	// HeaderCorrelationID carries [Envelope.CorrelationID].
	HeaderCorrelationID = "correlation-id"
	// HeaderCausationID carries [Envelope.CausationID].
	HeaderCausationID = "causation-id"
	// HeaderContentType carries [Envelope.ContentType].
	HeaderContentType = "content-type"
	// HeaderContentEncoding marks a compressed body; it lives in
	// [Envelope.Headers]. Its only value besides "" and "identity" is
	// [EncodingZlib].
	HeaderContentEncoding = "content-encoding"
	// HeaderTraceparent is the W3C trace context header; it lives in
	// [Envelope.Headers].
	HeaderTraceparent = "traceparent"
	// HeaderTracestate is the W3C trace state header; it lives in
	// [Envelope.Headers].
	HeaderTracestate = "tracestate"
)

// headerNames lists the headers this package names: first the six that
// carry an Envelope field (they may not appear in Envelope.Headers), then
// the others, which FromHeaders writes in lower case.
func headerNames() [9]string {
	return [...]string{
		HeaderEventName,
		HeaderEventID,
		HeaderEventTimestamp,
		HeaderCorrelationID,
		HeaderCausationID,
		HeaderContentType,
		HeaderContentEncoding,
		HeaderTraceparent,
		HeaderTracestate,
	}
}

// numFieldHeaders is how many of headerNames carry a field.
const numFieldHeaders = 6

// headerTimestampLayout keeps every digit: headers are read back by Go.
const headerTimestampLayout = time.RFC3339Nano

// ToHeaders returns the flat header map a broker carries beside the body of
// env: env.Headers, plus one header per non-empty field among Name, ID,
// Timestamp, CorrelationID, CausationID and ContentType (see the Header
// constants). Payload, Topic and Key are left out: brokers carry them
// natively (message body, topic or subject, message key). The result is a
// new map; env is not modified.
//
// [FromHeaders] reverses it: FromHeaders(ToHeaders(env)) equals env except
// that Payload, Topic and Key are empty, Timestamp is in UTC without a
// monotonic clock reading, and Headers is nil rather than empty when env has
// no extra header.
//
// ToHeaders fails, with an error matching [ErrReservedHeader], if env.Headers
// holds a name that is reserved for a field (compared ignoring case): those
// values would be lost or would override the fields; and with one matching
// [ErrInvalidEvent] if the timestamp is not within years 1 to 9999 (in UTC),
// the range python's datetime and RFC 3339 share. An Envelope made by an
// [Encoder] never fails.
func ToHeaders(env Envelope) (map[string]string, error) {
	for k := range env.Headers {
		if i := headerIndex(k); i >= 0 && i < numFieldHeaders {
			return nil, &Error{Op: "headers", Name: env.Name, ID: env.ID,
				Err: fmt.Errorf("%w: %s is carried by an Envelope field; set the field instead", ErrReservedHeader, quote(k))}
		}
	}
	h := make(map[string]string, len(env.Headers)+numFieldHeaders)
	maps.Copy(h, env.Headers)
	set := func(k, v string) {
		if v != "" {
			h[k] = v
		}
	}
	set(HeaderEventName, env.Name)
	if env.ID != uuid.Nil {
		h[HeaderEventID] = env.ID.String()
	}
	if !env.Timestamp.IsZero() {
		ts := env.Timestamp.UTC()
		if !inRange(ts) {
			return nil, &Error{Op: "headers", Name: env.Name, ID: env.ID,
				Err: fmt.Errorf("%w: timestamp %v is not within years 1 to 9999", ErrInvalidEvent, ts)}
		}
		h[HeaderEventTimestamp] = ts.Format(headerTimestampLayout)
	}
	set(HeaderCorrelationID, env.CorrelationID)
	set(HeaderCausationID, env.CausationID)
	set(HeaderContentType, env.ContentType)
	return h, nil
}

// FromHeaders returns an Envelope whose metadata comes from the broker
// headers h, as written by [ToHeaders]; the caller then sets Payload, Topic
// and Key from the broker message. Header names are matched ignoring ASCII
// case. Headers that carry no field go to Envelope.Headers (nil if there is
// none), [HeaderContentEncoding], [HeaderTraceparent] and [HeaderTracestate]
// under their lower-case names, any other as it is. h is not modified.
//
// FromHeaders fails, with an error matching [ErrMalformed], if the event id
// is not a UUID, the timestamp is not one the [JSON] codec reads (RFC 3339,
// or naive and taken as UTC), or two names that differ
// only in case carry different values for one known header. A header
// that is absent or empty leaves its field zero: decoding takes it from
// the body, if the body has it.
func FromHeaders(h map[string]string) (Envelope, error) {
	var (
		env    Envelope
		fields [numFieldHeaders]string
		seen   [numFieldHeaders]bool
	)
	names := headerNames()
	for k, v := range h {
		i := headerIndex(k)
		switch {
		case i < 0:
			if env.Headers == nil {
				env.Headers = make(map[string]string, len(h))
			}
			env.Headers[k] = v
		case i < numFieldHeaders:
			if seen[i] && fields[i] != v {
				return Envelope{}, conflictingHeaders(names[i])
			}
			fields[i], seen[i] = v, true
		default:
			canon := names[i]
			if env.Headers == nil {
				env.Headers = make(map[string]string, len(h))
			}
			if prev, dup := env.Headers[canon]; dup && prev != v {
				return Envelope{}, conflictingHeaders(canon)
			}
			env.Headers[canon] = v
		}
	}
	env.Name = fields[0]
	env.CorrelationID = fields[3]
	env.CausationID = fields[4]
	env.ContentType = fields[5]
	if s := fields[1]; s != "" {
		id, err := uuid.Parse(s)
		if err != nil {
			return Envelope{}, &Error{Op: "headers", Name: env.Name,
				Err: fmt.Errorf("%w: header %s %s: %w", ErrMalformed, HeaderEventID, quote(s), err)}
		}
		env.ID = id
	}
	if s := fields[2]; s != "" {
		ts, err := parseTimestamp(s)
		if err != nil {
			return Envelope{}, &Error{Op: "headers", Name: env.Name, ID: env.ID,
				Err: fmt.Errorf("%w: header %s: %w", ErrMalformed, HeaderEventTimestamp, err)}
		}
		env.Timestamp = ts
	}
	return env, nil
}

func conflictingHeaders(name string) error {
	return &Error{Op: "headers", Err: fmt.Errorf("%w: conflicting values for header %s", ErrMalformed, quote(name))}
}

// headerIndex returns the index in headerNames of the header k names,
// ignoring ASCII case, or -1.
func headerIndex(k string) int {
	for i, c := range headerNames() {
		if len(k) == len(c) && strings.EqualFold(k, c) {
			return i
		}
	}
	return -1
}

// lookupHeader returns h[name], or failing that the value of a name equal to
// name ignoring ASCII case (the first in sorted order, so the result does not
// depend on map iteration), and whether one was found.
func lookupHeader(h map[string]string, name string) (string, bool) {
	if v, ok := h[name]; ok {
		return v, true
	}
	found, value, ok := "", "", false
	for k, v := range h {
		if strings.EqualFold(k, name) && (!ok || k < found) {
			found, value, ok = k, v, true
		}
	}
	return value, ok
}
