package saga

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/gocqrs/cqrs/events/outbox"
)

// MemoryOptions configures a [MemoryStore].
type MemoryOptions struct {
	// Clock tells the store the time (default [SystemClock]).
	Clock Clock
}

// MemoryStore is a [Store] kept in memory, for tests and for programs whose
// sagas need not survive a restart. It implements outbox.Transactor (its
// InTx is outbox.MemoryTransactor's): Create and Save made with an
// *outbox.MemoryTx in ctx are staged and applied when it commits, so they
// commit or roll back with the memory outbox's and inbox's writes. While a
// transaction holds a staged write of a saga, that saga is locked: another
// Save gets a conflict and Claim skips it. Create it with
// [NewMemoryStore]; it is safe for concurrent use.
type MemoryStore struct {
	outbox.MemoryTransactor

	clock Clock

	mu    sync.Mutex
	seq   int64
	sagas map[uuid.UUID]*memSaga
}

// memSaga is one saga, with the write an open transaction staged.
type memSaga struct {
	rec     Record
	log     []Entry
	created bool // false while its Create is staged

	tx      *outbox.MemoryTx // the transaction that staged a write, or nil
	next    *Record          // the saga as that write leaves it
	nextLog []Entry
}

// NewMemoryStore returns an empty store.
func NewMemoryStore(opts MemoryOptions) *MemoryStore {
	c := opts.Clock
	if c == nil {
		c = SystemClock()
	}
	return &MemoryStore{clock: c, sagas: make(map[uuid.UUID]*memSaga)}
}

var (
	_ Store             = (*MemoryStore)(nil)
	_ outbox.Transactor = (*MemoryStore)(nil)
)

// txOf returns the open memory transaction ctx carries, or an error if it
// carries one that has ended.
func txOf(ctx context.Context) (*outbox.MemoryTx, error) {
	tx, ok := outbox.TxFromContext[*outbox.MemoryTx](ctx)
	if !ok {
		return nil, nil
	}
	if !tx.Open() {
		return nil, outbox.ErrTxDone
	}
	return tx, nil
}

