package wire

import (
	"compress/zlib"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/gocqrs/cqrs/events"
)

// EncoderOptions configures an [Encoder]. The zero value writes JSON and
// never compresses.
type EncoderOptions struct {
	// Codec writes the body; nil means [JSON].
	Codec Codec
	// CompressMin turns on zlib compression for bodies of at least
	// CompressMin bytes: 0, the default, never compresses, 1 compresses
	// every body. A body that compression does not make smaller is sent as
	// it is. A compressed body is marked with [HeaderContentEncoding]
	// [EncodingZlib] in [Envelope.Headers].
	CompressMin int
	// CompressionLevel is the zlib level, from [zlib.HuffmanOnly] (-2) to
	// [zlib.BestCompression] (9); 0 means [zlib.DefaultCompression].
	CompressionLevel int
	// Registry, if set, makes Encode refuse an event whose name is not
	// registered in it, or is registered for another payload type
	// ([ErrUnknownEvent]), as python-cqrs's outbox does: a producer then
	// cannot send what its consumers, sharing the registrations, cannot
	// decode.
	Registry *Registry
}

// validate reports every problem with o, joined.
func (o EncoderOptions) validate() error {
	var errs []error
	if o.CompressMin < 0 {
		errs = append(errs, fmt.Errorf("wire: %w: CompressMin %d is negative", ErrInvalidOption, o.CompressMin))
	}
	if o.CompressionLevel < zlib.HuffmanOnly || o.CompressionLevel > zlib.BestCompression {
		errs = append(errs, fmt.Errorf("wire: %w: CompressionLevel %d is outside [%d, %d]",
			ErrInvalidOption, o.CompressionLevel, zlib.HuffmanOnly, zlib.BestCompression))
	}
	if o.Codec != nil {
		if err := checkContentType(o.Codec.ContentType()); err != nil {
			errs = append(errs, fmt.Errorf("wire: %w: codec %T: %w", ErrInvalidOption, o.Codec, err))
		}
	}
	return errors.Join(errs...)
}

// Encoder turns notification events into [Envelope] values. It is safe for
// concurrent use. The zero Encoder writes JSON and never compresses; use
// [NewEncoder] for other options. An Encoder must not be copied after first
// use.
type Encoder struct {
	codec    Codec
	min      int
	registry *Registry
	zlib     compressor
}

// NewEncoder returns an Encoder with options opts, or an error matching
// [ErrInvalidOption] that lists every problem with them.
func NewEncoder(opts EncoderOptions) (*Encoder, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	return &Encoder{
		codec:    opts.Codec,
		min:      opts.CompressMin,
		registry: opts.Registry,
		zlib:     compressor{level: opts.CompressionLevel},
	}, nil
}

// Encode returns the Envelope of ev: its ID, Name, Topic, Timestamp and,
// if ev implements [events.Keyed], Key; ContentType and Payload from the
// codec; and, if the body was compressed, [HeaderContentEncoding] in
// Headers. The timestamp is converted to UTC and truncated to the
// microsecond, in the Envelope and in the body alike (python's datetime,
// like PostgreSQL's timestamptz, holds microseconds).
//
// CorrelationID, CausationID and tracing headers are the caller's to set
// on the result, with [Envelope.SetHeader] for headers:
//
//	env, err := enc.Encode(ev)
//	env.CorrelationID = correlationID
//	env.SetHeader(wire.HeaderTraceparent, traceparent)
//
// Encode fails with an error matching [ErrInvalidEvent] if ev is nil, its
// name is empty or contains a control character, its ID is [uuid.Nil], its
// timestamp is zero or not within years 1 to 9999, or the codec cannot
// marshal its payload; and with one matching [ErrUnknownEvent] if the
// encoder has a registry that does not accept the event.
func (e *Encoder) Encode(ev events.NotificationEvent) (Envelope, error) {
	if ev == nil {
		return Envelope{}, &Error{Op: "encode", Err: fmt.Errorf("%w: nil event", ErrInvalidEvent)}
	}
	if v := reflect.ValueOf(ev); v.Kind() == reflect.Pointer && v.IsNil() {
		return Envelope{}, &Error{Op: "encode", Err: fmt.Errorf("%w: nil %T", ErrInvalidEvent, ev)}
	}
	m := Meta{ID: ev.EventID(), Name: ev.EventName(), Topic: ev.EventTopic()}
	fail := func(err error) (Envelope, error) {
		return Envelope{}, &Error{Op: "encode", Name: m.Name, ID: m.ID, Err: err}
	}
	if e == nil {
		return fail(fmt.Errorf("%w: nil encoder", ErrInvalidOption))
	}
	if err := checkName(m.Name); err != nil {
		return fail(fmt.Errorf("%w: %w", ErrInvalidEvent, err))
	}
	if m.ID == uuid.Nil {
		return fail(fmt.Errorf("%w: nil event id (build events with events.NewNotification)", ErrInvalidEvent))
	}
	ts := ev.EventTimestamp()
	if ts.IsZero() {
		return fail(fmt.Errorf("%w: zero timestamp (build events with events.NewNotification)", ErrInvalidEvent))
	}
	ts = ts.UTC().Truncate(time.Microsecond)
	if !inRange(ts) {
		return fail(fmt.Errorf("%w: timestamp %v is not within years 1 to 9999", ErrInvalidEvent, ts))
	}
	m.Timestamp = ts
	payload := ev.EventPayload()
	if e.registry != nil {
		en := e.registry.lookup(m.Name)
		switch {
		case en == nil:
			return fail(fmt.Errorf("%w: name not registered", ErrUnknownEvent))
		case !en.accepts(payload):
			return fail(fmt.Errorf("%w: registered for %v, payload is %T", ErrUnknownEvent, en.typ, payload))
		}
	}
	codec := e.codec
	if codec == nil {
		codec = JSON{}
	}
	body, err := codec.Marshal(m, payload)
	if err != nil {
		return fail(fmt.Errorf("%w: %w", ErrInvalidEvent, err))
	}
	env := Envelope{
		ID:          m.ID,
		Name:        m.Name,
		Topic:       m.Topic,
		Timestamp:   m.Timestamp,
		ContentType: codec.ContentType(),
		Payload:     body,
	}
	if k, ok := ev.(events.Keyed); ok {
		env.Key = k.EventKey()
	}
	if e.min > 0 && len(body) >= e.min {
		z, err := e.zlib.compress(body)
		if err != nil {
			return fail(fmt.Errorf("%w: %w", ErrCompression, err))
		}
		if len(z) < len(body) {
			env.Payload = z
			env.Headers = map[string]string{HeaderContentEncoding: EncodingZlib}
		}
	}
	return env, nil
}

// checkContentType reports why ct cannot be a codec's content type, or nil.
func checkContentType(ct string) error {
	switch {
	case strings.TrimSpace(ct) == "":
		return errors.New("empty content type")
	case strings.ContainsFunc(ct, func(r rune) bool { return r < ' ' || r == 0x7f }):
		return errors.New("control character in content type")
	}
	return nil
}
