package brokers

import (
	"context"
	"strconv"
	"time"
)

// Subscriber opens the subscription of a consumer to a broker: a NATS
// JetStream durable consumer, a Kafka consumer group on a topic, a RabbitMQ
// queue. Broker adapters implement it; what it subscribes to (stream,
// topic, queue, group, dead-letter destination) is the adapter's
// configuration, not the runtime's.
type Subscriber interface {
	// Subscribe joins the subscription and returns a Source delivering its
	// messages, or an error if it cannot (the broker is unreachable, the
	// stream or queue does not exist). ctx bounds the call only: the
	// Source lives until its Close. Subscribe may be called again after
	// the previous Source was closed (a consumer restart), and several
	// Sources of one Subscriber may be open at once, in one process or
	// many: they share the subscription's messages (competing consumers).
	Subscribe(ctx context.Context) (Source, error)
}

// SubscriberFunc adapts a function to a [Subscriber].
type SubscriberFunc func(ctx context.Context) (Source, error)

// Subscribe calls f(ctx).
func (f SubscriberFunc) Subscribe(ctx context.Context) (Source, error) { return f(ctx) }

// Source delivers the messages of one subscription to one consumer, one at
// a time, each leased to this Source until it is settled through its
// [Settler] or the Source is closed.
//
// Rules an adapter relies on, and the [Consumer] keeps:
//
//   - Receive is called from one goroutine at a time; Close is called
//     once, after the last Receive has returned.
//   - The Settler of a received message is called from any goroutine,
//     concurrently with Receive and with the Settlers of other messages,
//     but never concurrently for one message.
//
// Rules the adapter keeps:
//
//   - Order: messages of one ordering key ([Message.OrderKey]) are
//     returned in the order the broker stores them (stream sequence,
//     partition offset, queue order). A redelivered message may come back
//     after later messages of its key: the runtime, not the Source, keeps
//     the order across retries, by retrying keyed messages in place.
//   - Lease: a returned message is not delivered to another Source while
//     it is unsettled and this Source is open. Adapters whose broker
//     redelivers after an acknowledgement deadline keep extending it for
//     every unsettled message (JetStream: InProgress before AckWait runs
//     out; RabbitMQ: a consumer timeout longer than the longest retry).
//   - Close releases every message the Source holds unsettled, returned by
//     Receive or prefetched and never returned: the broker delivers them
//     again, promptly, to the next Source of the subscription.
//   - A process that dies without Close loses nothing: the broker
//     redelivers its unsettled messages when their lease runs out (its
//     acknowledgement deadline, a closed connection, a rebalance).
type Source interface {
	// Receive returns the next message, blocking until there is one.
	// It returns ctx's error once ctx is done, and an error matching
	// [ErrClosed] once the Source is closed. A message the Source cannot
	// parse (undecodable headers, say) is still returned, with what could
	// be read: the runtime dead-letters it, so that it never blocks the
	// subscription. Other errors are taken as transient (a lost
	// connection the adapter is re-establishing): the runtime logs them
	// and calls Receive again after a backoff, unless they match
	// [ErrClosed] or outbox.ErrPermanent (the subscription is gone for
	// good), which end [Consumer.Run].
	Receive(ctx context.Context) (Message, error)
	// Close stops fetching, releases every unsettled message (see the
	// rules above) and frees the Source's resources; its goroutines have
	// ended when it returns. ctx bounds how long releasing may take.
	// Afterwards Receive and every Settler return an error matching
	// [ErrClosed]. Close is called once.
	Close(ctx context.Context) error
}

// Message is one delivery of a broker message, as a [Source] returns it:
// the broker's bytes, untouched, and how to settle it. The runtime turns
// Headers, Body, Topic and Key into a wire.Envelope with wire.FromHeaders
// and decodes it; the adapter interprets nothing.
type Message struct {
	// Topic is where the message was delivered from: the topic, subject or
	// routing key it was published to. It becomes the Envelope's Topic.
	Topic string
	// Key is the message key the producer set (the Envelope's Key): the
	// Kafka record key, or a header on brokers without one.
	Key string
	// OrderKey is the ordering key: the runtime handles the messages of
	// one non-empty OrderKey one at a time, in the order received, and
	// retries them in place so a failed message is never overtaken by a
	// later one. Adapters set it to Key (NATS, RabbitMQ, or Kafka per
	// key) or to the partition (Kafka per partition); empty means no
	// order is kept for the message.
	OrderKey string
	// Headers are the broker headers as the producer wrote them (see
	// wire.ToHeaders), flattened to strings. Neither the runtime nor the
	// handler modifies them.
	Headers map[string]string
	// Body is the message body: the Envelope's Payload.
	Body []byte
	// Attempt is the delivery attempt, 1 on the first delivery, as the
	// broker (or the adapter) counts them: JetStream NumDelivered, a
	// quorum queue's delivery count, the adapter's own count for Kafka.
	// 0 is taken as 1.
	Attempt int
	// Settler settles the message. It must not be nil.
	Settler Settler
}

