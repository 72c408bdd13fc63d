// Package brokers consumes notification events from message brokers: the
// broker-independent consumer runtime ([Consumer]), the contracts a broker
// adapter implements for it ([Subscriber], [Source], [Message], [Settler]),
// and [MemoryBroker], an in-memory broker that is both their reference
// implementation and the transport of tests. Package brokertest is the
// conformance kit adapters are held to; the NATS JetStream, Kafka and
// RabbitMQ adapters live in modules of their own. On the producing side an
// adapter implements outbox.Sender, which the outbox relay calls.
//
// # Use
//
//	consumer, err := brokers.NewConsumer(subscriber, decoder, eventMediator.Send, brokers.Config{
//		Name:           "billing",
//		MaxConcurrency: 8,
//		MaxDeliveries:  10,
//		Backoff:        outbox.Backoff{Base: time.Second, Max: time.Minute, Jitter: 0.5},
//		Inbox:          inboxStore, // deduplicate, in the handler's transaction
//		Transactor:     db,
//		SettleTimeout:  10 * time.Second,
//		DrainTimeout:   10 * time.Second,
//	})
//	err = consumer.Run(ctx) // until ctx is done
//
// Start from [DefaultConfig]: its zero value is not valid. [NewConsumer]
// reports every invalid setting at once, each matching [ErrInvalidConfig].
//
// # What happens to a message
//
// For each message the Source returns, the consumer:
//
//  1. rebuilds its envelope: wire.FromHeaders of its headers, with the
//     message's topic, key and body, and decodes it with the wire.Decoder
//     (python-cqrs's bare bodies, with no headers, decode from the body);
//  2. derives the handler's context: [Config.Extract] (trace propagation)
//     if set, then the event's lineage (events.WithLineage): the envelope's
//     correlation id, or the event's own id when it has none, and the
//     event's id as the causation id, so what the handlers emit continues
//     the correlation;
//  3. calls the handler, in a transaction of [Config.Transactor] if set,
//     with the inbox record of (Name, event id) in the same transaction if
//     [Config.Inbox] is set (inbox.Deduplicator): an event already recorded
//     is not handled again;
//  4. settles the message, only once the handler has returned, according
//     to the outcome.
//
// The outcomes:
//
//   - returned nil, or the event was a duplicate: Ack;
//   - the message cannot be decoded (malformed headers or body, an event
//     name the registry does not know, an unsupported content type): it is
//     dead-lettered on its first delivery ([ReasonUndecodable]). It never
//     crashes the consumer and never blocks its key;
//   - mediator.ErrHandlerNotFound (no handler is bound to the event): it is
//     dead-lettered at once ([ReasonUnhandled]). The event was decodable,
//     so this service registered it, yet nothing handles it: a wiring
//     mistake, which the dead-letter destination keeps for replay once it is
//     fixed, rather than an acknowledgement that loses it. A service that
//     shares a topic with events it means to ignore returns [Drop] for
//     wire.ErrUnknownEvent or mediator.ErrHandlerNotFound from a
//     [Config.Classify] that delegates to [DefaultClassify];
//   - an error matching outbox.ErrPermanent (outbox.Permanent(err)): it is
//     dead-lettered at once ([ReasonRejected]);
//   - any other error, a panic (recovered as a *PanicError) included: it is
//     tried again after [Config.Backoff], until [Config.MaxDeliveries]
//     attempts have failed; it is then dead-lettered ([ReasonExhausted]);
//   - [Config.Classify] may map any error to [Retry], [Reject]
//     (dead-letter) or [Drop] (Ack, logged at Warn level).
//
// A dead-lettered message is published unchanged, with headers saying why
// ([DeadLetter.Headers]: reason, error text, attempts, consumer, topic,
// time), to the subscription's dead-letter destination, and then
// acknowledged. If publishing it fails, the message stays with the broker
// and is dead-lettered again later.
//
// # Retries, in place or through the broker
//
// A message with an ordering key ([Message.OrderKey]) is retried in place:
// the consumer keeps it, waits for the backoff without holding a handler
// slot, and calls the handler again, while the later messages of its key
// wait behind it. So a failing message never lets a later message of its
// key overtake it, at the price of holding that key (and, on Kafka, the
// commit of its partition) for up to the sum of the backoffs. A message
// without a key, or any message with [Config.Unordered], is handed back to
// the broker with [Settler.Retry] and a delay, and frees its place at once.
// Attempts are the broker's delivery count plus the retries made in place.
//
// # Order and bounds
//
//   - Messages of one ordering key are handled one at a time, in the order
//     the Source returned them, retries included. Messages of different
//     keys, and messages without a key, are handled concurrently, in no
//     particular order.
//   - At most [Config.MaxConcurrency] handlers run at once. With
//     [Config.MaxBatch], several messages may share one transaction (their
//     handlers run one after another in it); a failure in it rolls it back
//     and each message is then handled on its own, so the guarantees above
//     and below are unchanged.
//   - At most [Config.MaxInFlight] messages are held received and
//     unsettled (handled, queued behind their key, waiting for a slot or a
//     retry); the consumer stops receiving while it holds that many. A
//     key that keeps failing can so hold the consumer's whole budget until
//     its messages are dead-lettered: size MaxDeliveries and Backoff for
//     it, or use Unordered.
//   - Run's goroutines are workers, kept from one message to the next:
//     one per message being handled or waiting (for a slot, a retry in
//     place, or the message ahead of it on its key), at most MaxInFlight,
//     plus one while stopping.
//
// # When calls return, and cancellation
//
// [Consumer.Run] subscribes ([Subscriber.Subscribe]) and returns its error
// at once if it fails, unless ctx is done by then: stopped before it
// started, Run returns nil. It then runs until ctx is done, and returns nil; or
// until the Source fails for good (an error matching [ErrClosed] or
// outbox.ErrPermanent), and returns that error. Transient Receive errors are
// logged, counted and retried with backoff. Stopping, in both cases:
//
//  1. no new handler call starts from the moment ctx is done;
//  2. messages received but not started (queued behind their key, waiting
//     for a slot or for a retry in place) are released: Retry with no
//     delay, no failure counted;
//  3. handlers already running go on, with a context that is not cancelled,
//     for up to [Config.DrainTimeout]; then their context is cancelled. A
//     handler that returns nil is acknowledged (what finished is
//     acknowledged, exactly); one that fails because it was cancelled is
//     released;
//  4. the Source is closed, which releases what it prefetched;
//  5. Run returns, every goroutine it started having ended. A handler that
//     ignores its context delays Run.
//
// Every Ack, Retry and DeadLetter call, and Close, is bounded by
// [Config.SettleTimeout], with a context that keeps ctx's values but not
// its cancellation. The calls of a quarter of SettleTimeout share one
// context, so a call's deadline lies between SettleTimeout and 1.25 times
// it from its start. A settle that fails (a lost connection) is logged and
// counted ([Counters].SettleErrors); the broker delivers the message again.
// Run returns [ErrRunning] if the consumer is already running; it may run
// again once it returned (a restart).
//
// # Crashes
//
//   - The process dies while a handler runs: its transaction, inbox record
//     included, rolls back; the broker redelivers the message once its
//     lease runs out (acknowledgement deadline, closed connection,
//     rebalance), and it is handled again.
//   - The process dies after the commit and before the Ack: the message is
//     redelivered, and the inbox finds its record: it is acknowledged
//     without being handled again. Without the inbox it is handled twice.
//   - The process dies between publishing a dead letter and acknowledging
//     the original: the original is redelivered and dead-lettered again;
//     the dead-letter destination holds two copies.
//   - A message that crashes the process itself (not a panic, which is
//     recovered) is redelivered each time; where the broker counts
//     deliveries (JetStream, quorum queues) its attempts grow, and once
//     they exceed MaxDeliveries it is dead-lettered without being handled
//     ([ReasonExhausted]); where the adapter counts them in memory (Kafka)
//     it is redelivered forever. Releases at shutdown count as deliveries
//     on some brokers too, so a message released more than MaxDeliveries
//     times is dead-lettered the same way.
//
// # Guarantees across processes
//
//   - At least once: every message is acknowledged only after its handler
//     returned nil (or it was a duplicate, or was dropped by an explicit
//     [Drop]), or it is in the dead-letter destination with the reason.
//     Nothing is acknowledged on a failure, and nothing is lost on a crash
//     or a shutdown.
//   - Per-key order: within one consumer, the messages of a key are handled
//     one at a time in the order the broker delivered them, and a failed
//     message is retried before any later message of its key. Across
//     processes, this holds when the broker gives each key to one consumer
//     at a time: Kafka partitions (the record key chooses the partition),
//     a JetStream consumer per subject partition or a pinned priority
//     group, a RabbitMQ queue with a single active consumer. A redelivery
//     (after a crash, a lost Ack, or a shutdown that released a message)
//     may repeat an event after later events of its key were handled; with
//     the inbox it is absorbed, so the database effects keep their order.
//   - Once per consumer, for database effects: with [Config.Inbox] and
//     [Config.Transactor] of the handler's database, an event's effects
//     and its inbox record commit together, once per consumer Name,
//     however often it is delivered (and the follow-up events it emits
//     into an outbox of the same database commit with them).
//
// Not guaranteed: exactly-once delivery, or exactly-once effects outside
// the database (an e-mail, an HTTP call); any order across keys or among
// messages without a key; order across processes on a broker that spreads
// one key's messages over several consumers; progress of a key whose head
// message keeps failing (it holds the key until dead-lettered); attempts
// counted across restarts on brokers that do not count deliveries (Kafka).
//
// # Errors
//
// Sentinels, matched with errors.Is: [ErrInvalidConfig] (every problem at
// once, through errors.Join), [ErrRunning], [ErrClosed], [ErrSettled] and
// [ErrUndecodable] (which wraps the wire error: wire.ErrUnknownEvent,
// wire.ErrMalformed, ...). A panic in a handler, a hook or an adapter is
// recovered as a *[PanicError].
//
// # Logs and counters
//
// Logs go to [Config.Logger] (log/slog): start and stop at Info, retries,
// drops and failed settles at Warn, dead letters at Error, duplicates at
// Debug, each with the topic, key, event name and id, and attempt.
// [Consumer.Counters] counts what the consumer did.
//
// # Trace propagation
//
// [Config.Extract] receives the handler's context and the envelope's extra
// headers (wire.HeaderTraceparent, wire.HeaderTracestate, and the user's)
// and returns the context to hand on: an OpenTelemetry propagator's
// Extract over a map carrier, from the mediator/otel module, fits it.
//
// # Writing an adapter
//
// Implement [Subscriber] (and so [Source] and [Settler]) for consuming and
// outbox.Sender for producing, following the rules on each interface, and
// run brokertest.Run against a real broker. docs/brokers.md describes how
// NATS JetStream, Kafka and RabbitMQ map onto the contract.
package brokers
