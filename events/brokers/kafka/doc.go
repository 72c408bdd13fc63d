// Package kafka connects the outbox relay and the consumer runtime of
// module github.com/gocqrs/cqrs to Apache Kafka, on franz-go
// (github.com/twmb/franz-go/pkg/kgo):
//
//   - [Sender] is an outbox.Sender: the relay hands it batches of envelopes
//     and it produces them, acknowledged by all in-sync replicas;
//   - [Publisher] is an events.Publisher that produces directly, without an
//     outbox, for services that accept losing an event when the broker is
//     down;
//   - [Subscriber] is a brokers.Subscriber: each Source it opens is a member
//     of a consumer group on one topic, for brokers.Consumer;
//   - [EnsureTopics] creates topics, for development and tests.
//
// It passes the conformance kit of package events/brokers/brokertest.
//
// # Use
//
//	sender, err := kafka.NewSender(kafka.SenderConfig{Brokers: []string{"kafka-1:9092"}})
//	defer sender.Close()
//	relay, err := outbox.NewRelay(store, sender, outbox.DefaultRelayConfig())
//
//	sub, err := kafka.NewSubscriber(kafka.SubscriberConfig{
//		Brokers: []string{"kafka-1:9092"},
//		Topic:   "orders",
//		Group:   "billing", // dead letters go to "orders.dlq"
//	})
//	consumer, err := brokers.NewConsumer(sub, decoder, eventMediator.Send, cfg)
//	err = consumer.Run(ctx)
//
// TLS, SASL, client ids, dialers, timeouts and batching are franz-go
// options, passed in ClientOptions; the few the adapter needs are applied
// last, and those that would break its guarantees are refused.
//
// # Producing
//
// An envelope becomes a record of topic env.Topic, key env.Key (no key when
// it is empty), value env.Payload and headers wire.ToHeaders(env): the
// event's name, id, timestamp, correlation and causation ids and content
// type, in that order, then env.Headers (traceparent, tracestate,
// content-encoding, yours) in name order. The record's timestamp is when it is produced (the
// event's own time is in its header): Kafka's time-based retention then
// counts from the send, not from an event that waited in the outbox.
//
// The records are produced with acks from all in-sync replicas
// (kgo.RequiredAcks(kgo.AllISRAcks())) and idempotent writes: the
// producer's own retries (after a lost connection, a leader change) are
// written once and in order. A new producer resending after a crash is not
// deduplicated by Kafka: consumers deduplicate, with the inbox. franz-go's
// default partitioner hashes the key as Kafka's Java client does (murmur2),
// so the records of a key go to one partition, in order, as long as the
// partition count does not change; records without a key are spread over
// partitions.
//
// Send returns when every record is acknowledged or has failed, with an
// *outbox.BatchError holding one error per record. Failures that no retry
// can fix are permanent (outbox.Permanent: the relay gives the row up):
// no topic ([ErrNoTopic]), reserved names in env.Headers
// (wire.ErrReservedHeader), a record larger than MaxRecordBytes
// ([ErrRecordTooLarge]), an invalid topic name. The others are
// transient, *[PartitionError] values, and the relay retries them up to its
// MaxAttempts: the broker refuses a produce request as a whole, and the
// client then fails every record buffered behind it in the partition, so
// an error the broker returns (message too large, invalid record) may not
// be the record's own. Once ctx is done Send returns at once, the records
// not acknowledged reporting ctx's error; those already handed to the
// client may still be written.
//
// # Order of a key within a Send
//
// outbox.Sender requires that the records of a key be written in batch
// order, and that none be written after an earlier record of its key
// failed (it reports outbox.ErrNotAttempted instead). The Sender keeps it
// this way:
//
//   - A record behind one of its key that failed before being produced (a
//     permanent failure, above) is not produced.
//   - The records of a key to one topic go to one partition. They are
//     handed to the client together, in batch order, in one ProduceSync
//     call with the rest of the batch: the client buffers them while its
//     partitions linger (10ms by default), then stops lingering once the
//     last one is buffered, so a batch usually leaves in one produce
//     request per partition. The client keeps a partition's records in
//     order (its writes are idempotent), and when a produce request fails
//     it fails every record buffered behind it in the partition rather than
//     send them.
//   - A record of a key to another topic than its predecessor's is another
//     partition: it is produced in a later round, once the earlier records
//     of its key are acknowledged (a further round trip), and not at all if
//     one of them failed.
//
// One window remains: a produce request of the partition that leaves
// before the last record of the key is buffered (the batch fills a produce
// batch, a concurrent Send's request carries it, or kgo.ProducerLinger(0)
// is set) and fails before that record is buffered lets the record go in a
// new request, which may succeed. Send detects it and logs it at Error; the
// relay sends the failed record again after the later ones (it logs the
// same). [SenderConfig.SerialKeys] closes the window, at the cost of one
// round trip per record of a key in a batch: each record waits for its
// predecessor's acknowledgement.
//
// Send reuses the buffers of earlier Sends, so that it allocates little
// beyond what the client does: a record's bytes are copied once, into a
// buffer the Sender owns; envs are neither kept nor modified.
//
// # Consuming
//
// A [Subscriber] is a consumer group (SubscriberConfig.Group) on one topic;
// each Subscribe creates a franz-go client that joins it, with manual
// commits. A new group starts at the earliest offset. The default
// balancer is franz-go's cooperative-sticky: a member joining or leaving
// moves only the partitions that change owner.
//
// Messages: Topic, Key (the record key as a string, "" without one),
// Headers (the record headers, the first value of a repeated name), Body
// (the record value), Attempt (counted by the Source, in memory), and
// OrderKey:
//
//   - [OrderPartition], the default: "topic/partition". The runtime handles
//     a partition's messages one at a time, in offset order, retrying a
//     failed one in place, so what it acknowledges is always a prefix of the
//     partition and commits never run behind it: a restart redelivers
//     nothing acknowledged. A Source handles at most as many messages at
//     once as it has partitions.
//   - [OrderKey]: the record key, so different keys of a partition are
//     handled concurrently (records without a key, unordered). The commit
//     of a partition still waits for its lowest unsettled offset, so after
//     a restart or a rebalance the messages acknowledged behind it are
//     delivered again (the inbox absorbs them).
//
// Settling:
//
//   - Ack marks the record settled. A partition's offset is committed past
//     the longest settled prefix of its records, never past an unsettled
//     one; commits are made in the background, one at a time (acks arriving
//     during a commit are committed by the next), no more often than
//     CommitInterval, retried after failures, and synchronously when
//     partitions are revoked and at Close.
//   - Retry(delay) keeps the offset uncommitted and hands the record out
//     again from Receive once delay has passed, Attempt increased. Kafka
//     has no per-message redelivery: the retry is the Source's, in
//     process, and holds the partition's commit (not its later records)
//     until the record is settled. The runtime calls it for the messages
//     it does not retry in place ([brokers.Config.Unordered], or no
//     OrderKey), and to release messages at shutdown.
//   - DeadLetter produces the record (key, value and headers, plus the
//     dead-letter headers, replacing any of the same name) to the
//     dead-letter topic (SubscriberConfig.DeadLetterTopic, default
//     topic + ".dlq"), waits for its acknowledgement by all in-sync
//     replicas, then settles the record as Ack does. If producing fails the
//     record stays leased.
//   - Settling twice returns brokers.ErrSettled; after Close,
//     brokers.ErrClosed; after the record's partition was revoked or lost,
//     [ErrRevoked].
//
// Close commits what is settled, leaves the group and closes the client:
// what it held unsettled, returned by Receive or not, is not committed,
// and the partitions' next owner reads it again.
//
// # Rebalances
//
// A partition revoked from a Source is a lost lease. The Source waits up to
// [SubscriberConfig.RevokeTimeout] (5s by default; keep it well below the
// group's rebalance timeout, which the rebalance is bounded by) for the
// messages of the revoked partitions that are being handled to be settled,
// commits what was settled, and gives the partitions up: the records it had
// polled and not handed out are dropped, and the settles of those still
// out fail with [ErrRevoked]. The new owner reads from the commit, so a
// message still being handled when the wait ends is handled by both (with
// the inbox, the effects of only one of them commit). A group session lost (the member missed its session timeout,
// behind a network partition, say) is the same without the commit.
// Polls and rebalance callbacks exclude each other (kgo.BlockRebalanceOnPoll,
// with the rebalance allowed again as soon as the polled records are
// recorded), so records of a revoked partition are never handed out after
// its revocation.
//
// # Connection loss
//
// franz-go reconnects by itself, and retries fetches, produce requests,
// heartbeats and commits. While a broker is unreachable Receive returns a
// transient error matching [ErrUnreachable], once per outage (the runtime
// logs and counts it, and receives again after its backoff); fetch errors
// the client reports come as *[PartitionError] values. Nothing is skipped:
// the client's fetch position moves only past records it returned, every
// record returned is tracked until settled, and commits cover settled
// records only. A commit that fails is retried, and a Send blocks until
// the records are acknowledged or its context ends.
//
// # What is guaranteed
//
//   - Producing: a record Send reports sent is acknowledged by all in-sync
//     replicas (durable as the topic's min.insync.replicas makes it);
//     records of a key are written in order, and not after an earlier
//     failed one (with the window above, closed by SerialKeys).
//   - Consuming, with the runtime: at least once. A record is committed
//     only once it and every earlier record of its partition were
//     acknowledged or dead-lettered; a crash, a Close or a rebalance
//     redelivers everything after the last commit.
//   - Order: per partition, or per key with OrderKey, within one Source;
//     across processes, because a partition has one owner at a time,
//     except during a handoff: a message still being handled when its
//     partition is revoked may be handled again by the new owner while the
//     old one finishes.
//   - Dead letters: published (and acknowledged by all in-sync replicas)
//     before the original is settled; at least once (a crash between the
//     two leaves two copies).
//   - Deduplication: by the consumer's inbox, keyed by the event id; Kafka
//     deduplicates only a producer's own retries.
//
// Not guaranteed: exactly-once delivery or effects; delivery counts across
// restarts and rebalances (Attempt restarts at 1, so a record that crashes
// the process is redelivered forever); order across partitions, or of a
// key whose topic's partition count changed; progress of a partition whose
// head record keeps failing, until it is dead-lettered.
//
// # python-cqrs
//
// python-cqrs publishes the bare JSON body of an event
// ({"event_id","event_timestamp","event_name","topic","payload"}), with no
// key and no headers. The runtime decodes such a message from its body
// (wire.FromHeaders of no headers, then the decoder), with no correlation
// id: it starts its own. The Sender writes that same body, with the event
// id, name and the rest in headers as well, so a python-cqrs consumer
// reads Go events from the body and ignores the headers. A zlib-compressed
// body (wire.EncoderOptions.CompressMin) is marked by its content-encoding
// header, which python-cqrs does not read: leave compression off on topics
// python consumers read.
package kafka
