package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gocqrs/cqrs/events/outbox"
	"github.com/gocqrs/cqrs/events/wire"
)

// Sender produces envelopes to Kafka: it is the outbox.Sender the outbox
// relay calls, and the transport of a [Publisher]. Each envelope becomes a
// record of topic env.Topic, key env.Key (none when empty), value
// env.Payload and headers wire.ToHeaders(env); franz-go's default
// partitioner hashes the key as Kafka's Java client does (murmur2), so a
// key always goes to the same partition while the partition count stays.
// Records are produced with acks from all in-sync replicas and idempotent
// writes. A Sender is safe for concurrent use; create it with [NewSender]
// and Close it.
type Sender struct {
	cl        *kgo.Client
	log       *slog.Logger
	maxRecord int
	serial    bool

	// mu guards closed and the Adds of wg: each Send round runs the
	// client's ProduceSync on a goroutine of the Sender, which Close
	// waits for.
	mu     sync.RWMutex
	closed bool
	wg     sync.WaitGroup

	// batches holds the batches of past Sends, for reuse.
	batches sync.Pool
}

var _ outbox.Sender = (*Sender)(nil)

// NewSender returns a Sender with its own franz-go client. It does not
// connect: the first Send (or [Sender.Ping]) does. It reports every
// invalid setting at once, each matching [ErrInvalidConfig].
func NewSender(cfg SenderConfig) (*Sender, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	opts := make([]kgo.Opt, 0, len(cfg.ClientOptions)+4)
	opts = append(opts, kgo.WithLogger(kgoLogger{cfg.Logger}))
	opts = append(opts, cfg.ClientOptions...)
	opts = append(opts,
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerBatchMaxBytes(int32(cfg.MaxRecordBytes+batchFraming)),
	)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	if err := refuseOptions(cl, false); err != nil {
		cl.Close()
		return nil, err
	}
	return &Sender{cl: cl, log: cfg.Logger, maxRecord: cfg.MaxRecordBytes, serial: cfg.SerialKeys}, nil
}

// Client returns the Sender's franz-go client, for administration
// ([EnsureTopics]) and monitoring. Do not close it, and do not produce
// with it records that need the Sender's guarantees.
func (s *Sender) Client() *kgo.Client { return s.cl }

// Ping checks that a broker of the cluster answers.
func (s *Sender) Ping(ctx context.Context) error { return s.cl.Ping(ctx) }

// Close closes the client: records still being produced fail with
// kgo.ErrClientClosed, and so does every later Send. The Sender's
// goroutines and the client's have ended when it returns.
func (s *Sender) Close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.cl.Close()
	s.wg.Wait()
}

// Send implements outbox.Sender. It returns once every record is
// acknowledged by all in-sync replicas, or has failed:
//
//   - nil when every record was acknowledged; otherwise an
//     *outbox.BatchError with one entry per envelope;
//   - an envelope with no Topic ([ErrNoTopic]), whose headers cannot be
//     made (wire.ToHeaders), or larger than MaxRecordBytes
//     ([ErrRecordTooLarge]) fails permanently (outbox.Permanent) without
//     being produced; so does a record whose topic name the broker
//     refuses (kerr.InvalidTopicException). Other failures are
//     *[PartitionError] values, transient;
//   - a record behind a failed record of its key is not produced
//     (outbox.ErrNotAttempted): see the package documentation, "Order of a
//     key within a Send";
//   - once ctx is done Send returns at once; the records not yet
//     acknowledged report ctx's error. Those already handed to the client
//     may still be written (the relay sends them again; consumers
//     deduplicate).
//
// Send copies what it needs of envs, which it neither keeps nor modifies.
func (s *Sender) Send(ctx context.Context, envs []wire.Envelope) error {
	if len(envs) == 0 {
		return nil
	}
	b := s.plan(ctx, envs)
	reusable := b.run(ctx)
	err := b.result()
	if reusable {
		s.putBatch(b)
	}
	return err
}

// Record states in a batch.
const (
	recPlanned uint8 = iota // to produce
	recSent                 // acknowledged
	recFailed               // failed, or not attempted
)

// batch is one Send: the records, their results, and the order they are
// produced in.
//
// A batch is reused by the next Send of its Sender once the client is done
// with its records, so that a Send allocates little: its records, its
// buffers and its key map keep their capacity.
type batch struct {
	s      *Sender
	envs   []wire.Envelope
	recs   []kgo.Record
	meta   []recMeta
	rounds int32
	errs   []error // allocated on the first failure: Send returns it
	failed int

	// Reused buffers: the records' bytes and headers, the records of a
	// round, the last record of each key.
	arena []byte
	hs    []kgo.RecordHeader
	round []*kgo.Record
	last  map[string]int32
}

// A batch larger than this is not kept for the next Send.
const (
	maxReusedBytes   = 4 << 20
	maxReusedRecords = 4096
)

