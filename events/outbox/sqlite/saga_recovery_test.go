package sqlite_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gocqrs/cqrs/events/outbox"
	"github.com/gocqrs/cqrs/events/outbox/sqlite"
	"github.com/gocqrs/cqrs/mediator/saga"
	"github.com/gocqrs/cqrs/mediator/saga/sagatest"
)

// The recovery tests drive a saga of four steps whose every action and
// compensation applies an effect in the database, in the transaction of
// its checkpoint, keyed by its idempotency key.

// effectsDDL is the table of the steps' effects: one row per idempotency
// key, counting how many times the effect was applied.
const effectsDDL = `CREATE TABLE IF NOT EXISTS saga_effects (key TEXT PRIMARY KEY, applied INTEGER NOT NULL) STRICT`

const applyEffect = `INSERT INTO saga_effects (key, applied) VALUES (?, 1)
	ON CONFLICT (key) DO UPDATE SET applied = applied + 1`

const tripSteps = 4

var errRefused = errors.New("the carrier refused the parcel")

// trip is the state of the saga.
type trip struct {
	// Refuse makes the last step fail, so that the saga is compensated.
	Refuse bool `json:"refuse,omitempty"`
	// Done lists what the checkpointed steps did.
	Done []string `json:"done"`
}

func stepName(i int) string { return fmt.Sprintf("step-%d", i+1) }

// tripSaga returns the saga. Every invocation first calls invoked with its
// idempotency key (outside the transaction: it counts runs, not effects),
// then applies its effect with the transaction its context carries, then
// calls after (which may block). The last step fails, after applying its
// effect, when the state says Refuse.
func tripSaga(invoked func(key string) error, after func(ctx context.Context, key string) error) *saga.Definition[trip] {
	apply := func(ctx context.Context, s *trip, what string) error {
		key := saga.KeyFrom(ctx)
		if err := invoked(key); err != nil {
			return err
		}
		tx, ok := outbox.TxFromContext[*sql.Tx](ctx)
		if !ok {
			return errors.New("the step runs without a transaction")
		}
		if _, err := tx.ExecContext(ctx, applyEffect, key); err != nil {
			return err
		}
		s.Done = append(s.Done, what)
		if after != nil {
			return after(ctx, key)
		}
		return nil
	}
	def := &saga.Definition[trip]{Name: "trip"}
	for i := range tripSteps {
		name := stepName(i)
		def.Steps = append(def.Steps, saga.Step[trip]{
			Name: name,
			Action: saga.Do(func(ctx context.Context, s *trip) error {
				if err := apply(ctx, s, name); err != nil {
					return err
				}
				if i == tripSteps-1 && s.Refuse {
					return errRefused // its effect is rolled back with its transaction
				}
				return nil
			}),
			Compensation: saga.Do(func(ctx context.Context, s *trip) error { return apply(ctx, s, "undo "+name) }),
		})
	}
	return def
}

// openTripDB opens the database file at path, with the saga tables and
// the effects table, closed when the test ends.
func openTripDB(tb testing.TB, path string, clock saga.Clock) (*sqlite.DB, *sqlite.SagaStore) {
	tb.Helper()
	db, err := sqlite.Open(tb.Context(), path, sqlite.Options{})
	require.NoError(tb, err)
	tb.Cleanup(func() { require.NoError(tb, db.Close()) })
	s := newSagaStore(tb, db, clock)
	_, err = db.SQL().ExecContext(tb.Context(), effectsDDL)
	require.NoError(tb, err)
	return db, s
}

// tripOrchestrator returns an orchestrator of the trip saga on store, each
// invocation and its checkpoint in a transaction of tx.
func tripOrchestrator(tb testing.TB, store saga.Store, tx outbox.Transactor, owner string, lease time.Duration,
	clock saga.Clock, def *saga.Definition[trip],
) *saga.Orchestrator {
	tb.Helper()
	o, err := saga.New(saga.Options{Store: store, Transactor: tx, Owner: owner, Lease: lease, Clock: clock, Logger: discardLogger()}, def)
	require.NoError(tb, err)
	return o
}

// readEffects returns how many times each key's effect was applied.
func readEffects(t *testing.T, db *sqlite.DB) map[string]int {
	t.Helper()
	rows, err := db.SQL().QueryContext(t.Context(), `SELECT key, applied FROM saga_effects`)
	require.NoError(t, err)
	out := make(map[string]int)
	for rows.Next() {
		var key string
		var n int
		require.NoError(t, rows.Scan(&key, &n))
		out[key] = n
	}
	require.NoError(t, rows.Err())
	require.NoError(t, rows.Close())
	return out
}

