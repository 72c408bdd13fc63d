package nats

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gocqrs/cqrs/events/brokers"
	"github.com/gocqrs/cqrs/events/outbox"
)

// Defaults of [SubscriberConfig].
const (
	// DefaultPullBatch is how many messages a Source asks for in one pull
	// request (at most a quarter of the consumer's MaxAckPending).
	DefaultPullBatch = 128
	// DefaultPullExpiry is how long a pull request waits on the server.
	DefaultPullExpiry = 30 * time.Second
)

// SubscriberConfig configures a [Subscriber].
type SubscriberConfig struct {
	// Topology names the stream, the durable consumer and the dead-letter
	// subject. Stream and Consumer are required.
	Topology Topology
	// Provision creates what Topology describes, if it is missing, on each
	// Subscribe ([Topology.Provision]): for development and tests. Off,
	// the stream, the consumer and a stream capturing the dead-letter
	// subject must exist.
	Provision bool
	// PullBatch is how many messages a Source asks for in one pull request
	// (default [DefaultPullBatch], and at most a quarter of the consumer's
	// MaxAckPending). A Source holds at most MaxAckPending minus two
	// batches; beyond that it pulls no more until messages are settled.
	PullBatch int
	// PullExpiry is how long a pull request waits on the server (default
	// [DefaultPullExpiry], at least 1s). The server sends heartbeats every
	// half of it, or every 500ms if that is shorter; a Source that misses two
	// reports an error and pulls again, which is also how it resumes after
	// the server restarted.
	PullExpiry time.Duration
	// ProgressInterval is how often a Source tells the server it is still
	// working on every message it holds (InProgress), so that AckWait
	// never runs out for them (default: a third of the consumer's
	// AckWait; it must be shorter than AckWait).
	ProgressInterval time.Duration
	// Logger receives the Sources' logs (default slog.Default()).
	Logger *slog.Logger
}

// Subscriber is the brokers.Subscriber of one durable JetStream pull
// consumer. Each Subscribe opens a Source on the consumer; several Sources,
// in one process or many, share its messages. Create it with
// [NewSubscriber]; it is safe for concurrent use.
type Subscriber struct {
	nc   *natsgo.Conn
	js   jetstream.JetStream
	opts SubscriberConfig
	log  *slog.Logger
}

var _ brokers.Subscriber = (*Subscriber)(nil)

// NewSubscriber returns the Subscriber of opts.Topology on nc. It reports
// every problem with its arguments at once, each matching
// [ErrInvalidConfig]. It does not contact the server: Subscribe does.
func NewSubscriber(nc *natsgo.Conn, opts SubscriberConfig) (*Subscriber, error) {
	var errs []error
	add := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, args...)...))
	}
	if nc == nil {
		add("nil connection")
	}
	if err := opts.Topology.Validate(); err != nil {
		errs = append(errs, err)
	}
	if opts.PullBatch < 0 {
		add("SubscriberConfig.PullBatch must not be negative, got %d", opts.PullBatch)
	}
	if opts.PullExpiry != 0 && opts.PullExpiry < time.Second {
		add("SubscriberConfig.PullExpiry must be at least 1s, got %v", opts.PullExpiry)
	}
	if opts.ProgressInterval < 0 {
		add("SubscriberConfig.ProgressInterval must not be negative, got %v", opts.ProgressInterval)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	opts.Topology = opts.Topology.withDefaults()
	if opts.PullBatch == 0 {
		opts.PullBatch = DefaultPullBatch
	}
	if opts.PullExpiry == 0 {
		opts.PullExpiry = DefaultPullExpiry
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.Default()
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	return &Subscriber{
		nc:   nc,
		js:   js,
		opts: opts,
		log:  logger.With("stream", opts.Topology.Stream, "nats_consumer", opts.Topology.Consumer),
	}, nil
}

// Topology returns the subscriber's topology, with its defaults filled
// in.
func (s *Subscriber) Topology() Topology { return s.opts.Topology }

// Subscribe implements brokers.Subscriber. It provisions the topology if
// asked to, checks that the consumer is a durable pull consumer with
// explicit acknowledgement and a bounded MaxAckPending and that a stream
// other than the consumer's captures the dead-letter subject (errors
// matching [ErrTopology]), and opens a Source on it.
func (s *Subscriber) Subscribe(ctx context.Context) (brokers.Source, error) {
	t := s.opts.Topology
	if s.opts.Provision {
		if err := t.Provision(ctx, s.js); err != nil {
			return nil, err
		}
	}
	cons, err := s.consumer(ctx)
	if err != nil {
		return nil, err
	}
	info := cons.CachedInfo()
	if err := checkConsumer(info, s.opts.ProgressInterval); err != nil {
		return nil, err
	}
	dlq, err := s.js.StreamNameBySubject(ctx, t.DeadLetterSubject)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		return nil, fmt.Errorf("%w: no stream captures the dead-letter subject %q", ErrTopology, t.DeadLetterSubject)
	case err != nil:
		return nil, fmt.Errorf("nats: looking up the stream of the dead-letter subject %q: %w", t.DeadLetterSubject, err)
	case dlq == t.Stream:
		return nil, fmt.Errorf("%w: the dead-letter subject %q is captured by the consumer's own stream %q", ErrTopology, t.DeadLetterSubject, t.Stream)
	}
	progress := s.opts.ProgressInterval
	if progress == 0 {
		progress = info.Config.AckWait / 3
	}
	return newSource(s, cons, info.Config.MaxAckPending, s.opts.PullBatch, progress)
}

// consumer looks up the durable consumer.
func (s *Subscriber) consumer(ctx context.Context) (jetstream.Consumer, error) {
	t := s.opts.Topology
	cons, err := s.js.Consumer(ctx, t.Stream, t.Consumer)
	switch {
	case errors.Is(err, jetstream.ErrConsumerNotFound), errors.Is(err, jetstream.ErrStreamNotFound):
		return nil, fmt.Errorf("%w: consumer %q of stream %q: %w", ErrTopology, t.Consumer, t.Stream, err)
	case err != nil:
		return nil, fmt.Errorf("nats: looking up consumer %q of stream %q: %w", t.Consumer, t.Stream, err)
	}
	return cons, nil
}

// checkConsumer reports why the consumer of info cannot serve a Source.
func checkConsumer(info *jetstream.ConsumerInfo, progress time.Duration) error {
	c := info.Config
	var errs []error
	add := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: consumer %q of stream %q: "+format,
			append([]any{ErrTopology, info.Name, info.Stream}, args...)...))
	}
	if c.DeliverSubject != "" {
		add("a push consumer (it delivers to %q); a pull consumer is needed", c.DeliverSubject)
	}
	if c.AckPolicy != jetstream.AckExplicitPolicy {
		add("its acknowledgement policy is %s; explicit is needed", c.AckPolicy)
	}
	if c.MaxAckPending < 1 {
		add("its MaxAckPending is %d (unbounded); a bound is needed", c.MaxAckPending)
	}
	if c.AckWait <= 0 {
		add("its AckWait is %v", c.AckWait)
	} else if progress >= c.AckWait {
		add("SubscriberConfig.ProgressInterval %v is not shorter than its AckWait %v", progress, c.AckWait)
	}
	return errors.Join(errs...)
}

// permanent marks err as ending the consumer's Run.
func permanent(err error) error { return outbox.Permanent(err) }
