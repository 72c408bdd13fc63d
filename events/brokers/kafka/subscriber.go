package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/gocqrs/cqrs/events/brokers"
)

// Subscriber is the brokers.Subscriber of a consumer group on one topic:
// each [Subscriber.Subscribe] creates a franz-go client that joins the
// group, and the Sources of one Subscriber, in one process or many, share
// the topic's partitions. Create it with [NewSubscriber]; it is safe for
// concurrent use.
type Subscriber struct {
	cfg SubscriberConfig
}

var _ brokers.Subscriber = (*Subscriber)(nil)

// NewSubscriber returns the Subscriber of cfg. It does not connect:
// Subscribe does. It reports every invalid setting at once, each matching
// [ErrInvalidConfig].
func NewSubscriber(cfg SubscriberConfig) (*Subscriber, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Subscriber{cfg: cfg.withDefaults()}, nil
}

// Config returns the configuration, with its defaults filled in.
func (s *Subscriber) Config() SubscriberConfig {
	c := s.cfg
	c.Brokers = slices.Clone(c.Brokers)
	c.ClientOptions = slices.Clone(c.ClientOptions)
	return c
}

// Subscribe implements brokers.Subscriber: it creates a client that joins
// the group, creates the topics first if [SubscriberConfig.CreateTopics] is
// set, and checks that the topic exists ([ErrTopicNotFound]). ctx bounds
// these checks only. The Source lives until its Close.
func (s *Subscriber) Subscribe(ctx context.Context) (brokers.Source, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	cfg := s.cfg
	src := &source{
		cfg:     cfg,
		log:     cfg.Logger.With("topic", cfg.Topic, "group", cfg.Group),
		parts:   make(map[int32]*partition),
		settled: make(chan struct{}),
		kick:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	opts := make([]kgo.Opt, 0, len(cfg.ClientOptions)+12)
	opts = append(opts,
		kgo.WithLogger(kgoLogger{src.log}),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
	)
	opts = append(opts, cfg.ClientOptions...)
	opts = append(opts,
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.ConsumerGroup(cfg.Group),
		kgo.ConsumeTopics(cfg.Topic),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.OnPartitionsRevoked(src.onRevoked),
		kgo.OnPartitionsLost(src.onLost),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.WithHooks(connHook{src}),
	)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	if err := refuseOptions(cl, true); err != nil {
		cl.Close()
		return nil, err
	}
	src.cl = cl
	if err := src.checkTopics(ctx); err != nil {
		cl.Close()
		return nil, fmt.Errorf("kafka: subscribe to %q as group %q: %w", cfg.Topic, cfg.Group, err)
	}
	var commitCtx context.Context
	commitCtx, src.cancelCommits = context.WithCancel(context.Background())
	go src.commitLoop(commitCtx)
	src.log.Debug("kafka: subscribed")
	return src, nil
}

// checkTopics creates the topics if configured, then checks that the topic
// exists; a missing dead-letter topic is only logged (dead-lettering fails
// until it exists, or the cluster creates it).
func (s *source) checkTopics(ctx context.Context) error {
	if s.cfg.CreateTopics {
		spec := func(name string) TopicSpec {
			return TopicSpec{Name: name, Partitions: s.cfg.Partitions, ReplicationFactor: s.cfg.ReplicationFactor}
		}
		return EnsureTopics(ctx, s.cl, spec(s.cfg.Topic), spec(s.cfg.DeadLetterTopic))
	}
	ok, err := topicExists(ctx, s.cl, s.cfg.Topic)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%w: %q", ErrTopicNotFound, s.cfg.Topic)
	}
	if ok, err := topicExists(ctx, s.cl, s.cfg.DeadLetterTopic); err == nil && !ok {
		s.log.Warn("kafka: the dead-letter topic does not exist; dead-lettering fails until it does",
			"dead_letter_topic", s.cfg.DeadLetterTopic)
	}
	return nil
}

