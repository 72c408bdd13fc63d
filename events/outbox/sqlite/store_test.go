package sqlite_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
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

var errRollback = errors.New("roll back")

func createOrders(t *testing.T, db *sqlite.DB) {
	t.Helper()
	_, err := db.SQL().ExecContext(t.Context(), ordersDDL)
	require.NoError(t, err)
}

// saveOrder is an application repository: it writes with the transaction
// in ctx.
func saveOrder(ctx context.Context, db *sqlite.DB, id string) error {
	tx, ok := db.Tx(ctx)
	if !ok {
		return errors.New("no transaction")
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO orders (id, item, quantity) VALUES (?, 'book', 1)`, id)
	return err
}

func countOrders(t *testing.T, db *sqlite.DB) int {
	t.Helper()
	var n int
	require.NoError(t, db.SQL().QueryRowContext(t.Context(), `SELECT count(*) FROM orders`).Scan(&n))
	return n
}

func TestApplicationWritesCommitWithTheOutbox(t *testing.T) {
	t.Parallel()
	db, _ := openDB(t, sqlite.Options{})
	createOrders(t, db)
	store := newStore(t, db, outboxtest.NewClock())
	ctx := t.Context()

	// A failed command leaves neither its writes nor its events.
	e := outboxtest.NewEnvelope("o-1", "placed")
	err := db.InTx(ctx, func(ctx context.Context) error {
		if err := saveOrder(ctx, db, "o-1"); err != nil {
			return err
		}
		if err := store.Add(ctx, e); err != nil {
			return err
		}
		return errRollback
	})
	require.ErrorIs(t, err, errRollback)
	assert.Zero(t, countOrders(t, db))
	_, err = store.Get(ctx, e.ID)
	require.ErrorIs(t, err, outbox.ErrNotFound)

	// Nor does a panicking one.
	require.Panics(t, func() {
		_ = db.InTx(ctx, func(ctx context.Context) error {
			if err := saveOrder(ctx, db, "o-1"); err != nil {
				return err
			}
			if err := store.Add(ctx, e); err != nil {
				return err
			}
			panic("handler bug")
		})
	})
	assert.Zero(t, countOrders(t, db))

	// A command that succeeds commits both; the repository, the generic
	// helper and the nested InTx all see the same transaction.
	require.NoError(t, db.InTx(ctx, func(ctx context.Context) error {
		tx, ok := db.Tx(ctx)
		require.True(t, ok)
		generic, ok := outbox.TxFromContext[*sql.Tx](ctx)
		require.True(t, ok)
		assert.Same(t, tx, generic)
		if err := saveOrder(ctx, db, "o-1"); err != nil {
			return err
		}
		return store.InTx(ctx, func(ctx context.Context) error {
			inner, _ := db.Tx(ctx)
			assert.Same(t, tx, inner, "a nested InTx joins the outer transaction")
			return store.Add(ctx, e)
		})
	}))
	assert.Equal(t, 1, countOrders(t, db))
	assert.Equal(t, outbox.Pending, getRow(t, store, e.ID).State)

	_, ok := db.Tx(ctx)
	assert.False(t, ok, "no transaction outside InTx")
}

func getRow(t *testing.T, s *sqlite.Store, id uuid.UUID) outbox.Row {
	t.Helper()
	r, err := s.Get(t.Context(), id)
	require.NoError(t, err)
	return r
}

// TestDurableAcrossReopen closes the database and opens the file again:
// the rows and their states are there.
func TestDurableAcrossReopen(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "durable.db")
	clock := outboxtest.NewClock()
	es := []wire.Envelope{outboxtest.NewEnvelope("a", "1"), outboxtest.NewEnvelope("a", "2"), outboxtest.NewEnvelope("", "3")}

	db, err := sqlite.Open(ctx, path, sqlite.Options{})
	require.NoError(t, err)
	store := newStore(t, db, clock)
	require.NoError(t, db.InTx(ctx, func(ctx context.Context) error { return store.Add(ctx, es...) }))
	rows, err := store.Claim(ctx, "A", 1, time.Minute)
	require.NoError(t, err)
	require.Len(t, rows, 1)
	require.NoError(t, store.MarkSent(ctx, "A", es[0].ID))
	rows, err = store.Claim(ctx, "A", 10, time.Minute)
	require.NoError(t, err)
	require.Len(t, rows, 2)
	require.NoError(t, store.MarkFailed(ctx, "A", outbox.Failure{ID: es[1].ID, Error: "broker down", Dead: true}))
	require.NoError(t, db.Close())

	db, err = sqlite.Open(ctx, path, sqlite.Options{})
	require.NoError(t, err)
	defer func() { require.NoError(t, db.Close()) }()
	store = newStore(t, db, clock) // EnsureSchema again: idempotent
	assert.Equal(t, outbox.Sent, getRow(t, store, es[0].ID).State)
	dead := getRow(t, store, es[1].ID)
	assert.Equal(t, outbox.Dead, dead.State)
	assert.Equal(t, "broker down", dead.LastError)
	r := getRow(t, store, es[2].ID)
	assert.Equal(t, "A", r.LeaseOwner, "leases survive a restart")
	assert.True(t, outboxtest.EqualEnvelopes(es[2], r.Envelope))

	clock.Advance(time.Minute)
	rows, err = store.Claim(ctx, "B", 10, time.Minute)
	require.NoError(t, err)
	require.Len(t, rows, 1)
	assert.Equal(t, es[2].ID, rows[0].Envelope.ID)
	assert.Greater(t, rows[0].Seq, getRow(t, store, es[1].ID).Seq)
}

// TestSeqNeverReused deletes every row and adds another: its Seq is still
// above every Seq handed out before.
func TestSeqNeverReused(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	db, _ := openDB(t, sqlite.Options{})
	clock := outboxtest.NewClock()
	store := newStore(t, db, clock)
	e := outboxtest.NewEnvelope("", "1")
	require.NoError(t, db.InTx(ctx, func(ctx context.Context) error { return store.Add(ctx, e) }))
	rows, err := store.Claim(ctx, "A", 1, time.Minute)
	require.NoError(t, err)
	require.NoError(t, store.MarkSent(ctx, "A", e.ID))
	n, err := store.DeleteSent(ctx, clock.Advance(time.Hour), 10)
	require.NoError(t, err)
	require.Equal(t, int64(1), n)
	e2 := outboxtest.NewEnvelope("", "2")
	require.NoError(t, db.InTx(ctx, func(ctx context.Context) error { return store.Add(ctx, e2) }))
	assert.Greater(t, getRow(t, store, e2.ID).Seq, rows[0].Seq)
}

// TestEnvelopeRoundTrip checks that every field comes back exactly,
// including nil against empty headers and payloads, a zero timestamp and
// nanoseconds.
func TestEnvelopeRoundTrip(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	db, _ := openDB(t, sqlite.Options{})
	store := newStore(t, db, outboxtest.NewClock())
	full := outboxtest.NewEnvelope("k", "full")
	full.Timestamp = time.Date(2031, 5, 6, 7, 8, 9, 123456789, time.FixedZone("X", 3600))
	full.Headers["unicode"] = "é\u2028\"quoted\""
	full.Payload = []byte{0, 1, 2, 0xff}
	bare := wire.Envelope{ID: uuid.New(), Name: "bare"}
	empty := wire.Envelope{ID: uuid.New(), Name: "empty", Headers: map[string]string{}, Payload: []byte{}}
	require.NoError(t, db.InTx(ctx, func(ctx context.Context) error { return store.Add(ctx, full, bare, empty) }))

	got := getRow(t, store, full.ID).Envelope
	assert.True(t, outboxtest.EqualEnvelopes(full, got), "%+v", got)
	assert.Equal(t, full.Timestamp.UnixNano(), got.Timestamp.UnixNano(), "nanoseconds are kept")
	assert.Equal(t, time.UTC, got.Timestamp.Location())

	got = getRow(t, store, bare.ID).Envelope
	assert.Equal(t, bare, got, "zero fields, nil headers and payload stay so")

	got = getRow(t, store, empty.ID).Envelope
	assert.NotNil(t, got.Headers, "empty headers stay non-nil")
	assert.Empty(t, got.Headers)
	assert.Empty(t, got.Payload)

	far := outboxtest.NewEnvelope("", "far")
	far.Timestamp = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)
	err := db.InTx(ctx, func(ctx context.Context) error { return store.Add(ctx, far) })
	require.ErrorIs(t, err, outbox.ErrInvalidEnvelope)
}

// TestConcurrentClaimsFromTwoPools runs claimers on two pools of one file,
// as two processes would: they wait for each other through SQLite's busy
// timeout, and never get the same row.
func TestConcurrentClaimsFromTwoPools(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	db1, path := openDB(t, sqlite.Options{})
	db2, err := sqlite.Open(ctx, path, sqlite.Options{})
	require.NoError(t, err)
	defer func() { require.NoError(t, db2.Close()) }()
	clock := outboxtest.NewClock()
	stores := []*sqlite.Store{newStore(t, db1, clock), newStore(t, db2, clock)}

	const total = 200
	for range total / 50 {
		batch := make([]wire.Envelope, 50)
		for i := range batch {
			batch[i] = outboxtest.NewEnvelope("key-"+strconv.Itoa(i%7), strconv.Itoa(i))
		}
		require.NoError(t, db1.InTx(ctx, func(ctx context.Context) error { return stores[0].Add(ctx, batch...) }))
	}

	var (
		mu      sync.Mutex
		claimed = make(map[uuid.UUID]string)
		errs    []error
		wg      sync.WaitGroup
	)
	for w := range 6 {
		store := stores[w%2]
		owner := "worker-" + strconv.Itoa(w)
		wg.Go(func() {
			for {
				rows, err := store.Claim(ctx, owner, 5, time.Minute)
				if err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					return
				}
				mu.Lock()
				for _, r := range rows {
					if other, dup := claimed[r.Envelope.ID]; dup {
						errs = append(errs, fmt.Errorf("row %s claimed by %s and %s", r.Envelope.ID, other, owner))
					}
					claimed[r.Envelope.ID] = owner
				}
				finished := len(claimed) == total || len(errs) > 0
				mu.Unlock()
				if len(rows) > 0 {
					ids := make([]uuid.UUID, len(rows))
					for i, r := range rows {
						ids[i] = r.Envelope.ID
					}
					if err := store.MarkSent(ctx, owner, ids...); err != nil {
						mu.Lock()
						errs = append(errs, err)
						mu.Unlock()
						return
					}
				}
				if finished {
					return
				}
			}
		})
	}
	wg.Wait()
	require.NoError(t, errors.Join(errs...))
	assert.Len(t, claimed, total)
	st, err := stores[1].Stats(ctx)
	require.NoError(t, err)
	assert.Equal(t, int64(total), st.Sent)
}

func TestNotifierIsSharedByStoresOfOneTable(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	db, _ := openDB(t, sqlite.Options{})
	watched := newStore(t, db, nil)
	writer := newStore(t, db, nil) // another store value on the same table

	woken := make(chan struct{}, 1)
	watchCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- watched.Watch(watchCtx, func() {
			select {
			case woken <- struct{}{}:
			default:
			}
		})
	}()
	<-woken // Watch is watching

	// A rolled-back transaction does not signal; the commit after it does.
	require.ErrorIs(t, db.InTx(ctx, func(ctx context.Context) error {
		if err := writer.Add(ctx, outboxtest.NewEnvelope("", "rolled back")); err != nil {
			return err
		}
		return errRollback
	}), errRollback)
	select {
	case <-woken:
		t.Fatal("woken by a rollback")
	default:
	}
	require.NoError(t, db.InTx(ctx, func(ctx context.Context) error {
		return writer.Add(ctx, outboxtest.NewEnvelope("", "committed"))
	}))
	<-woken
	stop()
	require.NoError(t, <-done)
}

func TestStoreWritesRefuseTheTransactionOfTheirDatabase(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	db, _ := openDB(t, sqlite.Options{})
	store := newStore(t, db, nil)
	in := newInbox(t, db, nil)
	require.NoError(t, db.InTx(ctx, func(ctx context.Context) error {
		_, err := store.Claim(ctx, "A", 1, time.Minute)
		require.ErrorIs(t, err, sqlite.ErrInTx)
		require.ErrorIs(t, store.MarkSent(ctx, "A", uuid.New()), sqlite.ErrInTx)
		_, err = store.RequeueAllDead(ctx)
		require.ErrorIs(t, err, sqlite.ErrInTx)
		_, err = in.Purge(ctx, time.Now(), 1)
		require.ErrorIs(t, err, sqlite.ErrInTx)
		// Reads are fine, and see committed rows only.
		_, err = store.Stats(ctx)
		return err
	}))
}

func TestTransactionsOfAnotherDatabase(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	db1, _ := openDB(t, sqlite.Options{})
	db2, _ := openDB(t, sqlite.Options{})
	s1, s2 := newStore(t, db1, nil), newStore(t, db2, nil)
	e := outboxtest.NewEnvelope("", "x")
	require.NoError(t, db1.InTx(ctx, func(ctx context.Context) error {
		require.ErrorIs(t, s2.Add(ctx, e), outbox.ErrNoTx, "a transaction of another database does not count")
		tx1, _ := db1.Tx(ctx)
		// An InTx of another database inside opens its own transaction.
		return db2.InTx(ctx, func(ctx context.Context) error {
			tx2, ok := db2.Tx(ctx)
			require.True(t, ok)
			assert.NotSame(t, tx1, tx2)
			inner, _ := db1.Tx(ctx)
			assert.Same(t, tx1, inner)
			return errors.Join(s1.Add(ctx, e), s2.Add(ctx, e))
		})
	}))
	assert.Equal(t, outbox.Pending, getRow(t, s1, e.ID).State)
	assert.Equal(t, outbox.Pending, getRow(t, s2, e.ID).State)
}

func TestBusyTimeoutInProcess(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	db, _ := openDB(t, sqlite.Options{BusyTimeout: 20 * time.Millisecond})
	store := newStore(t, db, nil)
	holding, release := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- db.InTx(ctx, func(context.Context) error {
			close(holding)
			<-release
			return nil
		})
	}()
	<-holding
	_, err := store.Claim(ctx, "A", 1, time.Minute)
	require.ErrorIs(t, err, sqlite.ErrBusy, "a writer waits the busy timeout, then fails")
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	require.ErrorIs(t, db.InTx(cctx, func(context.Context) error { return nil }), context.Canceled)
	close(release)
	require.NoError(t, <-done)
	_, err = store.Claim(ctx, "A", 1, time.Minute)
	require.NoError(t, err)
}

// TestNewOnAPoolOfOneConnection uses a pool the application opened, with
// a single connection: statements are prepared on the transaction's
// connection rather than waiting for a second one.
func TestNewOnAPoolOfOneConnection(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dsn, err := sqlite.DSN(filepath.Join(t.TempDir(), "own.db"), sqlite.Options{})
	require.NoError(t, err)
	pool, err := sql.Open("sqlite", dsn)
	require.NoError(t, err)
	defer func() { require.NoError(t, pool.Close()) }()
	pool.SetMaxOpenConns(1)
	db, err := sqlite.New(pool, sqlite.Options{})
	require.NoError(t, err)
	store := newStore(t, db, nil)
	in := newInbox(t, db, nil)
	e := outboxtest.NewEnvelope("k", "x")
	require.NoError(t, db.InTx(ctx, func(ctx context.Context) error {
		if _, err := in.Record(ctx, "c", e.ID); err != nil {
			return err
		}
		return store.Add(ctx, e)
	}))
	require.NoError(t, db.Close())
	require.NoError(t, pool.PingContext(ctx), "Close leaves the application's pool open")
	seen, err := in.Seen(ctx, "c", e.ID)
	require.NoError(t, err)
	assert.True(t, seen)
}

// TestInboxAndOutboxInOneTransaction is a consumer that records an event,
// writes, and emits a follow-up event: all three commit or roll back
// together.
func TestInboxAndOutboxInOneTransaction(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	db, _ := openDB(t, sqlite.Options{})
	createOrders(t, db)
	store, in := newStore(t, db, nil), newInbox(t, db, nil)
	d := inbox.Deduplicator{Consumer: "shipping", Store: in, Transactor: db}
	incoming := uuid.New()
	followUp := outboxtest.NewEnvelope("o-1", "shipped")
	handle := func(fail bool) (bool, error) {
		return d.Process(ctx, incoming, func(ctx context.Context) error {
			if err := saveOrder(ctx, db, "o-1"); err != nil {
				return err
			}
			if err := store.Add(ctx, followUp); err != nil {
				return err
			}
			if fail {
				return errRollback
			}
			return nil
		})
	}
	_, err := handle(true)
	require.ErrorIs(t, err, errRollback)
	seen, err := in.Seen(ctx, "shipping", incoming)
	require.NoError(t, err)
	assert.False(t, seen)
	assert.Zero(t, countOrders(t, db))
	_, err = store.Get(ctx, followUp.ID)
	require.ErrorIs(t, err, outbox.ErrNotFound)

	dup, err := handle(false)
	require.NoError(t, err)
	assert.False(t, dup)
	dup, err = handle(false)
	require.NoError(t, err)
	assert.True(t, dup, "the redelivery is dropped")
	assert.Equal(t, 1, countOrders(t, db))
	assert.Equal(t, outbox.Pending, getRow(t, store, followUp.ID).State)
}

func TestOptionsAreValidated(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	_, err := sqlite.Open(ctx, ":memory:", sqlite.Options{BusyTimeout: -1, Synchronous: "sometimes", MaxOpenConns: -1})
	require.ErrorIs(t, err, sqlite.ErrInvalidOptions)
	for _, want := range []string{"BusyTimeout", "Synchronous", "MaxOpenConns", "path"} {
		assert.ErrorContains(t, err, want)
	}
	_, err = sqlite.New(nil, sqlite.Options{})
	require.ErrorIs(t, err, sqlite.ErrInvalidOptions)

	db, _ := openDB(t, sqlite.Options{Synchronous: "normal"})
	for _, table := range []string{"1outbox", "out-box", `out"box`, "sqlite_outbox", "a b", "x;DROP TABLE y"} {
		_, err := sqlite.NewStore(db, sqlite.StoreOptions{Table: table})
		require.ErrorIs(t, err, sqlite.ErrInvalidOptions, table)
		_, err = sqlite.NewInbox(db, sqlite.InboxOptions{Table: table})
		require.ErrorIs(t, err, sqlite.ErrInvalidOptions, table)
		_, err = sqlite.OutboxSchema(table)
		require.ErrorIs(t, err, sqlite.ErrInvalidOptions, table)
	}
	_, err = sqlite.NewStore(nil, sqlite.StoreOptions{Table: "-"})
	require.ErrorIs(t, err, sqlite.ErrInvalidOptions)
	assert.ErrorContains(t, err, "nil *DB")
	assert.ErrorContains(t, err, "Table")
}

