package kafka

import (
	"cmp"
	"encoding/hex"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gocqrs/cqrs/events/wire"
)

// The record headers of an envelope are those of wire.ToHeaders, written
// straight into the batch's buffers rather than through a map: the six
// headers of the envelope's fields, in this order, when not empty, then
// env.Headers in name order. TestRecordHeaders holds them equal.

// fieldHeaders are the names wire.ToHeaders reserves for the envelope's
// fields.
var fieldHeaders = [...]string{
	wire.HeaderEventName,
	wire.HeaderEventID,
	wire.HeaderEventTimestamp,
	wire.HeaderCorrelationID,
	wire.HeaderCausationID,
	wire.HeaderContentType,
}

const numFieldHeaders = len(fieldHeaders)

// headerBytesGuess returns the bytes a Send reserves for env's header
// values in its buffer before it writes them: exact for the fields, a
// guess for env.Headers (a traceparent takes 55). The buffer grows past
// it if needed.
func headerBytesGuess(env *wire.Envelope) int {
	return len(env.Name) + 36 + len("2006-01-02T15:04:05.999999999Z") + len(env.CorrelationID) +
		len(env.CausationID) + len(env.ContentType) + 64*len(env.Headers)
}

// appendHeaders appends env's record headers to hs, their values to arena,
// and returns the bytes of their names. It returns false, with what it
// appended to drop, if wire.ToHeaders would fail: a name of env.Headers
// reserved for a field, compared ignoring case, or a timestamp outside
// years 1 to 9999.
func appendHeaders(hs []kgo.RecordHeader, arena []byte, env *wire.Envelope) ([]kgo.RecordHeader, []byte, int, bool) {
	names := 0
	add := func(k, v string) {
		if v != "" {
			var val []byte
			val, arena = appendBytes(arena, v)
			hs = append(hs, kgo.RecordHeader{Key: k, Value: val})
			names += len(k)
		}
	}
	add(wire.HeaderEventName, env.Name)
	if env.ID != uuid.Nil {
		start := len(arena)
		arena = appendUUID(arena, env.ID)
		hs = append(hs, kgo.RecordHeader{Key: wire.HeaderEventID, Value: arena[start:len(arena):len(arena)]})
		names += len(wire.HeaderEventID)
	}
	if !env.Timestamp.IsZero() {
		ts := env.Timestamp.UTC()
		if y := ts.Year(); y < 1 || y > 9999 {
			return hs, arena, names, false
		}
		start := len(arena)
		arena = ts.AppendFormat(arena, time.RFC3339Nano)
		hs = append(hs, kgo.RecordHeader{Key: wire.HeaderEventTimestamp, Value: arena[start:len(arena):len(arena)]})
		names += len(wire.HeaderEventTimestamp)
	}
	add(wire.HeaderCorrelationID, env.CorrelationID)
	add(wire.HeaderCausationID, env.CausationID)
	add(wire.HeaderContentType, env.ContentType)
	start := len(hs)
	for k, v := range env.Headers {
		for _, f := range fieldHeaders {
			if len(k) == len(f) && strings.EqualFold(k, f) {
				return hs, arena, names, false
			}
		}
		var val []byte
		val, arena = appendBytes(arena, v)
		hs = append(hs, kgo.RecordHeader{Key: k, Value: val})
		names += len(k)
	}
	if extra := hs[start:]; len(extra) > 1 {
		slices.SortFunc(extra, func(a, b kgo.RecordHeader) int { return cmp.Compare(a.Key, b.Key) })
	}
	return hs, arena, names, true
}

// appendUUID appends the canonical text of id, as id.String() writes it.
func appendUUID(dst []byte, id uuid.UUID) []byte {
	var buf [36]byte
	hex.Encode(buf[0:8], id[0:4])
	buf[8] = '-'
	hex.Encode(buf[9:13], id[4:6])
	buf[13] = '-'
	hex.Encode(buf[14:18], id[6:8])
	buf[18] = '-'
	hex.Encode(buf[19:23], id[8:10])
	buf[23] = '-'
	hex.Encode(buf[24:], id[10:])
	return append(dst, buf[:]...)
}