// keys returns the idempotency keys of the named invocations of saga id.
func keys(id uuid.UUID, suffixes ...string) map[string]int {
	out := make(map[string]int, len(suffixes))
	for _, s := range suffixes {
		out[id.String()+"/"+s] = 1
	}
	return out
}

// dyingStore is the store as a process sees it that dies right after the
// checkpoint of step 2 is written: every later call fails, the release of
// the saga included, so its lease is left to expire.
type dyingStore struct {
	saga.Store
	dead atomic.Bool
}

var errDied = errors.New("the process died")

func (d *dyingStore) Save(ctx context.Context, cp saga.Checkpoint) error {
	if d.dead.Load() {
		return errDied
	}
	err := d.Store.Save(ctx, cp)
	if err == nil && cp.Status == saga.Running && cp.Step == 2 {
		d.dead.Store(true)
	}
	return err
}

func (d *dyingStore) Renew(ctx context.Context, id uuid.UUID, owner string, lease time.Duration) error {
	if d.dead.Load() {
		return errDied
	}
	return d.Store.Renew(ctx, id, owner, lease)
}

// TestSagaConcurrentRecovery leaves sagas whose driver died after step 2,
// then lets three recoverers recover them at once: two on one DB (they
// take turns in its write queue) and one on a connection pool of its own
// on the same file, as another process would. Each saga is claimed and
// driven on by one of them only, and every effect is applied once.
func TestSagaConcurrentRecovery(t *testing.T) {
	t.Parallel()
	const sagas = 12
	const lease = 30 * time.Second
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "sagas.db")
	clock := sagatest.NewClock()
	dbA, storeA := openTripDB(t, path, clock)
	dbB, storeB := openTripDB(t, path, clock)

	var (
		mu      sync.Mutex
		invoked = make(map[string]int) // key → runs by the recoverers
		driving atomic.Bool
	)
	count := func(key string) error {
		if driving.Load() {
			mu.Lock()
			invoked[key]++
			mu.Unlock()
		}
		return nil
	}
	def := tripSaga(count, nil)

	ids := make([]uuid.UUID, sagas)
	for i := range ids {
		dying := &dyingStore{Store: storeA}
		o := tripOrchestrator(t, dying, dbA, "dead", lease, clock, def)
		res, err := saga.Execute(ctx, o, def, trip{})
		require.ErrorIs(t, err, saga.ErrInterrupted)
		require.ErrorIs(t, err, errDied)
		ids[i] = res.ID
	}
	for _, id := range ids {
		rec, err := storeA.Load(ctx, id)
		require.NoError(t, err)
		require.Equal(t, saga.Running, rec.Status)
		require.Equal(t, 2, rec.Step)
		require.Equal(t, "dead", rec.LeaseOwner, "the dead driver could not release the saga")
	}

	clock.Advance(lease)
	driving.Store(true)
	recoverers := []*saga.Orchestrator{
		tripOrchestrator(t, storeA, dbA, "recoverer-a", lease, clock, def),
		tripOrchestrator(t, storeA, dbA, "recoverer-b", lease, clock, def),
		tripOrchestrator(t, storeB, dbB, "recoverer-c", lease, clock, def),
	}
	var wg sync.WaitGroup
	start := make(chan struct{})
	claimed := make([]int, len(recoverers))
	errs := make([]error, len(recoverers))
	for i, o := range recoverers {
		wg.Go(func() {
			<-start
			claimed[i], errs[i] = o.Recover(ctx)
		})
	}
	close(start)
	wg.Wait()
	total := 0
	for i, o := range recoverers {
		require.NoError(t, errs[i], o.Owner())
		t.Logf("%s drove %d sagas", o.Owner(), claimed[i])
		total += claimed[i]
	}
	assert.Equal(t, sagas, total, "each saga claimed once")

	effects := readEffects(t, dbA)
	want := make(map[string]int)
	for _, id := range ids {
		rec, err := storeB.Load(ctx, id)
		require.NoError(t, err)
		assert.Equal(t, saga.Completed, rec.Status)
		assert.Empty(t, rec.LeaseOwner)
		log, err := storeB.Log(ctx, id)
		require.NoError(t, err)
		require.Len(t, log, tripSteps, "one entry per step: no saga driven twice")
		assert.Equal(t, "dead", log[1].Owner)
		assert.Equal(t, log[2].Owner, log[3].Owner, "one recoverer drove the rest")
		for _, step := range []string{stepName(2), stepName(3)} {
			assert.Equal(t, 1, invoked[id.String()+"/"+step], "saga %s: %s run once by the recoverers", id, step)
		}
		for k, v := range keys(id, stepName(0), stepName(1), stepName(2), stepName(3)) {
			want[k] = v
		}
	}
	assert.Equal(t, want, effects, "every effect applied once")
}
