package kafka

import (
	"errors"
	"fmt"
	"strconv"
)

// Sentinel errors; match them with errors.Is.
var (
	// ErrInvalidConfig is matched by every problem [SenderConfig.Validate]
	// and [SubscriberConfig.Validate] report.
	ErrInvalidConfig = errors.New("kafka: invalid configuration")
	// ErrRevoked is matched by the error of a settle (Ack, Retry,
	// DeadLetter) of a message whose partition was revoked from the Source
	// in a rebalance, or lost with the group session: the partition's new
	// owner reads the message again from the last committed offset.
	ErrRevoked = errors.New("kafka: partition revoked")
	// ErrTopicNotFound is matched by the error of [Subscriber.Subscribe]
	// when the subscribed topic does not exist.
	ErrTopicNotFound = errors.New("kafka: topic not found")
	// ErrRecordTooLarge is matched by the error of a record whose key,
	// value and headers exceed [SenderConfig.MaxRecordBytes]; it is
	// permanent (outbox.Permanent).
	ErrRecordTooLarge = errors.New("kafka: record too large")
	// ErrUnreachable is matched by the transient error a Source's Receive
	// returns when a connection to a broker fails: once per outage, while
	// the client keeps reconnecting.
	ErrUnreachable = errors.New("kafka: broker unreachable")
	// ErrNoTopic is matched by the error of an envelope with no Topic; it
	// is permanent (outbox.Permanent).
	ErrNoTopic = errors.New("kafka: envelope has no topic")
)

// PartitionError is an error about one partition of a topic: a failed
// produce or fetch, a settle after the partition was revoked, a failed
// commit. A fetch error the client does not tie to a partition (failing to
// join the group, say) has no Topic.
type PartitionError struct {
	// Op is what failed: "fetch", "settle", "commit".
	Op string
	// Topic and Partition say where.
	Topic     string
	Partition int32
	// Err is the cause.
	Err error
}

func (e *PartitionError) Error() string {
	if e.Topic == "" { // a client error not tied to a partition
		return "kafka: " + e.Op + ": " + e.Err.Error()
	}
	return "kafka: " + e.Op + " " + e.Topic + "/" + strconv.Itoa(int(e.Partition)) + ": " + e.Err.Error()
}

// Unwrap returns the cause.
func (e *PartitionError) Unwrap() error { return e.Err }

// invalid returns a configuration problem matching [ErrInvalidConfig].
func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, args...)...)
}
