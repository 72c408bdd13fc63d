package brokers

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/gocqrs/cqrs/events/outbox"
	"github.com/gocqrs/cqrs/events/wire"
)

// DefaultMemoryGroup is the group of a [MemorySubscription] that names
// none.
const DefaultMemoryGroup = "default"

// MemoryBroker is a message broker kept in memory: the reference
// implementation of the contracts of this package, and the transport of
// tests and single-process programs.
//
// A topic is an append-only log. A subscription (a topic and a group, as a
// Kafka consumer group or a JetStream durable consumer) reads it from its
// first message, whenever it was created; every group receives every
// message, and the Sources of one group share its messages (competing
// consumers). Within a group:
//
//   - a message is delivered to one Source at a time, and leased to it
//     until settled or until the Source is closed;
//   - messages are delivered in log order, except that a message due for
//     redelivery (after Retry, or released by Close) goes first;
//   - Retry(delay) delivers the message again no earlier than delay from
//     now, with Attempt increased by one; Close releases every message the
//     Source holds, due at once;
//   - DeadLetter appends the message, with the dead-letter headers, to the
//     subscription's dead-letter topic, then acknowledges it.
//
// Delays are measured with real timers. Nothing is persisted, nothing is
// ever deleted (acknowledged messages stay in their topic's log), and there
// is no acknowledgement deadline: a message stays leased to its Source
// until settled or closed. A MemoryBroker is safe for concurrent use; it
// starts no goroutine. Create it with [NewMemoryBroker].
type MemoryBroker struct {
	mu     sync.Mutex
	topics map[string]*memTopic
	tokens uint64
}

// MemoryMessage is a message in a [MemoryBroker] topic.
type MemoryMessage struct {
	// Topic is the topic the message is published to.
	Topic string
	// Key is the message key; it is also the OrderKey of its deliveries.
	Key string
	// Headers are the message headers.
	Headers map[string]string
	// Body is the message body.
	Body []byte
}

type memTopic struct {
	name   string
	log    []MemoryMessage
	groups map[string]*memGroup
}

type memGroup struct {
	topic *memTopic
	// next is the index of the first message never delivered.
	next int
	// out holds the messages delivered and unsettled, by log index.
	out map[int]memLease
	// due holds the messages waiting for redelivery, by log index.
	due map[int]time.Time
	// deliveries counts the deliveries of messages not yet settled for
	// good.
	deliveries map[int]int
	// wake is closed, and replaced, whenever a message may have become
	// deliverable.
	wake chan struct{}
}

type memLease struct {
	src   *memSource
	token uint64
}

var _ outbox.Sender = (*MemoryBroker)(nil)

// NewMemoryBroker returns an empty broker.
func NewMemoryBroker() *MemoryBroker {
	return &MemoryBroker{topics: make(map[string]*memTopic)}
}

// Send implements outbox.Sender: it publishes each envelope to its Topic,
// with its Key, its Payload as body and wire.ToHeaders(env) as headers, in
// batch order. An envelope with no Topic, or whose headers cannot be made,
// fails with a permanent error (outbox.Permanent); later envelopes of its
// Key are not attempted (outbox.ErrNotAttempted). Once ctx is done, the
// remaining envelopes fail with ctx's error. Failures are reported in an
// *outbox.BatchError.
func (b *MemoryBroker) Send(ctx context.Context, envs []wire.Envelope) error {
	var (
		errs   []error
		failed map[string]bool
	)
	fail := func(i int, key string, err error) {
		if errs == nil {
			errs = make([]error, len(envs))
		}
		errs[i] = err
		if key != "" {
			if failed == nil {
				failed = make(map[string]bool)
			}
			failed[key] = true
		}
	}
	for i, env := range envs {
		if err := ctx.Err(); err != nil {
			fail(i, "", err)
			continue
		}
		if env.Key != "" && failed[env.Key] {
			fail(i, "", outbox.ErrNotAttempted)
			continue
		}
		if env.Topic == "" {
			fail(i, env.Key, outbox.Permanent(errors.New("brokers: envelope has no topic")))
			continue
		}
		h, err := wire.ToHeaders(env)
		if err != nil {
			fail(i, env.Key, outbox.Permanent(err))
			continue
		}
		b.mu.Lock()
		b.appendLocked(MemoryMessage{Topic: env.Topic, Key: env.Key, Headers: h, Body: env.Payload})
		b.mu.Unlock()
	}
	if errs == nil {
		return nil
	}
	return &outbox.BatchError{Errs: errs}
}

// Publish appends m to its topic as it is, headers included: what a
// foreign producer (python-cqrs, another library) would publish. It fails
// if m has no Topic or ctx is done.
func (b *MemoryBroker) Publish(ctx context.Context, m MemoryMessage) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if m.Topic == "" {
		return errors.New("brokers: message has no topic")
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.appendLocked(m)
	return nil
}