// Entry states.
const (
	entBuffered uint8 = iota // polled, not yet returned by Receive
	entLeased                // returned, not settled
	entWaiting               // Retry: waiting to be returned again
	entSettling              // DeadLetter in progress
	entSettled               // acknowledged or dead-lettered
)

// entry is one record of a partition, from the poll that returned it until
// the partition's commit point passes it.
type entry struct {
	p       *partition
	rec     *kgo.Record
	attempt int
	token   uint64 // the delivery's token: a Settler of another delivery is stale
	state   uint8
	due     time.Time
	// first is the Settler of the first delivery; a redelivery gets one
	// of its own.
	first settler
}

// partition is the state of one partition assigned to a Source.
type partition struct {
	num      int32
	orderKey string
	// window holds the records polled and not yet passed by the commit
	// point, in offset order.
	window []*entry
	// mark is the offset to commit: after the longest settled prefix.
	mark kgo.EpochOffset
	// committed is the offset last committed (-1: none).
	committed int64
	// revoked is set when the partition is revoked or lost: settles fail.
	revoked bool
}

// advance moves the commit point past the settled prefix of the window,
// and reports whether it moved.
func (p *partition) advance() bool {
	moved := false
	for len(p.window) > 0 && p.window[0].state == entSettled {
		r := p.window[0].rec
		p.mark = kgo.EpochOffset{Epoch: r.LeaderEpoch, Offset: r.Offset + 1}
		p.window[0] = nil
		p.window = p.window[1:]
		moved = true
	}
	return moved
}

func (p *partition) dirty() bool { return p.mark.Offset > p.committed }

// handling reports whether a record of the window is being handled.
func (p *partition) handling() int {
	n := 0
	for _, e := range p.window {
		if e.state == entLeased || e.state == entSettling {
			n++
		}
	}
	return n
}

// source is a Source: one group member.
type source struct {
	cfg SubscriberConfig
	log *slog.Logger
	cl  *kgo.Client

	// commitMu serializes commits: the committer's, a revocation's and
	// Close's.
	commitMu sync.Mutex

	mu     sync.Mutex
	closed bool
	parts  map[int32]*partition
	buf    []*entry // polled and not returned, partitions in turn
	// toppedUp is set once buf, left with one partition's records, was
	// topped up with what the client had buffered; a blocking poll resets
	// it.
	toppedUp bool
	due      []*entry // retried, waiting for their time
	fetchErr error    // a fetch error, reported once buf is empty
	connErr  error    // a failed connection, reported once buf is empty
	outage   bool     // a connection failed and none succeeded since
	wakePoll context.CancelFunc
	tokens   uint64
	// settled is closed, and replaced, whenever a record is settled or
	// given up while a revocation waits on it (revoking > 0).
	settled  chan struct{}
	revoking int

	kick          chan struct{} // a commit point moved
	stop          chan struct{} // closed by Close
	done          chan struct{} // closed when the committer has ended
	cancelCommits context.CancelFunc
}

var _ brokers.Source = (*source)(nil)

