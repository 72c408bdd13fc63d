package postgres_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/gocqrs/cqrs/events/outbox"
	"github.com/gocqrs/cqrs/events/outbox/postgres"
	"github.com/gocqrs/cqrs/mediator/saga"
	"github.com/gocqrs/cqrs/mediator/saga/sagatest"
)

// benchSagaSteps is the number of steps of the benchmarked saga.
const benchSagaSteps = 4

// BenchmarkSagaStep measures what a saga step costs with its checkpoints in
// PostgreSQL, against one bare single-row UPDATE committed on its own, in
// the same run: each iteration runs a saga of four no-op steps to
// completion (a create and four checkpoints, each one statement committed
// on its own) and four such UPDATEs, timed apart, so that both see the
// same load. It reports the saga's time per step (saga-ns/step, the create
// included), the UPDATE's (update-ns/op) and their ratio (x-update); ns/op
// and the allocations are those of the whole iteration. The -tx variants
// run each step and its checkpoint in a transaction (the DB is the
// orchestrator's Transactor), against an UPDATE in a transaction of
// DB.InTx.
func BenchmarkSagaStep(b *testing.B) {
	for _, fl := range flavours {
		db := fl.db(b)
		s := newSagaStore(b, db, nil)
		exec := benchUpdate(b, fl, s)

		noop := saga.Do(func(context.Context, *benchState) error { return nil })
		def := &saga.Definition[benchState]{Name: "bench", Steps: make([]saga.Step[benchState], benchSagaSteps)}
		for i := range def.Steps {
			def.Steps[i] = saga.Step[benchState]{Name: string(rune('a' + i)), Action: noop, Compensation: noop}
		}
		for _, tx := range []outbox.Transactor{nil, db} {
			name := fl.name + "/saga-4-steps"
			if tx != nil {
				name += "-tx"
			}
			o, err := saga.New(saga.Options{Store: s, Transactor: tx, Logger: slog.New(slog.DiscardHandler)}, def)
			if err != nil {
				b.Fatal(err)
			}
			b.Run(name, func(b *testing.B) {
				ctx := b.Context()
				var inSaga, inUpdate time.Duration
				b.ReportAllocs()
				for b.Loop() {
					t0 := time.Now()
					for range benchSagaSteps {
						var err error
						if tx == nil {
							err = exec(ctx)
						} else {
							err = tx.InTx(ctx, exec)
						}
						if err != nil {
							b.Fatal(err)
						}
					}
					t1 := time.Now()
					if _, err := saga.Execute(ctx, o, def, benchState{N: 1}); err != nil {
						b.Fatal(err)
					}
					inUpdate += t1.Sub(t0)
					inSaga += time.Since(t1)
				}
				steps := float64(b.N * benchSagaSteps)
				b.ReportMetric(float64(inSaga.Nanoseconds())/steps, "saga-ns/step")
				b.ReportMetric(float64(inUpdate.Nanoseconds())/steps, "update-ns/op")
				b.ReportMetric(float64(inSaga)/float64(inUpdate), "x-update")
			})
		}
	}
}

// BenchmarkSagaWrite measures the store's writes alone, each against one
// bare single-row UPDATE committed on its own, in the same run as
// BenchmarkSagaStep does: a checkpoint (Save with one log entry, as the
// orchestrator writes after each step) and a Create. It reports each
// write's cost as a multiple of the UPDATE's (x-update).
func BenchmarkSagaWrite(b *testing.B) {
	for _, fl := range flavours {
		s := newSagaStore(b, fl.db(b), nil)
		exec := benchUpdate(b, fl, s)
		owner := "saga-" + uuid.NewString()
		for _, write := range []string{"checkpoint", "create"} {
			b.Run(fl.name+"/"+write, func(b *testing.B) {
				ctx := b.Context()
				rec := sagatest.NewRecord("bench")
				rec.LeaseOwner = owner
				if err := s.Create(ctx, rec, time.Minute); err != nil {
					b.Fatal(err)
				}
				now := time.Now()
				cp := saga.Checkpoint{ID: rec.ID, Version: 1, Status: saga.Running, State: []byte(`{"n":1}`), Owner: owner, Lease: time.Minute,
					Log: []saga.Entry{{Step: "a", Phase: saga.Forward, Outcome: saga.Succeeded, Attempts: 1, Owner: owner, StartedAt: now, FinishedAt: now}}}
				var inWrite, inUpdate time.Duration
				b.ReportAllocs()
				for b.Loop() {
					t0 := time.Now()
					if err := exec(ctx); err != nil {
						b.Fatal(err)
					}
					t1 := time.Now()
					var err error
					if write == "checkpoint" {
						cp.Step++
						err = s.Save(ctx, cp)
						cp.Version++
					} else {
						r := sagatest.NewRecord("bench")
						r.LeaseOwner = owner
						err = s.Create(ctx, r, time.Minute)
					}
					if err != nil {
						b.Fatal(err)
					}
					inUpdate += t1.Sub(t0)
					inWrite += time.Since(t1)
				}
				b.ReportMetric(float64(inWrite)/float64(inUpdate), "x-update")
			})
		}
	}
}

// benchUpdate creates a table of one row next to the tables of s, and
// returns the baseline of the saga benchmarks: a function that increments
// the row with one UPDATE, in the transaction ctx carries or else
// committed on its own, with fl's driver.
func benchUpdate(b *testing.B, fl flavour, s *postgres.SagaStore) func(ctx context.Context) error {
	b.Helper()
	counter := strings.TrimSuffix(s.Table(), ".sagas") + ".counter"
	pool, sdb := pools(b)
	if _, err := pool.Exec(b.Context(), "CREATE TABLE "+counter+" (id integer PRIMARY KEY, n bigint NOT NULL)"); err != nil {
		b.Fatal(err)
	}
	if _, err := pool.Exec(b.Context(), "INSERT INTO "+counter+" VALUES (1, 0)"); err != nil {
		b.Fatal(err)
	}
	update := "UPDATE " + counter + " SET n = n + 1 WHERE id = 1"
	return func(ctx context.Context) error {
		if tx, ok := postgres.PgxTx(ctx); ok {
			_, err := tx.Exec(ctx, update)
			return err
		}
		if tx, ok := postgres.SQLTx(ctx); ok {
			_, err := tx.ExecContext(ctx, update)
			return err
		}
		if fl.name == "pgx" {
			_, err := pool.Exec(ctx, update)
			return err
		}
		_, err := sdb.ExecContext(ctx, update)
		return err
	}
}

// benchState is the state of the benchmarked saga.
type benchState struct {
	N int `json:"n"`
}