// Messages returns every message published to topic, in order: for
// instance the contents of a dead-letter topic.
func (b *MemoryBroker) Messages(topic string) []MemoryMessage {
	b.mu.Lock()
	defer b.mu.Unlock()
	t := b.topics[topic]
	if t == nil {
		return nil
	}
	out := make([]MemoryMessage, len(t.log))
	for i, m := range t.log {
		out[i] = cloneMessage(m)
	}
	return out
}

func (b *MemoryBroker) topicLocked(name string) *memTopic {
	t := b.topics[name]
	if t == nil {
		t = &memTopic{name: name, groups: make(map[string]*memGroup)}
		b.topics[name] = t
	}
	return t
}

func (b *MemoryBroker) appendLocked(m MemoryMessage) {
	t := b.topicLocked(m.Topic)
	t.log = append(t.log, cloneMessage(m))
	for _, g := range t.groups {
		g.signal()
	}
}

func (b *MemoryBroker) groupLocked(topic, group string) *memGroup {
	t := b.topicLocked(topic)
	g := t.groups[group]
	if g == nil {
		g = &memGroup{
			topic:      t,
			out:        make(map[int]memLease),
			due:        make(map[int]time.Time),
			deliveries: make(map[int]int),
			wake:       make(chan struct{}),
		}
		t.groups[group] = g
	}
	return g
}

func cloneMessage(m MemoryMessage) MemoryMessage {
	m.Headers = maps.Clone(m.Headers)
	m.Body = slices.Clone(m.Body)
	return m
}

// MemorySubscription names a subscription of a [MemoryBroker].
type MemorySubscription struct {
	// Topic is the topic read. Required.
	Topic string
	// Group is the consumer group (default [DefaultMemoryGroup]).
	Group string
	// DeadLetterTopic receives the dead-lettered messages (default Topic
	// + ".dlq"). It must differ from Topic.
	DeadLetterTopic string
	// MaxUnacked bounds how many unsettled messages one Source holds, as
	// JetStream's MaxAckPending or RabbitMQ's prefetch do: Receive waits
	// while it is reached. 0 means no bound.
	MaxUnacked int
}

// MemorySubscriber is the [Subscriber] of one [MemorySubscription]. Create
// it with [MemoryBroker.Subscriber].
type MemorySubscriber struct {
	b   *MemoryBroker
	sub MemorySubscription
}

// Subscriber returns the Subscriber of s, with its defaults filled in. The
// group exists from this call on, reading its topic from the start.
func (b *MemoryBroker) Subscriber(s MemorySubscription) *MemorySubscriber {
	if s.Group == "" {
		s.Group = DefaultMemoryGroup
	}
	if s.DeadLetterTopic == "" && s.Topic != "" {
		s.DeadLetterTopic = s.Topic + ".dlq"
	}
	if s.Topic != "" {
		b.mu.Lock()
		b.groupLocked(s.Topic, s.Group)
		b.mu.Unlock()
	}
	return &MemorySubscriber{b: b, sub: s}
}

// Subscription returns the subscription, with its defaults filled in.
func (s *MemorySubscriber) Subscription() MemorySubscription { return s.sub }

