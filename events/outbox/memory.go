package outbox

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/gocqrs/cqrs/events/wire"
)

// MemoryOptions configures a [MemoryStore].
type MemoryOptions struct {
	// Clock tells the store the time (default [SystemClock]).
	Clock Clock
}

// MemoryStore is a [Store] kept in memory, for tests and for programs whose
// events need not survive a restart. It implements [Transactor] (its InTx
// is [MemoryTransactor]'s, so it joins the inbox's memory transactions) and
// [Notifier] (in process). It is safe for concurrent use. Create it with
// [NewMemoryStore].
type MemoryStore struct {
	MemoryTransactor

	clock Clock

	mu   sync.Mutex
	seq  int64
	rows map[uuid.UUID]*Row
	// queue holds the unsent rows (pending and dead) in Seq order; rows
	// that were sent or deleted since are skipped and compacted away.
	queue []*Row
	stale int // rows in queue that are sent or deleted
	// sent holds the sent rows in the order they were marked, for
	// retention.
	sent     []*Row
	staged   map[*MemoryTx][]Row
	watchers map[uint64]func()
	nextW    uint64
}

// NewMemoryStore returns an empty store.
func NewMemoryStore(opts MemoryOptions) *MemoryStore {
	c := opts.Clock
	if c == nil {
		c = SystemClock()
	}
	return &MemoryStore{
		clock:    c,
		rows:     make(map[uuid.UUID]*Row),
		staged:   make(map[*MemoryTx][]Row),
		watchers: make(map[uint64]func()),
	}
}

var (
	_ Store      = (*MemoryStore)(nil)
	_ Transactor = (*MemoryStore)(nil)
	_ Notifier   = (*MemoryStore)(nil)
)

func cloneEnvelope(e wire.Envelope) wire.Envelope {
	e.Headers = maps.Clone(e.Headers)
	e.Payload = bytes.Clone(e.Payload)
	return e
}

func cloneRow(r *Row) Row {
	out := *r
	out.Envelope = cloneEnvelope(r.Envelope)
	return out
}

// Add implements [Adder]: the rows are staged in ctx's *[MemoryTx] and
// committed with it.
func (s *MemoryStore) Add(ctx context.Context, envs ...wire.Envelope) error {
	tx, ok := TxFromContext[*MemoryTx](ctx)
	if !ok {
		return ErrNoTx
	}
	if err := ValidateEnvelopes(envs); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	now := s.clock.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, staged := s.staged[tx]; !staged {
		if err := tx.OnEnd(func(committed bool) { s.end(tx, committed) }); err != nil {
			return err
		}
		s.staged[tx] = nil
	}
	for _, e := range envs {
		s.staged[tx] = append(s.staged[tx], Row{
			Envelope:      cloneEnvelope(e),
			State:         Pending,
			AddedAt:       now,
			NextAttemptAt: now,
		})
	}
	return nil
}

// end applies or drops what tx staged.
func (s *MemoryStore) end(tx *MemoryTx, committed bool) {
	s.mu.Lock()
	staged := s.staged[tx]
	delete(s.staged, tx)
	added := 0
	if committed {
		for i := range staged {
			r := &staged[i]
			if _, dup := s.rows[r.Envelope.ID]; dup {
				continue
			}
			s.seq++
			r.Seq = s.seq
			s.rows[r.Envelope.ID] = r
			s.queue = append(s.queue, r)
			added++
		}
	}
	s.mu.Unlock()
	if added > 0 {
		s.signal()
	}
}

// signal wakes every watcher.
func (s *MemoryStore) signal() {
	s.mu.Lock()
	ws := slices.Collect(maps.Values(s.watchers))
	s.mu.Unlock()
	for _, w := range ws {
		w()
	}
}

