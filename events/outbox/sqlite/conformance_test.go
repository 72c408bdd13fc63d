package sqlite_test

import (
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gocqrs/cqrs/events/inbox"
	"github.com/gocqrs/cqrs/events/inbox/inboxtest"
	"github.com/gocqrs/cqrs/events/outbox"
	"github.com/gocqrs/cqrs/events/outbox/outboxtest"
	"github.com/gocqrs/cqrs/events/outbox/sqlite"
)

// openDB opens a new database file in a temporary directory, closed when
// the test ends.
func openDB(tb testing.TB, opts sqlite.Options) (*sqlite.DB, string) {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "test.db")
	db, err := sqlite.Open(tb.Context(), path, opts)
	require.NoError(tb, err)
	tb.Cleanup(func() { require.NoError(tb, db.Close()) })
	return db, path
}

func newStore(tb testing.TB, db *sqlite.DB, clock outbox.Clock) *sqlite.Store {
	tb.Helper()
	s, err := sqlite.NewStore(db, sqlite.StoreOptions{Clock: clock})
	require.NoError(tb, err)
	require.NoError(tb, s.EnsureSchema(tb.Context()))
	return s
}

func newInbox(tb testing.TB, db *sqlite.DB, clock outbox.Clock) *sqlite.Inbox {
	tb.Helper()
	i, err := sqlite.NewInbox(db, sqlite.InboxOptions{Clock: clock})
	require.NoError(tb, err)
	require.NoError(tb, i.EnsureSchema(tb.Context()))
	return i
}

func TestOutboxConformance(t *testing.T) {
	t.Parallel()
	outboxtest.Run(t, func(t *testing.T, clock outbox.Clock) (outbox.Store, outbox.Transactor) {
		t.Helper()
		db, _ := openDB(t, sqlite.Options{})
		return newStore(t, db, clock), db
	})
}

// TestOutboxConformanceOneFile runs the kit with every store in one
// database file, each on a table of its own: tables are isolated, and the
// subtests' writers all queue for one write lock.
func TestOutboxConformanceOneFile(t *testing.T) {
	t.Parallel()
	db, _ := openDB(t, sqlite.Options{})
	var n atomic.Int64
	outboxtest.Run(t, func(t *testing.T, clock outbox.Clock) (outbox.Store, outbox.Transactor) {
		t.Helper()
		s, err := sqlite.NewStore(db, sqlite.StoreOptions{Table: "outbox_" + strconv.FormatInt(n.Add(1), 10), Clock: clock})
		require.NoError(t, err)
		require.NoError(t, s.EnsureSchema(t.Context()))
		return s, s
	})
}

func TestInboxConformance(t *testing.T) {
	t.Parallel()
	inboxtest.Run(t, func(t *testing.T, clock outbox.Clock) (inbox.Store, outbox.Transactor) {
		t.Helper()
		db, _ := openDB(t, sqlite.Options{})
		return newInbox(t, db, clock), db
	})
}