func TestDSN(t *testing.T) {
	t.Parallel()
	dsn, err := sqlite.DSN("/data/dir?#%/app.db", sqlite.Options{BusyTimeout: 3 * time.Second, Synchronous: "normal"})
	require.NoError(t, err)
	assert.Equal(t, "file:/data/dir%3f%23%25/app.db?_busy_timeout=3000&_dqs=0&_journal_mode=WAL&_synchronous=NORMAL&_txlock=immediate", dsn)

	// The path with the characters a URI escapes is the file SQLite opens.
	path := filepath.Join(t.TempDir(), "odd ?#% name.db")
	db, err := sqlite.Open(t.Context(), path, sqlite.Options{})
	require.NoError(t, err)
	require.NoError(t, db.Close())
	assert.FileExists(t, path)
}

// TestWithTx adopts a transaction the application began itself.
func TestWithTx(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	db, _ := openDB(t, sqlite.Options{})
	createOrders(t, db)
	store, in := newStore(t, db, nil), newInbox(t, db, nil)
	for _, commit := range []bool{false, true} {
		e := outboxtest.NewEnvelope("k", strconv.FormatBool(commit))
		tx, err := db.SQL().BeginTx(ctx, nil)
		require.NoError(t, err)
		txCtx := db.WithTx(ctx, tx)
		got, ok := db.Tx(txCtx)
		require.True(t, ok)
		assert.Same(t, tx, got)
		require.NoError(t, store.Add(txCtx, e))
		first, err := in.Record(txCtx, "c", e.ID)
		require.NoError(t, err)
		assert.True(t, first)
		require.NoError(t, db.InTx(txCtx, func(ctx context.Context) error {
			return saveOrder(ctx, db, e.ID.String()) // joins the adopted transaction
		}))
		if commit {
			require.NoError(t, tx.Commit())
		} else {
			require.NoError(t, tx.Rollback())
		}
		_, err = store.Get(ctx, e.ID)
		if commit {
			require.NoError(t, err)
		} else {
			require.ErrorIs(t, err, outbox.ErrNotFound)
		}
		seen, err := in.Seen(ctx, "c", e.ID)
		require.NoError(t, err)
		assert.Equal(t, commit, seen)
		require.ErrorIs(t, store.Add(txCtx, outboxtest.NewEnvelope("k", "late")), outbox.ErrTxDone)
		_, err = in.Record(txCtx, "c", uuid.New())
		require.ErrorIs(t, err, outbox.ErrTxDone)
		_, err = store.Claim(txCtx, "A", 10, time.Minute)
		require.NoError(t, err, "the stores' own writes do not mind an adopted transaction that ended")
	}
	assert.Equal(t, 1, countOrders(t, db))
}

// TestConcurrentAddsInOneTransaction adds from several goroutines with one
// transaction, as a mediator publishing in parallel does.
func TestConcurrentAddsInOneTransaction(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	db, _ := openDB(t, sqlite.Options{})
	createOrders(t, db)
	store := newStore(t, db, nil)
	const goroutines, each = 8, 10
	require.NoError(t, db.InTx(ctx, func(ctx context.Context) error {
		var wg sync.WaitGroup
		errs := make([]error, goroutines)
		for g := range goroutines {
			wg.Go(func() {
				for i := range each {
					key := strconv.Itoa(g)
					if err := store.Add(ctx, outboxtest.NewEnvelope(key, strconv.Itoa(i))); err != nil {
						errs[g] = err
						return
					}
					if i > 0 {
						continue
					}
					if err := saveOrder(ctx, db, "o-"+key); err != nil {
						errs[g] = err
						return
					}
				}
			})
		}
		wg.Wait()
		return errors.Join(errs...)
	}))
	st, err := store.Stats(ctx)
	require.NoError(t, err)
	assert.Equal(t, int64(goroutines*each), st.Pending)
	assert.Equal(t, goroutines, countOrders(t, db))
}
