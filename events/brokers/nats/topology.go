package nats

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Defaults of [Topology].
const (
	// DefaultAckWait is the AckWait of a provisioned consumer.
	DefaultAckWait = 30 * time.Second
	// DefaultMaxAckPending is the MaxAckPending of a provisioned consumer:
	// how many messages the consumer's Sources hold unacknowledged at most,
	// together.
	DefaultMaxAckPending = 256
	// DeadLetterPrefix starts the default dead-letter subject,
	// "dead-letter.<stream>.<consumer>".
	DeadLetterPrefix = "dead-letter"
	// DeadLetterStreamSuffix ends the default dead-letter stream's name,
	// "<stream>_DEAD_LETTER".
	DeadLetterStreamSuffix = "_DEAD_LETTER"
)

// Topology names what a subscription uses on the server, and describes
// what [Topology.Provision] creates when it is missing: the stream, its
// durable pull consumer, and the dead-letter stream.
//
// Stream, Consumer and DeadLetterSubject are what a [Subscriber] uses; the
// other fields only matter to Provision. In production, create the streams
// and the consumer with the nats CLI, Terraform or the application's own
// migration step, and leave [SubscriberConfig.Provision] off.
type Topology struct {
	// Stream is the stream the consumer reads. Required.
	Stream string
	// Consumer is the durable name of the pull consumer. Required.
	Consumer string
	// DeadLetterSubject is the subject dead letters are published to
	// (default "dead-letter.<Stream>.<Consumer>"). A stream other than
	// Stream must capture it.
	DeadLetterSubject string

	// Subjects are the subjects Stream captures; required to create the
	// stream. When the stream exists, Provision checks that it captures
	// them.
	Subjects []string
	// FilterSubjects restricts the consumer to some of the stream's
	// subjects (default: all of them). Several need nats-server 2.10 or
	// later; one works with every server.
	FilterSubjects []string
	// DeadLetterStream is the stream capturing DeadLetterSubject (default
	// "<Stream>_DEAD_LETTER"). Provision creates it with the subjects
	// "dead-letter.<Stream>.>" when DeadLetterSubject is the default (so
	// every consumer of Stream shares it), else with DeadLetterSubject.
	DeadLetterStream string
	// AckWait is how long the server waits for a settle before it
	// delivers a message again (default [DefaultAckWait]). Sources extend
	// it for every message they hold, with InProgress.
	AckWait time.Duration
	// MaxAckPending bounds the messages the consumer's Sources hold
	// unacknowledged, together (default [DefaultMaxAckPending]). Keep it
	// at least the brokers.Config MaxInFlight of each process.
	MaxAckPending int
	// MaxDeliver is the server's delivery limit (default -1: unlimited).
	// Past it the server stops delivering a message without dead-lettering
	// it; if set, keep it above brokers.Config MaxDeliveries plus the
	// restarts you expect.
	MaxDeliver int
	// Duplicates is the streams' deduplication window (default: the
	// server's, two minutes).
	Duplicates time.Duration
	// Storage is the streams' storage (default file storage).
	Storage jetstream.StorageType
	// Replicas is the number of replicas of the streams and the consumer
	// (default 1).
	Replicas int
}

// withDefaults returns t with its defaults filled in.
func (t Topology) withDefaults() Topology {
	if t.DeadLetterSubject == "" && t.Stream != "" && t.Consumer != "" {
		t.DeadLetterSubject = DeadLetterPrefix + "." + t.Stream + "." + t.Consumer
	}
	if t.DeadLetterStream == "" && t.Stream != "" {
		t.DeadLetterStream = t.Stream + DeadLetterStreamSuffix
	}
	if t.AckWait == 0 {
		t.AckWait = DefaultAckWait
	}
	if t.MaxAckPending == 0 {
		t.MaxAckPending = DefaultMaxAckPending
	}
	if t.MaxDeliver == 0 {
		t.MaxDeliver = -1
	}
	if t.Replicas == 0 {
		t.Replicas = 1
	}
	return t
}

