package postgres_test

import (
	"context"
	"database/sql"
	"log"
	"os"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver

	"github.com/gocqrs/cqrs/events/inbox"
	"github.com/gocqrs/cqrs/events/outbox"
	"github.com/gocqrs/cqrs/events/outbox/postgres"
	"github.com/gocqrs/cqrs/events/wire"
)

// A command handler writes its order and the event that describes it in
// one transaction; a relay moves the event to a sender once the
// transaction commits. (This example needs a database, so it is compiled
// but not run.)
func Example() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("CQRS_POSTGRES_URL"))
	if err != nil {
		log.Print(err)
		return
	}
	defer pool.Close()
	if err := placeOrder(ctx, pool); err != nil {
		log.Print(err)
	}
}

func placeOrder(ctx context.Context, pool *pgxpool.Pool) error {
	db, err := postgres.New(pool, postgres.Options{})
	if err != nil {
		return err
	}
	store, err := postgres.NewStore(db, postgres.StoreOptions{}) // table cqrs_outbox
	if err != nil {
		return err
	}
	if err := store.EnsureSchema(ctx); err != nil { // or run postgres.SchemaFS() in migrations
		return err
	}

	env := wire.Envelope{
		ID: uuid.Must(uuid.NewV7()), Name: "order.placed", Topic: "orders", Key: "o-1",
		Timestamp: time.Now().UTC(), ContentType: "application/json", Payload: []byte(`{"id":"o-1"}`),
	}
	err = db.InTx(ctx, func(ctx context.Context) error {
		tx, _ := postgres.PgxTx(ctx) // the transaction the outbox writes in
		if _, err := tx.Exec(ctx, "INSERT INTO orders (id) VALUES ($1)", "o-1"); err != nil {
			return err
		}
		return store.Add(ctx, env)
	})
	if err != nil {
		return err
	}

	sender := outbox.InProcessSender(func(ctx context.Context, env wire.Envelope) error {
		log.Printf("deliver %s %s", env.Name, env.ID)
		return nil
	})
	relay, err := outbox.NewRelay(store, sender, outbox.DefaultRelayConfig())
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	return relay.Run(ctx) // woken by LISTEN/NOTIFY right after each commit
}

// A consumer on database/sql drops redelivered events: the inbox record
// and the consumer's writes commit together. (Compiled, not run.)
func ExampleNewInbox() {
	ctx := context.Background()
	sqlDB, err := sql.Open("pgx", os.Getenv("CQRS_POSTGRES_URL"))
	if err != nil {
		log.Print(err)
		return
	}
	defer func() { _ = sqlDB.Close() }()
	duplicate, err := consume(ctx, sqlDB, uuid.Must(uuid.NewV7()))
	log.Println(duplicate, err)
}

func consume(ctx context.Context, sqlDB *sql.DB, eventID uuid.UUID) (duplicate bool, err error) {
	db, err := postgres.NewSQL(sqlDB, postgres.Options{})
	if err != nil {
		return false, err
	}
	received, err := postgres.NewInbox(db, postgres.InboxOptions{}) // table cqrs_inbox
	if err != nil {
		return false, err
	}
	if err := received.EnsureSchema(ctx); err != nil {
		return false, err
	}
	d := inbox.Deduplicator{Consumer: "billing", Store: received, Transactor: db}
	return d.Process(ctx, eventID, func(ctx context.Context) error {
		tx, _ := postgres.SQLTx(ctx)
		_, err := tx.ExecContext(ctx, "INSERT INTO invoices (order_id) VALUES ($1)", "o-1")
		return err
	})
}
