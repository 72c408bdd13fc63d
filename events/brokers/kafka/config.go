package kafka

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Default values of [SenderConfig] and [SubscriberConfig], all in one place.
const (
	// DefaultMaxRecordBytes bounds a record's key, value and headers.
	// Kafka's default max.message.bytes is 1048588: the produce batch
	// limit the Sender sets (MaxRecordBytes plus 4 KiB of framing) stays
	// below it.
	DefaultMaxRecordBytes = 1_000_000
	// DefaultDeadLetterSuffix is appended to the topic to name its
	// dead-letter topic when [SubscriberConfig.DeadLetterTopic] is empty.
	DefaultDeadLetterSuffix = ".dlq"
	// DefaultMaxPollRecords is how many records a Source takes from the
	// client at a time.
	DefaultMaxPollRecords = 500
	// DefaultRevokeTimeout is how long a revocation waits for the
	// messages of the revoked partitions still being handled.
	DefaultRevokeTimeout = 5 * time.Second
)

// A failed commit is tried again after commitRetryMin, the delay doubling
// up to commitRetryMax.
const (
	commitRetryMin = 100 * time.Millisecond
	commitRetryMax = 5 * time.Second
)

// batchFraming is what the Sender adds to MaxRecordBytes for the produce
// batch limit: a record's framing and the batch header.
const batchFraming = 4096

// SenderConfig configures a [Sender]. The zero value is not valid: Brokers
// is required.
type SenderConfig struct {
	// Brokers are the seed brokers, as host:port. Required.
	Brokers []string
	// ClientOptions are further franz-go options: TLS (kgo.DialTLSConfig),
	// SASL (kgo.SASL), kgo.ClientID, kgo.Dialer, batching
	// (kgo.ProducerLinger, kgo.ProducerBatchCompression), ... They are
	// applied after the adapter's defaults and before the options the
	// Sender requires, which win: kgo.SeedBrokers(Brokers...),
	// kgo.RequiredAcks(kgo.AllISRAcks()) and kgo.ProducerBatchMaxBytes.
	// Options that would break the Sender's guarantees are refused by
	// [NewSender]: kgo.DisableIdempotentWrite, kgo.TransactionalID,
	// kgo.ManualFlushing, kgo.DefaultProduceTopicAlways.
	ClientOptions []kgo.Opt
	// MaxRecordBytes bounds the size of a record's key, value and headers
	// (default [DefaultMaxRecordBytes]). An envelope above it fails
	// permanently ([ErrRecordTooLarge]) without being produced. Raising
	// it requires raising the topic's max.message.bytes.
	MaxRecordBytes int
	// SerialKeys produces a key's next record only once the previous one
	// is acknowledged: one round trip per record of a key in a batch. By
	// default (false) the records of a key to one topic are pipelined,
	// relying on the client's per-partition failure handling (see the
	// package documentation, "Order of a key within a Send").
	SerialKeys bool
	// Logger receives the Sender's logs and the client's (default
	// slog.Default()).
	Logger *slog.Logger
}

// Validate reports every invalid field at once; each problem matches
// [ErrInvalidConfig].
func (c SenderConfig) Validate() error {
	var errs []error
	errs = append(errs, validateBrokers(c.Brokers)...)
	if c.MaxRecordBytes < 0 {
		errs = append(errs, invalid("MaxRecordBytes must be 0 (default) or positive, got %d", c.MaxRecordBytes))
	}
	if c.MaxRecordBytes > 1<<30 {
		errs = append(errs, invalid("MaxRecordBytes must be at most 1 GiB, got %d", c.MaxRecordBytes))
	}
	return errors.Join(errs...)
}