// getBatch returns a batch for envs, reused if one is free.
func (s *Sender) getBatch(envs []wire.Envelope) *batch {
	b, _ := s.batches.Get().(*batch)
	if b == nil {
		b = &batch{s: s}
	}
	n := len(envs)
	b.envs = envs
	b.recs = resize(b.recs, n)
	b.meta = resize(b.meta, n)
	return b
}

// putBatch makes b free for the next Send; the client is done with its
// records.
func (s *Sender) putBatch(b *batch) {
	if cap(b.arena) > maxReusedBytes || cap(b.recs) > maxReusedRecords {
		return
	}
	clear(b.recs)
	clear(b.meta)
	clear(b.hs)
	clear(b.round)
	clear(b.last)
	b.envs, b.errs, b.failed, b.rounds = nil, nil, 0, 0
	b.arena, b.hs, b.round = b.arena[:0], b.hs[:0], b.round[:0]
	s.batches.Put(b)
}

// resize returns x with length n, zeroed, reusing its array if large
// enough.
func resize[T any](x []T, n int) []T {
	if cap(x) < n {
		return make([]T, n)
	}
	x = x[:n]
	clear(x)
	return x
}

// recMeta is what a batch knows of one record.
type recMeta struct {
	// prev is the index of the previous record of the same key, or -1.
	prev int32
	// round is the round the record is produced in: a round starts once
	// the records of the rounds before it are settled.
	round int32
	state uint8
}

// recCtx is a record's context (kgo.Record.Context): the Send's, carrying
// the record's index back from the client's results. The contexts of a
// Send are never reused: the client may still look at a record's context
// after its promise (a goroutine waiting for a new topic's metadata does).
type recCtx struct {
	context.Context
	index int
}

// plan validates envs, builds their records and assigns their rounds, in
// one pass: each record's key, value and header values are copied into one
// buffer.
func (s *Sender) plan(ctx context.Context, envs []wire.Envelope) *batch {
	b := s.getBatch(envs)
	size := 0
	for i := range envs {
		size += len(envs[i].Key) + len(envs[i].Payload) + headerBytesGuess(&envs[i])
	}
	if cap(b.arena) < size {
		b.arena = make([]byte, 0, size)
	}
	if nhs := len(envs) * (numFieldHeaders + 1); cap(b.hs) < nhs {
		b.hs = make([]kgo.RecordHeader, 0, nhs)
	}
	arena, hs, last := b.arena, b.hs, b.last
	defer func() { b.arena, b.hs, b.last = arena, hs, last }()
	ctxs := make([]recCtx, len(envs))
	for i := range envs {
		env, m := &envs[i], &b.meta[i]
		ctxs[i] = recCtx{Context: ctx, index: i}
		m.prev = -1
		if env.Key != "" {
			if last == nil {
				last = make(map[string]int32, len(envs))
			}
			if p, ok := last[env.Key]; ok {
				m.prev = p
			}
			last[env.Key] = int32(i)
		}
		if m.prev >= 0 && b.meta[m.prev].state == recFailed {
			b.fail(i, outbox.ErrNotAttempted)
			continue
		}
		if env.Topic == "" {
			b.fail(i, outbox.Permanent(ErrNoTopic))
			continue
		}
		hstart, astart := len(hs), len(arena)
		var (
			names int
			ok    bool
		)
		hs, arena, names, ok = appendHeaders(hs, arena, env)
		if !ok {
			hs, arena = hs[:hstart], arena[:astart]
			_, err := wire.ToHeaders(*env)
			if err == nil {
				err = errors.New("kafka: invalid envelope headers") // unreachable: appendHeaders refuses what ToHeaders does
			}
			b.fail(i, outbox.Permanent(err))
			continue
		}
		if size := len(env.Key) + len(env.Payload) + len(arena) - astart + names; size > s.maxRecord {
			hs, arena = hs[:hstart], arena[:astart]
			b.fail(i, outbox.Permanent(fmt.Errorf("%w: %d bytes of key, value and headers, above %d", ErrRecordTooLarge, size, s.maxRecord)))
			continue
		}
		r := &b.recs[i]
		r.Topic = env.Topic
		r.Context = &ctxs[i]
		r.Headers = hs[hstart:len(hs):len(hs)]
		if env.Key != "" {
			r.Key, arena = appendBytes(arena, env.Key)
		}
		r.Value, arena = appendBytes(arena, env.Payload)
		if m.prev >= 0 {
			p := &b.meta[m.prev]
			m.round = p.round
			if s.serial || envs[m.prev].Topic != env.Topic {
				// Another topic is another partition: the client's
				// per-partition failure handling does not cover it.
				m.round++
			}
			b.rounds = max(b.rounds, m.round)
		}
	}
	return b
}

