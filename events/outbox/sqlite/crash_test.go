//go:build unix

package sqlite_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gocqrs/cqrs/events/inbox"
	"github.com/gocqrs/cqrs/events/outbox"
	"github.com/gocqrs/cqrs/events/outbox/outboxtest"
	"github.com/gocqrs/cqrs/events/outbox/sqlite"
	"github.com/gocqrs/cqrs/events/wire"
)

// The environment of the child process of TestCrashRedelivery.
const (
	envCrashChild = "GOCQRS_SQLITE_CRASH_CHILD" // the directory of the files
	envCrashBlock = "GOCQRS_SQLITE_CRASH_BLOCK" // the event the child blocks on
	envCrashInTx  = "GOCQRS_SQLITE_CRASH_IN_TX" // set: the child dies in a transaction
)

const (
	crashEvents    = 12
	crashBatchSize = 4
	crashBlockAt   = 6 // index of the event whose delivery the child never returns from
	crashLease     = time.Minute
)

// consumer is the receiving side of the crash test: a consumer database
// with an inbox and an effects table, and a log of every delivery.
type consumer struct {
	db    *sqlite.DB
	dedup inbox.Deduplicator
	log   *os.File
}

func openConsumer(ctx context.Context, dir string) (*consumer, error) {
	db, err := sqlite.Open(ctx, filepath.Join(dir, "consumer.db"), sqlite.Options{})
	if err != nil {
		return nil, err
	}
	in, err := sqlite.NewInbox(db, sqlite.InboxOptions{})
	if err == nil {
		err = in.EnsureSchema(ctx)
	}
	if err == nil {
		_, err = db.SQL().ExecContext(ctx,
			`CREATE TABLE IF NOT EXISTS effects (event_id TEXT PRIMARY KEY, applied INTEGER NOT NULL) STRICT`)
	}
	var log *os.File
	if err == nil {
		log, err = os.OpenFile(filepath.Join(dir, "deliveries.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	}
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	return &consumer{db: db, dedup: inbox.Deduplicator{Consumer: "billing", Store: in, Transactor: db}, log: log}, nil
}

func (c *consumer) close() error {
	return errors.Join(c.log.Close(), c.db.Close())
}

// deliver is the transport handing env to the consumer: the delivery is
// logged (and synced), then the consumer applies its effect with the inbox,
// in one transaction of the consumer database.
func (c *consumer) deliver(ctx context.Context, env wire.Envelope) error {
	if _, err := c.log.WriteString(env.ID.String() + "\n"); err != nil {
		return err
	}
	if err := c.log.Sync(); err != nil {
		return err
	}
	_, err := c.dedup.Process(ctx, env.ID, func(ctx context.Context) error {
		tx, _ := c.db.Tx(ctx)
		_, err := tx.ExecContext(ctx, `INSERT INTO effects (event_id, applied) VALUES (?, 1)
			ON CONFLICT (event_id) DO UPDATE SET applied = applied + 1`, env.ID.String())
		return err
	})
	return err
}

// TestCrashRelayChild is the child process of TestCrashRedelivery and
// TestCrashInTransaction; it does nothing unless run by them.
func TestCrashRelayChild(t *testing.T) {
	dir := os.Getenv(envCrashChild)
	if dir == "" {
		t.Skip("the child process of the crash tests")
	}
	block, err := uuid.Parse(os.Getenv(envCrashBlock))
	require.NoError(t, err)
	ctx := context.Background()
	db, err := sqlite.Open(ctx, filepath.Join(dir, "outbox.db"), sqlite.Options{})
	require.NoError(t, err)
	store, err := sqlite.NewStore(db, sqlite.StoreOptions{})
	require.NoError(t, err)
	parent := os.NewFile(3, "parent") // the pipe to the parent

	if os.Getenv(envCrashInTx) != "" {
		// Add the event and its application row, then wait to be killed
		// before the commit.
		err := db.InTx(ctx, func(ctx context.Context) error {
			tx, _ := db.Tx(ctx)
			if _, err := tx.ExecContext(ctx, ordersDDL); err != nil {
				return err
			}
			e := outboxtest.NewEnvelope("k", "uncommitted")
			e.ID = block
			if err := store.Add(ctx, e); err != nil {
				return err
			}
			if _, err := fmt.Fprintln(parent, "in tx"); err != nil {
				return err
			}
			select {} // killed here
		})
		require.NoError(t, err)
		return
	}

	c, err := openConsumer(ctx, dir)
	require.NoError(t, err)

	sender := outbox.InProcessSender(func(ctx context.Context, env wire.Envelope) error {
		if err := c.deliver(ctx, env); err != nil {
			return err
		}
		if env.ID == block {
			// Acknowledged (the consumer committed) but not yet marked:
			// tell the parent, which kills this process now.
			if _, err := fmt.Fprintf(parent, "acked %s\n", env.ID); err != nil {
				return err
			}
			<-ctx.Done() // the send timeout, longer than the test waits
			return ctx.Err()
		}
		return nil
	})
	cfg := outbox.DefaultRelayConfig()
	cfg.Owner = "child"
	cfg.BatchSize = crashBatchSize
	cfg.Lease = crashLease
	cfg.SendTimeout = crashLease - time.Second
	cfg.Logger = slog.New(slog.DiscardHandler)
	relay, err := outbox.NewRelay(store, sender, cfg)
	require.NoError(t, err)
	require.NoError(t, relay.Run(ctx))
}

// TestCrashRedelivery kills a relay process with SIGKILL after its sender
// acknowledged an event and before the relay marked it, then relays the
// rest from another relay once the lease has expired: every event is
// delivered at least once, the events the dead relay had sent but not
// marked are delivered twice, and the consumer's inbox applies each
// event's effect exactly once.
func TestCrashRedelivery(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a child process")
	}
	t.Parallel()
	ctx := t.Context()
	dir := t.TempDir()

	// The application commits the events.
	offset := time.Duration(0)
	var offsetMu sync.Mutex
	clock := outbox.ClockFunc(func() time.Time {
		offsetMu.Lock()
		defer offsetMu.Unlock()
		return time.Now().UTC().Add(offset)
	})
	db, err := sqlite.Open(ctx, filepath.Join(dir, "outbox.db"), sqlite.Options{})
	require.NoError(t, err)
	defer func() { require.NoError(t, db.Close()) }()
	store := newStore(t, db, clock)
	all := make([]uuid.UUID, crashEvents)
	require.NoError(t, db.InTx(ctx, func(ctx context.Context) error {
		for i := range all {
			e := outboxtest.NewEnvelope("key-"+strconv.Itoa(i%3), strconv.Itoa(i))
			all[i] = e.ID
			if err := store.Add(ctx, e); err != nil {
				return err
			}
		}
		return nil
	}))
	c, err := openConsumer(ctx, dir) // creates the consumer tables before the child runs
	require.NoError(t, err)
	require.NoError(t, c.close())

	// The child relays until it blocks in the delivery of all[crashBlockAt].
	r, w, err := os.Pipe()
	require.NoError(t, err)
	defer func() { require.NoError(t, r.Close()) }()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestCrashRelayChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), envCrashChild+"="+dir, envCrashBlock+"="+all[crashBlockAt].String())
	cmd.ExtraFiles = []*os.File{w}
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	require.NoError(t, cmd.Start())
	require.NoError(t, w.Close()) // the child holds the write end now
	line, err := bufio.NewReader(r).ReadString('\n')
	if err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("the child ended before acknowledging: %v\n%s", err, stderr.String())
	}
	require.Equal(t, "acked "+all[crashBlockAt].String()+"\n", line)
	require.NoError(t, cmd.Process.Kill()) // SIGKILL: no mark, no cleanup
	require.ErrorContains(t, cmd.Wait(), "killed")

	// The child died holding the lease of its last batch.
	for _, id := range all[crashBatchSize*(crashBlockAt/crashBatchSize) : crashBatchSize*(crashBlockAt/crashBatchSize+1)] {
		row, err := store.Get(ctx, id)
		require.NoError(t, err)
		assert.Equal(t, outbox.Pending, row.State)
		assert.Equal(t, "child", row.LeaseOwner)
	}
	st, err := store.Stats(ctx)
	require.NoError(t, err)
	assert.Equal(t, int64(crashBlockAt/crashBatchSize*crashBatchSize), st.Sent, "the batches before the last were marked")

	// Once the lease has expired, another relay takes the rows over.
	offsetMu.Lock()
	offset = crashLease + time.Second
	offsetMu.Unlock()
	c, err = openConsumer(ctx, dir)
	require.NoError(t, err)
	defer func() { require.NoError(t, c.close()) }()
	deliveredBefore := readDeliveries(t, dir)
	seen := make(map[uuid.UUID]bool)
	for id := range deliveredBefore {
		seen[id] = true
	}
	allDone := make(chan struct{})
	var doneOnce sync.Once
	relayCtx, stop := context.WithCancel(ctx)
	defer stop()
	sender := outbox.InProcessSender(func(ctx context.Context, env wire.Envelope) error {
		if err := c.deliver(ctx, env); err != nil {
			return err
		}
		seen[env.ID] = true // the sender runs on the relay's goroutine only
		if len(seen) == crashEvents {
			doneOnce.Do(func() { close(allDone) })
		}
		return nil
	})
	cfg := outbox.DefaultRelayConfig()
	cfg.Owner = "parent"
	cfg.BatchSize = crashBatchSize
	cfg.Lease = crashLease
	cfg.Clock = clock
	cfg.Logger = slog.New(slog.DiscardHandler)
	relay, err := outbox.NewRelay(store, sender, cfg)
	require.NoError(t, err)
	runErr := make(chan error, 1)
	go func() { runErr <- relay.Run(relayCtx) }()
	select {
	case <-allDone:
	case <-ctx.Done():
		t.Fatal("the events were not all delivered")
	}
	stop()
	require.NoError(t, <-runErr)

	// At least once: every event was delivered; the ones the child
	// delivered in its last batch were delivered twice.
	deliveries := readDeliveries(t, dir)
	var duplicates []uuid.UUID
	for _, id := range all {
		n := deliveries[id]
		assert.GreaterOrEqual(t, n, 1, "event %s delivered", id)
		if n > 1 {
			duplicates = append(duplicates, id)
		}
	}
	firstOfBatch := crashBatchSize * (crashBlockAt / crashBatchSize)
	assert.Equal(t, all[firstOfBatch:crashBlockAt+1], duplicates,
		"the events the child delivered in the batch it did not mark are delivered again")
	t.Logf("%d events, %d deliveries, %d duplicates", crashEvents, sum(deliveries), len(duplicates))

	// The inbox absorbed the duplicates: each effect was applied once.
	rows, err := c.db.SQL().QueryContext(ctx, `SELECT event_id, applied FROM effects`)
	require.NoError(t, err)
	applied := make(map[string]int)
	for rows.Next() {
		var id string
		var n int
		require.NoError(t, rows.Scan(&id, &n))
		applied[id] = n
	}
	require.NoError(t, rows.Err())
	require.NoError(t, rows.Close())
	assert.Len(t, applied, crashEvents)
	for id, n := range applied {
		assert.Equal(t, 1, n, "effect of %s applied once", id)
	}
	st, err = store.Stats(ctx)
	require.NoError(t, err)
	assert.Equal(t, int64(crashEvents), st.Sent)
	assert.Zero(t, st.Pending)
}

