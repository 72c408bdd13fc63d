package postgres_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gocqrs/cqrs/events/outbox"
	"github.com/gocqrs/cqrs/events/outbox/postgres"
	"github.com/gocqrs/cqrs/mediator/saga"
)

// Environment of the helper process of TestKilledSagaDriver.
const (
	sagaHelperEnv       = "CQRS_POSTGRES_SAGA_HELPER"       // the schema of the tables
	sagaHelperCountEnv  = "CQRS_POSTGRES_SAGA_HELPER_COUNT" // how many sagas to start
	crashSagaName       = "crash-order"
	crashLease          = time.Minute // the killed driver's lease
	crashHelperDeadline = time.Minute // for the helper to block
)

// errDeclined is step d's failure in the variant that compensates.
var errDeclined = errors.New("declined")

// crashState is the state of the crash test's sagas: what their steps did.
type crashState struct {
	Done []string `json:"done"`
}

// effects applies the effects of steps in a table whose primary key is the
// idempotency key, in the step's transaction (the orchestrator's
// Transactor is the DB): an effect commits with its step's checkpoint or
// not at all, and a second application of a key would fail its step with
// a unique violation. It also counts the invocations of each key in this
// process.
type effects struct {
	table string

	mu      sync.Mutex
	calls   map[string]int
	resumed map[string]bool // the key's invocation had Invocation.Resumed set
}

func newEffects(schema string) *effects {
	return &effects{table: schema + ".effects", calls: make(map[string]int), resumed: make(map[string]bool)}
}

func (fx *effects) create(t *testing.T) {
	t.Helper()
	pool, _ := pools(t)
	_, err := pool.Exec(t.Context(), "CREATE TABLE "+fx.table+" (key text PRIMARY KEY)")
	require.NoError(t, err)
}

// apply inserts the key of the invocation ctx carries, with the
// transaction ctx carries.
func (fx *effects) apply(ctx context.Context) error {
	key := saga.KeyFrom(ctx)
	inv, _ := saga.InvocationFrom(ctx)
	fx.mu.Lock()
	fx.calls[key]++
	fx.resumed[key] = fx.resumed[key] || inv.Resumed
	fx.mu.Unlock()
	q := "INSERT INTO " + fx.table + " (key) VALUES ($1)"
	lock := postgres.TxLock(ctx)
	lock.Lock()
	defer lock.Unlock()
	if tx, ok := postgres.PgxTx(ctx); ok {
		_, err := tx.Exec(ctx, q, key)
		return err
	}
	if tx, ok := postgres.SQLTx(ctx); ok {
		_, err := tx.ExecContext(ctx, q, key)
		return err
	}
	return outbox.ErrNoTx
}

func (fx *effects) callsOf(key string) int {
	fx.mu.Lock()
	defer fx.mu.Unlock()
	return fx.calls[key]
}

func (fx *effects) resumedOf(key string) bool {
	fx.mu.Lock()
	defer fx.mu.Unlock()
	return fx.resumed[key]
}

// applied returns every key in the effects table, with how many rows it
// has.
func (fx *effects) applied(t *testing.T) map[string]int {
	t.Helper()
	pool, _ := pools(t)
	rows, err := pool.Query(t.Context(), "SELECT key, count(*) FROM "+fx.table+" GROUP BY key")
	require.NoError(t, err)
	defer rows.Close()
	out := make(map[string]int)
	for rows.Next() {
		var (
			key string
			n   int
		)
		require.NoError(t, rows.Scan(&key, &n))
		out[key] = n
	}
	require.NoError(t, rows.Err())
	return out
}

