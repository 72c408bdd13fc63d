package postgres_test

import (
	"testing"

	"github.com/gocqrs/cqrs/events/inbox"
	"github.com/gocqrs/cqrs/events/inbox/inboxtest"
	"github.com/gocqrs/cqrs/events/outbox"
	"github.com/gocqrs/cqrs/events/outbox/outboxtest"
)

// The kits run over both transaction flavours, and over a store on a pgx
// pool whose Add writes in database/sql transactions: Add uses whichever
// transaction the context carries.
func TestOutboxConformance(t *testing.T) {
	t.Parallel()
	for _, fl := range flavours {
		t.Run(fl.name, func(t *testing.T) {
			t.Parallel()
			outboxtest.Run(t, func(t *testing.T, clock outbox.Clock) (outbox.Store, outbox.Transactor) {
				t.Helper()
				s := newStore(t, fl.db(t), clock)
				return s, s
			})
		})
	}
	t.Run("pgx-store-sql-tx", func(t *testing.T) {
		t.Parallel()
		outboxtest.Run(t, func(t *testing.T, clock outbox.Clock) (outbox.Store, outbox.Transactor) {
			t.Helper()
			return newStore(t, pgxDB(t), clock), sqlDB(t)
		})
	})
}

func TestInboxConformance(t *testing.T) {
	t.Parallel()
	for _, fl := range flavours {
		t.Run(fl.name, func(t *testing.T) {
			t.Parallel()
			inboxtest.Run(t, func(t *testing.T, clock outbox.Clock) (inbox.Store, outbox.Transactor) {
				t.Helper()
				in := newInbox(t, fl.db(t), clock)
				return in, in
			})
		})
	}
	t.Run("pgx-inbox-sql-tx", func(t *testing.T) {
		t.Parallel()
		inboxtest.Run(t, func(t *testing.T, clock outbox.Clock) (inbox.Store, outbox.Transactor) {
			t.Helper()
			return newInbox(t, pgxDB(t), clock), sqlDB(t)
		})
	})
}
