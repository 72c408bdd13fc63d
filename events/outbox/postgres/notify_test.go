package postgres_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gocqrs/cqrs/events/outbox"
	"github.com/gocqrs/cqrs/events/outbox/outboxtest"
	"github.com/gocqrs/cqrs/events/outbox/postgres"
	"github.com/gocqrs/cqrs/events/wire"
)

// waitLimit bounds every wait of these tests: reaching it is a failure,
// not a way to synchronise.
const waitLimit = 30 * time.Second

func receive[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitLimit):
		t.Fatalf("timed out waiting for %s", what)
		var zero T
		return zero
	}
}

// emptyClaims wraps a store and reports, on a channel, the running count of
// claims that returned no row: the relay then goes idle until it is woken.
type emptyClaims struct {
	*postgres.Store
	n     atomic.Int64
	count chan int64
}

func (e *emptyClaims) Claim(ctx context.Context, owner string, limit int, lease time.Duration) ([]outbox.Row, error) {
	rows, err := e.Store.Claim(ctx, owner, limit, lease)
	if err == nil && len(rows) == 0 {
		select {
		case e.count <- e.n.Add(1):
		default:
		}
	}
	return rows, err
}

// A relay that polls once an hour delivers events within milliseconds of
// their commit: each event is committed while the relay is idle (its last
// claim found nothing), so only the notification can wake it.
func TestRelayWokenByNotification(t *testing.T) {
	t.Parallel()
	for _, fl := range flavours {
		t.Run(fl.name, func(t *testing.T) {
			t.Parallel()
			s := &emptyClaims{Store: newStore(t, fl.db(t), nil), count: make(chan int64, 1000)}
			delivered := make(chan int64, 10) // the empty claims before the delivery
			sender := outbox.InProcessSender(func(_ context.Context, env wire.Envelope) error {
				delivered <- s.n.Load()
				return nil
			})
			cfg := outbox.DefaultRelayConfig()
			cfg.PollInterval = time.Hour
			cfg.RetainSent = 0
			cfg.Logger = quiet
			relay, err := outbox.NewRelay(s, sender, cfg)
			require.NoError(t, err)
			ctx, cancel := context.WithCancel(t.Context())
			var wg sync.WaitGroup
			wg.Go(func() { assert.NoError(t, relay.Run(ctx)) })
			defer func() {
				cancel()
				wg.Wait()
			}()

			// idleAfter waits for an empty claim counted after n.
			idleAfter := func(n int64) {
				for receive(t, s.count, "an empty claim") <= n {
				}
			}
			idleAfter(0)
			const events = 3
			for i := range events {
				e := outboxtest.NewEnvelope("k", "x")
				committed := time.Now()
				require.NoError(t, s.InTx(t.Context(), func(ctx context.Context) error { return s.Add(ctx, e) }))
				before := receive(t, delivered, "the delivery")
				t.Logf("event %d delivered %v after the commit began", i, time.Since(committed))
				idleAfter(before)
			}
			c := relay.Counters()
			assert.Zero(t, c.WakePoll, "never woken by the poll")
			assert.GreaterOrEqual(t, c.WakeSignal, uint64(events), "woken by the notifications")
		})
	}
}

// Watch returns an error when its connection is lost, so that the relay
// polls and watches again.
func TestNotifierReportsLostConnection(t *testing.T) {
	t.Parallel()
	for _, fl := range flavours {
		t.Run(fl.name, func(t *testing.T) {
			t.Parallel()
			s := newStore(t, fl.db(t), nil)
			woken := make(chan struct{}, 1)
			done := make(chan error, 1)
			go func() {
				done <- s.Watch(t.Context(), func() {
					select {
					case woken <- struct{}{}:
					default:
					}
				})
			}()
			receive(t, woken, "the first wake")
			pool, _ := pools(t)
			var terminated int
			require.NoError(t, pool.QueryRow(t.Context(),
				`SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE query = $1`,
				`LISTEN "`+s.Channel()+`"`).Scan(&terminated))
			require.Equal(t, 1, terminated, "the notifier's connection")
			err := receive(t, done, "Watch to return")
			require.Error(t, err)
			t.Logf("Watch: %v", err)
		})
	}
}
