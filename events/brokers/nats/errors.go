package nats

import (
	"errors"
	"fmt"

	"github.com/google/uuid"
)

// Sentinel errors; match them with errors.Is.
var (
	// ErrInvalidConfig is matched by every problem [NewSender],
	// [NewPublisher], [NewSubscriber] and [Topology.Validate] report.
	ErrInvalidConfig = errors.New("nats: invalid configuration")
	// ErrDisconnected is matched by the error of an operation refused
	// because the connection to the server is down: the client is
	// re-establishing it. It is transient: a record not sent is sent again
	// by the relay, a message not settled is delivered again by the server.
	ErrDisconnected = errors.New("nats: not connected to the server")
	// ErrTopology is matched by the error of a subscription whose stream or
	// consumer cannot serve it: missing (and not provisioned), a push
	// consumer, an acknowledgement policy other than explicit, an unbounded
	// MaxAckPending, a dead-letter subject no stream captures. It is
	// permanent (it matches outbox.ErrPermanent when a Source reports it).
	ErrTopology = errors.New("nats: unusable stream or consumer")
	// ErrInvalidMessage is matched by the error of an envelope that cannot
	// become a NATS message: no topic, an invalid subject, a header name or
	// value NATS cannot carry. It is permanent: [Sender.Send] reports it
	// wrapped in outbox.Permanent.
	ErrInvalidMessage = errors.New("nats: invalid message")
)

// PublishError is the error [Sender.Send] reports for one record the stream
// did not acknowledge, in its *outbox.BatchError. It unwraps to the cause:
// the client's or the server's error, ctx's error, [ErrDisconnected] or
// [ErrInvalidMessage].
type PublishError struct {
	// Subject is the subject the record was, or would have been,
	// published to.
	Subject string
	// EventID is the record's event id (its Nats-Msg-Id).
	EventID uuid.UUID
	// Err is the cause.
	Err error
}

func (e *PublishError) Error() string {
	return fmt.Sprintf("nats: publish event %s to %q: %v", e.EventID, e.Subject, e.Err)
}

// Unwrap returns the cause.
func (e *PublishError) Unwrap() error { return e.Err }

// SettleError is the error of a settle call (Ack, Retry, DeadLetter) that
// failed: the message stays unsettled and the server delivers it again.
// It unwraps to the cause.
type SettleError struct {
	// Op is "ack", "retry" or "dead-letter".
	Op string
	// Stream and Consumer name the subscription; Sequence is the message's
	// stream sequence.
	Stream, Consumer string
	Sequence         uint64
	// Err is the cause.
	Err error
}

func (e *SettleError) Error() string {
	return fmt.Sprintf("nats: %s of message %d of %s/%s: %v", e.Op, e.Sequence, e.Stream, e.Consumer, e.Err)
}

// Unwrap returns the cause.
func (e *SettleError) Unwrap() error { return e.Err }