// Watch implements [Notifier]: wake is called after every commit that added
// rows and after Release, Requeue and DeleteDead, which may make rows
// claimable.
func (s *MemoryStore) Watch(ctx context.Context, wake func()) error {
	var mu sync.Mutex // wake is never called concurrently with itself
	w := func() {
		mu.Lock()
		defer mu.Unlock()
		wake()
	}
	s.mu.Lock()
	id := s.nextW
	s.nextW++
	s.watchers[id] = w
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.watchers, id)
		s.mu.Unlock()
	}()
	w()
	<-ctx.Done()
	return nil
}

func (s *MemoryStore) leased(r *Row, now time.Time) bool {
	return r.LeaseOwner != "" && r.LeaseUntil.After(now)
}

// Claim implements [Claimer].
func (s *MemoryStore) Claim(ctx context.Context, owner string, limit int, lease time.Duration) ([]Row, error) {
	if err := ValidateClaim(owner, limit, lease); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	now := s.clock.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.compact()
	var (
		out     []Row
		blocked map[string]struct{}
	)
	for _, r := range s.queue {
		if len(out) == limit {
			break
		}
		if r.State == Sent || s.rows[r.Envelope.ID] != r {
			continue
		}
		key := r.Envelope.Key
		if key != "" {
			if _, b := blocked[key]; b {
				continue
			}
		}
		if r.State == Pending && !r.NextAttemptAt.After(now) && !s.leased(r, now) {
			r.LeaseOwner, r.LeaseUntil = owner, now.Add(lease)
			out = append(out, cloneRow(r))
			continue
		}
		if key != "" {
			if blocked == nil {
				blocked = make(map[string]struct{})
			}
			blocked[key] = struct{}{}
		}
	}
	return out, nil
}

// compact drops sent and deleted rows from the queue once they are at least
// half of it.
func (s *MemoryStore) compact() {
	if s.stale < 64 || s.stale*2 < len(s.queue) {
		return
	}
	s.queue = slices.DeleteFunc(s.queue, func(r *Row) bool {
		return r.State == Sent || s.rows[r.Envelope.ID] != r
	})
	s.stale = 0
}

// held returns the rows of ids owner holds, and the ids it does not.
func (s *MemoryStore) held(owner string, ids []uuid.UUID) (rows []*Row, lost []uuid.UUID) {
	for _, id := range ids {
		r, ok := s.rows[id]
		if !ok || r.State != Pending || r.LeaseOwner != owner || owner == "" {
			lost = append(lost, id)
			continue
		}
		rows = append(rows, r)
	}
	return rows, lost
}

func leaseErr(owner string, lost []uuid.UUID) error {
	if len(lost) == 0 {
		return nil
	}
	return &LeaseError{Owner: owner, IDs: lost}
}

// MarkSent implements [Claimer].
func (s *MemoryStore) MarkSent(ctx context.Context, owner string, ids ...uuid.UUID) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	now := s.clock.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	rows, lost := s.held(owner, ids)
	for _, r := range rows {
		r.State, r.SentAt = Sent, now
		r.LeaseOwner, r.LeaseUntil = "", time.Time{}
		s.stale++
		s.sent = append(s.sent, r)
	}
	return leaseErr(owner, lost)
}

// MarkFailed implements [Claimer].
func (s *MemoryStore) MarkFailed(ctx context.Context, owner string, failures ...Failure) error {
	if err := ValidateFailures(failures); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	now := s.clock.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	var lost []uuid.UUID
	for _, f := range failures {
		rows, l := s.held(owner, []uuid.UUID{f.ID})
		if len(l) > 0 {
			lost = append(lost, l...)
			continue
		}
		r := rows[0]
		r.Attempts++
		r.LastError = f.Error
		r.LeaseOwner, r.LeaseUntil = "", time.Time{}
		if f.Dead {
			r.State = Dead
		} else {
			r.NextAttemptAt = now.Add(f.Delay)
		}
	}
	return leaseErr(owner, lost)
}

// Release implements [Claimer].
func (s *MemoryStore) Release(ctx context.Context, owner string, ids ...uuid.UUID) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	rows, lost := s.held(owner, ids)
	for _, r := range rows {
		r.LeaseOwner, r.LeaseUntil = "", time.Time{}
	}
	s.mu.Unlock()
	if len(rows) > 0 {
		s.signal()
	}
	return leaseErr(owner, lost)
}