// Receive implements brokers.Source: records due for redelivery first,
// then the records polled, polling the client when there are none.
func (s *source) Receive(ctx context.Context) (brokers.Message, error) {
	for {
		if err := ctx.Err(); err != nil {
			return brokers.Message{}, err
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return brokers.Message{}, fmt.Errorf("%w: receive", brokers.ErrClosed)
		}
		now := time.Now()
		if e := s.popDueLocked(now); e != nil {
			m := s.deliverLocked(e)
			s.mu.Unlock()
			return m, nil
		}
		if len(s.buf) > 0 && s.onePartitionLocked() && !s.toppedUp {
			// A poll returns at most MaxPollRecords, often all from one
			// partition while the client holds records of others: take
			// those too, so that the runtime has more than one partition
			// to work on at once.
			s.toppedUp = true
			s.mu.Unlock()
			s.absorb(s.cl.PollRecords(nil, 0)) //nolint:staticcheck // franz-go: a nil context returns what is buffered, without waiting
			s.cl.AllowRebalance()
			continue
		}
		if len(s.buf) > 0 {
			e := s.buf[0]
			s.buf[0] = nil
			s.buf = s.buf[1:]
			m := s.deliverLocked(e)
			s.mu.Unlock()
			return m, nil
		}
		if err := s.connErr; err != nil {
			s.connErr = nil
			s.mu.Unlock()
			return brokers.Message{}, err
		}
		if err := s.fetchErr; err != nil {
			s.fetchErr = nil
			s.mu.Unlock()
			return brokers.Message{}, err
		}
		// The poll ends when a retried record is due, or Retry wakes it.
		var (
			pollCtx context.Context
			cancel  context.CancelFunc
		)
		if at, ok := s.nextDueLocked(); ok {
			pollCtx, cancel = context.WithDeadline(ctx, at)
		} else {
			pollCtx, cancel = context.WithCancel(ctx)
		}
		s.wakePoll = cancel
		s.toppedUp = false
		s.mu.Unlock()

		fetches := s.cl.PollRecords(pollCtx, s.cfg.MaxPollRecords)
		// Rebalance callbacks wait for this: between the poll and here,
		// no partition can be revoked under the records just polled.
		s.absorb(fetches)
		s.cl.AllowRebalance()
		cancel()
		if fetches.IsClientClosed() {
			return brokers.Message{}, fmt.Errorf("%w: the client was closed", brokers.ErrClosed)
		}
	}
}

// connHook reports the client's failed connections to the Source: the
// first failure of an outage is returned by Receive (a transient error:
// the client keeps reconnecting, and the runtime logs and counts it).
type connHook struct{ s *source }

var _ kgo.HookBrokerConnect = connHook{}

func (h connHook) OnBrokerConnect(meta kgo.BrokerMetadata, _ time.Duration, _ net.Conn, err error) {
	s := h.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if err == nil {
		s.outage = false
		return
	}
	if s.outage || s.closed || errors.Is(err, kgo.ErrClientClosed) || errors.Is(err, context.Canceled) {
		return
	}
	s.outage = true
	s.connErr = fmt.Errorf("%w: broker %d at %s: %w", ErrUnreachable, meta.NodeID,
		net.JoinHostPort(meta.Host, strconv.Itoa(int(meta.Port))), err)
	if s.wakePoll != nil {
		s.wakePoll()
	}
}

// absorb adds the polled records to their partitions' windows and to the
// buffer, and keeps the first fetch error.
func (s *source) absorb(fetches kgo.Fetches) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.wakePoll = nil
	fetches.EachError(func(topic string, part int32, err error) {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, kgo.ErrClientClosed) {
			return
		}
		if s.fetchErr == nil {
			s.fetchErr = &PartitionError{Op: "fetch", Topic: topic, Partition: part, Err: err}
		}
	})
	var (
		ents []entry
		next int
	)
	if n := fetches.NumRecords(); n > 0 {
		ents = make([]entry, n) // one allocation for the poll
	}
	fetches.EachRecord(func(r *kgo.Record) {
		p := s.parts[r.Partition]
		if p == nil {
			p = &partition{
				num:       r.Partition,
				orderKey:  r.Topic + "/" + strconv.Itoa(int(r.Partition)),
				mark:      kgo.EpochOffset{Epoch: -1, Offset: -1},
				committed: -1,
			}
			s.parts[r.Partition] = p
		}
		e := &ents[next]
		next++
		e.p, e.rec, e.attempt = p, r, 1
		p.window = append(p.window, e)
	})
	if next > 0 {
		s.buf = interleave(s.buf, ents)
	}
}

