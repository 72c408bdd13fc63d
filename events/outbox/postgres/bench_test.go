package postgres_test

import (
	"context"
	"encoding/json"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/gocqrs/cqrs/events/outbox"
	"github.com/gocqrs/cqrs/events/outbox/postgres"
	"github.com/gocqrs/cqrs/events/wire"
)

// benchEnvelope returns a typical envelope: a UUIDv7, one of 16 keys, a
// traceparent header and a small JSON payload.
func benchEnvelope(n int) wire.Envelope {
	id := uuid.Must(uuid.NewV7())
	return wire.Envelope{
		ID: id, Name: "order.placed", Topic: "orders", Key: "order-" + strconv.Itoa(n%16),
		Timestamp: time.Now().UTC(), CorrelationID: "corr-" + strconv.Itoa(n), ContentType: "application/json",
		Headers: map[string]string{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
		Payload: []byte(`{"order_id":"o-` + strconv.Itoa(n) + `","total":4200,"currency":"EUR","items":3}`),
	}
}

// BenchmarkCapture measures what the outbox adds to a command's
// transaction: one application row inserted, and one envelope added, in
// one transaction, with Add's NOTIFY (the default) and without it
// (StoreOptions.NoNotify). The baseline is the same transaction without
// the envelope.
func BenchmarkCapture(b *testing.B) {
	pool, _ := pools(b)
	for _, fl := range flavours {
		db := fl.db(b)
		schema := newSchema(b)
		table := schema + ".orders"
		if _, err := pool.Exec(b.Context(), "CREATE TABLE "+table+" (id text PRIMARY KEY, total bigint NOT NULL)"); err != nil {
			b.Fatal(err)
		}
		insert := "INSERT INTO " + table + " (id, total) VALUES ($1, $2)"
		save := func(ctx context.Context, id string) error {
			if tx, ok := postgres.PgxTx(ctx); ok {
				_, err := tx.Exec(ctx, insert, id, 4200)
				return err
			}
			tx, _ := postgres.SQLTx(ctx)
			_, err := tx.ExecContext(ctx, insert, id, 4200)
			return err
		}
		var n int
		b.Run(fl.name+"/baseline=insert-only", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				n++
				id := "o-" + strconv.Itoa(n)
				if err := db.InTx(b.Context(), func(ctx context.Context) error { return save(ctx, id) }); err != nil {
					b.Fatal(err)
				}
			}
		})
		for _, notify := range []bool{true, false} {
			s, err := postgres.NewStore(db, postgres.StoreOptions{Table: schema + ".outbox_" + strconv.FormatBool(notify), NoNotify: !notify})
			if err != nil {
				b.Fatal(err)
			}
			if err := s.EnsureSchema(b.Context()); err != nil {
				b.Fatal(err)
			}
			name := fl.name + "/insert+add"
			if !notify {
				name += "/no-notify"
			}
			b.Run(name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					n++
					id := "o-" + strconv.Itoa(n)
					env := benchEnvelope(n)
					err := db.InTx(b.Context(), func(ctx context.Context) error {
						if err := save(ctx, id); err != nil {
							return err
						}
						return s.Add(ctx, env)
					})
					if err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// preload commits events envelopes into s, in transactions of 500.
func preload(b *testing.B, s *postgres.Store, events int) {
	b.Helper()
	for i := 0; i < events; i += 500 {
		envs := make([]wire.Envelope, min(500, events-i))
		for j := range envs {
			envs[j] = benchEnvelope(i + j)
		}
		if err := s.InTx(b.Context(), func(ctx context.Context) error { return s.Add(ctx, envs...) }); err != nil {
			b.Fatal(err)
		}
	}
	// A table that lives has statistics (autovacuum analyzes it as rows
	// come and go); this one was just truncated and filled.
	pool, _ := pools(b)
	if _, err := pool.Exec(b.Context(), "ANALYZE "+s.Table()); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkRelayThroughput measures how fast a relay empties a preloaded
// outbox into a sender that acknowledges at once (events/s). The baseline
// is a hand-written loop of the same statements the relay runs (claim a
// batch, mark it sent) with pgx, without the relay.
func BenchmarkRelayThroughput(b *testing.B) {
	const events, batch = 10_000, 100
	pool, _ := pools(b)
	db := pgxDB(b)
	s := newStore(b, db, nil)
	truncate := func() {
		if _, err := pool.Exec(b.Context(), "TRUNCATE "+s.Table()); err != nil {
			b.Fatal(err)
		}
	}
	report := func(b *testing.B) {
		b.Helper()
		b.ReportMetric(float64(events*b.N)/b.Elapsed().Seconds(), "events/s")
	}

	b.Run("baseline=hand-loop", func(b *testing.B) {
		claim, mark := postgres.ClaimSQL(s), postgres.MarkSentSQL(s)
		ctx := b.Context()
		b.ReportAllocs()
		for b.Loop() {
			b.StopTimer()
			truncate()
			preload(b, s, events)
			b.StartTimer()
			sent := 0
			for {
				now := time.Now().UTC()
				rows, err := pool.Query(ctx, claim, now, batch, "hand", now.Add(30*time.Second))
				if err != nil {
					b.Fatal(err)
				}
				var ids []uuid.UUID
				for rows.Next() {
					var (
						r                             outbox.Row
						eventTime, leaseUntil, sentAt *time.Time
						leaseOwner                    *string
						headers                       []byte
						state, attempts               int64
					)
					e := &r.Envelope
					if err := rows.Scan(&r.Seq, &e.ID, &e.Name, &e.Topic, &e.Key, &eventTime, &e.CorrelationID, &e.CausationID,
						&e.ContentType, &headers, &e.Payload, &state, &attempts, &r.LastError, &r.AddedAt, &r.NextAttemptAt,
						&leaseOwner, &leaseUntil, &sentAt); err != nil {
						b.Fatal(err)
					}
					if err := json.Unmarshal(headers, &e.Headers); err != nil {
						b.Fatal(err)
					}
					ids = append(ids, e.ID)
				}
				if err := rows.Err(); err != nil {
					b.Fatal(err)
				}
				if len(ids) == 0 {
					break
				}
				if _, err := pool.Exec(ctx, mark, "hand", ids, time.Now().UTC()); err != nil {
					b.Fatal(err)
				}
				sent += len(ids)
			}
			if sent != events {
				b.Fatalf("sent %d of %d", sent, events)
			}
		}
		report(b)
	})

	b.Run("relay", func(b *testing.B) {
		var sent atomic.Int64
		done := make(chan struct{}, 1)
		sender := outbox.SenderFunc(func(_ context.Context, envs []wire.Envelope) error {
			if sent.Add(int64(len(envs))) == events {
				done <- struct{}{}
			}
			return nil
		})
		cfg := relayConfig("bench")
		cfg.BatchSize = batch
		relay, err := outbox.NewRelay(s, sender, cfg)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			b.StopTimer()
			truncate()
			preload(b, s, events)
			sent.Store(0)
			b.StartTimer()
			ctx, cancel := context.WithCancel(b.Context())
			var wg sync.WaitGroup
			wg.Go(func() { _ = relay.Run(ctx) })
			<-done
			cancel()
			wg.Wait()
		}
		report(b)
	})
}

// BenchmarkCommitToSend measures the time from a transaction's commit to
// the relay's Send of its event, with one event committed every
// millisecond (about 1,000 events/s) and a poll interval of one second:
// the relay is woken by LISTEN/NOTIFY. It reports the median and the 99th
// percentile. The baseline is the same commits with a NOTIFY and no
// outbox, timed until a LISTENing connection receives them: the floor of
// the mechanism.
func BenchmarkCommitToSend(b *testing.B) {
	pool, _ := pools(b)
	report := func(b *testing.B, lat []time.Duration) {
		b.Helper()
		if len(lat) == 0 {
			return
		}
		slices.Sort(lat)
		ms := func(q float64) float64 {
			return float64(lat[min(len(lat)-1, int(q*float64(len(lat))))]) / float64(time.Millisecond)
		}
		b.ReportMetric(ms(0.50), "p50-ms")
		b.ReportMetric(ms(0.99), "p99-ms")
	}

	b.Run("baseline=listen-notify", func(b *testing.B) {
		channel := "bench_" + strconv.FormatInt(time.Now().UnixNano(), 36)
		listener, err := pool.Acquire(b.Context())
		if err != nil {
			b.Fatal(err)
		}
		conn := listener.Hijack()
		defer func() { _ = conn.Close(context.Background()) }()
		if _, err := conn.Exec(b.Context(), "LISTEN "+channel); err != nil {
			b.Fatal(err)
		}
		var (
			mu    sync.Mutex
			start = make(map[string]time.Time)
			lat   []time.Duration
		)
		ctx, cancel := context.WithCancel(b.Context())
		var wg sync.WaitGroup
		received := make(chan struct{}, 1)
		wg.Go(func() {
			for {
				n, err := conn.WaitForNotification(ctx)
				if err != nil {
					return
				}
				mu.Lock()
				lat = append(lat, time.Since(start[n.Payload]))
				mu.Unlock()
				select {
				case received <- struct{}{}:
				default:
				}
			}
		})
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		i := 0
		for b.Loop() {
			<-tick.C
			i++
			payload := strconv.Itoa(i)
			tx, err := pool.Begin(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := tx.Exec(ctx, "SELECT pg_notify($1, $2)", channel, payload); err != nil {
				b.Fatal(err)
			}
			mu.Lock()
			start[payload] = time.Now()
			mu.Unlock()
			if err := tx.Commit(ctx); err != nil {
				b.Fatal(err)
			}
		}
		for {
			mu.Lock()
			n := len(lat)
			mu.Unlock()
			if n == i {
				break
			}
			<-received
		}
		cancel()
		wg.Wait()
		report(b, lat)
	})

	b.Run("relay", func(b *testing.B) {
		s := newStore(b, pgxDB(b), nil)
		var (
			mu    sync.Mutex
			start = make(map[uuid.UUID]time.Time)
			lat   []time.Duration
			got   = make(chan struct{}, 1)
		)
		sender := outbox.SenderFunc(func(_ context.Context, envs []wire.Envelope) error {
			now := time.Now()
			mu.Lock()
			for _, e := range envs {
				lat = append(lat, now.Sub(start[e.ID]))
			}
			mu.Unlock()
			select {
			case got <- struct{}{}:
			default:
			}
			return nil
		})
		cfg := relayConfig("latency")
		cfg.PollInterval = time.Second
		relay, err := outbox.NewRelay(s, sender, cfg)
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(b.Context())
		var wg sync.WaitGroup
		wg.Go(func() { _ = relay.Run(ctx) })
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		i := 0
		for b.Loop() {
			<-tick.C
			i++
			env := benchEnvelope(i)
			tx, err := pool.Begin(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if err := s.Add(postgres.WithPgxTx(ctx, tx), env); err != nil {
				b.Fatal(err)
			}
			mu.Lock()
			start[env.ID] = time.Now()
			mu.Unlock()
			if err := tx.Commit(ctx); err != nil {
				b.Fatal(err)
			}
		}
		for {
			mu.Lock()
			n := len(lat)
			mu.Unlock()
			if n >= i {
				break
			}
			<-got
		}
		cancel()
		wg.Wait()
		c := relay.Counters()
		b.ReportMetric(float64(c.WakePoll), "poll-wakes")
		report(b, lat)
	})
}

var _ pgx.Tx // the benchmarks drive pgx transactions directly