// crashDefinition returns the saga of the crash test: steps a, b, c and d,
// each applying its effect, a to c with a compensation that applies its
// own. blockC, when set, runs at the end of step c's action (after its
// effect, before its checkpoint); failD makes step d fail after applying
// its effect, which its rollback undoes.
func crashDefinition(fx *effects, blockC func(ctx context.Context), failD bool) *saga.Definition[crashState] {
	step := func(name string) saga.Step[crashState] {
		s := saga.Step[crashState]{
			Name: name,
			Action: saga.Do(func(ctx context.Context, s *crashState) error {
				if err := fx.apply(ctx); err != nil {
					return err
				}
				s.Done = append(s.Done, name)
				switch {
				case name == "c" && blockC != nil:
					blockC(ctx)
				case name == "d" && failD:
					return errDeclined
				}
				return nil
			}),
		}
		if name != "d" {
			s.Compensation = saga.Do(func(ctx context.Context, s *crashState) error {
				if err := fx.apply(ctx); err != nil {
					return err
				}
				s.Done = append(s.Done, "undo "+name)
				return nil
			})
		}
		return s
	}
	return &saga.Definition[crashState]{Name: crashSagaName, Steps: []saga.Step[crashState]{step("a"), step("b"), step("c"), step("d")}}
}

// crashStore returns the saga store of the tables in schema, on db.
func crashStore(t *testing.T, db *postgres.DB, schema string, clock saga.Clock) *postgres.SagaStore {
	t.Helper()
	s, err := postgres.NewSagaStore(db, postgres.SagaStoreOptions{Table: schema + ".sagas", LogTable: schema + ".saga_log", Clock: clock})
	require.NoError(t, err)
	return s
}

func crashOrchestrator(t *testing.T, s *postgres.SagaStore, db *postgres.DB, owner string, clock saga.Clock, def *saga.Definition[crashState]) *saga.Orchestrator {
	t.Helper()
	o, err := saga.New(saga.Options{
		Store: s, Transactor: db, Owner: owner, Lease: crashLease, Clock: clock,
		Logger: slog.New(slog.DiscardHandler),
	}, def)
	require.NoError(t, err)
	return o
}

// later is a clock past the killed driver's lease: the leases it granted
// have expired for the orchestrators that read it.
func later() saga.Clock {
	return saga.ClockFunc(func() time.Time { return time.Now().UTC().Add(2 * crashLease) })
}

// killDriver runs n sagas of crashDefinition in a process of its own (the
// test binary, running TestHelperSagaToKill) with the tables of schema,
// waits until every saga has committed step b's checkpoint and blocks in
// step c (its effect applied, not committed), checks that, and kills the
// process with SIGKILL. It returns the sagas' IDs.
func killDriver(t *testing.T, schema string, fx *effects, n int) []uuid.UUID {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperSagaToKill$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperEnv+"=1", sagaHelperEnv+"="+schema, sagaHelperCountEnv+"="+strconv.Itoa(n),
		urlEnv+"="+databaseURL())
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Kill() // already killed unless the test failed early
		_ = cmd.Wait()
	})
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	var ids []uuid.UUID
	deadline := time.After(crashHelperDeadline)
	for len(ids) < n {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatal("the helper process ended before it blocked")
			}
			if id, found := strings.CutPrefix(line, "BLOCKED "); found {
				ids = append(ids, uuid.MustParse(id))
			}
		case <-deadline:
			t.Fatalf("the helper process did not block %d sagas within %v", n, crashHelperDeadline)
		}
	}

	// Each saga is at step c, its checkpoint after b committed, leased by
	// the doomed driver; c's effect is not committed.
	s := crashStore(t, pgxDB(t), schema, nil)
	applied := fx.applied(t)
	for _, id := range ids {
		rec, err := s.Load(t.Context(), id)
		require.NoError(t, err)
		assert.Equal(t, saga.Running, rec.Status)
		assert.Equal(t, 2, rec.Step)
		assert.Equal(t, "doomed", rec.LeaseOwner)
		for _, step := range []string{"a", "b"} {
			assert.Equal(t, 1, applied[id.String()+"/"+step], "step %s committed", step)
		}
		assert.Zero(t, applied[id.String()+"/c"], "step c's effect is not committed")
	}
	require.NoError(t, cmd.Process.Kill()) // SIGKILL
	require.Error(t, cmd.Wait(), "killed")
	for range lines { // drain
	}
	return ids
}