// onePartitionLocked reports whether the records at the head of buf, the
// next to be returned, all come from one partition (buf holds partitions
// in turn, so two partitions among the first two records mean more).
func (s *source) onePartitionLocked() bool {
	return len(s.buf) < 2 || s.buf[0].p == s.buf[1].p
}

// interleave returns buf and ents in one sequence that takes one record of
// each partition in turn, each partition's records in their order (buf's
// before ents'). A poll returns the records partition after partition:
// handed out in that order, they would fill the consumer's in-flight
// window with one partition, whose records are handled one at a time, and
// leave every other handler idle.
func interleave(buf []*entry, ents []entry) []*entry {
	var groups [][]*entry
	add := func(e *entry) {
		j := slices.IndexFunc(groups, func(g []*entry) bool { return g[0].p == e.p })
		if j < 0 {
			groups = append(groups, nil)
			j = len(groups) - 1
		}
		groups[j] = append(groups[j], e)
	}
	for _, e := range buf {
		add(e)
	}
	for i := range ents {
		add(&ents[i])
	}
	if len(groups) == 1 {
		return groups[0]
	}
	buf = buf[:0]
	for i := 0; len(groups) > 0; i++ {
		groups = slices.DeleteFunc(groups, func(g []*entry) bool { return i >= len(g) })
		for _, g := range groups {
			buf = append(buf, g[i])
		}
	}
	return buf
}

// popDueLocked removes and returns the retried entry due first at now, the
// lowest offset among equals, or nil.
func (s *source) popDueLocked(now time.Time) *entry {
	best := -1
	for i, e := range s.due {
		if e.due.After(now) {
			continue
		}
		if best < 0 || e.due.Before(s.due[best].due) || e.due.Equal(s.due[best].due) && e.rec.Offset < s.due[best].rec.Offset {
			best = i
		}
	}
	if best < 0 {
		return nil
	}
	e := s.due[best]
	s.due = slices.Delete(s.due, best, best+1)
	return e
}

func (s *source) nextDueLocked() (time.Time, bool) {
	var (
		at time.Time
		ok bool
	)
	for _, e := range s.due {
		if !ok || e.due.Before(at) {
			at, ok = e.due, true
		}
	}
	return at, ok
}

// deliverLocked leases e and returns its message.
func (s *source) deliverLocked(e *entry) brokers.Message {
	s.tokens++
	e.token = s.tokens
	e.state = entLeased
	r := e.rec
	var st *settler
	if e.attempt == 1 && e.first.s == nil {
		st = &e.first
	} else {
		st = new(settler)
	}
	*st = settler{s: s, e: e, token: e.token}
	m := brokers.Message{
		Topic:   r.Topic,
		Body:    r.Value,
		Attempt: e.attempt,
		Settler: st,
	}
	// The key and the header values, in one string.
	n := len(r.Key)
	for _, h := range r.Headers {
		n += len(h.Value)
	}
	var buf strings.Builder
	buf.Grow(n)
	buf.Write(r.Key)
	for _, h := range r.Headers {
		buf.Write(h.Value)
	}
	all := buf.String()
	m.Key, all = all[:len(r.Key)], all[len(r.Key):]
	if len(r.Headers) > 0 {
		m.Headers = make(map[string]string, len(r.Headers))
		for _, h := range r.Headers {
			v := all[:len(h.Value)]
			all = all[len(h.Value):]
			if _, dup := m.Headers[h.Key]; !dup { // the first value of a repeated name
				m.Headers[h.Key] = v
			}
		}
	}
	if s.cfg.Ordering == OrderKey {
		m.OrderKey = m.Key
	} else {
		m.OrderKey = e.p.orderKey
	}
	return m
}

// settleLocked marks e settled and reports whether its partition's commit
// point moved.
func (s *source) settleLocked(e *entry) bool {
	e.state = entSettled
	s.signalLocked()
	return e.p.advance()
}

