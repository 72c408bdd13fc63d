package postgres_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gocqrs/cqrs/events/outbox"
	"github.com/gocqrs/cqrs/events/outbox/outboxtest"
	"github.com/gocqrs/cqrs/events/outbox/postgres"
	"github.com/gocqrs/cqrs/events/wire"
)

// Environment of the helper process of TestKilledRelay.
const (
	helperEnv      = "CQRS_POSTGRES_HELPER"
	helperTableEnv = "CQRS_POSTGRES_HELPER_TABLE"
)

// deliveries records what senders delivered: how often each event, and
// the order of first deliveries of each key.
type deliveries struct {
	mu     sync.Mutex
	count  map[uuid.UUID]int
	by     map[uuid.UUID][]string // which senders delivered it
	at     map[uuid.UUID]time.Time
	order  map[string][]uuid.UUID // first deliveries per key
	want   int
	all    chan struct{}
	closed bool
}

func newDeliveries(want int) *deliveries {
	return &deliveries{
		count: make(map[uuid.UUID]int), by: make(map[uuid.UUID][]string), at: make(map[uuid.UUID]time.Time),
		order: make(map[string][]uuid.UUID), want: want, all: make(chan struct{}),
	}
}

func (d *deliveries) record(who string, env wire.Envelope) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.count[env.ID]++
	d.by[env.ID] = append(d.by[env.ID], who)
	if d.count[env.ID] == 1 {
		d.at[env.ID] = time.Now()
		d.order[env.Key] = append(d.order[env.Key], env.ID)
	}
	if len(d.count) == d.want && !d.closed {
		d.closed = true
		close(d.all)
	}
}

// sender returns a sender that records its deliveries as who.
func (d *deliveries) sender(who string) outbox.Sender {
	return outbox.InProcessSender(func(_ context.Context, env wire.Envelope) error {
		d.record(who, env)
		return nil
	})
}

// checkOrder checks that the first deliveries of each key follow the
// order in which the key's events were added.
func (d *deliveries) checkOrder(t *testing.T, added map[string][]uuid.UUID) {
	t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	for key, ids := range added {
		if key == "" {
			assert.ElementsMatch(t, ids, d.order[key])
			continue
		}
		assert.Equal(t, ids, d.order[key], "key %s first delivered out of order", key)
	}
}

func relayConfig(owner string) outbox.RelayConfig {
	cfg := outbox.DefaultRelayConfig()
	cfg.Owner = owner
	cfg.RetainSent = 0
	cfg.PollInterval = 100 * time.Millisecond // a fallback: the notifier wakes the relays
	cfg.Logger = quiet
	return cfg
}

// run starts relays and returns a function that stops them and waits.
func run(t *testing.T, relays ...*outbox.Relay) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	for _, r := range relays {
		wg.Go(func() { assert.NoError(t, r.Run(ctx)) })
	}
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); wg.Wait() }) }
	t.Cleanup(stop)
	return stop
}

// ownDB returns a DB of its own pool, as another process would have:
// pgx for even i, database/sql for odd i.
func ownDB(t *testing.T, i int) *postgres.DB {
	t.Helper()
	pool, err := newPoolWith(t, 4, nil)
	if err != nil {
		unavailable(t, err)
	}
	t.Cleanup(pool.Close)
	if i%2 == 0 {
		db, err := postgres.New(pool, postgres.Options{Logger: quiet})
		require.NoError(t, err)
		return db
	}
	sdb := stdlib.OpenDBFromPool(pool)
	t.Cleanup(func() { _ = sdb.Close() })
	db, err := postgres.NewSQL(sdb, postgres.Options{Logger: quiet})
	require.NoError(t, err)
	return db
}

