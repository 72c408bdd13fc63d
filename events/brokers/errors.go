package brokers

import "errors"

// Sentinel errors; match them with errors.Is.
var (
	// ErrInvalidConfig is matched by every problem [Config.Validate] and
	// [NewConsumer] report.
	ErrInvalidConfig = errors.New("brokers: invalid consumer configuration")
	// ErrRunning is returned by [Consumer.Run] when the consumer is
	// already running.
	ErrRunning = errors.New("brokers: consumer already running")
	// ErrClosed is returned by a [Source] and by the [Settler] of its
	// messages once the Source is closed. From Receive, when the Source
	// was not closed by the runtime, it ends [Consumer.Run].
	ErrClosed = errors.New("brokers: source closed")
	// ErrSettled is returned by a [Settler] called again after the message
	// was settled.
	ErrSettled = errors.New("brokers: message already settled")
	// ErrUndecodable is matched by the error of a message that cannot be
	// decoded: its headers cannot be read (wire.FromHeaders) or its
	// envelope cannot be decoded (wire.Decoder.Decode). The wire error it
	// wraps tells why (wire.ErrUnknownEvent, wire.ErrMalformed, ...). It is
	// permanent: by default such a message is dead-lettered at once.
	ErrUndecodable = errors.New("brokers: undecodable message")
)
