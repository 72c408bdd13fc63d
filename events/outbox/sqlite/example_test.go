package sqlite_test

import (
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/google/uuid"

	"github.com/gocqrs/cqrs/events/outbox"
	"github.com/gocqrs/cqrs/events/outbox/sqlite"
	"github.com/gocqrs/cqrs/events/wire"
)

func Example() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "outbox-example")
	if err != nil {
		panic(err)
	}
	defer func() { _ = os.RemoveAll(dir) }() // a temporary directory for the example

	// One database file holds the application's tables and the outbox.
	db, err := sqlite.Open(ctx, filepath.Join(dir, "app.db"), sqlite.Options{})
	if err != nil {
		panic(err)
	}
	store, err := sqlite.NewStore(db, sqlite.StoreOptions{})
	if err != nil {
		panic(err)
	}
	if err := store.EnsureSchema(ctx); err != nil {
		panic(err)
	}
	if _, err := db.SQL().ExecContext(ctx, `CREATE TABLE orders (id TEXT PRIMARY KEY, item TEXT NOT NULL)`); err != nil {
		panic(err)
	}

	// A command's write and the event it emits commit in one transaction.
	err = db.InTx(ctx, func(ctx context.Context) error {
		tx, _ := db.Tx(ctx) // what the application's repositories use
		if _, err := tx.ExecContext(ctx, `INSERT INTO orders (id, item) VALUES ('o-1', 'book')`); err != nil {
			return err
		}
		return store.Add(ctx, wire.Envelope{
			ID:          uuid.Must(uuid.NewV7()),
			Name:        "order.placed",
			Topic:       "orders",
			Key:         "o-1",
			Timestamp:   time.Now().UTC(),
			ContentType: "application/json",
			Payload:     []byte(`{"id":"o-1","item":"book"}`),
		})
	})
	if err != nil {
		panic(err)
	}

	// A relay hands the committed event to an in-process consumer (which
	// would decode it and call an EventMediator); this one then stops it.
	relayCtx, stop := context.WithCancel(ctx)
	defer stop()
	sender := outbox.InProcessSender(func(ctx context.Context, env wire.Envelope) error {
		fmt.Println("delivered", env.Name, env.Key, string(env.Payload))
		stop()
		return nil
	})
	cfg := outbox.DefaultRelayConfig()
	cfg.Logger = slog.New(slog.DiscardHandler)
	relay, err := outbox.NewRelay(store, sender, cfg)
	if err != nil {
		panic(err)
	}
	if err := relay.Run(relayCtx); err != nil {
		panic(err)
	}

	st, err := store.Stats(ctx)
	if err != nil {
		panic(err)
	}
	fmt.Println("sent:", st.Sent, "pending:", st.Pending)
	if err := db.Close(); err != nil {
		panic(err)
	}
	// Output:
	// delivered order.placed o-1 {"id":"o-1","item":"book"}
	// sent: 1 pending: 0
}

func ExampleSchemaFS() {
	// The DDL, for a migration tool; OutboxSchema and InboxSchema return it
	// for other table names.
	files, err := fs.Glob(sqlite.SchemaFS(), "schema/*.sql")
	if err != nil {
		panic(err)
	}
	fmt.Println(files)
	// Output: [schema/inbox.sql schema/outbox.sql schema/saga.sql]
}
