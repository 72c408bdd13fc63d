// Package nats is the NATS JetStream adapter of github.com/gocqrs/cqrs, on
// github.com/nats-io/nats.go and its jetstream package: a [Sender] (the
// outbox.Sender of the relay) and a [Publisher] (events.Publisher) for
// producing, a [Subscriber] (brokers.Subscriber, for brokers.Consumer) for
// consuming, and [Topology.Provision] to create the streams and the
// consumer in development and tests. It passes the conformance kit
// (events/brokers/brokertest), declaring that the server counts deliveries
// and deduplicates publishes.
//
//	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectBufSize(-1))
//
//	sender, err := cqrsnats.NewSender(nc, cqrsnats.SenderConfig{})
//	relay, err := outbox.NewRelay(store, sender, outbox.DefaultRelayConfig())
//
//	sub, err := cqrsnats.NewSubscriber(nc, cqrsnats.SubscriberConfig{
//		Topology: cqrsnats.Topology{Stream: "ORDERS", Consumer: "billing"},
//	})
//	consumer, err := brokers.NewConsumer(sub, decoder, eventMediator.Send, cfg)
//	err = consumer.Run(ctx)
//
// # Messages
//
// An envelope is published to the subject env.Topic (or what
// [SenderConfig].Subject returns), with the body env.Payload, the headers
// wire.ToHeaders(env) (event name and id, timestamp, correlation and
// causation ids, content type, and env.Headers: traceparent, tracestate,
// the user's), the key in the header brokers.HeaderKey ("event-key"), and
// Nats-Msg-Id set to the event id. The key is not part of the subject by
// default: the stream keeps one order for all its subjects, so the records
// of a key are stored in order whatever their subject. A consumer receives
// the subject as the message's topic, the "event-key" header as its key and
// ordering key, the other headers (first value of each, without
// JetStream's "Nats-" headers) as they are, the body untouched, and the
// server's delivery count (NumDelivered) as the attempt. python-cqrs
// publishes a bare JSON body without headers; the runtime decodes it from
// the body.
//
// # What is guaranteed
//
// Sending:
//
//   - Send reports a record as sent only once the stream has acknowledged
//     it (its PubAck), and reports every record: in an *outbox.BatchError,
//     with a *[PublishError] for each failure.
//   - Per key, in batch order: the records of a non-empty key are
//     published one at a time, each once the previous one is acknowledged,
//     and none after one of its key failed (outbox.ErrNotAttempted). The
//     stream therefore stores a key's records in batch order. Records of
//     different keys, and records without a key, are in flight together,
//     at most [SenderConfig].MaxPending at a time over every Send.
//   - Deduplication: the stream drops a second publish of an event id
//     within its duplicate window (two minutes by default,
//     [Topology].Duplicates), so a relay sending again after a crash or a
//     lost acknowledgement does not store the event twice.
//   - A record that can never be sent (no topic, an invalid subject, a
//     header NATS cannot carry unchanged, a message larger than the stream
//     accepts) fails with a permanent error (outbox.ErrPermanent,
//     [ErrInvalidMessage]); the relay does not retry it.
//
// Consuming, from a durable pull consumer with explicit acknowledgement:
//
//   - Lease: every message a Source holds, returned by Receive or received
//     and not yet returned, is kept from redelivery with InProgress every
//     [SubscriberConfig].ProgressInterval (a third of AckWait), however
//     long its handler and its in-place retries take. The consumer's
//     MaxAckPending (bounded: Subscribe refuses an unbounded one) bounds
//     how many messages the consumer's Sources hold together; one Source
//     holds at most MaxAckPending minus two pull batches, and pulls no more
//     until some are settled, so that its pulls never take the consumer to
//     its MaxAckPending on their own and other Sources get their share.
//   - Ack, Retry and DeadLetter return once the server has confirmed them
//     (Ack waits for the server, as the "double ack" does; Retry is a Nak,
//     with a delay if any). A settle that cannot be confirmed returns an
//     error (a *[SettleError]) and the message is delivered again: after
//     a failed Ack or Retry the Source stops extending its lease, so the
//     server delivers it again once AckWait runs out.
//   - DeadLetter publishes the message (body, headers, key) with the
//     brokers dead-letter headers to the dead-letter subject, waits for the
//     dead-letter stream's acknowledgement, then terminates the original
//     (Term, with the reason on servers from 2.10.4). The dead letter's
//     Nats-Msg-Id is made of the stream, the consumer and the stream
//     sequence, so dead-lettering a message again after a crash between
//     the two steps stores one copy within the duplicate window.
//   - Close gives back (Nak) every message the Source holds, so that the
//     server delivers them at once to the next Source of the consumer.
//   - Attempts are counted by the server, across restarts and processes.
//
// Connections. The client (nats.go) reconnects on its own, with the
// options of the connection: use nats.MaxReconnects(-1), so that it never
// gives up, and nats.ReconnectBufSize(-1), so that nothing is buffered
// while disconnected. While the connection is down:
//
//   - Send fails the records at once with [ErrDisconnected]; publishes
//     awaiting their acknowledgement when the connection is lost fail with
//     the client's error. The relay sends them again; those the stream had
//     stored are dropped as duplicates.
//   - A Source's Receive returns an error matching [ErrDisconnected] once
//     per loss (the runtime logs it, counts it and calls Receive again
//     after its backoff), then waits for the connection; settles fail at
//     once with [ErrDisconnected], those in flight included. Once the
//     client has reconnected, the Source extends the leases it holds
//     again and receives again; the server delivers again what could not
//     be settled.
//   - A connection closed for good (the client gave up, or nc.Close) ends
//     every Source with a permanent error (outbox.ErrPermanent wrapping
//     nats.ErrConnectionClosed), which ends brokers.Consumer.Run.
//   - A consumer deleted while a Source is open ends the subscription:
//     with [SubscriberConfig].Provision the Source provisions and opens
//     it again, else it fails with a permanent error ([ErrTopology]).
//
// # What is not guaranteed
//
//   - Exactly-once delivery: a message is delivered again after a failed
//     or lost settle, a crash, or a disconnection longer than AckWait (the
//     Source cannot extend its leases meanwhile, and the server may
//     deliver them to another Source). The consumer's inbox absorbs the
//     duplicates.
//   - Deduplication of publishes outside the stream's duplicate window.
//   - Order across keys, or across processes: the Sources of one consumer
//     share its messages, so one key's messages spread over them. To keep
//     each key in one process, give each process a consumer filtering a
//     partition of the subjects (a subject mapping with partition(), and
//     [SenderConfig].Subject putting the key in the subject), or pin the
//     consumer to one client at a time (a priority group with the pinned
//     client policy, nats-server 2.11 and later).
//   - Dead letters for messages the server stops delivering on its own:
//     past the consumer's MaxDeliver the server only emits an advisory.
//     Provision leaves MaxDeliver unlimited; if you set it, keep it above
//     brokers.Config MaxDeliveries plus the restarts you expect.
//
// # Server versions
//
// nats-server 2.10.15 or later is recommended. Older servers work, with
// these differences, which the tests run against nats-server 2.9.10:
//
//   - Before 2.10.15, a message given back while no pull request waits is
//     delivered again only once its AckWait runs out, and before 2.10.14
//     the server may then also deliver another message a second time, as
//     new (nats-server pull requests 5305 and 5338). On those servers
//     Close does not give messages back: they come back when their AckWait
//     runs out.
//   - Before 2.10.4, Term ignores a reason: DeadLetter sends a bare Term.
//   - 2.9 drops a pull request, now and then under load, without telling
//     the client; the Source pulls again after two missed heartbeats
//     (about a second), and reports the stall as a transient error.
//
// # Provisioning
//
// [Topology.Provision] creates what is missing: the stream (capturing
// [Topology].Subjects), the dead-letter stream (default "<stream>_DEAD_LETTER",
// capturing "dead-letter.<stream>.>") and the durable consumer (explicit
// acknowledgement, delivering the whole stream, AckWait 30s, MaxAckPending
// 256, MaxDeliver unlimited). It leaves what exists as it is, after
// checking that the streams capture the subjects they must. A Subscriber
// with [SubscriberConfig].Provision calls it on every Subscribe; in
// production, leave it off and create the streams and the consumer with
// your usual tooling: Subscribe then checks that the consumer is a pull
// consumer with explicit acknowledgement and a bounded MaxAckPending, and
// that a stream other than the consumer's captures the dead-letter
// subject.
//
// # Goroutines
//
// A Sender starts none of its own; the client's asynchronous publishing
// keeps a subscription for acknowledgements and a watcher of the
// connection, which end when the connection is closed. Each Source runs
// two goroutines (the keeper of leases and of the connection state, and a
// supervisor that opens the subscription again when needed) and the
// client's consuming goroutines; Close ends its own before it returns,
// and the client's end as soon as the subscription is drained.
//
// # Errors
//
// Sentinels, matched with errors.Is: [ErrInvalidConfig] (every problem at
// once, through errors.Join), [ErrTopology], [ErrDisconnected],
// [ErrInvalidMessage]. Typed errors, matched with errors.As:
// [PublishError] (one record not sent) and [SettleError] (one settle not
// confirmed); both unwrap to the cause.
package nats
