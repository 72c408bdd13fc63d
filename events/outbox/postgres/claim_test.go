package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gocqrs/cqrs/events/outbox"
	"github.com/gocqrs/cqrs/events/outbox/outboxtest"
	"github.com/gocqrs/cqrs/events/outbox/postgres"
	"github.com/gocqrs/cqrs/events/wire"
)

// queryCounter counts the statements a pgx connection sends.
type queryCounter struct{ n atomic.Int64 }

func (c *queryCounter) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	c.n.Add(1)
	return ctx
}

func (c *queryCounter) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// Claim, and each mark, is one statement: one round trip.
func TestClaimIsOneStatement(t *testing.T) {
	t.Parallel()
	pools(t) // skips without a database
	counter := &queryCounter{}
	pool, err := newPoolWith(t, 2, func(cfg *pgx.ConnConfig) { cfg.Tracer = counter })
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	db, err := postgres.New(pool, postgres.Options{Logger: quiet})
	require.NoError(t, err)
	s := newStore(t, db, outboxtest.NewClock())
	ctx := t.Context()
	es := []wire.Envelope{outboxtest.NewEnvelope("a", "1"), outboxtest.NewEnvelope("a", "2"), outboxtest.NewEnvelope("", "3"), outboxtest.NewEnvelope("b", "4")}
	require.NoError(t, s.InTx(ctx, func(ctx context.Context) error { return s.Add(ctx, es...) }))

	statements := func(f func()) int64 {
		before := counter.n.Load()
		f()
		return counter.n.Load() - before
	}
	assert.Equal(t, int64(1), statements(func() {
		rows, err := s.Claim(ctx, "A", 2, outboxtest.Lease)
		require.NoError(t, err)
		require.Len(t, rows, 2)
	}))
	assert.Equal(t, int64(1), statements(func() { require.NoError(t, s.MarkSent(ctx, "A", es[0].ID)) }))
	assert.Equal(t, int64(1), statements(func() { require.NoError(t, s.Release(ctx, "A", es[1].ID)) }))
	assert.Equal(t, int64(1), statements(func() {
		rows, err := s.Claim(ctx, "B", 10, outboxtest.Lease)
		require.NoError(t, err)
		require.Len(t, rows, 3)
	}))
	assert.Equal(t, int64(1), statements(func() {
		require.NoError(t, s.MarkFailed(ctx, "B", outbox.Failure{ID: es[1].ID, Error: "x"}, outbox.Failure{ID: es[2].ID, Error: "y", Dead: true}))
	}))
	assert.Equal(t, int64(1), statements(func() {
		require.NoError(t, s.InTx(ctx, func(ctx context.Context) error {
			before := counter.n.Load()
			require.NoError(t, s.Add(ctx, outboxtest.NewEnvelope("c", "5"), outboxtest.NewEnvelope("c", "6")))
			assert.Equal(t, int64(1), counter.n.Load()-before, "Add of two envelopes is one statement")
			return nil
		}))
	})-2, "besides BEGIN and COMMIT")
}

