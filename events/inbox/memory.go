package inbox

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/gocqrs/cqrs/events/outbox"
)

// MemoryOptions configures a [MemoryStore].
type MemoryOptions struct {
	// Clock tells the store the time (default outbox.SystemClock).
	Clock outbox.Clock
}

// MemoryStore is a [Store] kept in memory, for tests and single-process
// programs. It writes in the transactions of outbox.MemoryTransactor (which
// it embeds), so its records commit together with a memory outbox's rows.
// It is safe for concurrent use. Create it with [NewMemoryStore].
type MemoryStore struct {
	outbox.MemoryTransactor

	clock   outbox.Clock
	mu      sync.Mutex
	entries map[entryKey]*entry
}

type entryKey struct {
	consumer string
	id       uuid.UUID
}

type entry struct {
	at time.Time
	// tx is the open transaction that recorded the entry, nil once it
	// committed; done is closed when that transaction ends.
	tx   *outbox.MemoryTx
	done chan struct{}
}

// NewMemoryStore returns an empty store.
func NewMemoryStore(opts MemoryOptions) *MemoryStore {
	c := opts.Clock
	if c == nil {
		c = outbox.SystemClock()
	}
	return &MemoryStore{clock: c, entries: make(map[entryKey]*entry)}
}

var (
	_ Store             = (*MemoryStore)(nil)
	_ outbox.Transactor = (*MemoryStore)(nil)
)

// Record implements [Store].
func (s *MemoryStore) Record(ctx context.Context, consumer string, id uuid.UUID) (bool, error) {
	tx, ok := outbox.TxFromContext[*outbox.MemoryTx](ctx)
	if !ok {
		return false, outbox.ErrNoTx
	}
	if err := ValidateRecord(consumer, id); err != nil {
		return false, err
	}
	k := entryKey{consumer, id}
	for {
		if err := ctx.Err(); err != nil {
			return false, err
		}
		s.mu.Lock()
		e, exists := s.entries[k]
		if !exists {
			e = &entry{at: s.clock.Now(), tx: tx, done: make(chan struct{})}
			if err := tx.OnEnd(func(committed bool) { s.end(k, e, committed) }); err != nil {
				s.mu.Unlock()
				return false, err
			}
			s.entries[k] = e
			s.mu.Unlock()
			return true, nil
		}
		if e.tx == nil || e.tx == tx {
			s.mu.Unlock()
			return false, nil
		}
		done := e.done
		s.mu.Unlock()
		select {
		case <-done:
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
}

func (s *MemoryStore) end(k entryKey, e *entry, committed bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if committed {
		e.tx = nil
	} else {
		delete(s.entries, k)
	}
	close(e.done)
}

// Seen implements [Store].
func (s *MemoryStore) Seen(ctx context.Context, consumer string, id uuid.UUID) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.entries[entryKey{consumer, id}]
	return ok && e.tx == nil, nil
}

// Purge implements [Store].
func (s *MemoryStore) Purge(ctx context.Context, before time.Time, limit int) (int64, error) {
	if err := outbox.ValidateLimit(limit); err != nil {
		return 0, err
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	type old struct {
		k  entryKey
		at time.Time
	}
	var olds []old
	for k, e := range s.entries {
		if e.tx == nil && e.at.Before(before) {
			olds = append(olds, old{k, e.at})
		}
	}
	slices.SortFunc(olds, func(a, b old) int { return a.at.Compare(b.at) })
	olds = olds[:min(len(olds), limit)]
	for _, o := range olds {
		delete(s.entries, o.k)
	}
	return int64(len(olds)), nil
}
