package wire

import (
	"encoding/json"

	"github.com/google/uuid"
)

// The JSON fast path. Decoding a python-cqrs body with encoding/json
// validates the whole body, then decodes each member by reflection through
// pointer fields: about 1.5 µs for a small event, most of a consumer's
// work per message (events/brokers BenchmarkRuntime). Bodies are nearly
// always exactly as [JSON] writes them, so a body in that shape is read by
// a scanner that isolates the members and leaves only the payload to
// encoding/json; anything else (an unknown, duplicate or differently cased
// member, an escape or a byte outside printable ASCII in a metadata string,
// a malformed document) is left to the full decoder, which alone reports
// errors. FuzzJSONFastPath checks that both agree.

// jsonMember indexes the members the scanner reads.
type jsonMember int

const (
	memberID jsonMember = iota
	memberTimestamp
	memberName
	memberTopic
	numMetaMembers
	memberPayload = numMetaMembers
)

// scannedBody is what the scanner found: the metadata strings (set[i] when
// present and not null) and the payload's bytes (nil when absent).
type scannedBody struct {
	meta    [numMetaMembers][]byte
	set     [numMetaMembers]bool
	payload []byte
}

// scanJSON reads body if it is in the plain shape described above; ok is
// false otherwise, and says nothing about the body's validity.
func scanJSON(body []byte) (s scannedBody, ok bool) {
	var seen [numMetaMembers + 1]bool
	i := skipSpace(body, 0)
	if i >= len(body) || body[i] != '{' {
		return s, false
	}
	i = skipSpace(body, i+1)
	if i < len(body) && body[i] == '}' {
		return s, skipSpace(body, i+1) == len(body)
	}
	for {
		key, next, ok := plainString(body, i)
		if !ok {
			return s, false
		}
		m, known := memberOf(key)
		if !known || seen[m] {
			return s, false
		}
		seen[m] = true
		i = skipSpace(body, next)
		if i >= len(body) || body[i] != ':' {
			return s, false
		}
		i = skipSpace(body, i+1)
		switch {
		case m == memberPayload:
			end, ok := valueEnd(body, i)
			if !ok {
				return s, false
			}
			s.payload, i = body[i:end], end
		case hasPrefix(body[i:], "null"):
			i += len("null")
		default:
			v, next, ok := plainString(body, i)
			if !ok {
				return s, false
			}
			s.meta[m], s.set[m], i = v, true, next
		}
		i = skipSpace(body, i)
		if i >= len(body) {
			return s, false
		}
		switch body[i] {
		case ',':
			i = skipSpace(body, i+1)
		case '}':
			return s, skipSpace(body, i+1) == len(body)
		default:
			return s, false
		}
	}
}

// fastJSON decodes body on the fast path into payload (a non-nil pointer)
// and returns its metadata, or reports false: the body is then to be
// decoded in full. payload may have been written to when it reports false,
// in which case the full decoder fails on the same payload too. A Name or
// Topic equal to hint's is hint's string, not a copy.
func fastJSON(body []byte, payload any, hint Meta) (Meta, bool) {
	s, ok := scanJSON(body)
	if !ok {
		return Meta{}, false
	}
	var m Meta
	if s.set[memberID] {
		id, err := uuid.ParseBytes(s.meta[memberID])
		if err != nil {
			return Meta{}, false
		}
		m.ID = id
	}
	if s.set[memberTimestamp] {
		ts, err := parseTimestamp(string(s.meta[memberTimestamp]))
		if err != nil {
			return Meta{}, false
		}
		m.Timestamp = ts
	}
	m.Name, m.Topic = reuse(s.meta[memberName], hint.Name), reuse(s.meta[memberTopic], hint.Topic)
	if s.payload != nil && json.Unmarshal(s.payload, payload) != nil {
		return Meta{}, false
	}
	return m, true
}

// reuse returns b as a string: known, when equal, rather than a copy.
func reuse(b []byte, known string) string {
	if string(b) == known {
		return known
	}
	return string(b)
}

func memberOf(key []byte) (jsonMember, bool) {
	switch string(key) { // no allocation: the conversion is only compared
	case "event_id":
		return memberID, true
	case "event_timestamp":
		return memberTimestamp, true
	case "event_name":
		return memberName, true
	case "topic":
		return memberTopic, true
	case "payload":
		return memberPayload, true
	}
	return 0, false
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

func hasPrefix(b []byte, p string) bool { return len(b) >= len(p) && string(b[:len(p)]) == p }

// plainString reads the JSON string at b[i] if it holds only printable
// ASCII and no escape, returning its contents and the index after it.
func plainString(b []byte, i int) (v []byte, next int, ok bool) {
	if i >= len(b) || b[i] != '"' {
		return nil, 0, false
	}
	for j := i + 1; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			return b[i+1 : j], j + 1, true
		case c == '\\' || c < 0x20 || c >= 0x7f:
			return nil, 0, false
		}
	}
	return nil, 0, false
}

// valueEnd returns the index just after the JSON value starting at b[i],
// tracking strings and nesting only: encoding/json validates the value.
func valueEnd(b []byte, i int) (int, bool) {
	if i >= len(b) {
		return 0, false
	}
	switch b[i] {
	case '{', '[', '"':
	default: // a number or a literal runs to the next delimiter
		j := i
		for j < len(b) && b[j] != ',' && b[j] != '}' && b[j] != ']' &&
			b[j] != ' ' && b[j] != '\t' && b[j] != '\n' && b[j] != '\r' {
			j++
		}
		return j, j > i
	}
	depth, inString := 0, false
	for j := i; j < len(b); j++ {
		c := b[j]
		if inString {
			switch c {
			case '\\':
				j++
			case '"':
				inString = false
				if depth == 0 {
					return j + 1, true
				}
			}
			continue
		}
		switch c {
		case '"':
			inString = true
		case '{', '[':
			depth++
		case '}', ']':
			depth--
			if depth == 0 {
				return j + 1, true
			}
			if depth < 0 {
				return 0, false
			}
		}
	}
	return 0, false
}