// signalLocked wakes a revocation waiting for settles.
func (s *source) signalLocked() {
	if s.revoking == 0 {
		return
	}
	close(s.settled)
	s.settled = make(chan struct{})
}

func (s *source) kickCommit() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// dropQueuedLocked removes from the buffer and the retry queue the entries
// of the partitions in nums: they were never handed out, or are not being
// handled; the next owner reads them again.
func (s *source) dropQueuedLocked(nums []int32) {
	gone := func(e *entry) bool { return slices.Contains(nums, e.p.num) }
	s.buf = slices.DeleteFunc(s.buf, gone)
	s.due = slices.DeleteFunc(s.due, gone)
}

// onRevoked is the client's callback for partitions revoked in a
// rebalance: it waits up to RevokeTimeout for the messages of those
// partitions that are being handled, commits what was settled, and gives
// the partitions up. Settles of their messages fail from then on
// ([ErrRevoked]).
func (s *source) onRevoked(ctx context.Context, _ *kgo.Client, revoked map[string][]int32) {
	nums := revoked[s.cfg.Topic]
	if len(nums) == 0 {
		return
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.dropQueuedLocked(nums)
	handling := func() int {
		n := 0
		for _, num := range nums {
			if p := s.parts[num]; p != nil {
				n += p.handling()
			}
		}
		return n
	}
	var timeout <-chan time.Time
	if s.cfg.RevokeTimeout > 0 {
		t := time.NewTimer(s.cfg.RevokeTimeout)
		defer t.Stop()
		timeout = t.C
	}
	if n := handling(); n > 0 && timeout != nil {
		s.log.Debug("kafka: partitions being revoked; waiting for their messages being handled", "partitions", nums, "unsettled", n)
	}
	s.revoking++
wait:
	for handling() > 0 && !s.closed && timeout != nil {
		ch := s.settled
		s.mu.Unlock()
		select {
		case <-ch:
		case <-timeout:
			s.mu.Lock()
			break wait
		case <-ctx.Done():
			s.mu.Lock()
			break wait
		}
		s.mu.Lock()
	}
	s.revoking--
	left := handling()
	s.mu.Unlock()

	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	offsets := s.giveUp(nums)
	var err error
	if len(offsets) > 0 {
		_, err = s.commit(ctx, offsets)
	}
	attrs := []any{"partitions", nums, "unsettled", left}
	if err != nil {
		s.log.Warn("kafka: partitions revoked; committing them failed: their next owner reads again from the last commit",
			append(attrs, "error", err)...)
		return
	}
	s.log.Info("kafka: partitions revoked", attrs...)
}

// onLost is the client's callback for partitions lost with the group
// session: nothing can be committed; their next owner reads them again
// from the last commit.
func (s *source) onLost(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
	nums := lost[s.cfg.Topic]
	if len(nums) == 0 {
		return
	}
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return
	}
	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	s.giveUp(nums)
	s.log.Warn("kafka: partitions lost with the group session; their next owner reads again from the last commit",
		"partitions", nums)
}

// giveUp removes the partitions in nums, marking them revoked, and returns
// their offsets still to commit. commitMu is held.
func (s *source) giveUp(nums []int32) map[int32]kgo.EpochOffset {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dropQueuedLocked(nums)
	var offsets map[int32]kgo.EpochOffset
	for _, num := range nums {
		p := s.parts[num]
		if p == nil {
			continue
		}
		p.revoked = true
		delete(s.parts, num)
		if p.dirty() {
			if offsets == nil {
				offsets = make(map[int32]kgo.EpochOffset)
			}
			offsets[num] = p.mark
		}
	}
	s.signalLocked()
	return offsets
}

// dirtyLocked returns the offsets to commit of the partitions held.
func (s *source) dirtyLocked() map[int32]kgo.EpochOffset {
	var offsets map[int32]kgo.EpochOffset
	for num, p := range s.parts {
		if p.dirty() {
			if offsets == nil {
				offsets = make(map[int32]kgo.EpochOffset)
			}
			offsets[num] = p.mark
		}
	}
	return offsets
}

