package sqlite_test

import (
	"io/fs"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gocqrs/cqrs/events/outbox/sqlite"
)

func TestSchemaFiles(t *testing.T) {
	t.Parallel()
	for file, def := range map[string]string{"schema/outbox.sql": sqlite.DefaultOutboxTable, "schema/inbox.sql": sqlite.DefaultInboxTable} {
		b, err := fs.ReadFile(sqlite.SchemaFS(), file)
		require.NoError(t, err)
		assert.Contains(t, string(b), `CREATE TABLE IF NOT EXISTS "`+def+`"`)
	}
	ddl, err := sqlite.OutboxSchema("orders_outbox")
	require.NoError(t, err)
	assert.Contains(t, ddl, `CREATE TABLE IF NOT EXISTS "orders_outbox"`)
	assert.Contains(t, ddl, `CREATE INDEX IF NOT EXISTS "orders_outbox_pending"`)
	assert.NotContains(t, ddl, sqlite.DefaultOutboxTable)
	ddl, err = sqlite.InboxSchema("orders_inbox")
	require.NoError(t, err)
	assert.Contains(t, ddl, `ON "orders_inbox" (recorded_at)`)
	assert.NotContains(t, ddl, sqlite.DefaultInboxTable)
}

// TestEnsureSchemaConcurrently starts several "processes" (pools of their
// own) on a new file at once: each switches it to WAL and ensures the
// schema; they wait for each other and all succeed.
func TestEnsureSchemaConcurrently(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "shared.db")
	var wg sync.WaitGroup
	errs := make([]error, 6)
	for i := range errs {
		wg.Go(func() {
			db, err := sqlite.Open(ctx, path, sqlite.Options{})
			if err != nil {
				errs[i] = err
				return
			}
			defer func() { require.NoError(t, db.Close()) }()
			s, err := sqlite.NewStore(db, sqlite.StoreOptions{})
			if err == nil {
				err = s.EnsureSchema(ctx)
			}
			in, err2 := sqlite.NewInbox(db, sqlite.InboxOptions{})
			if err == nil && err2 == nil {
				err = in.EnsureSchema(ctx)
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	db, err := sqlite.Open(ctx, path, sqlite.Options{})
	require.NoError(t, err)
	defer func() { require.NoError(t, db.Close()) }()
	var mode string
	require.NoError(t, db.SQL().QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&mode))
	assert.Equal(t, "wal", strings.ToLower(mode))
	var tables int
	require.NoError(t, db.SQL().QueryRowContext(ctx,
		`SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name IN (?, ?)`,
		sqlite.DefaultOutboxTable, sqlite.DefaultInboxTable).Scan(&tables))
	assert.Equal(t, 2, tables)
}