// Four relays, each with a pool of its own (two on pgx, two on
// database/sql), move 10,000 events committed by four writers while they
// run: each event is delivered exactly once (no lease expires), and the
// events of each key in the order they were added.
func TestFourRelays(t *testing.T) {
	t.Parallel()
	const (
		relays  = 4
		writers = 4
		total   = 10_000
		perTx   = 50
		keys    = 50 // per writer
	)
	table := newSchema(t) + ".outbox"
	var stores []*postgres.Store
	for i := range relays {
		s, err := postgres.NewStore(ownDB(t, i), postgres.StoreOptions{Table: table})
		require.NoError(t, err)
		require.NoError(t, s.EnsureSchema(t.Context()))
		stores = append(stores, s)
	}
	d := newDeliveries(total)
	var rs []*outbox.Relay
	for i, s := range stores {
		r, err := outbox.NewRelay(s, d.sender("relay-"+strconv.Itoa(i)), relayConfig("relay-"+strconv.Itoa(i)))
		require.NoError(t, err)
		rs = append(rs, r)
	}
	stop := run(t, rs...)

	// Each key is written by one writer, so its events commit in the
	// order they are added.
	added := make([]map[string][]uuid.UUID, writers)
	var wg sync.WaitGroup
	for w := range writers {
		added[w] = make(map[string][]uuid.UUID)
		s := stores[w]
		wg.Go(func() {
			for tx := range total / writers / perTx {
				batch := make([]wire.Envelope, perTx)
				for i := range batch {
					n := tx*perTx + i
					key := ""
					if n%5 != 0 {
						key = fmt.Sprintf("w%d-k%d", w, n%keys)
					}
					batch[i] = outboxtest.NewEnvelope(key, strconv.Itoa(n))
					added[w][key] = append(added[w][key], batch[i].ID)
				}
				if err := s.InTx(t.Context(), func(ctx context.Context) error { return s.Add(ctx, batch...) }); err != nil {
					t.Errorf("writer %d: %v", w, err)
					return
				}
			}
		})
	}
	wg.Wait()
	start := time.Now()
	receive(t, d.all, "every event delivered")
	stop()
	t.Logf("the last event was delivered %v after the last commit", time.Since(start))

	d.mu.Lock()
	require.Len(t, d.count, total)
	perRelay := make(map[string]int)
	for id, n := range d.count {
		require.Equal(t, 1, n, "event %s delivered %d times, by %v", id, n, d.by[id])
		perRelay[d.by[id][0]]++
	}
	d.mu.Unlock()
	t.Logf("deliveries per relay: %v", perRelay)
	merged := make(map[string][]uuid.UUID) // keys are the writers' own, but for ""
	for w := range writers {
		for k, ids := range added[w] {
			merged[k] = append(merged[k], ids...)
		}
	}
	d.checkOrder(t, merged)
	st, err := stores[0].Stats(t.Context())
	require.NoError(t, err)
	assert.Equal(t, int64(total), st.Sent)
	assert.Zero(t, st.Pending)
	for _, r := range rs {
		assert.Zero(t, r.Counters().LeaseLost)
	}
}

