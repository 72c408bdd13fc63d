package inbox_test

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/gocqrs/cqrs/events/inbox"
	"github.com/gocqrs/cqrs/events/outbox"
	"github.com/gocqrs/cqrs/events/wire"
)

// A consumer receives the same event twice. Its effects (here, a follow-up
// event written to an outbox of the same database) are applied once.
func ExampleDeduplicator() {
	var db outbox.MemoryTransactor // the memory stores share its transactions
	received := inbox.NewMemoryStore(inbox.MemoryOptions{})
	out := outbox.NewMemoryStore(outbox.MemoryOptions{})
	d := inbox.Deduplicator{Consumer: "billing", Store: received, Transactor: db}

	env := wire.Envelope{ID: uuid.Must(uuid.NewV7()), Name: "order.placed", Key: "o-1", Timestamp: time.Now().UTC()}
	handle := func(ctx context.Context) error {
		invoice := wire.Envelope{ID: uuid.Must(uuid.NewV7()), Name: "invoice.created", Key: "o-1", Timestamp: time.Now().UTC()}
		return out.Add(ctx, invoice) // same transaction as the inbox record
	}

	ctx := context.Background()
	for range 2 { // the broker delivers the event twice
		duplicate, err := d.Process(ctx, env.ID, handle)
		if err != nil {
			panic(err)
		}
		fmt.Println("duplicate:", duplicate)
	}
	st, err := out.Stats(ctx)
	if err != nil {
		panic(err)
	}
	fmt.Println("invoices:", st.Pending)
	// Output:
	// duplicate: false
	// duplicate: true
	// invoices: 1
}
