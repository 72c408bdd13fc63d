package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// QueueType is the type of the consumer's queue and of its dead-letter
// queue (the x-queue-type argument).
type QueueType string

const (
	// QueueQuorum is a replicated quorum queue, the default: it counts
	// deliveries (x-delivery-count), so Attempt survives restarts and a
	// message that crashes its consumer is eventually dead-lettered.
	QueueQuorum QueueType = "quorum"
	// QueueClassic is a classic queue: it does not count deliveries, so
	// Attempt counts only the adapter's delayed retries plus one if the
	// message was redelivered (see the package documentation).
	QueueClassic QueueType = "classic"
)

// Suffixes of the names derived from Topology.Queue.
const (
	// DeadLetterExchangeSuffix makes the default dead-letter exchange name.
	DeadLetterExchangeSuffix = ".dlx"
	// DeadLetterQueueSuffix makes the default dead-letter queue name.
	DeadLetterQueueSuffix = ".dlq"
	// RetryQueueInfix makes the names of the delay queues:
	// Queue + RetryQueueInfix + delay ("billing.retry.30s").
	RetryQueueInfix = ".retry."
)

// DefaultRetryDelays returns the default delay tiers of [Topology]: 1s,
// 5s, 30s, 1m, 5m and 30m. A Retry delay is rounded up to the nearest
// tier; a longer one goes through the longest tier as many times as needed.
func DefaultRetryDelays() []time.Duration {
	return []time.Duration{time.Second, 5 * time.Second, 30 * time.Second, time.Minute, 5 * time.Minute, 30 * time.Minute}
}

// Binding binds the consumer's queue to an exchange.
type Binding struct {
	// Exchange is the exchange bound from; empty means [Topology.Exchange].
	// Another exchange (a python-cqrs publisher's, say) is bound to but
	// never declared: it must exist.
	Exchange string
	// RoutingKey is the routing key, or on a topic exchange the pattern
	// ("orders.*", "#"), that the queue receives.
	RoutingKey string
}

// Topology is what one subscription needs on the broker: the consumer's
// queue and its bindings, the dead-letter exchange and queue, and the delay
// queues of delayed retries. [Subscriber.Declare] (or
// [SubscriberConfig.Declare]) creates it, idempotently.
//
// Each delay queue, Queue + ".retry." + delay, is a durable classic queue
// with x-message-ttl set to its delay and the default exchange, routing key
// Queue, as its dead-letter exchange: a message published to it comes back
// to the consumer's queue (and to no other) once its delay has passed.
type Topology struct {
	// Queue is the consumer's queue, shared by every Source of the
	// subscription (competing consumers). Required.
	Queue string
	// QueueType is the type of Queue and DeadLetterQueue (default
	// [QueueQuorum]).
	QueueType QueueType
	// Exchange, if set, is declared as a durable topic exchange: the one
	// the [Sender] publishes to.
	Exchange string
	// Bindings are the routing keys the queue receives.
	Bindings []Binding
	// SingleActiveConsumer sets x-single-active-consumer: one Source of the
	// subscription receives at a time, the others stand by. Set it to keep
	// each key in order across processes.
	SingleActiveConsumer bool
	// DeliveryLimit sets x-delivery-limit on a quorum queue: RabbitMQ
	// dead-letters (or drops) a message delivered more often, without the
	// runtime's headers. 0 leaves the broker's default (unlimited before
	// RabbitMQ 4.0, 20 since); set it above the consumer's MaxDeliveries
	// plus the restarts you expect, or -1 for no limit (RabbitMQ 4.0 and
	// later).
	DeliveryLimit int
	// QueueArgs are extra arguments of Queue's declaration (x-max-length,
	// x-consumer-timeout on RabbitMQ 3.12 and later, ...). Queue is
	// declared with x-dead-letter-exchange set to DeadLetterExchange, so
	// that what RabbitMQ itself dead-letters (past DeliveryLimit, say) is
	// kept, with RabbitMQ's x-death header but without the consumer's;
	// QueueArgs may override it.
	QueueArgs amqp.Table
	// DeadLetterExchange receives dead letters (default Queue + ".dlx"); it
	// is declared as a durable topic exchange. Dead letters are published
	// to it with the routing key of the original message.
	DeadLetterExchange string
	// DeadLetterQueue is bound to DeadLetterExchange with "#" (default
	// Queue + ".dlq").
	DeadLetterQueue string
	// RetryDelays are the delay tiers of Retry (default
	// [DefaultRetryDelays]), in increasing order, each a whole number of
	// milliseconds.
	RetryDelays []time.Duration
}

