package inbox_test

import (
	"context"
	"errors"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gocqrs/cqrs/events/inbox"
	"github.com/gocqrs/cqrs/events/inbox/inboxtest"
	"github.com/gocqrs/cqrs/events/outbox"
	"github.com/gocqrs/cqrs/events/outbox/outboxtest"
)

func TestMemoryStoreConformance(t *testing.T) {
	t.Parallel()
	inboxtest.Run(t, func(t *testing.T, clock outbox.Clock) (inbox.Store, outbox.Transactor) {
		t.Helper()
		s := inbox.NewMemoryStore(inbox.MemoryOptions{Clock: clock})
		return s, s
	})
}

// TestMemoryStoresShareTransactions checks that the memory inbox and the
// memory outbox commit and roll back together.
func TestMemoryStoresShareTransactions(t *testing.T) {
	t.Parallel()
	received := inbox.NewMemoryStore(inbox.MemoryOptions{})
	out := outbox.NewMemoryStore(outbox.MemoryOptions{})
	d := inbox.Deduplicator{Consumer: "c", Store: received, Transactor: out}
	id := uuid.New()
	follow := outboxtest.NewEnvelope("k", "follow-up")
	boom := errors.New("boom")

	_, err := d.Process(t.Context(), id, func(ctx context.Context) error {
		require.NoError(t, out.Add(ctx, follow))
		return boom
	})
	require.ErrorIs(t, err, boom)
	seen, err := received.Seen(t.Context(), "c", id)
	require.NoError(t, err)
	assert.False(t, seen)
	_, err = out.Get(t.Context(), follow.ID)
	require.ErrorIs(t, err, outbox.ErrNotFound, "the follow-up rolled back with the record")

	dup, err := d.Process(t.Context(), id, func(ctx context.Context) error { return out.Add(ctx, follow) })
	require.NoError(t, err)
	assert.False(t, dup)
	row, err := out.Get(t.Context(), follow.ID)
	require.NoError(t, err)
	assert.Equal(t, outbox.Pending, row.State)
}