// commitHeld commits the settled offsets of the partitions held and
// records what was committed.
func (s *source) commitHeld(ctx context.Context) error {
	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	s.mu.Lock()
	offsets := s.dirtyLocked()
	s.mu.Unlock()
	if len(offsets) == 0 {
		return nil
	}
	ok, err := s.commit(ctx, offsets)
	s.mu.Lock()
	for num, off := range ok {
		if p := s.parts[num]; p != nil && p.committed < off {
			p.committed = off
		}
	}
	s.mu.Unlock()
	return err
}

// commit commits offsets synchronously and returns the offsets committed,
// by partition. commitMu is held.
func (s *source) commit(ctx context.Context, offsets map[int32]kgo.EpochOffset) (map[int32]int64, error) {
	var (
		errs []error
		ok   = make(map[int32]int64, len(offsets))
	)
	req := map[string]map[int32]kgo.EpochOffset{s.cfg.Topic: offsets}
	s.cl.CommitOffsetsSync(ctx, req, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
		if err != nil {
			errs = append(errs, err)
			return
		}
		failed := make(map[int32]bool)
		for _, t := range resp.Topics {
			for _, p := range t.Partitions {
				if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
					failed[p.Partition] = true
					errs = append(errs, &PartitionError{Op: "commit", Topic: s.cfg.Topic, Partition: p.Partition, Err: err})
				}
			}
		}
		for num, off := range offsets {
			if !failed[num] {
				ok[num] = off.Offset
			}
		}
	})
	return ok, errors.Join(errs...)
}

// commitLoop commits whenever a commit point moved, at most once per
// CommitInterval, and again after a backoff when a commit fails, until
// Close.
func (s *source) commitLoop(ctx context.Context) {
	defer close(s.done)
	retry := time.Duration(0)
	for {
		select {
		case <-s.kick:
		case <-s.stop:
			return
		}
		if s.cfg.CommitInterval > 0 && !sleep(s.stop, s.cfg.CommitInterval) {
			return
		}
		err := s.commitHeld(ctx)
		if err == nil {
			retry = 0
			continue
		}
		retry = min(max(2*retry, commitRetryMin), commitRetryMax)
		s.log.Warn("kafka: committing offsets failed; retrying", "error", err, "retry_in", retry)
		if !sleep(s.stop, retry) {
			return
		}
		s.kickCommit()
	}
}

// sleep waits for d or until done is closed; it reports whether d elapsed.
func sleep(done <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-done:
		return false
	}
}

// Close implements brokers.Source: it stops the committer, commits what is
// settled, leaves the group and closes the client. The records held
// unsettled, returned or not, are not committed: the partitions' next
// owner reads them again. ctx bounds the commit and the leave.
func (s *source) Close(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.buf, s.due = nil, nil
	s.signalLocked()
	s.mu.Unlock()

	close(s.stop)
	select {
	case <-s.done:
	case <-ctx.Done():
		s.cancelCommits()
		<-s.done
	}
	s.cancelCommits()
	err := s.commitHeld(ctx)
	if err != nil {
		err = fmt.Errorf("kafka: final commit: %w", err)
	}
	s.cl.AllowRebalance()
	if lerr := s.cl.LeaveGroupContext(ctx); lerr != nil && !errors.Is(lerr, kgo.ErrClientClosed) {
		err = errors.Join(err, fmt.Errorf("kafka: leaving group %q: %w", s.cfg.Group, lerr))
	}
	s.cl.Close()
	s.log.Debug("kafka: source closed")
	return err
}

// settler settles one delivery of a record.
type settler struct {
	s     *source
	e     *entry
	token uint64
}

var _ brokers.Settler = (*settler)(nil)

var errSettling = errors.New("kafka: another settle of the message is in progress")

