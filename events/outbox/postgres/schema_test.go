package postgres_test

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"io/fs"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gocqrs/cqrs/events/outbox/postgres"
)

func TestSchemaFS(t *testing.T) {
	t.Parallel()
	names, err := fs.Glob(postgres.SchemaFS(), "schema/*.sql")
	require.NoError(t, err)
	assert.Equal(t, []string{"schema/inbox.sql", "schema/outbox.sql", "schema/saga.sql"}, names)

	for file, render := range map[string]func(string) (string, error){
		"schema/outbox.sql": postgres.OutboxSchema,
		"schema/inbox.sql":  postgres.InboxSchema,
	} {
		b, err := fs.ReadFile(postgres.SchemaFS(), file)
		require.NoError(t, err)
		def := postgres.DefaultOutboxTable
		if strings.Contains(file, "inbox") {
			def = postgres.DefaultInboxTable
		}
		got, err := render(def)
		require.NoError(t, err)
		assert.Equal(t, string(b), got, "%s renders the default names as the file", file)

		got, err = render("App_1.my_" + def)
		require.NoError(t, err)
		assert.NotContains(t, got, `"`+def, "every quoted name derived from the table is renamed")
		assert.Contains(t, got, `CREATE SCHEMA IF NOT EXISTS "App_1";`)
		assert.Contains(t, got, `CREATE TABLE IF NOT EXISTS "App_1"."my_`+def+`" (`)
		assert.Contains(t, got, `"my_`+def+`_pkey"`, "index and constraint names are not schema-qualified")
	}
}

func TestSchemaNamesValidated(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"", "1abc", "a-b", `a"b`, "a.b.c", ".a", "a.", "pg_catalog.t", strings.Repeat("x", 49), "ok." + strings.Repeat("x", 49)} {
		_, err := postgres.OutboxSchema(name)
		require.ErrorIs(t, err, postgres.ErrInvalidOptions, "outbox %q", name)
		_, err = postgres.InboxSchema(name)
		require.ErrorIs(t, err, postgres.ErrInvalidOptions, "inbox %q", name)
	}
	for _, name := range []string{"outbox", "_x", "S.T", strings.Repeat("x", 48), strings.Repeat("s", 48) + "." + strings.Repeat("t", 48)} {
		_, err := postgres.OutboxSchema(name)
		require.NoError(t, err, name)
	}
}

func TestOptionsValidated(t *testing.T) {
	t.Parallel()
	_, err := postgres.New(nil, postgres.Options{})
	require.ErrorIs(t, err, postgres.ErrInvalidOptions)
	_, err = postgres.NewSQL(nil, postgres.Options{})
	require.ErrorIs(t, err, postgres.ErrInvalidOptions)
	other := sql.OpenDB(fakeConnector{})
	defer func() { _ = other.Close() }()
	_, err = postgres.NewSQL(other, postgres.Options{})
	require.ErrorIs(t, err, postgres.ErrNotPgx)

	_, err = postgres.NewStore(nil, postgres.StoreOptions{Table: "bad name"})
	require.ErrorIs(t, err, postgres.ErrInvalidOptions)
	joined, ok := err.(interface{ Unwrap() []error })
	require.True(t, ok, "errors.Join: %v", err)
	assert.Len(t, joined.Unwrap(), 2, "every problem at once: %v", err)

	db := pgxDB(t)
	_, err = postgres.NewStore(db, postgres.StoreOptions{Channel: "no-dashes"})
	require.ErrorIs(t, err, postgres.ErrInvalidOptions)
	_, err = postgres.NewStore(db, postgres.StoreOptions{Channel: strings.Repeat("c", 64)})
	require.ErrorIs(t, err, postgres.ErrInvalidOptions)
	_, err = postgres.NewStore(db, postgres.StoreOptions{Table: strings.Repeat("s", 40) + "." + strings.Repeat("t", 40)})
	require.ErrorIs(t, err, postgres.ErrInvalidOptions, "the channel derived from a long name is too long")
	assert.Contains(t, err.Error(), "set Channel")
	_, err = postgres.NewInbox(nil, postgres.InboxOptions{Table: "a.b.c"})
	require.ErrorIs(t, err, postgres.ErrInvalidOptions)

	s, err := postgres.NewStore(db, postgres.StoreOptions{Table: "app.events"})
	require.NoError(t, err)
	assert.Equal(t, "app.events", s.Table())
	assert.Equal(t, "app_events", s.Channel(), "the default channel is the table name")
	s, err = postgres.NewStore(db, postgres.StoreOptions{})
	require.NoError(t, err)
	assert.Equal(t, postgres.DefaultOutboxTable, s.Table())
	in, err := postgres.NewInbox(db, postgres.InboxOptions{})
	require.NoError(t, err)
	assert.Equal(t, postgres.DefaultInboxTable, in.Table())
}

// EnsureSchema runs from many goroutines at once, each as if it were a
// process starting: the advisory lock makes them take turns, and the
// schema, the tables and the indexes are created once.
func TestEnsureSchemaConcurrent(t *testing.T) {
	t.Parallel()
	for _, fl := range flavours {
		t.Run(fl.name, func(t *testing.T) {
			t.Parallel()
			schema := newSchema(t) + "_new" // does not exist yet
			pool, _ := pools(t)
			t.Cleanup(func() {
				_, err := pool.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+schema+" CASCADE")
				assert.NoError(t, err)
			})
			db := fl.db(t)
			s, err := postgres.NewStore(db, postgres.StoreOptions{Table: schema + ".outbox"})
			require.NoError(t, err)
			in, err := postgres.NewInbox(db, postgres.InboxOptions{Table: schema + ".inbox"})
			require.NoError(t, err)
			var wg sync.WaitGroup
			errs := make(chan error, 16)
			for i := range 8 {
				wg.Go(func() {
					if i%2 == 0 {
						errs <- s.EnsureSchema(t.Context())
					} else {
						errs <- in.EnsureSchema(t.Context())
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				require.NoError(t, err)
			}
			require.NoError(t, s.EnsureSchema(t.Context()), "idempotent")
			var tables, indexes int
			require.NoError(t, pool.QueryRow(t.Context(),
				`SELECT (SELECT count(*) FROM pg_tables WHERE schemaname = $1), (SELECT count(*) FROM pg_indexes WHERE schemaname = $1)`,
				schema).Scan(&tables, &indexes))
			assert.Equal(t, 2, tables)
			assert.Equal(t, 5+2, indexes, "outbox: primary key and 4 partial indexes; inbox: primary key and 1 index")
		})
	}
}

// fakeConnector opens connections of a driver that is not pgx's.
type fakeConnector struct{}

func (fakeConnector) Connect(context.Context) (driver.Conn, error) {
	return nil, errors.New("fake driver: no connections")
}
func (fakeConnector) Driver() driver.Driver { return fakeDriver{} }

type fakeDriver struct{}

func (fakeDriver) Open(string) (driver.Conn, error) {
	return nil, errors.New("fake driver: no connections")
}