// Validate reports every problem with t at once, each matching
// [ErrInvalidConfig].
func (t Topology) Validate() error {
	var errs []error
	add := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, args...)...))
	}
	t = t.withDefaults()
	if err := checkName(t.Stream); err != nil {
		add("Topology.Stream: %v", err)
	}
	if err := checkName(t.Consumer); err != nil {
		add("Topology.Consumer: %v", err)
	}
	if err := checkName(t.DeadLetterStream); err != nil {
		add("Topology.DeadLetterStream: %v", err)
	} else if t.DeadLetterStream == t.Stream {
		add("Topology.DeadLetterStream is the stream itself (%q)", t.Stream)
	}
	if t.DeadLetterSubject != "" { // else Stream or Consumer is missing: reported above
		if err := checkSubject(t.DeadLetterSubject, false); err != nil {
			add("Topology.DeadLetterSubject: %v", err)
		}
	}
	for _, s := range t.Subjects {
		if err := checkSubject(s, true); err != nil {
			add("Topology.Subjects: %v", err)
		} else if t.DeadLetterSubject != "" && subjectCovers(s, t.DeadLetterSubject) {
			add("Topology.Subjects: %q captures the dead-letter subject %q", s, t.DeadLetterSubject)
		}
	}
	for _, s := range t.FilterSubjects {
		if err := checkSubject(s, true); err != nil {
			add("Topology.FilterSubjects: %v", err)
		}
	}
	if t.AckWait < time.Second {
		add("Topology.AckWait must be at least 1s, got %v", t.AckWait)
	}
	if t.MaxAckPending < 1 {
		add("Topology.MaxAckPending must be positive (a bound), got %d", t.MaxAckPending)
	}
	if t.MaxDeliver < -1 {
		add("Topology.MaxDeliver must be -1 (unlimited) or positive, got %d", t.MaxDeliver)
	}
	if t.Duplicates < 0 {
		add("Topology.Duplicates must not be negative, got %v", t.Duplicates)
	}
	if t.Replicas < 1 {
		add("Topology.Replicas must be at least 1, got %d", t.Replicas)
	}
	return errors.Join(errs...)
}

// deadLetterSubjects returns the subjects the provisioned dead-letter
// stream captures.
func (t Topology) deadLetterSubjects() []string {
	if t.DeadLetterSubject == DeadLetterPrefix+"."+t.Stream+"."+t.Consumer {
		return []string{DeadLetterPrefix + "." + t.Stream + ".>"}
	}
	return []string{t.DeadLetterSubject}
}

// Provision creates, if they do not exist, the stream (capturing
// Subjects), the dead-letter stream (capturing the dead-letter subject)
// and the durable pull consumer (explicit acknowledgement, delivering the
// whole stream, AckWait, MaxAckPending, MaxDeliver, FilterSubjects). It is
// idempotent and safe to call from several processes at once. What exists
// is left as it is, not updated: Provision checks that the existing streams
// capture the subjects t names, and [Subscriber.Subscribe] checks the
// existing consumer. Errors about the server's objects match
// [ErrTopology]; an invalid t, [ErrInvalidConfig].
func (t Topology) Provision(ctx context.Context, js jetstream.JetStream) error {
	if js == nil {
		return fmt.Errorf("%w: nil JetStream", ErrInvalidConfig)
	}
	if err := t.Validate(); err != nil {
		return err
	}
	t = t.withDefaults()
	if err := ensureStream(ctx, js, jetstream.StreamConfig{
		Name:       t.Stream,
		Subjects:   t.Subjects,
		Storage:    t.Storage,
		Replicas:   t.Replicas,
		Duplicates: t.Duplicates,
	}); err != nil {
		return err
	}
	if err := ensureStream(ctx, js, jetstream.StreamConfig{
		Name:       t.DeadLetterStream,
		Subjects:   t.deadLetterSubjects(),
		Storage:    t.Storage,
		Replicas:   t.Replicas,
		Duplicates: t.Duplicates,
	}); err != nil {
		return err
	}
	cfg := jetstream.ConsumerConfig{
		Durable:       t.Consumer,
		AckPolicy:     jetstream.AckExplicitPolicy,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckWait:       t.AckWait,
		MaxAckPending: t.MaxAckPending,
		MaxDeliver:    t.MaxDeliver,
		Replicas:      t.Replicas,
	}
	// One filter goes in FilterSubject, which every server takes; several
	// need FilterSubjects, which servers before 2.10 refuse.
	if len(t.FilterSubjects) == 1 {
		cfg.FilterSubject = t.FilterSubjects[0]
	} else {
		cfg.FilterSubjects = t.FilterSubjects
	}
	return ensureConsumer(ctx, js, t.Stream, cfg)
}