// Create implements [Store].
func (s *MemoryStore) Create(ctx context.Context, rec Record, lease time.Duration) error {
	if err := ValidateRecord(rec, lease); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	tx, err := txOf(ctx)
	if err != nil {
		return err
	}
	now := s.clock.Now()
	rec.Version, rec.Attempts, rec.CreatedAt, rec.UpdatedAt = 1, 0, now, now
	rec.LeaseUntil = time.Time{}
	if rec.LeaseOwner != "" {
		rec.LeaseUntil = now.Add(lease)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, dup := s.sagas[rec.ID]; dup {
		return fmt.Errorf("%w: %s", ErrExists, rec.ID)
	}
	m := &memSaga{rec: rec, created: tx == nil}
	if tx != nil {
		if err := s.stage(tx, rec.ID, m); err != nil {
			return err
		}
		m.next = &rec
	}
	s.sagas[rec.ID] = m
	return nil
}

// stage makes m's pending write tx's. Called with s.mu held.
func (s *MemoryStore) stage(tx *outbox.MemoryTx, id uuid.UUID, m *memSaga) error {
	if m.tx == tx {
		return nil
	}
	if err := tx.OnEnd(func(committed bool) { s.end(id, tx, committed) }); err != nil {
		return err
	}
	m.tx = tx
	return nil
}

// end applies or drops what tx staged for the saga id.
func (s *MemoryStore) end(id uuid.UUID, tx *outbox.MemoryTx, committed bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.sagas[id]
	if !ok || m.tx != tx {
		return
	}
	switch {
	case committed:
		m.rec = *m.next
		m.log = append(m.log, m.nextLog...)
		m.created = true
	case !m.created:
		delete(s.sagas, id)
	}
	m.tx, m.next, m.nextLog = nil, nil, nil
}

// visible returns the committed saga id, or nil.
func (s *MemoryStore) visible(id uuid.UUID) *memSaga {
	if m, ok := s.sagas[id]; ok && m.created {
		return m
	}
	return nil
}

func cloneRecord(r Record) Record {
	r.State = bytes.Clone(r.State)
	return r
}

// Load implements [Store].
func (s *MemoryStore) Load(ctx context.Context, id uuid.UUID) (Record, error) {
	if err := ctx.Err(); err != nil {
		return Record{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.visible(id)
	if m == nil {
		return Record{}, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	return cloneRecord(m.rec), nil
}

// Save implements [Store]. The entries of cp.Log are copied; cp.State and
// the entries' Errors are kept as given.
func (s *MemoryStore) Save(ctx context.Context, cp Checkpoint) error {
	if err := ValidateCheckpoint(cp); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	tx, err := txOf(ctx)
	if err != nil {
		return err
	}
	now := s.clock.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.sagas[cp.ID]
	if !ok || (!m.created && m.tx != tx) {
		return fmt.Errorf("%w: %s", ErrNotFound, cp.ID)
	}
	if m.tx != nil && m.tx != tx {
		// Locked by another transaction: it will change the version.
		return &ConflictError{ID: cp.ID, Version: cp.Version}
	}
	cur := m.rec
	if m.next != nil {
		cur = *m.next
	}
	if cur.Version != cp.Version {
		return &ConflictError{ID: cp.ID, Version: cp.Version}
	}
	cur.Version++
	cur.Status, cur.Step, cur.State, cur.Attempts = cp.Status, cp.Step, cp.State, cp.Attempts
	cur.LeaseOwner, cur.LeaseUntil = cp.Owner, time.Time{}
	if cp.Owner != "" {
		cur.LeaseUntil = now.Add(cp.Lease)
	}
	cur.UpdatedAt = now
	if tx == nil {
		m.rec = cur
		m.log = s.appendLog(m.log, cp.Log)
		return nil
	}
	if err := s.stage(tx, cp.ID, m); err != nil {
		return err
	}
	next := cur
	m.next = &next
	m.nextLog = s.appendLog(m.nextLog, cp.Log)
	return nil
}

// appendLog appends copies of entries to log, numbered. Called with s.mu
// held.
func (s *MemoryStore) appendLog(log, entries []Entry) []Entry {
	if len(log) == 0 && cap(log) == 0 {
		log = make([]Entry, 0, max(len(entries), 4))
	}
	for _, e := range entries {
		s.seq++
		e.Seq = s.seq
		log = append(log, e)
	}
	return log
}

// Renew implements [Store].
func (s *MemoryStore) Renew(ctx context.Context, id uuid.UUID, owner string, lease time.Duration) error {
	if err := ValidateLease(owner, 1, lease); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	now := s.clock.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.visible(id)
	if m == nil {
		return fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if !m.rec.Status.Active() || m.rec.LeaseOwner != owner {
		return fmt.Errorf("%w: saga %s is %v, held by %q, not %q", ErrLeaseLost, id, m.rec.Status, m.rec.LeaseOwner, owner)
	}
	m.rec.LeaseUntil = now.Add(lease)
	if m.next != nil && m.next.LeaseOwner == owner {
		m.next.LeaseUntil = m.rec.LeaseUntil
	}
	return nil
}

// Claim implements [Store].
func (s *MemoryStore) Claim(ctx context.Context, owner string, names []string, limit int, lease time.Duration) ([]Record, error) {
	if err := ValidateLease(owner, limit, lease); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	now := s.clock.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	var due []*memSaga
	for _, m := range s.sagas {
		r := &m.rec
		if !m.created || m.tx != nil || !r.Status.Active() {
			continue
		}
		if r.LeaseOwner != "" && r.LeaseUntil.After(now) {
			continue
		}
		if len(names) > 0 && !slices.Contains(names, r.Name) {
			continue
		}
		due = append(due, m)
	}
	slices.SortFunc(due, func(a, b *memSaga) int {
		if c := a.rec.UpdatedAt.Compare(b.rec.UpdatedAt); c != 0 {
			return c
		}
		return bytes.Compare(a.rec.ID[:], b.rec.ID[:])
	})
	out := make([]Record, 0, min(limit, len(due)))
	for _, m := range due[:min(limit, len(due))] {
		r := &m.rec
		r.LeaseOwner, r.LeaseUntil = owner, now.Add(lease)
		r.Attempts++
		r.Version++
		r.UpdatedAt = now
		out = append(out, cloneRecord(*r))
	}
	return out, nil
}

// Log implements [Store].
func (s *MemoryStore) Log(ctx context.Context, id uuid.UUID) ([]Entry, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.visible(id)
	if m == nil {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	out := make([]Entry, len(m.log))
	for i, e := range m.log {
		e.Errors = slices.Clone(e.Errors)
		out[i] = e
	}
	return out, nil
}

// List implements [Store].
func (s *MemoryStore) List(ctx context.Context, f Filter) ([]Record, error) {
	if err := ValidateLimit(f.Limit); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	now := s.clock.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Record
	for _, m := range s.sagas {
		r := &m.rec
		if !m.created || bytes.Compare(r.ID[:], f.After[:]) <= 0 {
			continue
		}
		if f.Recoverable && (!r.Status.Active() || (r.LeaseOwner != "" && r.LeaseUntil.After(now))) {
			continue
		}
		if len(f.Statuses) > 0 && !slices.Contains(f.Statuses, r.Status) {
			continue
		}
		if len(f.Names) > 0 && !slices.Contains(f.Names, r.Name) {
			continue
		}
		out = append(out, *r)
	}
	slices.SortFunc(out, func(a, b Record) int { return bytes.Compare(a.ID[:], b.ID[:]) })
	out = out[:min(f.Limit, len(out))]
	for i := range out {
		out[i] = cloneRecord(out[i])
	}
	return out, nil
}

// Purge implements [Store].
func (s *MemoryStore) Purge(ctx context.Context, before time.Time, limit int) (int64, error) {
	if err := ValidateLimit(limit); err != nil {
		return 0, err
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var victims []*memSaga
	for _, m := range s.sagas {
		r := &m.rec
		if m.created && m.tx == nil && (r.Status == Completed || r.Status == Compensated) && r.UpdatedAt.Before(before) {
			victims = append(victims, m)
		}
	}
	slices.SortFunc(victims, func(a, b *memSaga) int { return cmp.Compare(a.rec.UpdatedAt.UnixNano(), b.rec.UpdatedAt.UnixNano()) })
	victims = victims[:min(limit, len(victims))]
	for _, m := range victims {
		delete(s.sagas, m.rec.ID)
	}
	return int64(len(victims)), nil
}