// TestCrashInTransaction kills a process in the middle of a transaction
// that added an event and created a table: after the crash, the file holds
// neither, and other writers are not blocked.
func TestCrashInTransaction(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a child process")
	}
	t.Parallel()
	ctx := t.Context()
	dir := t.TempDir()
	db, err := sqlite.Open(ctx, filepath.Join(dir, "outbox.db"), sqlite.Options{BusyTimeout: time.Minute})
	require.NoError(t, err)
	defer func() { require.NoError(t, db.Close()) }()
	store := newStore(t, db, nil)
	id := uuid.New()

	r, w, err := os.Pipe()
	require.NoError(t, err)
	defer func() { require.NoError(t, r.Close()) }()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestCrashRelayChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), envCrashChild+"="+dir, envCrashBlock+"="+id.String(), envCrashInTx+"=1")
	cmd.ExtraFiles = []*os.File{w}
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	require.NoError(t, cmd.Start())
	require.NoError(t, w.Close())
	line, err := bufio.NewReader(r).ReadString('\n')
	if err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("the child ended before its transaction: %v\n%s", err, stderr.String())
	}
	require.Equal(t, "in tx\n", line)

	// The child holds the write lock. A writer of this process waits for
	// it (up to its minute of busy timeout) and gets it once the child is
	// dead: the lock dies with its process.
	added := make(chan error, 1)
	go func() {
		added <- db.InTx(ctx, func(ctx context.Context) error {
			return store.Add(ctx, outboxtest.NewEnvelope("k", "after the crash"))
		})
	}()
	require.NoError(t, cmd.Process.Kill())
	require.ErrorContains(t, cmd.Wait(), "killed")
	require.NoError(t, <-added)

	_, err = store.Get(ctx, id)
	require.ErrorIs(t, err, outbox.ErrNotFound, "the uncommitted event is gone")
	var tables int
	require.NoError(t, db.SQL().QueryRowContext(ctx, `SELECT count(*) FROM sqlite_schema WHERE name = 'orders'`).Scan(&tables))
	assert.Zero(t, tables, "and so is the uncommitted table")
	st, err := store.Stats(ctx)
	require.NoError(t, err)
	assert.Equal(t, int64(1), st.Pending)
}

func readDeliveries(t *testing.T, dir string) map[uuid.UUID]int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "deliveries.log"))
	require.NoError(t, err)
	out := make(map[uuid.UUID]int)
	for line := range strings.Lines(string(b)) {
		out[uuid.MustParse(strings.TrimSpace(line))]++
	}
	return out
}

func sum(m map[uuid.UUID]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}
