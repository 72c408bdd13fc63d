package sqlite_test

import (
	"context"
	"database/sql"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/gocqrs/cqrs/events/outbox"
	"github.com/gocqrs/cqrs/events/outbox/sqlite"
	"github.com/gocqrs/cqrs/events/wire"
)

// benchEnvelope is an event as an application would emit it: a UUIDv7, a
// key, a trace header and a small JSON payload.
func benchEnvelope(key string) wire.Envelope {
	id := uuid.Must(uuid.NewV7())
	return wire.Envelope{
		ID:            id,
		Name:          "order.placed",
		Topic:         "orders",
		Key:           key,
		Timestamp:     time.Now().UTC().Truncate(time.Microsecond),
		CorrelationID: "corr-" + key,
		ContentType:   "application/json",
		Headers:       map[string]string{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
		Payload:       []byte(`{"order_id":"` + key + `","item":"book","quantity":2,"price_cents":1999,"currency":"EUR"}`),
	}
}

const ordersDDL = `CREATE TABLE orders (id TEXT PRIMARY KEY, item TEXT NOT NULL, quantity INTEGER NOT NULL) STRICT`

// BenchmarkCapture measures the cost of capturing an event: a transaction
// that inserts one application row and adds one envelope ("outbox"),
// against the same insert alone in a transaction, through InTx ("insert")
// and through database/sql directly ("insert-raw"); "interleaved" runs the
// insert and outbox transactions alternately and reports their ratio.
func BenchmarkCapture(b *testing.B) {
	for _, sync := range []string{"FULL", "NORMAL"} {
		b.Run("sync="+sync, func(b *testing.B) {
			db, _ := openDB(b, sqlite.Options{Synchronous: sync})
			ctx := b.Context()
			_, err := db.SQL().ExecContext(ctx, ordersDDL)
			require.NoError(b, err)
			store := newStore(b, db, nil)
			insert := func(ctx context.Context) error {
				tx, _ := db.Tx(ctx)
				_, err := tx.ExecContext(ctx, `INSERT INTO orders (id, item, quantity) VALUES (?, ?, ?)`, uuid.NewString(), "book", 2)
				return err
			}
			b.Run("insert-raw", func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					tx, err := db.SQL().BeginTx(ctx, nil)
					if err != nil {
						b.Fatal(err)
					}
					if _, err := tx.ExecContext(ctx, `INSERT INTO orders (id, item, quantity) VALUES (?, ?, ?)`, uuid.NewString(), "book", 2); err != nil {
						b.Fatal(err)
					}
					if err := tx.Commit(); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run("insert", func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if err := db.InTx(ctx, insert); err != nil {
						b.Fatal(err)
					}
				}
			})
			capture := func(env wire.Envelope) error {
				return db.InTx(ctx, func(ctx context.Context) error {
					if err := insert(ctx); err != nil {
						return err
					}
					return store.Add(ctx, env)
				})
			}
			b.Run("outbox", func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if err := capture(benchEnvelope("o-1")); err != nil {
						b.Fatal(err)
					}
				}
			})
			// One op is one "insert" transaction and one "outbox"
			// transaction, timed apart: both see the same load, so their
			// ratio holds on a busy machine.
			b.Run("interleaved", func(b *testing.B) {
				var base, withOutbox time.Duration
				for b.Loop() {
					env := benchEnvelope("o-1")
					t0 := time.Now()
					if err := db.InTx(ctx, insert); err != nil {
						b.Fatal(err)
					}
					t1 := time.Now()
					if err := capture(env); err != nil {
						b.Fatal(err)
					}
					base, withOutbox = base+t1.Sub(t0), withOutbox+time.Since(t1)
				}
				b.ReportMetric(float64(base.Nanoseconds())/float64(b.N), "insert-ns/op")
				b.ReportMetric(float64(withOutbox.Nanoseconds())/float64(b.N), "outbox-ns/op")
				b.ReportMetric(float64(withOutbox)/float64(base), "ratio")
			})
		})
	}
}

// relayBatch is the number of events preloaded before each iteration of
// BenchmarkRelay, and relayBatchSize the rows claimed at once.
const (
	relayBatch     = 1000
	relayBatchSize = 100
)