// withDefaults returns t with its defaults filled in, its slices and maps
// copied.
func (t Topology) withDefaults() Topology {
	if t.QueueType == "" {
		t.QueueType = QueueQuorum
	}
	if t.DeadLetterExchange == "" && t.Queue != "" {
		t.DeadLetterExchange = t.Queue + DeadLetterExchangeSuffix
	}
	if t.DeadLetterQueue == "" && t.Queue != "" {
		t.DeadLetterQueue = t.Queue + DeadLetterQueueSuffix
	}
	if len(t.RetryDelays) == 0 {
		t.RetryDelays = DefaultRetryDelays()
	} else {
		t.RetryDelays = slices.Clone(t.RetryDelays)
	}
	t.Bindings = slices.Clone(t.Bindings)
	t.QueueArgs = maps.Clone(t.QueueArgs)
	return t
}

// validate reports every problem with t (defaults filled in), each matching
// ErrInvalidConfig.
func (t Topology) validate() []error {
	var errs []error
	add := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, args...)...))
	}
	if t.Queue == "" {
		add("Topology.Queue is required")
	}
	switch t.QueueType {
	case QueueQuorum, QueueClassic:
	default:
		add("Topology.QueueType must be %q or %q, got %q", QueueQuorum, QueueClassic, t.QueueType)
	}
	if t.DeliveryLimit != 0 && t.QueueType != QueueQuorum {
		add("Topology.DeliveryLimit applies to quorum queues only")
	}
	if t.DeliveryLimit < -1 {
		add("Topology.DeliveryLimit must be -1, 0 or positive, got %d", t.DeliveryLimit)
	}
	if t.Queue != "" && (t.DeadLetterQueue == t.Queue) {
		add("Topology.DeadLetterQueue must differ from Queue %q", t.Queue)
	}
	for i, b := range t.Bindings {
		if b.Exchange == "" && t.Exchange == "" {
			add("Topology.Bindings[%d] (%q) names no exchange and Topology.Exchange is empty", i, b.RoutingKey)
		}
	}
	for i, d := range t.RetryDelays {
		switch {
		case d < time.Millisecond || d%time.Millisecond != 0:
			add("Topology.RetryDelays[%d] must be a positive whole number of milliseconds, got %v", i, d)
		case d.Milliseconds() > math.MaxInt32:
			add("Topology.RetryDelays[%d] %v is longer than RabbitMQ's TTL limit", i, d)
		case i > 0 && d <= t.RetryDelays[i-1]:
			add("Topology.RetryDelays must increase: [%d] %v follows %v", i, d, t.RetryDelays[i-1])
		}
	}
	for k := range t.QueueArgs {
		switch k {
		case "x-queue-type", "x-single-active-consumer", "x-delivery-limit":
			add("Topology.QueueArgs: set %s through its Topology field", k)
		}
	}
	return errs
}

// RetryQueue returns the name of the delay queue of tier d:
// Queue + ".retry." + d, written "250ms", "30s", "5m" or "1h".
func (t Topology) RetryQueue(d time.Duration) string {
	return t.Queue + RetryQueueInfix + formatDelay(d)
}

func formatDelay(d time.Duration) string {
	switch {
	case d%time.Hour == 0:
		return strconv.FormatInt(int64(d/time.Hour), 10) + "h"
	case d%time.Minute == 0:
		return strconv.FormatInt(int64(d/time.Minute), 10) + "m"
	case d%time.Second == 0:
		return strconv.FormatInt(int64(d/time.Second), 10) + "s"
	default:
		return strconv.FormatInt(d.Milliseconds(), 10) + "ms"
	}
}