// A relay runs in a process of its own, which is killed (SIGKILL) while it
// holds a claimed batch, after it delivered half of the batch and before
// it marked anything. The other relays deliver everything else at once,
// and the killed relay's rows once its lease expires: nothing is lost, and
// the only duplicates are the rows the killed relay delivered but had not
// marked.
func TestKilledRelay(t *testing.T) {
	t.Parallel()
	const (
		total = 2_000
		batch = 40
		keys  = 20
	)
	s := newStore(t, pgxDB(t), nil)
	added := make(map[string][]uuid.UUID)
	for tx := range total / 100 {
		envs := make([]wire.Envelope, 100)
		for i := range envs {
			n := tx*100 + i
			key := ""
			if n%4 != 0 {
				key = "k" + strconv.Itoa(n%keys)
			}
			envs[i] = outboxtest.NewEnvelope(key, strconv.Itoa(n))
			added[key] = append(added[key], envs[i].ID)
		}
		require.NoError(t, s.InTx(t.Context(), func(ctx context.Context) error { return s.Add(ctx, envs...) }))
	}

	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperRelayToKill$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperEnv+"=1", helperTableEnv+"="+s.Table(), urlEnv+"="+databaseURL(),
		"HELPER_BATCH="+strconv.Itoa(batch))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Kill() // already killed unless the test failed early
		_ = cmd.Wait()
	})

	// Read what the doomed relay did until it blocks holding its batch.
	d := newDeliveries(total)
	var acked, held []uuid.UUID
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
read:
	for {
		line, ok := <-lines
		if !ok {
			t.Fatal("the helper process ended before it blocked")
		}
		verb, arg, _ := strings.Cut(line, " ")
		switch verb {
		case "DELIVERED", "HELD":
			id := uuid.MustParse(arg)
			if verb == "DELIVERED" {
				acked = append(acked, id)
			} else {
				held = append(held, id)
			}
		case "BLOCKED":
			break read
		}
	}
	require.Len(t, append(acked, held...), batch, "the killed relay held a full batch")

	// It holds the lease of its whole batch, delivered half of it, and
	// marked nothing.
	var leaseUntil time.Time
	for _, id := range append(acked, held...) {
		r, err := s.Get(t.Context(), id)
		require.NoError(t, err)
		assert.Equal(t, outbox.Pending, r.State)
		assert.Equal(t, "doomed", r.LeaseOwner)
		leaseUntil = r.LeaseUntil
	}
	require.NoError(t, cmd.Process.Kill()) // SIGKILL
	require.Error(t, cmd.Wait(), "killed")
	for range lines { // drain
	}
	for _, id := range acked {
		r, err := s.Get(t.Context(), id)
		require.NoError(t, err)
		d.record("doomed", r.Envelope)
	}

	// Three relays, each in a pool of its own, take over.
	var rs []*outbox.Relay
	for i := range 3 {
		rs2, err := postgres.NewStore(ownDB(t, i), postgres.StoreOptions{Table: s.Table()})
		require.NoError(t, err)
		cfg := relayConfig("survivor-" + strconv.Itoa(i))
		cfg.BatchSize = 50
		cfg.Lease = 20 * time.Second
		cfg.PollInterval = 50 * time.Millisecond // finds the expired lease
		r, err := outbox.NewRelay(rs2, d.sender(cfg.Owner), cfg)
		require.NoError(t, err)
		rs = append(rs, r)
	}
	stop := run(t, rs...)
	receive(t, d.all, "every event delivered")
	stop()

	d.mu.Lock()
	require.Len(t, d.count, total, "nothing lost")
	ackedSet := make(map[uuid.UUID]bool)
	for _, id := range acked {
		ackedSet[id] = true
	}
	duplicates := 0
	for id, n := range d.count {
		if ackedSet[id] {
			require.Equal(t, 2, n, "a row the killed relay delivered is delivered again: %v", d.by[id])
			duplicates++
			continue
		}
		require.Equal(t, 1, n, "event %s delivered %d times, by %v", id, n, d.by[id])
	}
	for _, id := range held {
		assert.False(t, d.at[id].Before(leaseUntil), "row %s taken over at %v, before its lease expired at %v", id, d.at[id], leaseUntil)
	}
	d.mu.Unlock()
	assert.Equal(t, len(acked), duplicates)
	t.Logf("killed relay: %d rows delivered and not marked (each delivered twice), %d rows held and not delivered; %d duplicates in %d events",
		len(acked), len(held), duplicates, total)
	d.checkOrder(t, added)
	st, err := s.Stats(t.Context())
	require.NoError(t, err)
	assert.Equal(t, int64(total), st.Sent)
	assert.Zero(t, st.Pending)
}

// TestHelperRelayToKill is the relay process TestKilledRelay kills. It
// claims one batch with a one-second lease, delivers its first half
// (printing DELIVERED and the id), prints the rest (HELD), prints BLOCKED
// and hangs until it is killed.
func TestHelperRelayToKill(t *testing.T) {
	if os.Getenv(helperEnv) == "" {
		t.Skip("the helper process of TestKilledRelay")
	}
	pool, err := newPoolWith(t, 4, nil)
	require.NoError(t, err)
	db, err := postgres.New(pool, postgres.Options{Logger: quiet})
	require.NoError(t, err)
	s, err := postgres.NewStore(db, postgres.StoreOptions{Table: os.Getenv(helperTableEnv)})
	require.NoError(t, err)
	batch, err := strconv.Atoi(os.Getenv("HELPER_BATCH"))
	require.NoError(t, err)
	sender := outbox.SenderFunc(func(_ context.Context, envs []wire.Envelope) error {
		for i, e := range envs {
			if i < len(envs)/2 {
				fmt.Println("DELIVERED", e.ID)
			} else {
				fmt.Println("HELD", e.ID)
			}
		}
		fmt.Println("BLOCKED")
		time.Sleep(time.Hour) // a hung send: the process is killed meanwhile
		return nil
	})
	cfg := relayConfig("doomed")
	cfg.BatchSize = batch
	cfg.Lease = time.Second
	cfg.SendTimeout = 500 * time.Millisecond // ignored by the hung sender
	r, err := outbox.NewRelay(s, sender, cfg)
	require.NoError(t, err)
	_ = r.Run(context.Background())
}
