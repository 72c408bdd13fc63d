package wire

import (
	"errors"
	"fmt"
	"reflect"
	"strings"

	"github.com/google/uuid"

	"github.com/gocqrs/cqrs/events"
)

// DefaultMaxBodySize is the largest body a [Decoder] accepts unless told
// otherwise: 4 MiB, four times the default message size limit of Kafka and
// NATS. It bounds what a compressed body (a "decompression bomb") can make
// the decoder allocate.
const DefaultMaxBodySize = 4 << 20

// DecoderOptions configures a [Decoder].
type DecoderOptions struct {
	// Codecs are the codecs the decoder accepts, besides [JSON], chosen by
	// [Envelope.ContentType] (compared ignoring case and parameters such as
	// "; charset=utf-8"). A codec given here for [ContentTypeJSON] replaces
	// JSON. An envelope with no content type (python-cqrs sends no headers)
	// is decoded by the codec of [ContentTypeJSON].
	Codecs []Codec
	// MaxBodySize is the largest body, once decompressed, the decoder
	// accepts; a larger one fails with [ErrTooLarge] and decompression stops
	// as soon as it exceeds the limit. 0 means [DefaultMaxBodySize].
	MaxBodySize int
}

// Decoder turns an [Envelope] back into the [events.Notification] of the
// payload type registered for its name. It is safe for concurrent use.
// Create one with [NewDecoder]; a Decoder must not be copied after first
// use.
type Decoder struct {
	registry *Registry
	codecs   map[string]Codec // by normalised content type
	json     Codec            // for an envelope with no content type
	max      int
	zlib     decompressor
}