// preload commits relayBatch envelopes over 50 keys, with the timer
// stopped.
func preload(b *testing.B, db *sqlite.DB, store *sqlite.Store) {
	b.Helper()
	b.StopTimer()
	defer b.StartTimer()
	envs := make([]wire.Envelope, relayBatch)
	for i := range envs {
		envs[i] = benchEnvelope("o-" + string(rune('A'+i%50)))
	}
	require.NoError(b, db.InTx(b.Context(), func(ctx context.Context) error { return store.Add(ctx, envs...) }))
}

// BenchmarkRelay measures relay throughput from a preloaded outbox to an
// in-memory sender that acknowledges everything: the outbox.Relay over the
// Store ("relay"), against a hand-written loop running the store's own
// claim and mark statements ("sql-loop"). One op is relayBatch events.
func BenchmarkRelay(b *testing.B) {
	for _, sync := range []string{"FULL", "NORMAL"} {
		b.Run("sync="+sync, func(b *testing.B) {
			b.Run("relay", func(b *testing.B) { benchRelay(b, sync) })
			b.Run("sql-loop", func(b *testing.B) { benchSQLLoop(b, sync) })
		})
	}
}

func benchRelay(b *testing.B, sync string) {
	b.Helper()
	db, _ := openDB(b, sqlite.Options{Synchronous: sync})
	store := newStore(b, db, nil)
	var delivered atomic.Int64
	done := make(chan struct{}, 1)
	sender := outbox.InProcessSender(func(context.Context, wire.Envelope) error {
		if delivered.Add(1)%relayBatch == 0 {
			done <- struct{}{}
		}
		return nil
	})
	cfg := outbox.DefaultRelayConfig()
	cfg.BatchSize = relayBatchSize
	cfg.RetainSent = 0
	cfg.Logger = slog.New(slog.DiscardHandler)
	relay, err := outbox.NewRelay(store, sender, cfg)
	require.NoError(b, err)
	ctx, cancel := context.WithCancel(b.Context())
	stopped := make(chan error, 1)
	go func() { stopped <- relay.Run(ctx) }()
	defer func() {
		cancel()
		require.NoError(b, <-stopped)
	}()

	b.ReportAllocs()
	for b.Loop() {
		preload(b, db, store)
		<-done
	}
	b.ReportMetric(float64(b.N*relayBatch)/b.Elapsed().Seconds(), "events/s")
}

func benchSQLLoop(b *testing.B, sync string) {
	b.Helper()
	db, _ := openDB(b, sqlite.Options{Synchronous: sync})
	store := newStore(b, db, nil)
	claimSQL, markSQL := store.ClaimAndMarkSQL()
	ctx := b.Context()
	var sent []string
	send := func(envs []string) { sent = append(sent[:0], envs...) }
	inTx := func(fn func(tx *sql.Tx) error) {
		tx, err := db.SQL().BeginTx(ctx, nil)
		require.NoError(b, err)
		if err := fn(tx); err != nil {
			_ = tx.Rollback()
			b.Fatal(err)
		}
		require.NoError(b, tx.Commit())
	}

	b.ReportAllocs()
	for b.Loop() {
		preload(b, db, store)
		for {
			var ids []string
			inTx(func(tx *sql.Tx) error {
				now := time.Now().UTC()
				rows, err := tx.QueryContext(ctx, claimSQL, "loop", now.Add(30*time.Second).UnixMicro(), now.UnixMicro(), relayBatchSize)
				if err != nil {
					return err
				}
				for rows.Next() {
					var (
						seq, state, attempts, addedAt, nextAt             int64
						id, name, topic, key, corr, cause, ctype, lastErr string
						eventTime, headers, owner                         sql.NullString
						payload                                           []byte
						until, sentAt                                     sql.NullInt64
					)
					if err := rows.Scan(&seq, &id, &name, &topic, &key, &eventTime, &corr, &cause, &ctype, &headers,
						&payload, &state, &attempts, &lastErr, &addedAt, &nextAt, &owner, &until, &sentAt); err != nil {
						return errors.Join(err, rows.Close())
					}
					ids = append(ids, id)
				}
				return errors.Join(rows.Err(), rows.Close())
			})
			if len(ids) == 0 {
				break
			}
			send(ids)
			inTx(func(tx *sql.Tx) error {
				_, err := tx.ExecContext(ctx, markSQL, time.Now().UnixMicro(), `["`+strings.Join(ids, `","`)+`"]`, "loop")
				return err
			})
		}
	}
	b.ReportMetric(float64(b.N*relayBatch)/b.Elapsed().Seconds(), "events/s")
}