// Settler settles one delivered message: it acknowledges it, has it
// redelivered, or moves it to the dead-letter destination.
//
// The runtime settles each message once, with Ack, Retry or DeadLetter;
// only a DeadLetter that failed may be followed by another DeadLetter or by
// Retry. An adapter must nevertheless make every method safe against a
// second call: after a successful settle, later calls do nothing and
// return an error matching [ErrSettled]. After the Source is closed they do
// nothing and return an error matching [ErrClosed].
//
// A settle that fails (the connection is lost, the broker is down, ctx is
// done) returns an error, and the message stays unsettled: the broker will
// deliver it again, to this Source or another, so a failed Ack means a
// duplicate, which the inbox absorbs. The runtime logs and counts such
// failures; it does not repeat a failed Ack.
type Settler interface {
	// Ack acknowledges the message: it is never delivered again to this
	// subscription. It returns once the broker has the acknowledgement,
	// or the adapter has durably recorded it (a Kafka offset marked for
	// commit once every earlier offset of the partition is settled).
	Ack(ctx context.Context) error
	// Retry has the message delivered again, to this Source or another of
	// the subscription, no earlier than delay from now (0: as soon as
	// possible), with Attempt increased by one where the broker or the
	// adapter counts deliveries. How the delay is implemented is the
	// adapter's: JetStream NakWithDelay; Kafka, in place (the adapter
	// hands the record out again after the delay, keeping its offset
	// uncommitted); RabbitMQ, a delay queue whose expired messages return
	// to the queue. The runtime also calls Retry with delay 0 to release a
	// message it did not finish at shutdown.
	Retry(ctx context.Context, delay time.Duration) error
	// DeadLetter publishes the message, Body, Key and Headers unchanged,
	// plus the headers of d ([DeadLetter.Headers]), to the subscription's
	// dead-letter destination, waits for the broker to accept it, then
	// acknowledges the original. If publishing fails, the original stays
	// unsettled and DeadLetter returns the error. A crash between the two
	// steps may leave a copy in the dead-letter destination and redeliver
	// the original: dead-lettering is at least once.
	DeadLetter(ctx context.Context, d DeadLetter) error
}

// Reason says why a message was dead-lettered; it travels in the header
// [HeaderDeadLetterReason].
type Reason string

const (
	// ReasonUndecodable means the message cannot be decoded (malformed headers
	// or body, an event name not registered in the decoder's registry, an
	// unsupported content type). Retrying cannot help, so it is dead-lettered
	// on its first delivery.
	ReasonUndecodable Reason = "undecodable"
	// ReasonUnhandled means no handler is bound to the event
	// (mediator.ErrHandlerNotFound): a wiring mistake of the consuming
	// service, kept for replay once it is fixed.
	ReasonUnhandled Reason = "unhandled"
	// ReasonRejected means the handler's error was classified [Reject] (by
	// default, an error matching outbox.ErrPermanent).
	ReasonRejected Reason = "rejected"
	// ReasonExhausted means the handler failed on every one of
	// [Config.MaxDeliveries] attempts.
	ReasonExhausted Reason = "exhausted"
)

// HeaderKey carries the Envelope's Key (wire.Envelope.Key) on brokers whose messages have no
// key of their own (NATS, RabbitMQ); Kafka uses the record key. Adapters
// write it when sending and read it into [Message.Key].
const HeaderKey = "event-key"

// Headers a dead-lettered message carries besides its own. Names are lower
// case, like those of package wire.
const (
	// HeaderDeadLetterReason is the [Reason].
	HeaderDeadLetterReason = "dead-letter-reason"
	// HeaderDeadLetterError is the error's text, at most [MaxErrorLen]
	// bytes.
	HeaderDeadLetterError = "dead-letter-error"
	// HeaderDeadLetterAttempts is the number of attempts made, in decimal.
	HeaderDeadLetterAttempts = "dead-letter-attempts"
	// HeaderDeadLetterConsumer is the name of the consumer that gave up
	// ([Config.Name]); absent when it has none.
	HeaderDeadLetterConsumer = "dead-letter-consumer"
	// HeaderDeadLetterTopic is the topic, subject or routing key the
	// message was delivered from.
	HeaderDeadLetterTopic = "dead-letter-topic"
	// HeaderDeadLetterTime is when the consumer gave up, in RFC 3339 with
	// nanoseconds, in UTC.
	HeaderDeadLetterTime = "dead-letter-time"
)

// MaxErrorLen bounds the length, in bytes, of the error text a dead letter
// carries in [HeaderDeadLetterError].
const MaxErrorLen = 2048

// DeadLetter describes why a message is dead-lettered; [Settler.DeadLetter]
// publishes it as headers ([DeadLetter.Headers]).
type DeadLetter struct {
	// Reason says why.
	Reason Reason
	// Err is the error of the last attempt.
	Err error
	// Attempts is the number of attempts made, this one included.
	Attempts int
	// Consumer is the consumer's name ([Config.Name]), possibly empty.
	Consumer string
	// Topic is where the message was delivered from ([Message.Topic]).
	Topic string
	// Time is when the consumer gave up.
	Time time.Time
}

// Headers returns the headers to add to the message in the dead-letter
// destination: the HeaderDeadLetter constants, the error text cut to
// [MaxErrorLen] bytes. The result is a new map.
func (d DeadLetter) Headers() map[string]string {
	h := map[string]string{
		HeaderDeadLetterReason:   string(d.Reason),
		HeaderDeadLetterAttempts: strconv.Itoa(d.Attempts),
		HeaderDeadLetterTopic:    d.Topic,
	}
	if d.Err != nil {
		h[HeaderDeadLetterError] = truncate(d.Err.Error(), MaxErrorLen)
	}
	if d.Consumer != "" {
		h[HeaderDeadLetterConsumer] = d.Consumer
	}
	if !d.Time.IsZero() {
		h[HeaderDeadLetterTime] = d.Time.UTC().Format(time.RFC3339Nano)
	}
	return h
}

// truncate cuts s to at most n bytes, on a rune boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && s[cut]&0xC0 == 0x80 {
		cut--
	}
	return s[:cut]
}
