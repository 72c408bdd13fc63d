package wire

import (
	"errors"
	"strconv"
	"strings"

	"github.com/google/uuid"
)

// Sentinel errors. Every error this package returns matches exactly one of
// them with [errors.Is] (and may also match the underlying cause, such as a
// [encoding/json] or [compress/zlib] error). Errors about a given event are
// [*Error] values, which carry its name and id where they are known.
//
// Every decoding error is permanent: decoding the same [Envelope] again gives
// the same error, so a consumer should dead-letter the message rather than
// retry it.
var (
	// ErrUnknownEvent: the event name is not registered in the [Registry], or
	// is registered for another payload type than the one asked for.
	ErrUnknownEvent = errors.New("unknown event")

	// ErrMalformed: the body or a header cannot be parsed: invalid JSON, a
	// payload of the wrong shape for the registered type, an invalid UUID or
	// timestamp (or one outside years 1 to 9999 in UTC), a body that is not a JSON object, or an event with no name
	// or no id.
	ErrMalformed = errors.New("malformed event")

	// ErrMismatch: the [Envelope] and its body name a different event (their
	// event names or event ids differ).
	ErrMismatch = errors.New("envelope and body disagree")

	// ErrCompression: the compressed body is truncated, corrupted (bad
	// header or checksum) or followed by trailing data.
	ErrCompression = errors.New("corrupt compressed body")

	// ErrTooLarge: the body, once decompressed, is larger than the decoder's
	// maximum body size.
	ErrTooLarge = errors.New("body too large")

	// ErrUnsupported: the envelope's content type has no codec in the
	// decoder, or its content encoding is neither empty, "identity" nor
	// [EncodingZlib].
	ErrUnsupported = errors.New("unsupported content type or encoding")

	// ErrInvalidEvent: the notification event cannot be encoded: it is nil,
	// its name is empty or invalid, its id is the nil UUID, its timestamp is
	// zero or outside years 1 to 9999, or its payload cannot be marshalled.
	// [ToHeaders] also reports it for a timestamp outside years 1 to 9999.
	ErrInvalidEvent = errors.New("invalid event")

	// ErrInvalidName: a name given to [Register] is empty, is not valid
	// UTF-8, or contains a control character (names travel in headers), or
	// the registry is nil.
	ErrInvalidName = errors.New("invalid event name")

	// ErrDuplicateName: [Register] was called twice with one name.
	ErrDuplicateName = errors.New("event name already registered")

	// ErrReservedHeader: [ToHeaders] found, in [Envelope.Headers], a name
	// that is reserved for an Envelope field (see [ToHeaders]).
	ErrReservedHeader = errors.New("reserved header name")

	// ErrInvalidOption: an [EncoderOptions] or [DecoderOptions] value is out
	// of range.
	ErrInvalidOption = errors.New("invalid option")
)

// Error reports a failure about one event: Op is "encode", "decode",
// "register" or "headers", Name and ID identify the event as far as they are
// known (empty and [uuid.Nil] otherwise), and Err is the cause, which matches
// one of the package's sentinel errors.
//
//	var we *wire.Error
//	if errors.As(err, &we) {
//		log.Printf("dropping %s %s: %v", we.Name, we.ID, we.Err)
//	}
type Error struct {
	Op   string
	Name string
	ID   uuid.UUID
	Err  error
}

// Error implements error.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("wire: ")
	b.WriteString(e.Op)
	if e.Name != "" {
		b.WriteString(" event ")
		b.WriteString(quote(e.Name))
	}
	if e.ID != uuid.Nil {
		b.WriteString(" id ")
		b.WriteString(e.ID.String())
	}
	b.WriteString(": ")
	if e.Err != nil {
		b.WriteString(e.Err.Error())
	} else {
		b.WriteString("unknown error")
	}
	return b.String()
}

// Unwrap returns Err.
func (e *Error) Unwrap() error { return e.Err }

// quote quotes s for an error message, keeping it short.
func quote(s string) string {
	const maxLen = 64
	if len(s) > maxLen {
		// Cut on a rune boundary, then mark the cut.
		cut := maxLen
		for cut > 0 && !isRuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return strconv.Quote(s)
}

func isRuneStart(b byte) bool { return b&0xC0 != 0x80 }