// appendBytes appends s to arena and returns the appended part (capped, so
// that later appends do not touch it) and the arena. When the arena grows,
// the parts appended before keep the old array.
func appendBytes[S ~string | ~[]byte](arena []byte, s S) ([]byte, []byte) {
	start := len(arena)
	arena = append(arena, s...)
	return arena[start:len(arena):len(arena)], arena
}

// fail records the failure of record i.
func (b *batch) fail(i int, err error) {
	if b.errs == nil {
		b.errs = make([]error, len(b.recs))
	}
	b.meta[i].state = recFailed
	b.errs[i] = err
	b.failed++
}

// run produces the records round by round, until all are settled or ctx
// is done; then every record not settled reports ctx's error.
func (b *batch) run(ctx context.Context) (reusable bool) {
	reusable = true
	recs := b.round
	defer func() { b.round = recs }()
	for r := int32(0); r <= b.rounds && ctx.Err() == nil; r++ {
		recs = recs[:0]
		for i := range b.recs {
			m := &b.meta[i]
			if m.round != r || m.state != recPlanned {
				continue
			}
			if m.prev >= 0 && b.meta[m.prev].state == recFailed {
				b.fail(i, outbox.ErrNotAttempted)
				continue
			}
			recs = append(recs, &b.recs[i])
		}
		if len(recs) == 0 {
			continue
		}
		results, ok := b.s.produce(ctx, recs)
		if !ok {
			reusable = false // the client still has records of this round
			break
		}
		for _, res := range results {
			rc, ok := res.Record.Context.(*recCtx)
			if !ok {
				continue // unreachable: the client keeps a record's context
			}
			if res.Err != nil {
				b.fail(rc.index, produceError(res.Record, res.Err))
			} else {
				b.meta[rc.index].state = recSent
			}
		}
	}
	b.finish(ctx.Err())
	b.checkOrder()
	return reusable
}

// produce hands recs to the client's ProduceSync, which stops the
// partitions' linger once they are all buffered, and returns its results;
// or false once ctx is done, leaving the call to finish on its own. The
// client keeps the records of a partition in order, and fails every record
// buffered behind a failed one.
func (s *Sender) produce(ctx context.Context, recs []*kgo.Record) (kgo.ProduceResults, bool) {
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		results := make(kgo.ProduceResults, len(recs))
		for i, r := range recs {
			results[i] = kgo.ProduceResult{Record: r, Err: kgo.ErrClientClosed}
		}
		return results, true
	}
	s.wg.Add(1)
	s.mu.RUnlock()
	done := make(chan kgo.ProduceResults, 1)
	go func() {
		defer s.wg.Done()
		done <- s.cl.ProduceSync(ctx, recs...)
	}()
	select {
	case res := <-done:
		return res, true
	case <-ctx.Done():
		select {
		case res := <-done:
			return res, true
		default:
			return nil, false
		}
	}
}

// finish reports err for every record not settled.
func (b *batch) finish(err error) {
	if err == nil {
		err = errors.New("kafka: record not produced") // unreachable: every round was waited for
	}
	for i := range b.meta {
		if b.meta[i].state == recPlanned {
			b.fail(i, err)
		}
	}
}

// checkOrder logs the records of a key acknowledged after an earlier
// record of the same key failed. The client fails every record buffered
// behind a failed one in its partition, and a round hands it all its
// records before the partitions stop lingering, so this happens only if a
// produce request of the partition left before the round's last record was
// buffered (a full batch, the drain of a concurrent producer, or no
// linger) and failed before it was.
func (b *batch) checkOrder() {
	if b.failed == 0 {
		return
	}
	for i := range b.meta {
		m := &b.meta[i]
		if m.prev < 0 || m.state != recSent || b.meta[m.prev].state != recFailed || errors.Is(b.errs[m.prev], outbox.ErrNotAttempted) {
			continue
		}
		env := &b.envs[i]
		b.s.log.Error("kafka: a record was written after an earlier record of its key failed; the earlier one will be sent again after it",
			"topic", env.Topic, "key", env.Key, "event", env.Name, "event_id", env.ID.String(),
			"failed_event_id", b.envs[m.prev].ID.String(), "error", b.errs[m.prev])
	}
}

// result returns nil, or the per-record errors.
func (b *batch) result() error {
	if b.failed == 0 {
		return nil
	}
	return &outbox.BatchError{Errs: b.errs}
}

// produceError wraps the client's error for a record. Only an invalid
// topic name is permanent: the broker refuses a whole batch for one bad
// record (too large, invalid), and the client then fails every record
// buffered behind it in the partition, so such an error is not the
// record's own; the relay retries it, up to its MaxAttempts.
func produceError(rec *kgo.Record, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	if errors.Is(err, kgo.ErrClientClosed) {
		return fmt.Errorf("kafka: produce: %w", err)
	}
	pe := &PartitionError{Op: "produce", Topic: rec.Topic, Partition: rec.Partition, Err: err}
	if errors.Is(err, kerr.InvalidTopicException) {
		return outbox.Permanent(pe)
	}
	return pe
}
