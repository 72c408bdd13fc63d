// Package rabbitmq connects the event transport to RabbitMQ (AMQP 0-9-1,
// on github.com/rabbitmq/amqp091-go): a [Sender] (the outbox.Sender an
// outbox relay calls) and a [Publisher] for producing, a [Subscriber] (the
// brokers.Subscriber of a brokers.Consumer) for consuming, and the
// [Topology] they need, which [Subscriber.Declare] creates. It passes the
// conformance kit events/brokers/brokertest against a real broker, with
// quorum and with classic queues. It needs no RabbitMQ plugin.
//
// # Topology
//
//	producer ──► Exchange (durable topic) ──routing key = topic──► Queue (quorum, durable) ──► Sources
//	                                                                 ▲      │ x-dead-letter-exchange
//	Queue.retry.1s … Queue.retry.30m (classic, x-message-ttl) ───────┘      ▼
//	      ▲ delayed retries, through the default exchange          Queue.dlx (topic) ──#──► Queue.dlq
//	      └───────────────────────────── Settler.Retry(delay)      ▲ Settler.DeadLetter
//
// Events are published to one durable topic exchange with the envelope's
// Topic as the routing key; each consuming service has its own durable
// queue bound to the routing keys (or patterns) it consumes, a dead-letter
// exchange and queue, and one delay queue per retry tier (see [Topology]).
// Queue and dead-letter queue are quorum queues by default ([QueueQuorum]):
// replicated, and counting deliveries.
//
// # Producing
//
// [Sender.Send] publishes each envelope as a persistent message: routing
// key = Topic, body = Payload, headers = wire.ToHeaders(env) plus
// brokers.HeaderKey ("event-key") = Key, and, for other clients, message-id
// = the event ID, correlation-id, type (the event name), content-type and
// timestamp. It publishes on a channel in confirm mode, with the mandatory
// flag, and returns once RabbitMQ has confirmed every message: for a
// durable queue, once the message is on disk (classic) or replicated to a
// majority (quorum). Records of one key are published one after the other,
// each after the previous one's confirmation, so they reach the queue in
// order and none follows a failed one (outbox.ErrNotAttempted); other keys
// are published together. Failures are reported per record
// (outbox.BatchError): a message no queue takes comes back (basic.return)
// and fails for good (*[ReturnedError], outbox.ErrPermanent), unless
// [SenderConfig.AllowUnroutable]; a nack ([ErrNacked]) or a lost
// connection ([ErrConnectionLost]) is transient. RabbitMQ has no publish
// deduplication: a record sent again (by a relay after a crash, or after a
// lost confirmation) is delivered again, and the consumer's inbox absorbs
// it.
//
// [Publisher] is an events.Publisher that sends each event at once through
// a Sender, for programs that accept losing an event when the broker is
// down; the outbox (outbox.Capture and a relay with the Sender) does not.
//
// # Consuming
//
// Each Source of a [Subscriber] consumes the queue on a connection of its
// own, with manual acknowledgement and a prefetch of
// [SubscriberConfig.Prefetch] (basic.qos). Messages are returned as
// brokers.Message values: Topic = the routing key the producer used, Key
// and OrderKey = the "event-key" header, Headers = the producer's headers
// as text (RabbitMQ's x-death, x-delivery-count, x-acquired-count and
// x-first-death-*/x-last-death-* headers, and the adapter's own x-cqrs-*
// headers, are left out), Body untouched, and Attempt counted as below.
// The runtime rebuilds and decodes the envelope, so a python-cqrs body with
// no header at all decodes too.
//
// Settling:
//
//   - Ack is basic.ack. RabbitMQ does not answer it: it fails only when the
//     channel is gone, and RabbitMQ has then requeued the message.
//   - Retry(0) is basic.reject with requeue: the message is delivered again
//     at once, in its place in a classic queue, but behind the messages not
//     yet delivered in a quorum queue (as RabbitMQ 3.x does).
//   - Retry(delay) publishes a copy of the message to the delay queue of the
//     shortest tier at least delay (Queue.retry.<tier>), through the default
//     exchange, waits for the confirmation, then acknowledges the original.
//     When the tier's TTL expires, RabbitMQ dead-letters the copy to the
//     default exchange with the consumer's queue as routing key, so it
//     comes back to this queue only, at its tail: later messages of its key
//     may be handled before it (the runtime only retries unkeyed messages,
//     or every message with Unordered, this way; keyed ones are retried in
//     place). The copy carries the attempts so far ([HeaderAttempts]) and
//     the original routing key ([HeaderTopic]); a delay longer than the
//     longest tier goes round that tier again until [HeaderNotBefore]. One
//     delay queue per tier, each with a fixed TTL, because RabbitMQ expires
//     messages only from the head of a queue. If the copy cannot be
//     published the message is requeued at once, and the error returned.
//   - DeadLetter publishes the message (body, properties, the producer's
//     headers plus brokers.DeadLetter.Headers) to the dead-letter exchange
//     with its original routing key, mandatory, waits for the
//     confirmation, then acknowledges the original. If the publish fails,
//     the original stays unsettled. Read the dead-letter queue with a
//     Subscriber of its own; republish what was fixed with a Sender.
//
// The queue is also declared with x-dead-letter-exchange set to the
// dead-letter exchange, so messages RabbitMQ itself gives up on (past
// x-delivery-limit, dropped by x-max-length) land in the dead-letter queue,
// with RabbitMQ's x-death header instead of the runtime's.
//
// Attempt is the copy's [HeaderAttempts] plus RabbitMQ's count of the
// message's returns plus one. Quorum queues count returns
// (x-delivery-count, and from RabbitMQ 4.3 x-acquired-count), including the
// requeues of a closed channel, so Attempt survives restarts and a message
// that crashes its consumer is dead-lettered once past MaxDeliveries.
// Classic queues only flag a redelivery: Attempt then counts delayed
// retries exactly, and every other redelivery as one.
//
// # Connections
//
// amqp091-go does not reconnect (and its experimental Config.Recovery must
// stay off: the adapter must see every lost connection). The Sender dials
// on first use, and again on the Send after its connection was lost; a
// Send in progress when it is lost reports its unconfirmed records with
// [ErrConnectionLost]. A Source watches its connection (NotifyClose, and
// the delivery channel): when it is lost, Receive returns an error
// matching ErrConnectionLost once (transient: the runtime logs it and
// calls Receive again after its backoff); the next Receive reconnects, at
// once the first time and then spaced by [SubscriberConfig.Reconnect],
// re-declares the topology if [SubscriberConfig.Declare] is set, and
// consumes again. RabbitMQ requeues every message the lost connection
// held; settling one of them returns an error matching ErrConnectionLost,
// and it is delivered again. A queue that no longer exists, a refused
// access or a topology conflicting with the broker's makes Receive return
// an error matching outbox.ErrPermanent, which ends the consumer's Run.
//
// Every call is bounded by its context. amqp091-go cannot interrupt a
// publish held by RabbitMQ's flow control (a memory or disk alarm), nor an
// unanswered request: when a context ends during one, the adapter closes
// the connection, which fails everything on it (the Sender's other Sends,
// the Source's deliveries, which RabbitMQ requeues); the next call
// re-dials.
//
// # Guarantees
//
//   - At least once, end to end: Send returns success only for messages
//     RabbitMQ confirmed and routed to a queue; a message is removed from
//     the queue only by an Ack, by a Retry(delay) whose copy was confirmed
//     first, or by a DeadLetter whose copy was confirmed first. Nothing is
//     lost on a crash, a lost connection or a shutdown: RabbitMQ requeues
//     what a closed channel held.
//   - Per-key order, within one queue and one Source: a key's messages are
//     published in order (one at a time), stored in order, and delivered in
//     order; the runtime handles them one at a time and retries a failed
//     one in place. Across processes, set [Topology.SingleActiveConsumer]
//     so that one Source receives at a time.
//   - Dead letters carry the runtime's headers and the original routing
//     key, and are confirmed before the original is acknowledged.
//
// Not guaranteed:
//
//   - Exactly once: RabbitMQ does not deduplicate publishes, a lost
//     acknowledgement redelivers, and a crash between publishing a delayed
//     copy or a dead letter and acknowledging the original leaves two
//     copies. Deduplicate with the consumer's inbox.
//   - Order after a redelivery: a message requeued by a lost connection, a
//     shutdown or Retry(0) can be handled after later messages of its key
//     (in a quorum queue it goes behind the messages not yet delivered); a
//     delayed retry always goes to the tail. Classic queues requeue in
//     place, at the price of counting fewer attempts.
//   - A lease longer than RabbitMQ's consumer_timeout (30 minutes by
//     default, x-consumer-timeout per queue from RabbitMQ 3.12): a channel
//     holding a message longer is closed by RabbitMQ and its messages
//     requeued. Keep it above the longest handler plus in-place retries.
//   - Delivery-limit: a quorum queue's x-delivery-limit (20 by default from
//     RabbitMQ 4.0) dead-letters a message without the runtime's headers
//     once exceeded; set [Topology.DeliveryLimit] above MaxDeliveries plus
//     the restarts you expect.
//   - Expired delayed copies move from a delay queue back to the consumer's
//     queue with RabbitMQ's at-most-once dead-lettering: if the consumer's
//     queue is deleted meanwhile, they are dropped.
//
// # Sharing a topic with python-cqrs
//
// python-cqrs publishes the bare JSON body {"event_id", "event_timestamp",
// "event_name", "topic", "payload"}, without headers, with routing key =
// topic, to an exchange of its own (direct, auto-delete). A Go consumer
// binds its queue to that exchange ([Binding] with Exchange set; the
// adapter never declares another's exchange) and decodes the bare body
// like any other. A python consumer reads a queue named after the topic:
// bind that queue to the Sender's exchange with the topic as routing key;
// it receives the body the wire.JSON codec writes, which is python-cqrs's.
//
// # Development and tests
//
// [SubscriberConfig.Declare] and [SenderConfig.DeclareExchange] create
// what is missing on every connection; [Subscriber.Declare] does it once.
// In production, turn them off and provision with your own tools, using
// the names of [Topology] ([Topology.RetryQueue] names a delay queue).
// The tests of this package run against the broker named by the
// RABBITMQ_URL environment variable (default
// amqp://guest:guest@127.0.0.1:5672/); they skip when it cannot be reached,
// unless CI is set.
package rabbitmq