// A saga of four steps runs in a process of its own, which is killed
// (SIGKILL) while step c runs, after step b's checkpoint committed. Each
// step applies its effect in its checkpoint's transaction, keyed by its
// idempotency key in a table where a key can be applied once. Another
// orchestrator, with another owner, recovers the saga once its lease has
// expired (not before) and finishes it, or compensates it when step d
// fails: every effect is applied exactly once. Two orchestrators
// recovering at once drive each saga once.
func TestKilledSagaDriver(t *testing.T) {
	t.Parallel()
	t.Run("completes", func(t *testing.T) {
		t.Parallel()
		schema := newSchema(t)
		db := pgxDB(t)
		require.NoError(t, crashStore(t, db, schema, nil).EnsureSchema(t.Context()))
		fx := newEffects(schema)
		fx.create(t)
		id := killDriver(t, schema, fx, 1)[0]

		def := crashDefinition(fx, nil, false)
		now := crashOrchestrator(t, crashStore(t, db, schema, nil), db, "survivor", nil, def)
		n, err := now.Recover(t.Context())
		require.NoError(t, err)
		require.Zero(t, n, "a live lease is never taken over")

		o := crashOrchestrator(t, crashStore(t, db, schema, later()), db, "survivor", later(), def)
		n, err = o.Recover(t.Context())
		require.NoError(t, err)
		require.Equal(t, 1, n)

		snap, err := saga.Load(t.Context(), o, def, id)
		require.NoError(t, err)
		assert.Equal(t, saga.Completed, snap.Record.Status)
		assert.Equal(t, []string{"a", "b", "c", "d"}, snap.State.Done)
		assert.Empty(t, snap.Record.LeaseOwner)
		want := map[string]int{}
		for _, step := range []string{"a", "b", "c", "d"} {
			want[id.String()+"/"+step] = 1
		}
		assert.Equal(t, want, fx.applied(t), "every step's effect applied once")
		assert.Zero(t, fx.callsOf(id.String()+"/a"), "a checkpointed step never runs again")
		assert.Zero(t, fx.callsOf(id.String()+"/b"))
		assert.Equal(t, 1, fx.callsOf(id.String()+"/c"), "the step running at the crash runs again, once")
		assert.True(t, fx.resumedOf(id.String()+"/c"), "as a resumed invocation")
		assert.Equal(t, 1, fx.callsOf(id.String()+"/d"))

		log, err := o.History(t.Context(), id)
		require.NoError(t, err)
		var got []string
		for _, e := range log {
			got = append(got, fmt.Sprintf("%s %v %v %s", e.Step, e.Phase, e.Outcome, e.Owner))
		}
		assert.Equal(t, []string{
			"a forward succeeded doomed", "b forward succeeded doomed",
			"c forward succeeded survivor", "d forward succeeded survivor",
		}, got)
	})

	t.Run("compensates", func(t *testing.T) {
		t.Parallel()
		schema := newSchema(t)
		db := sqlDB(t)
		require.NoError(t, crashStore(t, db, schema, nil).EnsureSchema(t.Context()))
		fx := newEffects(schema)
		fx.create(t)
		id := killDriver(t, schema, fx, 1)[0]

		def := crashDefinition(fx, nil, true)
		o := crashOrchestrator(t, crashStore(t, db, schema, later()), db, "survivor", later(), def)
		n, err := o.Recover(t.Context())
		require.NoError(t, err)
		require.Equal(t, 1, n)

		snap, err := saga.Load(t.Context(), o, def, id)
		require.NoError(t, err)
		assert.Equal(t, saga.Compensated, snap.Record.Status)
		assert.Equal(t, []string{"a", "b", "c", "undo c", "undo b", "undo a"}, snap.State.Done)
		want := map[string]int{}
		for _, key := range []string{"a", "b", "c", "c/compensate", "b/compensate", "a/compensate"} {
			want[id.String()+"/"+key] = 1
		}
		assert.Equal(t, want, fx.applied(t), "every effect applied once; the failed step's rolled back")
		assert.Equal(t, 1, fx.callsOf(id.String()+"/d"), "d ran once and failed")

		log, err := o.History(t.Context(), id)
		require.NoError(t, err)
		require.Len(t, log, 7)
		assert.Equal(t, saga.StepFailed, log[3].Outcome)
		assert.Equal(t, []string{errDeclined.Error()}, log[3].Errors)
		for i, step := range []string{"c", "b", "a"} {
			assert.Equal(t, step, log[4+i].Step)
			assert.Equal(t, saga.Compensation, log[4+i].Phase)
			assert.Equal(t, saga.Succeeded, log[4+i].Outcome)
		}
	})

	t.Run("two-recoverers", func(t *testing.T) {
		t.Parallel()
		const sagas = 6
		schema := newSchema(t)
		require.NoError(t, crashStore(t, pgxDB(t), schema, nil).EnsureSchema(t.Context()))
		fx := newEffects(schema)
		fx.create(t)
		ids := killDriver(t, schema, fx, sagas)

		// Two processes' worth of orchestrators, each with a pool of its
		// own (pgx and database/sql), recover at once.
		def := crashDefinition(fx, nil, false)
		var (
			wg    sync.WaitGroup
			start = make(chan struct{})
			count [2]int
			errs  [2]error
		)
		for i := range 2 {
			db := ownDB(t, i)
			o := crashOrchestrator(t, crashStore(t, db, schema, later()), db, "recoverer-"+strconv.Itoa(i), later(), def)
			wg.Go(func() {
				<-start
				count[i], errs[i] = o.Recover(t.Context())
			})
		}
		close(start)
		wg.Wait()
		require.NoError(t, errors.Join(errs[:]...))
		assert.Equal(t, sagas, count[0]+count[1], "each saga claimed once (recoverer-0: %d, recoverer-1: %d)", count[0], count[1])

		s := crashStore(t, pgxDB(t), schema, nil)
		applied := fx.applied(t)
		assert.Len(t, applied, 4*sagas)
		for _, id := range ids {
			rec, err := s.Load(t.Context(), id)
			require.NoError(t, err)
			assert.Equal(t, saga.Completed, rec.Status)
			for _, step := range []string{"a", "b", "c", "d"} {
				assert.Equal(t, 1, applied[id.String()+"/"+step], "saga %s step %s applied once", id, step)
			}
			for _, step := range []string{"c", "d"} {
				assert.Equal(t, 1, fx.callsOf(id.String()+"/"+step), "saga %s step %s run once", id, step)
			}
			log, err := s.Log(t.Context(), id)
			require.NoError(t, err)
			require.Len(t, log, 4)
			assert.Equal(t, log[2].Owner, log[3].Owner, "one recoverer drove saga %s", id)
			assert.True(t, slices.Contains([]string{"recoverer-0", "recoverer-1"}, log[2].Owner))
		}
	})
}

