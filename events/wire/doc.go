// Package wire turns notification events into bytes and back: the format
// events have in an outbox row and on a broker, shared with python-cqrs.
//
// # Envelope
//
// An [Envelope] is a notification event in transit: ID, Name, Topic, Key,
// Timestamp, CorrelationID, CausationID, ContentType and extra Headers beside
// an encoded Payload. An [Encoder] makes one from an
// [events.NotificationEvent]; a [Decoder] turns one back into the
// [events.Notification] of the payload type registered for its name, held in
// an [events.Event], so that an EventMediator routes it by its dynamic type.
//
//	var reg wire.Registry
//	err := errors.Join(
//		wire.Register[OrderPlaced](&reg, "order.placed"),
//		wire.Register[OrderShipped](&reg, "order.shipped"),
//	)
//	dec, err := wire.NewDecoder(&reg, wire.DecoderOptions{})
//
//	var enc wire.Encoder // JSON, no compression
//	env, err := enc.Encode(events.NewNotification("order.placed", OrderPlaced{ID: "o-1"}))
//	ev, err := dec.Decode(env) // ev is an events.Notification[OrderPlaced]
//
// # Body: python-cqrs's notification event
//
// The [JSON] codec, the default, writes the body python-cqrs gives a
// notification event, so Go and Python services exchange events:
//
//	{"event_id":"0190c5a4-3b1c-7d2e-9f00-5a6b7c8d9e0f",
//	 "event_timestamp":"2024-05-01T12:34:56.123456Z",
//	 "event_name":"order.placed","topic":"orders","payload":{"id":"o-1"}}
//
// Its members:
//
//   - event_id is a UUID string.
//   - event_timestamp is written in RFC 3339, UTC, with "Z" and exactly six
//     fractional digits. It is read in RFC 3339 with any zone ("Z",
//     "+00:00", "+02:00") and any number of fractional digits, or naive, as
//     python-cqrs writes it by default (datetime.now().isoformat(), e.g.
//     "2024-05-01T12:34:56.123456"), which is taken as UTC. A space may
//     stand for the "T".
//   - event_name and topic are strings; payload is the [encoding/json]
//     encoding of the event's payload.
//
// Unknown members are ignored and absent ones are left zero, so either side
// may add members; a payload that is absent or null decodes to the zero
// payload. Member names are matched as [encoding/json] matches them,
// ignoring case; a body that repeats a member is decoded in an unspecified
// way (RFC 8259 leaves it so), though always the same way. Another format (protobuf, say) is a [Codec] of its own, chosen by
// [Envelope.ContentType] when decoding.
//
// # What is preserved
//
// Decode(Encode(n)) equals n, a [events.Notification], except that its
// Timestamp is in UTC and truncated to the microsecond (the precision of
// python's datetime and PostgreSQL's timestamptz) and that its payload goes
// through encoding/json, so only what encoding/json preserves survives
// (exported fields, no unexported state; strings must be valid UTF-8, as
// invalid bytes become U+FFFD). Key travels in [Envelope.Key],
// beside the body, never in it. CorrelationID, CausationID and Headers are
// the caller's to set on the Envelope and are not part of the decoded event.
//
// # Envelope and body
//
// The event's name and ID are the Envelope's, or the body's when the
// Envelope has none (python-cqrs sends bare bodies, with no headers). When
// both carry a name or both carry an id and they differ, decoding fails with
// [ErrMismatch]: the message contradicts itself, and decoding it as the
// type one of them names could misread its payload. Topic and Timestamp are
// the Envelope's when set (where the message was actually delivered), else
// the body's; they are never an error. An event with no name or no ID at
// all is [ErrMalformed].
//
// # Compression
//
// With [EncoderOptions.CompressMin] set, bodies of at least that many bytes
// are compressed with zlib (RFC 1950, as python-cqrs's ZlibCompressor does,
// via [compress/zlib]) when that makes them smaller, and marked with the
// header [HeaderContentEncoding] [EncodingZlib] in [Envelope.Headers]; the
// ContentType stays the codec's. Compression is off by default. A decoder
// decompresses a body so marked, and stops with [ErrTooLarge] as soon as the
// body exceeds [DecoderOptions.MaxBodySize] ([DefaultMaxBodySize], 4 MiB, by
// default), which also bounds uncompressed bodies: a small compressed
// message cannot make the decoder allocate more than that.
//
// # Headers
//
// Brokers carry metadata as a flat string map. [ToHeaders] makes one from an
// Envelope (the Header constants, plus Envelope.Headers) and [FromHeaders]
// makes the Envelope back; they are lossless for every field except Payload,
// Topic and Key, which brokers carry natively (message body, topic or
// subject, message key). Header names are matched ignoring case, since some
// brokers change it.
//
// # Errors
//
// Every error about an event is an [*Error] carrying the operation and the
// event's name and ID as far as they are known, and matches one sentinel
// with [errors.Is]:
//
//   - [ErrUnknownEvent]: the name is not registered (or is registered for
//     another payload type than the one asked for);
//   - [ErrMalformed]: malformed JSON, a payload of the wrong shape, a bad
//     UUID or timestamp, a missing name or ID, a bad header value;
//   - [ErrMismatch]: Envelope and body name different events;
//   - [ErrCompression]: truncated or corrupted compressed data, or trailing
//     bytes after it;
//   - [ErrTooLarge]: a body over the size limit, once decompressed;
//   - [ErrUnsupported]: an unknown content type or content encoding;
//   - [ErrInvalidEvent]: an event that cannot be encoded;
//   - [ErrInvalidName], [ErrDuplicateName]: a bad [Register] call;
//   - [ErrReservedHeader]: Envelope.Headers holding a field's header name;
//   - [ErrInvalidOption]: out-of-range options, all reported in one error.
//
// Decoding errors are permanent: the same Envelope always fails the same
// way, so a consumer should dead-letter it rather than retry. No input makes
// this package panic; a payload type's own UnmarshalJSON or a custom Codec
// may, and such panics are not recovered.
//
// # Concurrency
//
// [Registry], [Encoder], [Decoder] and [JSON] are safe for concurrent use.
// Registration may happen at any time, also concurrently with decoding, but
// each one copies the registry's table: register at start-up. Encoding and
// decoding need no context: they do not block.
package wire