func (c SenderConfig) withDefaults() SenderConfig {
	if c.MaxRecordBytes == 0 {
		c.MaxRecordBytes = DefaultMaxRecordBytes
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	c.Brokers = slices.Clone(c.Brokers)
	c.ClientOptions = slices.Clone(c.ClientOptions)
	return c
}

// Ordering says which messages of a topic the consumer handles in order.
type Ordering int

const (
	// OrderPartition (the default) orders by partition, as Kafka stores
	// records: [brokers.Message.OrderKey] is "topic/partition". Messages
	// without a key are ordered too. A partition's messages are handled one
	// at a time, so a Source handles at most as many messages at once as
	// it has partitions assigned. Its commits never run behind what was
	// handled: a restart redelivers nothing that was acknowledged.
	OrderPartition Ordering = iota
	// OrderKey orders by record key: OrderKey is the record key, and
	// messages without a key are unordered. The messages of different
	// keys of one partition are handled concurrently, but the partition's
	// commit still waits for its lowest unsettled offset, so after a
	// restart or a rebalance the acknowledged messages behind it are
	// delivered again (the inbox absorbs them).
	OrderKey
)

// String returns "partition" or "key".
func (o Ordering) String() string {
	switch o {
	case OrderPartition:
		return "partition"
	case OrderKey:
		return "key"
	default:
		return fmt.Sprintf("Ordering(%d)", int(o))
	}
}

// SubscriberConfig configures a [Subscriber]: a consumer group on one topic
// and its dead-letter topic. The zero value is not valid: Brokers, Topic
// and Group are required.
type SubscriberConfig struct {
	// Brokers are the seed brokers, as host:port. Required.
	Brokers []string
	// ClientOptions are further franz-go options (TLS, SASL, client id,
	// dialer, kgo.SessionTimeout, kgo.HeartbeatInterval,
	// kgo.RebalanceTimeout, kgo.Balancers, kgo.ConsumeResetOffset, fetch
	// sizes, ...). They are applied after the adapter's defaults and before
	// the options it requires, which win: kgo.SeedBrokers,
	// kgo.ConsumerGroup, kgo.ConsumeTopics, kgo.DisableAutoCommit,
	// kgo.BlockRebalanceOnPoll, the partition callbacks and
	// kgo.RequiredAcks(kgo.AllISRAcks()). Options that would break the
	// Source's guarantees are refused by Subscribe: kgo.ConsumeRegex,
	// kgo.ConsumePartitions, kgo.ShareGroup, kgo.TransactionalID,
	// kgo.DisableIdempotentWrite, kgo.ManualFlushing.
	//
	// The adapter's default: a new group starts at the earliest offset
	// (kgo.ConsumeResetOffset(kgo.NewOffset().AtStart())).
	ClientOptions []kgo.Opt
	// Topic is the topic consumed. Required.
	Topic string
	// Group is the consumer group. Required. Every Source of the
	// Subscriber joins it: they share the topic's partitions.
	Group string
	// DeadLetterTopic receives the dead-lettered messages (default Topic +
	// [DefaultDeadLetterSuffix]). It must differ from Topic.
	DeadLetterTopic string
	// Ordering chooses the messages' ordering key (default
	// [OrderPartition]).
	Ordering Ordering
	// MaxPollRecords is how many records a Source takes from the client at
	// a time (default [DefaultMaxPollRecords]); they wait in the Source
	// until Receive returns them, partitions in turn. When those left all
	// come from one partition, the Source also takes every record the
	// client has already fetched (its memory holds them anyway), so that
	// the runtime has several partitions to work on at once.
	MaxPollRecords int
	// CommitInterval is the least time between two offset commits of a
	// Source. 0 (the default) commits as soon as an Ack advances a
	// partition's commit point, one commit at a time: acknowledgements
	// that arrive during a commit are committed together by the next.
	CommitInterval time.Duration
	// RevokeTimeout is how long a revocation waits for the messages of
	// the revoked partitions that are being handled to be settled, before
	// it commits what was settled and gives the partitions up (default
	// [DefaultRevokeTimeout]; negative: do not wait). Keep it well below
	// the group's rebalance timeout (kgo.RebalanceTimeout, 60s by
	// default): the rebalance waits for it.
	RevokeTimeout time.Duration
	// CreateTopics makes Subscribe create Topic and DeadLetterTopic if
	// they do not exist ([EnsureTopics]), with Partitions partitions and
	// ReplicationFactor replicas: for development and tests. Off by
	// default: production topics are created deliberately, and Subscribe
	// then fails if Topic does not exist ([ErrTopicNotFound]).
	CreateTopics bool
	// Partitions is the partition count of the topics CreateTopics
	// creates (default -1: the broker's num.partitions).
	Partitions int32
	// ReplicationFactor is the replication factor of the topics
	// CreateTopics creates (default -1: the broker's
	// default.replication.factor).
	ReplicationFactor int16
	// Logger receives the Source's logs and the client's (default
	// slog.Default()).
	Logger *slog.Logger
}

// Validate reports every invalid field at once; each problem matches
// [ErrInvalidConfig].
func (c SubscriberConfig) Validate() error {
	var errs []error
	errs = append(errs, validateBrokers(c.Brokers)...)
	if c.Topic == "" {
		errs = append(errs, invalid("Topic is required"))
	}
	if c.Group == "" {
		errs = append(errs, invalid("Group is required"))
	}
	if c.Topic != "" && c.deadLetterTopic() == c.Topic {
		errs = append(errs, invalid("DeadLetterTopic must differ from Topic %q", c.Topic))
	}
	if c.Ordering != OrderPartition && c.Ordering != OrderKey {
		errs = append(errs, invalid("Ordering must be OrderPartition or OrderKey, got %v", c.Ordering))
	}
	if c.MaxPollRecords < 0 {
		errs = append(errs, invalid("MaxPollRecords must be 0 (default) or positive, got %d", c.MaxPollRecords))
	}
	if c.CommitInterval < 0 {
		errs = append(errs, invalid("CommitInterval must be 0 or positive, got %v", c.CommitInterval))
	}
	if c.Partitions < -1 {
		errs = append(errs, invalid("Partitions must be -1 (broker default) or positive, got %d", c.Partitions))
	}
	if c.ReplicationFactor < -1 {
		errs = append(errs, invalid("ReplicationFactor must be -1 (broker default) or positive, got %d", c.ReplicationFactor))
	}
	return errors.Join(errs...)
}

func (c SubscriberConfig) deadLetterTopic() string {
	if c.DeadLetterTopic != "" {
		return c.DeadLetterTopic
	}
	return c.Topic + DefaultDeadLetterSuffix
}

func (c SubscriberConfig) withDefaults() SubscriberConfig {
	c.DeadLetterTopic = c.deadLetterTopic()
	if c.MaxPollRecords == 0 {
		c.MaxPollRecords = DefaultMaxPollRecords
	}
	if c.RevokeTimeout == 0 {
		c.RevokeTimeout = DefaultRevokeTimeout
	}
	if c.Partitions == 0 {
		c.Partitions = -1
	}
	if c.ReplicationFactor == 0 {
		c.ReplicationFactor = -1
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	c.Brokers = slices.Clone(c.Brokers)
	c.ClientOptions = slices.Clone(c.ClientOptions)
	return c
}

func validateBrokers(brokers []string) []error {
	if len(brokers) == 0 {
		return []error{invalid("Brokers is required (host:port of at least one seed broker)")}
	}
	var errs []error
	for i, b := range brokers {
		if strings.TrimSpace(b) == "" {
			errs = append(errs, invalid("Brokers[%d] is empty", i))
		}
	}
	return errs
}

// refuseOptions reports the client options in use that the adapter
// refuses, each matching [ErrInvalidConfig].
func refuseOptions(cl *kgo.Client, consumer bool) error {
	var errs []error
	flag := func(name string) bool {
		v, _ := cl.OptValue(name).(bool)
		return v
	}
	set := func(name string) bool {
		vs := cl.OptValues(name)
		return len(vs) == 2 && vs[1] == true
	}
	for _, name := range []string{"DisableIdempotentWrite", "ManualFlushing"} {
		if flag(name) {
			errs = append(errs, invalid("kgo.%s is not supported: the adapter relies on idempotent, automatically flushed writes", name))
		}
	}
	if set("TransactionalID") {
		errs = append(errs, invalid("kgo.TransactionalID is not supported"))
	}
	if !consumer && flag("DefaultProduceTopicAlways") {
		errs = append(errs, invalid("kgo.DefaultProduceTopicAlways is not supported: each envelope names its topic"))
	}
	if consumer {
		if flag("ConsumeRegex") {
			errs = append(errs, invalid("kgo.ConsumeRegex is not supported: a Subscriber consumes one topic"))
		}
		if ps, ok := cl.OptValue("ConsumePartitions").(map[string]map[int32]kgo.Offset); ok && len(ps) > 0 {
			errs = append(errs, invalid("kgo.ConsumePartitions is not supported: a Subscriber consumes in a group"))
		}
		if g, ok := cl.OptValue("ShareGroup").(string); ok && g != "" {
			errs = append(errs, invalid("kgo.ShareGroup is not supported: a Subscriber consumes in a consumer group"))
		}
	}
	return errors.Join(errs...)
}