// Subscribe implements [Subscriber]. It fails if the subscription has no
// Topic, its DeadLetterTopic is its Topic, or MaxUnacked is negative.
func (s *MemorySubscriber) Subscribe(ctx context.Context) (Source, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var errs []error
	if s.sub.Topic == "" {
		errs = append(errs, errors.New("brokers: memory subscription has no topic"))
	} else if s.sub.DeadLetterTopic == s.sub.Topic {
		errs = append(errs, fmt.Errorf("brokers: memory subscription dead-letters to its own topic %q", s.sub.Topic))
	}
	if s.sub.MaxUnacked < 0 {
		errs = append(errs, fmt.Errorf("brokers: memory subscription MaxUnacked %d is negative", s.sub.MaxUnacked))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	return &memSource{b: s.b, g: s.b.groupLocked(s.sub.Topic, s.sub.Group), sub: s.sub, done: make(chan struct{})}, nil
}

// memSource is a Source of a MemoryBroker group.
type memSource struct {
	b    *MemoryBroker
	g    *memGroup
	sub  MemorySubscription
	done chan struct{} // closed by Close

	// Guarded by b.mu.
	closed bool
	held   int
}

func (g *memGroup) signal() {
	close(g.wake)
	g.wake = make(chan struct{})
}

// pick returns the log index of the next message to deliver at now: the
// lowest one due for redelivery, else the next never delivered.
func (g *memGroup) pick(now time.Time) (int, bool) {
	best := -1
	for i, at := range g.due {
		if !at.After(now) && (best < 0 || i < best) {
			best = i
		}
	}
	if best >= 0 {
		delete(g.due, best)
		return best, true
	}
	if g.next < len(g.topic.log) {
		g.next++
		return g.next - 1, true
	}
	return 0, false
}

// nextDue returns the earliest time a waiting message becomes due.
func (g *memGroup) nextDue() (time.Time, bool) {
	var (
		first time.Time
		ok    bool
	)
	for _, at := range g.due {
		if !ok || at.Before(first) {
			first, ok = at, true
		}
	}
	return first, ok
}

// Receive implements [Source].
func (s *memSource) Receive(ctx context.Context) (Message, error) {
	for {
		if err := ctx.Err(); err != nil {
			return Message{}, err
		}
		now := time.Now()
		s.b.mu.Lock()
		if s.closed {
			s.b.mu.Unlock()
			return Message{}, fmt.Errorf("%w: receive", ErrClosed)
		}
		room := s.sub.MaxUnacked == 0 || s.held < s.sub.MaxUnacked
		if room {
			if i, ok := s.g.pick(now); ok {
				m := s.deliverLocked(i)
				s.b.mu.Unlock()
				return m, nil
			}
		}
		wake := s.g.wake
		at, timed := s.g.nextDue()
		s.b.mu.Unlock()

		var (
			timer   *time.Timer
			timeout <-chan time.Time
		)
		if room && timed {
			timer = time.NewTimer(at.Sub(now))
			timeout = timer.C
		}
		select {
		case <-wake:
		case <-timeout:
		case <-ctx.Done():
		case <-s.done:
		}
		if timer != nil {
			timer.Stop()
		}
	}
}

func (s *memSource) deliverLocked(i int) Message {
	g := s.g
	g.deliveries[i]++
	s.b.tokens++
	tok := s.b.tokens
	g.out[i] = memLease{src: s, token: tok}
	s.held++
	m := cloneMessage(g.topic.log[i])
	return Message{
		Topic:    m.Topic,
		Key:      m.Key,
		OrderKey: m.Key,
		Headers:  m.Headers,
		Body:     m.Body,
		Attempt:  g.deliveries[i],
		Settler:  &memSettler{src: s, index: i, token: tok},
	}
}

// Close implements [Source]: the messages the Source holds are due for
// redelivery at once.
func (s *memSource) Close(context.Context) error {
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	close(s.done)
	now := time.Now()
	for i, l := range s.g.out {
		if l.src == s {
			delete(s.g.out, i)
			s.g.due[i] = now
		}
	}
	s.held = 0
	s.g.signal()
	return nil
}

// memSettler settles one delivery of a memSource.
type memSettler struct {
	src   *memSource
	index int
	token uint64
}

// lockLease locks the broker and checks that the delivery is still leased
// to its Source; on error the broker is unlocked.
func (m *memSettler) lockLease(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s := m.src
	s.b.mu.Lock()
	if s.closed {
		s.b.mu.Unlock()
		return fmt.Errorf("%w: settle", ErrClosed)
	}
	if l, ok := s.g.out[m.index]; !ok || l.token != m.token {
		s.b.mu.Unlock()
		return ErrSettled
	}
	return nil
}

// unleaseLocked ends the lease of the delivery.
func (m *memSettler) unleaseLocked() {
	delete(m.src.g.out, m.index)
	m.src.held--
	m.src.g.signal()
}

// Ack implements [Settler].
func (m *memSettler) Ack(ctx context.Context) error {
	if err := m.lockLease(ctx); err != nil {
		return err
	}
	defer m.src.b.mu.Unlock()
	m.unleaseLocked()
	delete(m.src.g.deliveries, m.index)
	return nil
}

// Retry implements [Settler].
func (m *memSettler) Retry(ctx context.Context, delay time.Duration) error {
	if err := m.lockLease(ctx); err != nil {
		return err
	}
	defer m.src.b.mu.Unlock()
	m.unleaseLocked()
	m.src.g.due[m.index] = time.Now().Add(max(delay, 0))
	return nil
}

// DeadLetter implements [Settler].
func (m *memSettler) DeadLetter(ctx context.Context, d DeadLetter) error {
	if err := m.lockLease(ctx); err != nil {
		return err
	}
	b := m.src.b
	defer b.mu.Unlock()
	orig := m.src.g.topic.log[m.index]
	dead := cloneMessage(orig)
	dead.Topic = m.src.sub.DeadLetterTopic
	if dead.Headers == nil {
		dead.Headers = make(map[string]string)
	}
	maps.Copy(dead.Headers, d.Headers())
	b.appendLocked(dead)
	m.unleaseLocked()
	delete(m.src.g.deliveries, m.index)
	return nil
}