// ensureStream creates the stream of cfg unless a stream of that name
// exists; an existing one must capture cfg.Subjects.
func ensureStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) error {
	for range 3 {
		st, err := js.Stream(ctx, cfg.Name)
		switch {
		case err == nil:
			have := st.CachedInfo().Config.Subjects
			for _, want := range cfg.Subjects {
				if !slices.ContainsFunc(have, func(h string) bool { return subjectCovers(h, want) }) {
					return fmt.Errorf("%w: stream %q exists and does not capture %q (its subjects: %s)",
						ErrTopology, cfg.Name, want, strings.Join(have, ", "))
				}
			}
			return nil
		case !errors.Is(err, jetstream.ErrStreamNotFound):
			return fmt.Errorf("nats: looking up stream %q: %w", cfg.Name, err)
		case len(cfg.Subjects) == 0:
			return fmt.Errorf("%w: stream %q does not exist, and Topology.Subjects is empty", ErrTopology, cfg.Name)
		}
		_, err = js.CreateStream(ctx, cfg)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, jetstream.ErrStreamNameAlreadyInUse):
			continue // created meanwhile, by another process: check it
		default:
			return fmt.Errorf("%w: creating stream %q: %w", ErrTopology, cfg.Name, err)
		}
	}
	return fmt.Errorf("%w: stream %q keeps changing", ErrTopology, cfg.Name)
}

// ensureConsumer creates the durable consumer of cfg on stream unless one
// of that name exists.
func ensureConsumer(ctx context.Context, js jetstream.JetStream, stream string, cfg jetstream.ConsumerConfig) error {
	for range 3 {
		_, err := js.Consumer(ctx, stream, cfg.Durable)
		switch {
		case err == nil:
			return nil
		case !errors.Is(err, jetstream.ErrConsumerNotFound):
			return fmt.Errorf("nats: looking up consumer %q of stream %q: %w", cfg.Durable, stream, err)
		}
		_, err = js.CreateConsumer(ctx, stream, cfg)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, jetstream.ErrConsumerExists):
			continue // created meanwhile, with another configuration
		default:
			return fmt.Errorf("%w: creating consumer %q of stream %q: %w", ErrTopology, cfg.Durable, stream, err)
		}
	}
	return fmt.Errorf("%w: consumer %q of stream %q keeps changing", ErrTopology, cfg.Durable, stream)
}

// checkName reports why s cannot name a stream or a consumer.
func checkName(s string) error {
	switch {
	case s == "":
		return errors.New("required")
	case strings.ContainsFunc(s, func(r rune) bool {
		return r <= ' ' || r == 0x7f || strings.ContainsRune(".*>/\\", r)
	}):
		return fmt.Errorf("%q: a name cannot hold white space, control characters, '.', '*', '>', '/' or '\\'", s)
	}
	return nil
}

// checkSubject reports why s is not a valid subject; wildcards are allowed
// if wild.
func checkSubject(s string, wild bool) error {
	if s == "" {
		return errors.New("empty subject")
	}
	start, wildcards := 0, 0
	for i := 0; i <= len(s); i++ {
		if i < len(s) && s[i] != '.' {
			switch c := s[i]; {
			case c <= ' ' || c == 0x7f:
				return fmt.Errorf("subject %q holds white space or control characters", s)
			case c == '*' || c == '>':
				wildcards++
			}
			continue
		}
		switch tok := s[start:i]; {
		case tok == "":
			return fmt.Errorf("subject %q has an empty token", s)
		case wildcards == 0:
		case tok != "*" && tok != ">":
			return fmt.Errorf("subject %q: a wildcard must be a whole token", s)
		case !wild:
			return fmt.Errorf("subject %q holds a wildcard", s)
		case tok == ">" && i != len(s):
			return fmt.Errorf("subject %q: '>' must be the last token", s)
		}
		start, wildcards = i+1, 0
	}
	return nil
}

// subjectCovers reports whether every subject pattern matches also matches
// pattern have.
func subjectCovers(have, pattern string) bool {
	h, p := strings.Split(have, "."), strings.Split(pattern, ".")
	for i, ht := range h {
		if ht == ">" {
			return i < len(p)
		}
		if i >= len(p) {
			return false
		}
		switch pt := p[i]; {
		case ht == "*":
			if pt == ">" {
				return false
			}
		case ht != pt:
			return false
		}
	}
	return len(h) == len(p)
}
