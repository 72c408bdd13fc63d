package nats

import (
	"fmt"
	"strings"

	"github.com/google/uuid"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gocqrs/cqrs/events/brokers"
	"github.com/gocqrs/cqrs/events/wire"
)

// serverPrefix starts the names of the headers JetStream interprets
// (Nats-Msg-Id, Nats-Expected-Stream, ...). They are not the producer's
// metadata: Message.Headers leaves them out, and a dead letter does not
// copy them.
const serverPrefix = "Nats-"

// isServerHeader reports whether name is one of JetStream's own headers.
func isServerHeader(name string) bool {
	return len(name) >= len(serverPrefix) && strings.EqualFold(name[:len(serverPrefix)], serverPrefix)
}

// headerOf returns the NATS headers of env: wire.ToHeaders(env), plus
// [brokers.HeaderKey] when env has a key, plus Nats-Msg-Id set to the event
// id (when it has one), so that the stream drops a second publish of the
// event within its duplicate window. It fails, with an error matching [ErrInvalidMessage],
// when a header cannot travel unchanged.
func headerOf(env wire.Envelope) (natsgo.Header, error) {
	h, err := wire.ToHeaders(env)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidMessage, err)
	}
	out := make(natsgo.Header, len(h)+2)
	// One array holds every value; each header gets a slice of length 1.
	vals := make([]string, 0, len(h)+2)
	set := func(k, v string) {
		vals = append(vals, v)
		n := len(vals)
		out[k] = vals[n-1 : n : n]
	}
	for k, v := range h {
		if err := checkHeader(k, v); err != nil {
			return nil, err
		}
		set(k, v)
	}
	if env.Key != "" {
		if err := checkHeader(brokers.HeaderKey, env.Key); err != nil {
			return nil, err
		}
		set(brokers.HeaderKey, env.Key)
	}
	if env.ID != uuid.Nil {
		set(jetstream.MsgIDHeader, env.ID.String())
	}
	return out, nil
}

// checkHeader reports why NATS cannot carry header name: value unchanged.
// The client refuses names with a colon, white space or control
// characters, and trims values and turns CR and LF in them into spaces.
func checkHeader(name, value string) error {
	if !knownName(name) {
		if name == "" {
			return fmt.Errorf("%w: empty header name", ErrInvalidMessage)
		}
		for i := range len(name) {
			if c := name[i]; c <= ' ' || c >= 0x7f || c == ':' {
				return fmt.Errorf("%w: header name %q: NATS header names are printable ASCII without ':'", ErrInvalidMessage, name)
			}
		}
		if isServerHeader(name) {
			return fmt.Errorf("%w: header %q: names starting with %q are JetStream's", ErrInvalidMessage, name, serverPrefix)
		}
	}
	if n := len(value); n > 0 {
		if c := value[0]; c == ' ' || c == '\t' {
			return fmt.Errorf("%w: header %q: the value starts with white space, which NATS trims", ErrInvalidMessage, name)
		}
		if c := value[n-1]; c == ' ' || c == '\t' {
			return fmt.Errorf("%w: header %q: the value ends with white space, which NATS trims", ErrInvalidMessage, name)
		}
		for i := range n {
			if c := value[i]; c == '\r' || c == '\n' {
				return fmt.Errorf("%w: header %q: the value holds CR or LF, which NATS turns into spaces", ErrInvalidMessage, name)
			}
		}
	}
	return nil
}

// knownName reports whether name is one of the headers package wire
// writes, which are valid NATS header names.
func knownName(name string) bool {
	switch name {
	case wire.HeaderEventName, wire.HeaderEventID, wire.HeaderEventTimestamp, wire.HeaderCorrelationID,
		wire.HeaderCausationID, wire.HeaderContentType, wire.HeaderContentEncoding, wire.HeaderTraceparent,
		wire.HeaderTracestate, brokers.HeaderKey:
		return true
	}
	return false
}

// flatten returns the headers of a received message as the runtime wants
// them: the first value of each name, without JetStream's own headers and
// without the key header, which becomes Message.Key. The key is looked up
// ignoring case, in case a relay changed it.
func flatten(h natsgo.Header) (headers map[string]string, key string) {
	headers = make(map[string]string, len(h))
	keyName := ""
	for k, vs := range h {
		if len(vs) == 0 || isServerHeader(k) {
			continue
		}
		if strings.EqualFold(k, brokers.HeaderKey) {
			// Prefer the exact name; else the first in sorted order, so the
			// result does not depend on map iteration.
			if keyName == "" || k == brokers.HeaderKey || (keyName != brokers.HeaderKey && k < keyName) {
				keyName, key = k, vs[0]
			}
			continue
		}
		headers[k] = vs[0]
	}
	return headers, key
}

// eventID returns the event id a published message carries in its
// Nats-Msg-Id header, or uuid.Nil.
func eventID(m *natsgo.Msg) uuid.UUID {
	id, err := uuid.Parse(m.Header.Get(jetstream.MsgIDHeader))
	if err != nil {
		return uuid.Nil
	}
	return id
}