// Claimers hammer one outbox, failing, releasing and sending rows at
// random: a key is never held by two owners at once, and the rows of each
// key are sent in seq order.
func TestClaimersKeepKeysApart(t *testing.T) {
	t.Parallel()
	for _, fl := range flavours {
		t.Run(fl.name, func(t *testing.T) {
			t.Parallel()
			s := newStore(t, fl.db(t), outboxtest.NewClock())
			ctx := t.Context()
			const (
				claimers = 6
				keys     = 5
				perKey   = 30
				unkeyed  = 30
			)
			var (
				all []wire.Envelope
				seq = make(map[uuid.UUID]int) // position among the rows of its key
			)
			for i := range perKey {
				var batch []wire.Envelope
				for k := range keys {
					e := outboxtest.NewEnvelope("key-"+strconv.Itoa(k), strconv.Itoa(i))
					seq[e.ID] = i
					batch = append(batch, e)
				}
				if i < unkeyed {
					batch = append(batch, outboxtest.NewEnvelope("", strconv.Itoa(i)))
				}
				require.NoError(t, s.InTx(ctx, func(ctx context.Context) error { return s.Add(ctx, batch...) }))
				all = append(all, batch...)
			}

			var (
				mu      sync.Mutex
				holder  = make(map[string]string) // key -> owner holding rows of it
				held    = make(map[string]int)    // key -> rows held
				sent    = make(map[string][]int)  // key -> positions, in the order marked sent
				nsent   int
				errs    []error
				wg      sync.WaitGroup
				actions atomic.Int64
			)
			report := func(err error) {
				mu.Lock()
				defer mu.Unlock()
				errs = append(errs, err)
			}
			finished := func() bool {
				mu.Lock()
				defer mu.Unlock()
				return nsent == len(all) || len(errs) > 0
			}
			// drop forgets that owner holds rows; called before the store
			// is told, so that a claim that sees them free finds them
			// forgotten.
			drop := func(rows []outbox.Row) {
				for _, r := range rows {
					if k := r.Envelope.Key; k != "" {
						if held[k]--; held[k] == 0 {
							delete(holder, k)
						}
					}
				}
			}
			for c := range claimers {
				owner := "claimer-" + strconv.Itoa(c)
				rng := rand.New(rand.NewPCG(uint64(c), 42))
				wg.Go(func() {
					for range 50 * len(all) {
						if finished() {
							return
						}
						rows, err := s.Claim(ctx, owner, 1+rng.IntN(8), outboxtest.Lease)
						if err != nil {
							report(err)
							return
						}
						if len(rows) == 0 {
							runtime.Gosched()
							continue
						}
						actions.Add(1)
						mu.Lock()
						for _, r := range rows {
							k := r.Envelope.Key
							if k == "" {
								continue
							}
							if h, ok := holder[k]; ok && h != owner {
								errs = append(errs, fmt.Errorf("%s claimed a row of %s, held by %s", owner, k, h))
							}
							holder[k] = owner
							held[k]++
						}
						mu.Unlock()

						var (
							ids  = make([]uuid.UUID, len(rows))
							err2 error
						)
						for i, r := range rows {
							ids[i] = r.Envelope.ID
						}
						switch rng.IntN(4) {
						case 0: // release everything
							mu.Lock()
							drop(rows)
							mu.Unlock()
							err2 = s.Release(ctx, owner, ids...)
						case 1: // the first row fails (due again at once); the later rows of its key are released
							first := rows[0]
							var released, ok []outbox.Row
							for _, r := range rows[1:] {
								switch {
								case r.Envelope.Key != "" && r.Envelope.Key == first.Envelope.Key:
									released = append(released, r)
								default:
									ok = append(ok, r)
								}
							}
							mu.Lock()
							for _, r := range ok {
								sent[r.Envelope.Key] = append(sent[r.Envelope.Key], seq[r.Envelope.ID])
								nsent++
							}
							drop(rows)
							mu.Unlock()
							err2 = errors.Join(
								s.MarkSent(ctx, owner, rowIDs(ok)...),
								s.MarkFailed(ctx, owner, outbox.Failure{ID: first.Envelope.ID, Error: "flaky"}),
								s.Release(ctx, owner, rowIDs(released)...),
							)
						default: // all sent
							mu.Lock()
							for _, r := range rows {
								sent[r.Envelope.Key] = append(sent[r.Envelope.Key], seq[r.Envelope.ID])
								nsent++
							}
							drop(rows)
							mu.Unlock()
							err2 = s.MarkSent(ctx, owner, ids...)
						}
						if err2 != nil {
							report(err2)
							return
						}
					}
				})
			}
			wg.Wait()
			require.NoError(t, errors.Join(errs...))
			require.Equal(t, len(all), nsent, "every row sent")
			for k := range keys {
				key := "key-" + strconv.Itoa(k)
				want := make([]int, perKey)
				for i := range want {
					want[i] = i
				}
				assert.Equal(t, want, sent[key], "%s sent in order", key)
			}
			st, err := s.Stats(ctx)
			require.NoError(t, err)
			assert.Equal(t, int64(len(all)), st.Sent)
			t.Logf("%d claims returned rows", actions.Load())
		})
	}
}

func rowIDs(rows []outbox.Row) []uuid.UUID {
	ids := make([]uuid.UUID, len(rows))
	for i, r := range rows {
		ids[i] = r.Envelope.ID
	}
	return ids
}
