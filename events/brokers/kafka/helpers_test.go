package kafka_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/events/brokers/kafka"
	"github.com/gocqrs/cqrs/events/wire"
	"github.com/gocqrs/cqrs/internal/testenv"
)

// brokersEnv names the environment variable with the seed brokers of a
// real cluster (host:port, comma-separated). Unset, tests run against an
// in-process kfake cluster.
const brokersEnv = "KAFKA_BROKERS"

// cluster is the cluster of one test: a kfake cluster of its own, or the
// real one named by KAFKA_BROKERS.
type cluster struct {
	brokers []string
	// opts are the client options of every client of the test: quick
	// heartbeats, so that rebalances are noticed within a fraction of a
	// second.
	opts  []kgo.Opt
	admin *kgo.Client
	fake  *kfake.Cluster
	log   *slog.Logger
}

// newCluster returns the cluster of t. With KAFKA_BROKERS set but
// unreachable, t is skipped, or fails when CI is set.
func newCluster(t *testing.T, fakeOpts ...kfake.Opt) *cluster {
	t.Helper()
	c := &cluster{
		opts: []kgo.Opt{kgo.HeartbeatInterval(100 * time.Millisecond)},
		log:  testLogger(t),
	}
	if env := os.Getenv(brokersEnv); env != "" {
		for _, b := range strings.Split(env, ",") {
			if b = strings.TrimSpace(b); b != "" {
				c.brokers = append(c.brokers, b)
			}
		}
		admin, err := kgo.NewClient(kgo.SeedBrokers(c.brokers...))
		require.NoError(t, err)
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		if err := admin.Ping(ctx); err != nil {
			admin.Close()
			testenv.Unavailable(t, "the Kafka cluster", brokersEnv, "an in-process kfake cluster", err)
		}
		c.admin = admin
		t.Cleanup(admin.Close)
		return c
	}
	fake, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1)}, fakeOpts...)...)
	require.NoError(t, err)
	t.Cleanup(fake.Close)
	c.fake = fake
	c.brokers = fake.ListenAddrs()
	admin, err := kgo.NewClient(kgo.SeedBrokers(c.brokers...))
	require.NoError(t, err)
	t.Cleanup(admin.Close)
	c.admin = admin
	return c
}

// testLogger logs warnings and errors to the test's output.
func testLogger(t *testing.T) *slog.Logger {
	t.Helper()
	if os.Getenv("KAFKA_TEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// topic creates a topic with a unique name, and its dead-letter topic
// (name + ".dlq"), with parts partitions, and returns its name.
func (c *cluster) topic(t *testing.T, parts int32) string {
	t.Helper()
	name := uniqueName(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	require.NoError(t, kafka.EnsureTopics(ctx, c.admin,
		kafka.TopicSpec{Name: name, Partitions: parts},
		kafka.TopicSpec{Name: name + kafka.DefaultDeadLetterSuffix, Partitions: parts},
	))
	if c.fake == nil { // a real cluster keeps what the tests leave
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if _, err := kadm.NewClient(c.admin).DeleteTopics(ctx, name, name+kafka.DefaultDeadLetterSuffix); err != nil {
				t.Logf("deleting topics %s: %v", name, err)
			}
		})
	}
	return name
}

// uniqueName returns a topic or group name unique to this test and run.
func uniqueName(t *testing.T) string {
	t.Helper()
	var b [4]byte
	_, _ = rand.Read(b[:])
	name := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '.':
			return r
		default:
			return '_'
		}
	}, t.Name())
	if len(name) > 120 {
		name = name[len(name)-120:]
	}
	return "cqrs-" + name + "-" + hex.EncodeToString(b[:])
}

// sender returns a Sender of the cluster, closed at the end of the test.
func (c *cluster) sender(t *testing.T) *kafka.Sender {
	t.Helper()
	s, err := kafka.NewSender(kafka.SenderConfig{Brokers: c.brokers, ClientOptions: c.opts, Logger: c.log})
	require.NoError(t, err)
	t.Cleanup(s.Close)
	return s
}

// subscriber returns a Subscriber of the cluster with cfg, whose brokers,
// options and logger are filled in.
func (c *cluster) subscriber(t *testing.T, cfg kafka.SubscriberConfig) *kafka.Subscriber {
	t.Helper()
	cfg.Brokers = c.brokers
	cfg.ClientOptions = append(append([]kgo.Opt(nil), c.opts...), cfg.ClientOptions...)
	if cfg.Logger == nil {
		cfg.Logger = c.log
	}
	s, err := kafka.NewSubscriber(cfg)
	require.NoError(t, err)
	return s
}

// payload is the payload of the events of these tests.
type payload struct {
	Seq  int    `json:"seq"`
	Note string `json:"note,omitempty"`
}

const eventName = "kafka.test"

// envelope returns the envelope of a new event of topic, key and seq.
func envelope(t *testing.T, topic, key string, seq int) wire.Envelope {
	t.Helper()
	var enc wire.Encoder
	env, err := enc.Encode(events.NewNotification(eventName, payload{Seq: seq}).WithTopic(topic).WithKey(key))
	require.NoError(t, err)
	return env
}

// registry returns a decoder of the test events.
func decoder(t *testing.T) *wire.Decoder {
	t.Helper()
	var reg wire.Registry
	require.NoError(t, wire.Register[payload](&reg, eventName))
	dec, err := wire.NewDecoder(&reg, wire.DecoderOptions{})
	require.NoError(t, err)
	return dec
}

// within returns a context that ends after d, or with the test.
func within(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

// read reads the first n records of topic, from every partition, with a
// client outside any group.
func (c *cluster) read(t *testing.T, topic string, n int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(append(slices.Clone(c.opts),
		kgo.SeedBrokers(c.brokers...),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
	)...)
	require.NoError(t, err)
	defer cl.Close()
	ctx := within(t, 30*time.Second)
	var out []*kgo.Record
	for len(out) < n {
		fs := cl.PollRecords(ctx, n-len(out))
		require.NoError(t, ctx.Err(), "read %d of %d records of %s", len(out), n, topic)
		fs.EachError(func(_ string, _ int32, err error) { t.Logf("fetch: %v", err) })
		out = append(out, fs.Records()...)
	}
	return out
}

// count returns how many records topic holds, by its partitions' end
// offsets.
func (c *cluster) count(t *testing.T, topic string) int64 {
	t.Helper()
	ends, err := kadm.NewClient(c.admin).ListEndOffsets(within(t, 30*time.Second), topic)
	require.NoError(t, err)
	var n int64
	ends.Each(func(o kadm.ListedOffset) {
		require.NoError(t, o.Err)
		n += o.Offset
	})
	return n
}

// committed returns the group's committed offset of topic's partition, or
// -1.
func (c *cluster) committed(t *testing.T, group, topic string, partition int32) int64 {
	t.Helper()
	offs, err := kadm.NewClient(c.admin).FetchOffsets(within(t, 30*time.Second), group)
	require.NoError(t, err)
	o, ok := offs.Lookup(topic, partition)
	if !ok {
		return -1
	}
	require.NoError(t, o.Err)
	return o.At
}

// headersOf flattens a record's headers.
func headersOf(r *kgo.Record) map[string]string {
	h := make(map[string]string, len(r.Headers))
	for _, rh := range r.Headers {
		h[rh.Key] = string(rh.Value)
	}
	return h
}
