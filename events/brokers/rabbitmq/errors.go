package rabbitmq

import (
	"errors"
	"fmt"
)

// Sentinel errors; match them with errors.Is.
var (
	// ErrInvalidConfig is matched by every problem [NewSender],
	// [NewSubscriber] and [NewPublisher] report.
	ErrInvalidConfig = errors.New("rabbitmq: invalid configuration")
	// ErrClosed is returned by a [Sender] or [Publisher] used after
	// [Sender.Close].
	ErrClosed = errors.New("rabbitmq: closed")
	// ErrConnectionLost is matched by the error of an operation whose
	// connection (or channel) to RabbitMQ was lost: a Receive that saw the
	// connection drop (transient: the next Receive reconnects), a settle of a
	// message delivered on a connection that is gone (RabbitMQ has requeued
	// the message and delivers it again), a publish whose confirmation never
	// came.
	ErrConnectionLost = errors.New("rabbitmq: connection lost")
	// ErrNacked is matched by the error of a record RabbitMQ refused with a
	// basic.nack (an internal error of the queue, a queue length limit with
	// overflow reject-publish). It is transient.
	ErrNacked = errors.New("rabbitmq: publish not acknowledged by the broker")
	// ErrUnroutable is matched by a *[ReturnedError]: a mandatory publish no
	// queue was bound to receive.
	ErrUnroutable = errors.New("rabbitmq: message unroutable")
)

// ReturnedError reports a message RabbitMQ returned (basic.return) because
// no queue is bound to its exchange with a matching routing key (or the
// queue refused it). It matches [ErrUnroutable]. The [Sender] reports it
// wrapped in outbox.Permanent: publishing it again cannot help until the
// topology changes, and the relay keeps the record as dead, for replay.
type ReturnedError struct {
	// Exchange and RoutingKey are where the message was published.
	Exchange, RoutingKey string
	// ReplyCode and ReplyText are RabbitMQ's reason (312 NO_ROUTE).
	ReplyCode uint16
	ReplyText string
}

func (e *ReturnedError) Error() string {
	ex := e.Exchange
	if ex == "" {
		ex = "(default)"
	}
	return fmt.Sprintf("rabbitmq: message to exchange %q with routing key %q returned: %d %s",
		ex, e.RoutingKey, e.ReplyCode, e.ReplyText)
}

// Unwrap returns [ErrUnroutable].
func (e *ReturnedError) Unwrap() error { return ErrUnroutable }

// lost wraps cause as a lost connection.
func lost(op string, cause error) error {
	if cause == nil {
		return fmt.Errorf("rabbitmq: %s: %w", op, ErrConnectionLost)
	}
	return fmt.Errorf("rabbitmq: %s: %w: %w", op, ErrConnectionLost, cause)
}