// TestHelperSagaToKill is the driver process TestKilledSagaDriver kills.
// It starts the sagas, each of which prints BLOCKED and its ID in step c,
// after applying c's effect in its open transaction, and hangs there
// until the process is killed.
func TestHelperSagaToKill(t *testing.T) {
	schema := os.Getenv(sagaHelperEnv)
	if schema == "" {
		t.Skip("the helper process of TestKilledSagaDriver")
	}
	n, err := strconv.Atoi(os.Getenv(sagaHelperCountEnv))
	require.NoError(t, err)
	pool, err := newPoolWith(t, int32(n)+4, nil)
	require.NoError(t, err)
	db, err := postgres.New(pool, postgres.Options{Logger: quiet})
	require.NoError(t, err)
	fx := newEffects(schema)
	def := crashDefinition(fx, func(ctx context.Context) {
		inv, _ := saga.InvocationFrom(ctx)
		fmt.Println("BLOCKED", inv.SagaID)
		time.Sleep(time.Hour) // a hung step: the process is killed meanwhile
	}, false)
	o := crashOrchestrator(t, crashStore(t, db, schema, nil), db, "doomed", nil, def)
	for range n {
		go func() { _, _ = saga.Execute(context.Background(), o, def, crashState{}) }()
	}
	time.Sleep(time.Hour)
}
