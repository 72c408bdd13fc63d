package sqlite_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/gocqrs/cqrs/events/outbox/sqlite"
	"github.com/gocqrs/cqrs/mediator/saga"
)

type order struct {
	ID string `json:"id"`
}

func ExampleNewSagaStore() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "saga-example")
	if err != nil {
		panic(err)
	}
	defer func() { _ = os.RemoveAll(dir) }() // a temporary directory for the example

	// One database file holds the application's tables and the sagas.
	db, err := sqlite.Open(ctx, filepath.Join(dir, "app.db"), sqlite.Options{})
	if err != nil {
		panic(err)
	}
	defer func() { _ = db.Close() }()
	sagas, err := sqlite.NewSagaStore(db, sqlite.SagaStoreOptions{}) // tables cqrs_sagas and cqrs_saga_log
	if err != nil {
		panic(err)
	}
	if err := sagas.EnsureSchema(ctx); err != nil {
		panic(err)
	}
	if _, err := db.SQL().ExecContext(ctx, `CREATE TABLE reservations (key TEXT PRIMARY KEY, order_id TEXT NOT NULL)`); err != nil {
		panic(err)
	}

	// Each step writes with the transaction its context carries: its row
	// commits with the step's checkpoint, or not at all.
	reserve := func(ctx context.Context, o *order) error {
		tx, _ := db.Tx(ctx)
		_, err := tx.ExecContext(ctx, `INSERT INTO reservations (key, order_id) VALUES (?, ?)`, saga.KeyFrom(ctx), o.ID)
		return err
	}
	placeOrder := &saga.Definition[order]{
		Name: "place-order",
		Steps: []saga.Step[order]{
			{Name: "reserve", Action: saga.Do(reserve)},
			{Name: "confirm", Action: saga.Do(func(context.Context, *order) error { return nil })},
		},
	}
	o, err := saga.New(saga.Options{
		Store:      sagas,
		Transactor: db, // a step and its checkpoint in one transaction
		Logger:     slog.New(slog.DiscardHandler),
	}, placeOrder)
	if err != nil {
		panic(err)
	}

	res, err := saga.Execute(ctx, o, placeOrder, order{ID: "o-1"})
	if err != nil {
		panic(err)
	}
	fmt.Println(res.Status)
	history, err := o.History(ctx, res.ID)
	if err != nil {
		panic(err)
	}
	for _, e := range history {
		fmt.Println(e.Seq, e.Step, e.Outcome)
	}
	// Output:
	// completed
	// 1 reserve succeeded
	// 2 confirm succeeded
}