// Get implements [Admin].
func (s *MemoryStore) Get(ctx context.Context, id uuid.UUID) (Row, error) {
	if err := ctx.Err(); err != nil {
		return Row{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.rows[id]
	if !ok {
		return Row{}, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	return cloneRow(r), nil
}

// Stats implements [Admin].
func (s *MemoryStore) Stats(ctx context.Context) (Stats, error) {
	if err := ctx.Err(); err != nil {
		return Stats{}, err
	}
	now := s.clock.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Stats{Sent: int64(len(s.sent))}
	for _, r := range s.queue {
		if s.rows[r.Envelope.ID] != r {
			continue
		}
		switch r.State {
		case Pending:
			st.Pending++
			if s.leased(r, now) {
				st.Leased++
			}
			if st.OldestPending.IsZero() || r.AddedAt.Before(st.OldestPending) {
				st.OldestPending = r.AddedAt
			}
		case Dead:
			st.Dead++
		}
	}
	if !st.OldestPending.IsZero() {
		st.Lag = max(now.Sub(st.OldestPending), 0)
	}
	return st, nil
}

// ListDead implements [Admin].
func (s *MemoryStore) ListDead(ctx context.Context, afterSeq int64, limit int) ([]Row, error) {
	if err := ValidateLimit(limit); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Row
	for _, r := range s.queue {
		if len(out) == limit {
			break
		}
		if r.State == Dead && r.Seq > afterSeq && s.rows[r.Envelope.ID] == r {
			out = append(out, cloneRow(r))
		}
	}
	return out, nil
}

// Requeue implements [Admin].
func (s *MemoryStore) Requeue(ctx context.Context, ids ...uuid.UUID) (int64, error) {
	return s.requeue(ctx, func(yield func(*Row) bool) {
		for _, id := range ids {
			if r, ok := s.rows[id]; ok && !yield(r) {
				return
			}
		}
	})
}

// RequeueAllDead implements [Admin].
func (s *MemoryStore) RequeueAllDead(ctx context.Context) (int64, error) {
	return s.requeue(ctx, func(yield func(*Row) bool) {
		for _, r := range s.queue {
			if !yield(r) {
				return
			}
		}
	})
}

func (s *MemoryStore) requeue(ctx context.Context, rows func(yield func(*Row) bool)) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	now := s.clock.Now()
	s.mu.Lock()
	var n int64
	for r := range rows {
		if r.State != Dead || s.rows[r.Envelope.ID] != r {
			continue
		}
		r.State, r.Attempts, r.NextAttemptAt = Pending, 0, now
		r.LeaseOwner, r.LeaseUntil = "", time.Time{}
		n++
	}
	s.mu.Unlock()
	if n > 0 {
		s.signal()
	}
	return n, nil
}

// DeleteDead implements [Admin].
func (s *MemoryStore) DeleteDead(ctx context.Context, ids ...uuid.UUID) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	s.mu.Lock()
	var n int64
	for _, id := range ids {
		if r, ok := s.rows[id]; ok && r.State == Dead {
			delete(s.rows, id)
			s.stale++
			n++
		}
	}
	s.mu.Unlock()
	if n > 0 {
		s.signal()
	}
	return n, nil
}

// DeleteSent implements [Admin]. Rows go in the order they were marked
// sent.
func (s *MemoryStore) DeleteSent(ctx context.Context, before time.Time, limit int) (int64, error) {
	if err := ValidateLimit(limit); err != nil {
		return 0, err
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var n int64
	kept := s.sent[:0]
	for i, r := range s.sent {
		if n == int64(limit) {
			kept = append(kept, s.sent[i:]...)
			break
		}
		if !r.SentAt.Before(before) {
			kept = append(kept, r)
			continue
		}
		delete(s.rows, r.Envelope.ID)
		n++
	}
	clear(s.sent[len(kept):])
	s.sent = kept
	return n, nil
}