// tier returns the delay tier for a delay: the shortest tier at least
// delay, else the longest one (the message then goes round again).
func (t Topology) tier(delay time.Duration) time.Duration {
	for _, d := range t.RetryDelays {
		if d >= delay {
			return d
		}
	}
	return t.RetryDelays[len(t.RetryDelays)-1]
}

// queueArgs returns the arguments of the consumer's queue. Messages
// RabbitMQ itself dead-letters (past x-delivery-limit, or x-max-length with
// overflow drop-head) go to the dead-letter exchange rather than nowhere,
// unless QueueArgs says otherwise.
func (t Topology) queueArgs() amqp.Table {
	args := amqp.Table{"x-queue-type": string(t.QueueType), "x-dead-letter-exchange": t.DeadLetterExchange}
	maps.Copy(args, t.QueueArgs)
	if t.SingleActiveConsumer {
		args["x-single-active-consumer"] = true
	}
	if t.DeliveryLimit != 0 {
		args["x-delivery-limit"] = int64(t.DeliveryLimit)
	}
	return args
}

// declare creates the topology on ch, idempotently: the exchange, the
// queue and its bindings, the dead-letter exchange and queue, and the delay
// queues. A declaration that conflicts with an existing object (another
// queue type, other arguments) fails with RabbitMQ's 406
// PRECONDITION_FAILED, which closes ch.
func (t Topology) declare(ch *amqp.Channel) error {
	step := func(what string, err error) error {
		if err != nil {
			return fmt.Errorf("rabbitmq: declaring %s: %w", what, err)
		}
		return nil
	}
	if t.Exchange != "" {
		if err := step("exchange "+strconv.Quote(t.Exchange),
			ch.ExchangeDeclare(t.Exchange, amqp.ExchangeTopic, true, false, false, false, nil)); err != nil {
			return err
		}
	}
	if _, err := ch.QueueDeclare(t.Queue, true, false, false, false, t.queueArgs()); err != nil {
		return step("queue "+strconv.Quote(t.Queue), err)
	}
	for _, b := range t.Bindings {
		ex := b.Exchange
		if ex == "" {
			ex = t.Exchange
		}
		if err := step(fmt.Sprintf("binding of %q to exchange %q with %q", t.Queue, ex, b.RoutingKey),
			ch.QueueBind(t.Queue, b.RoutingKey, ex, false, nil)); err != nil {
			return err
		}
	}
	if err := step("dead-letter exchange "+strconv.Quote(t.DeadLetterExchange),
		ch.ExchangeDeclare(t.DeadLetterExchange, amqp.ExchangeTopic, true, false, false, false, nil)); err != nil {
		return err
	}
	if _, err := ch.QueueDeclare(t.DeadLetterQueue, true, false, false, false,
		amqp.Table{"x-queue-type": string(t.QueueType)}); err != nil {
		return step("dead-letter queue "+strconv.Quote(t.DeadLetterQueue), err)
	}
	if err := step("binding of the dead-letter queue",
		ch.QueueBind(t.DeadLetterQueue, "#", t.DeadLetterExchange, false, nil)); err != nil {
		return err
	}
	for _, d := range t.RetryDelays {
		name := t.RetryQueue(d)
		_, err := ch.QueueDeclare(name, true, false, false, false, amqp.Table{
			"x-queue-type":              string(QueueClassic),
			"x-message-ttl":             d.Milliseconds(),
			"x-dead-letter-exchange":    "",
			"x-dead-letter-routing-key": t.Queue,
		})
		if err != nil {
			return step("delay queue "+strconv.Quote(name), err)
		}
	}
	return nil
}

// Declare creates the subscription's topology (see [Topology]) on a
// connection of its own, idempotently, and closes it: for development, tests
// and deployment scripts. It fails if an object exists with other settings.
func (s *Subscriber) Declare(ctx context.Context) error {
	conn, err := s.dial.dial(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close() }()
	stop := killOnDone(ctx, conn)
	defer stop()
	ch, err := conn.Channel()
	if err != nil {
		return errors.Join(err, ctx.Err())
	}
	return errors.Join(s.opts.Topology.declare(ch), ctx.Err())
}
