package sqlite_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gocqrs/cqrs/events/outbox/sqlite"
	"github.com/gocqrs/cqrs/mediator/saga"
)

const (
	benchSagaSteps = 4
	counterUpdate  = `UPDATE counters SET n = n + 1 WHERE id = 1`
)

// BenchmarkSagaStep measures what a saga step costs with the SQLite store:
// a saga of four steps, each updating one row of an application table in
// the transaction of its checkpoint (the DB as the Transactor), against
// that single-row UPDATE committed on its own. "update" is the bare
// UPDATE (one autocommit statement per op), "saga" one saga per op
// (metric step-ns: the saga's time over its steps, its creation
// included), and "interleaved" one saga and four bare UPDATEs per op,
// timed apart so that both see the same load; its metric ratio is the
// cost of a step over that of the bare UPDATE.
func BenchmarkSagaStep(b *testing.B) {
	for _, sync := range []string{"FULL", "NORMAL"} {
		b.Run("sync="+sync, func(b *testing.B) {
			db, _ := openDB(b, sqlite.Options{Synchronous: sync})
			ctx := b.Context()
			_, err := db.SQL().ExecContext(ctx, `CREATE TABLE counters (id INTEGER PRIMARY KEY, n INTEGER NOT NULL) STRICT;
				INSERT INTO counters (id, n) VALUES (1, 0)`)
			require.NoError(b, err)
			store := newSagaStore(b, db, nil)
			def := &saga.Definition[struct{}]{Name: "bench"}
			for i := range benchSagaSteps {
				def.Steps = append(def.Steps, saga.Step[struct{}]{
					Name: stepName(i),
					Action: saga.Do(func(ctx context.Context, _ *struct{}) error {
						tx, _ := db.Tx(ctx)
						_, err := tx.ExecContext(ctx, counterUpdate)
						return err
					}),
				})
			}
			o, err := saga.New(saga.Options{Store: store, Transactor: db, Logger: discardLogger()}, def)
			require.NoError(b, err)
			run := func() {
				if _, err := saga.Execute(ctx, o, def, struct{}{}); err != nil {
					b.Fatal(err)
				}
			}
			update := func() {
				if _, err := db.SQL().ExecContext(ctx, counterUpdate); err != nil {
					b.Fatal(err)
				}
			}

			b.Run("update", func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					update()
				}
			})
			b.Run("saga", func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					run()
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchSagaSteps), "step-ns")
			})
			b.Run("interleaved", func(b *testing.B) {
				var updates, sagas time.Duration
				for b.Loop() {
					t0 := time.Now()
					for range benchSagaSteps {
						update()
					}
					t1 := time.Now()
					run()
					updates, sagas = updates+t1.Sub(t0), sagas+time.Since(t1)
				}
				n := float64(b.N * benchSagaSteps)
				b.ReportMetric(float64(updates.Nanoseconds())/n, "update-ns")
				b.ReportMetric(float64(sagas.Nanoseconds())/n, "step-ns")
				b.ReportMetric(float64(sagas)/float64(updates), "ratio")
			})
		})
	}
}
