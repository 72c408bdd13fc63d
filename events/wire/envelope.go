package wire

import (
	"time"

	"github.com/google/uuid"
)

// Envelope is a notification event in transit: what an outbox row holds, what
// a broker message carries, and what a consumer decodes. Payload is already
// encoded (by a [Codec]); the other fields travel beside it (as columns, broker
// headers or message keys), so a relay or a consumer can route, order and
// deduplicate a message without decoding its body.
type Envelope struct {
	// ID identifies the event (UUIDv7). Consumers deduplicate by it.
	ID uuid.UUID
	// Name is the event name registered for the payload type, e.g. "order.placed".
	Name string
	// Topic is the destination topic, subject or routing key.
	Topic string
	// Key is the partition key: events with the same key are sent, and
	// delivered on brokers that partition, in order. Empty means no ordering
	// requirement beyond the transport's own.
	Key string
	// Timestamp is when the event was created, in UTC.
	Timestamp time.Time
	// CorrelationID is shared by everything one incoming request or message
	// caused, across processes.
	CorrelationID string
	// CausationID is the id of the event or request that caused this event.
	CausationID string
	// ContentType is the media type of Payload, e.g. "application/json".
	ContentType string
	// Headers are extra metadata (tracing, compression marker, user values).
	Headers map[string]string
	// Payload is the encoded body.
	Payload []byte
}

// Header returns the value of header name in e.Headers, or "". An exact
// match is preferred; otherwise names are compared ignoring ASCII case,
// since some brokers change the case of header names.
func (e Envelope) Header(name string) string {
	v, _ := lookupHeader(e.Headers, name)
	return v
}

// SetHeader sets header name to value in e.Headers, allocating the map if
// needed. Use it rather than replacing Headers, which holds the compression
// marker ([HeaderContentEncoding]) set by the [Encoder].
func (e *Envelope) SetHeader(name, value string) {
	if e.Headers == nil {
		e.Headers = make(map[string]string, 2)
	}
	e.Headers[name] = value
}