// NewDecoder returns a Decoder of the events registered in r, or an error
// matching [ErrInvalidOption] that lists every problem with r and opts: r
// is nil, MaxBodySize is negative, a codec is nil, has an empty content
// type or shares its content type with another.
//
// Names registered in r after NewDecoder returns are decoded too.
func NewDecoder(r *Registry, opts DecoderOptions) (*Decoder, error) {
	var errs []error
	if r == nil {
		errs = append(errs, fmt.Errorf("wire: %w: nil registry", ErrInvalidOption))
	}
	if opts.MaxBodySize < 0 {
		errs = append(errs, fmt.Errorf("wire: %w: MaxBodySize %d is negative", ErrInvalidOption, opts.MaxBodySize))
	}
	d := &Decoder{
		registry: r,
		codecs:   map[string]Codec{ContentTypeJSON: JSON{}},
		max:      opts.MaxBodySize,
	}
	given := make(map[string]bool, len(opts.Codecs))
	for i, c := range opts.Codecs {
		if c == nil {
			errs = append(errs, fmt.Errorf("wire: %w: Codecs[%d] is nil", ErrInvalidOption, i))
			continue
		}
		ct := c.ContentType()
		if err := checkContentType(ct); err != nil {
			errs = append(errs, fmt.Errorf("wire: %w: Codecs[%d] (%T): %w", ErrInvalidOption, i, c, err))
			continue
		}
		key := mediaType(ct)
		if given[key] {
			errs = append(errs, fmt.Errorf("wire: %w: Codecs[%d] (%T): a codec for %s is already given", ErrInvalidOption, i, c, quote(key)))
			continue
		}
		given[key] = true
		d.codecs[key] = c
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	d.json = d.codecs[ContentTypeJSON]
	return d, nil
}

// Decode returns the event env carries: an [events.Notification][P], where P
// is the payload type registered for its name, held in an [events.Event], so
// that an EventMediator routes it to the handlers bound to
// events.Notification[P]. Use [DecodeAs] when the payload type is known.
//
// The event's name and ID are the Envelope's, or the body's when the
// Envelope has none (python-cqrs sends bare bodies); when both have one and
// they differ, Decode fails with [ErrMismatch]. Its Topic and Timestamp are
// the Envelope's when set, else the body's. Key is the Envelope's.
//
// Errors are [*Error] values matching [ErrUnknownEvent], [ErrMalformed],
// [ErrMismatch], [ErrCompression], [ErrTooLarge] or [ErrUnsupported]; they
// are permanent. Decode does not recover panics raised by a payload type's
// own UnmarshalJSON method or by a custom [Codec].
func (d *Decoder) Decode(env Envelope) (events.Event, error) {
	o, err := d.open(env)
	if err != nil {
		return nil, err
	}
	if e := d.onePass(env, o); e != nil {
		if ev, ok := e.decodeJSON(o.body, env); ok {
			return ev, nil
		}
	}
	p, err := d.prepare(env, o)
	if err != nil {
		return nil, err
	}
	ev, err := p.entry.decode(p.codec, p.payload, p.meta, env.Key)
	if err != nil {
		return nil, p.fail(malformed(err))
	}
	return ev, nil
}

// DecodeAs is [Decoder.Decode] for a known payload type: it returns the
// event as an [events.Notification][P], and fails with [ErrUnknownEvent] if
// env's name is registered for another payload type.
func DecodeAs[P any](d *Decoder, env Envelope) (events.Notification[P], error) {
	o, err := d.open(env)
	if err != nil {
		return events.Notification[P]{}, err
	}
	want := reflect.TypeFor[events.Notification[P]]()
	if e := d.onePass(env, o); e != nil && e.typ == want {
		if n, ok := notificationJSON[P](o.body, env); ok {
			return n, nil
		}
	}
	p, err := d.prepare(env, o)
	if err != nil {
		return events.Notification[P]{}, err
	}
	if p.entry.typ != want {
		return events.Notification[P]{}, p.fail(fmt.Errorf("%w: registered for %v, not %v", ErrUnknownEvent, p.entry.typ, want))
	}
	n, err := notification[P](p.codec, p.payload, p.meta, env.Key)
	if err != nil {
		return events.Notification[P]{}, p.fail(malformed(err))
	}
	return n, nil
}

// opened is an envelope whose codec is chosen and whose body is
// decompressed.
type opened struct {
	codec Codec
	body  []byte
}

// onePass returns the registration with which to decode a JSON body in one
// pass (metadata and typed payload together), or nil to take the general
// path (parse the body, then decode the payload) at once. The event name is
// the envelope's or, if it has none, the body's, read by a first pass.
// Either way a body is decoded the same way, whether or not its envelope
// names it. Errors are left to the general path, which runs whenever one
// pass fails, and reports them.
func (d *Decoder) onePass(env Envelope, o opened) *entry {
	if _, ok := o.codec.(JSON); !ok {
		return nil
	}
	name := env.Name
	if name == "" {
		bm, _, err := JSON{}.Unmarshal(o.body)
		if err != nil {
			return nil
		}
		name = bm.Name
	}
	return d.registry.lookup(name)
}

func (d *Decoder) open(env Envelope) (opened, error) {
	fail := func(err error) (opened, error) {
		return opened{}, &Error{Op: "decode", Name: env.Name, ID: env.ID, Err: err}
	}
	if d == nil {
		return fail(fmt.Errorf("%w: nil decoder", ErrInvalidOption))
	}
	codec, err := d.codec(env.ContentType)
	if err != nil {
		return fail(err)
	}
	body, err := d.body(env)
	if err != nil {
		return fail(err)
	}
	return opened{codec: codec, body: body}, nil
}

// prepared is an envelope whose body has been parsed and whose name has been
// looked up; only the payload is left to decode.
type prepared struct {
	codec   Codec
	payload []byte
	meta    Meta
	entry   *entry
}

func (p *prepared) fail(err error) error {
	return &Error{Op: "decode", Name: p.meta.Name, ID: p.meta.ID, Err: err}
}

func (d *Decoder) prepare(env Envelope, o opened) (prepared, error) {
	p := prepared{meta: Meta{ID: env.ID, Name: env.Name}}
	bm, payload, err := o.codec.Unmarshal(o.body)
	if err != nil {
		return prepared{}, p.fail(malformed(err))
	}
	if p.meta, err = merge(env, bm); err != nil {
		return prepared{}, p.fail(err)
	}
	if p.entry = d.registry.lookup(p.meta.Name); p.entry == nil {
		return prepared{}, p.fail(fmt.Errorf("%w: name not registered", ErrUnknownEvent))
	}
	p.codec, p.payload = o.codec, payload
	return p, nil
}

// merge returns the metadata of an event from that of its envelope and that
// of its body. On error, the metadata returned is what is known of the
// event, for the error to report.
func merge(env Envelope, bm Meta) (Meta, error) {
	if env.Name != "" && bm.Name != "" && env.Name != bm.Name {
		return Meta{ID: env.ID, Name: env.Name}, fmt.Errorf("%w: envelope names %s, body names %s", ErrMismatch, quote(env.Name), quote(bm.Name))
	}
	if env.ID != uuid.Nil && bm.ID != uuid.Nil && env.ID != bm.ID {
		return Meta{ID: env.ID, Name: env.Name}, fmt.Errorf("%w: envelope id %s, body id %s", ErrMismatch, env.ID, bm.ID)
	}
	m := Meta{
		ID:        firstNonZero(env.ID, bm.ID),
		Name:      firstNonZero(env.Name, bm.Name),
		Topic:     firstNonZero(env.Topic, bm.Topic),
		Timestamp: bm.Timestamp,
	}
	if !env.Timestamp.IsZero() {
		m.Timestamp = env.Timestamp
	}
	switch {
	case m.Name == "":
		return m, fmt.Errorf("%w: no event name in the envelope or the body", ErrMalformed)
	case m.ID == uuid.Nil:
		return m, fmt.Errorf("%w: no event id in the envelope or the body", ErrMalformed)
	}
	return m, nil
}

// codec returns the codec for content type ct.
func (d *Decoder) codec(ct string) (Codec, error) {
	if ct == "" {
		if d.json == nil {
			return JSON{}, nil
		}
		return d.json, nil
	}
	if c, ok := d.codecs[ct]; ok {
		return c, nil
	}
	if c, ok := d.codecs[mediaType(ct)]; ok {
		return c, nil
	}
	if d.codecs == nil && mediaType(ct) == ContentTypeJSON {
		return JSON{}, nil
	}
	return nil, fmt.Errorf("%w: content type %s", ErrUnsupported, quote(ct))
}

// body returns env's body, decompressed if need be, within the size limit.
func (d *Decoder) body(env Envelope) ([]byte, error) {
	limit := d.max
	if limit == 0 {
		limit = DefaultMaxBodySize
	}
	compressed, err := encoding(env.Header(HeaderContentEncoding))
	if err != nil {
		return nil, err
	}
	if !compressed {
		if len(env.Payload) > limit {
			return nil, fmt.Errorf("%w: %d bytes, more than %d", ErrTooLarge, len(env.Payload), limit)
		}
		return env.Payload, nil
	}
	return d.zlib.decompress(env.Payload, limit)
}

// mediaType returns the media type of a content type, without parameters,
// in lower case.
func mediaType(ct string) string {
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	return strings.ToLower(strings.TrimSpace(ct))
}

// malformed makes err match ErrMalformed.
func malformed(err error) error {
	if errors.Is(err, ErrMalformed) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrMalformed, err)
}

func firstNonZero[T comparable](a, b T) T {
	var zero T
	if a != zero {
		return a
	}
	return b
}