// lockLeased locks the source and checks that the delivery is still leased;
// on error the source is unlocked.
func (t *settler) lockLeased(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s, e := t.s, t.e
	s.mu.Lock()
	var err error
	switch {
	case s.closed:
		err = fmt.Errorf("%w: settle", brokers.ErrClosed)
	case e.token != t.token || e.state == entSettled || e.state == entWaiting:
		err = brokers.ErrSettled
	case e.p.revoked:
		err = t.revoked()
	case e.state == entSettling:
		err = errSettling
	}
	if err != nil {
		s.mu.Unlock()
	}
	return err
}

func (t *settler) revoked() error {
	return &PartitionError{Op: "settle", Topic: t.e.rec.Topic, Partition: t.e.p.num, Err: ErrRevoked}
}

// Ack implements brokers.Settler: the record is settled, and its offset is
// committed once every earlier record of its partition is settled.
func (t *settler) Ack(ctx context.Context) error {
	if err := t.lockLeased(ctx); err != nil {
		return err
	}
	moved := t.s.settleLocked(t.e)
	t.s.mu.Unlock()
	if moved {
		t.s.kickCommit()
	}
	return nil
}

// Retry implements brokers.Settler: the record stays uncommitted, and
// Receive returns it again, with Attempt increased, once delay has passed;
// the later records of its partition are not held back.
func (t *settler) Retry(ctx context.Context, delay time.Duration) error {
	if err := t.lockLeased(ctx); err != nil {
		return err
	}
	s, e := t.s, t.e
	defer s.mu.Unlock()
	e.state = entWaiting
	e.attempt++
	e.due = time.Now().Add(max(delay, 0))
	s.due = append(s.due, e)
	s.signalLocked()
	if s.wakePoll != nil {
		s.wakePoll()
	}
	return nil
}

// DeadLetter implements brokers.Settler: it produces the record, key, value
// and headers unchanged plus d's headers (replacing headers of the same
// name), to the dead-letter topic, waits for its acknowledgement by all
// in-sync replicas, then settles the record as Ack does.
func (t *settler) DeadLetter(ctx context.Context, d brokers.DeadLetter) error {
	if err := t.lockLeased(ctx); err != nil {
		return err
	}
	s, e := t.s, t.e
	e.state = entSettling
	dead := deadLetterRecord(e.rec, s.cfg.DeadLetterTopic, d.Headers())
	s.mu.Unlock()

	err := s.cl.ProduceSync(ctx, dead).FirstErr()

	s.mu.Lock()
	if e.state == entSettling {
		e.state = entLeased
	}
	switch {
	case err != nil:
		s.mu.Unlock()
		return fmt.Errorf("kafka: dead-lettering to %q: %w", s.cfg.DeadLetterTopic, produceError(dead, err))
	case s.closed:
		s.mu.Unlock()
		return fmt.Errorf("%w: the dead letter was published, but the source was closed before the original was settled", brokers.ErrClosed)
	case e.p.revoked:
		s.mu.Unlock()
		return fmt.Errorf("kafka: the dead letter was published, but: %w", t.revoked())
	}
	moved := s.settleLocked(e)
	s.mu.Unlock()
	if moved {
		s.kickCommit()
	}
	return nil
}

// deadLetterRecord returns the dead letter of r: same key, value and
// headers, except those named in extra, which are added, in name order.
func deadLetterRecord(r *kgo.Record, topic string, extra map[string]string) *kgo.Record {
	hs := make([]kgo.RecordHeader, 0, len(r.Headers)+len(extra))
	for _, h := range r.Headers {
		if _, replaced := extra[h.Key]; !replaced {
			hs = append(hs, h)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(extra)) {
		hs = append(hs, kgo.RecordHeader{Key: k, Value: []byte(extra[k])})
	}
	return &kgo.Record{Topic: topic, Key: r.Key, Value: r.Value, Headers: hs}
}
