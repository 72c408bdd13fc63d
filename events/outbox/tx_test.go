package outbox_test

import (
	"context"
	"database/sql"
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gocqrs/cqrs/events/outbox"
)

func TestContextWithTx(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	_, ok := outbox.TxFromContext[*sql.Tx](ctx)
	assert.False(t, ok)

	tx := new(sql.Tx)
	ctx = outbox.ContextWithTx(ctx, tx)
	got, ok := outbox.TxFromContext[*sql.Tx](ctx)
	assert.True(t, ok)
	assert.Same(t, tx, got)
	_, ok = outbox.TxFromContext[*outbox.MemoryTx](ctx)
	assert.False(t, ok, "keyed by type")
}

func TestMemoryTx(t *testing.T) {
	t.Parallel()
	var (
		tr     outbox.MemoryTransactor
		events []string
		outer  *outbox.MemoryTx
	)
	err := tr.InTx(t.Context(), func(ctx context.Context) error {
		outer, _ = outbox.TxFromContext[*outbox.MemoryTx](ctx)
		require.NoError(t, outer.OnEnd(func(c bool) { events = append(events, "first", boolString(c)) }))
		return tr.InTx(ctx, func(ctx context.Context) error {
			inner, _ := outbox.TxFromContext[*outbox.MemoryTx](ctx)
			assert.Same(t, outer, inner, "a nested InTx joins")
			return inner.OnEnd(func(bool) { events = append(events, "second") })
		})
	})
	require.NoError(t, err)
	assert.Equal(t, []string{"first", "commit", "second"}, events, "hooks run once, in order, at the outermost commit")
	assert.False(t, outer.Open())
	require.ErrorIs(t, outer.OnEnd(func(bool) {}), outbox.ErrTxDone)

	// A finished transaction left in a context is not joined.
	leaked := outbox.ContextWithTx(t.Context(), outer)
	require.NoError(t, tr.InTx(leaked, func(ctx context.Context) error {
		tx, _ := outbox.TxFromContext[*outbox.MemoryTx](ctx)
		assert.NotSame(t, outer, tx)
		assert.True(t, tx.Open())
		return nil
	}))

	events = nil
	boom := errors.New("boom")
	err = tr.InTx(t.Context(), func(ctx context.Context) error {
		tx, _ := outbox.TxFromContext[*outbox.MemoryTx](ctx)
		require.NoError(t, tx.OnEnd(func(c bool) { events = append(events, boolString(c)) }))
		return boom
	})
	require.ErrorIs(t, err, boom)
	assert.Equal(t, []string{"rollback"}, events)
}

func TestTransactorFunc(t *testing.T) {
	t.Parallel()
	called := false
	tr := outbox.TransactorFunc(func(ctx context.Context, fn func(context.Context) error) error {
		called = true
		return fn(ctx)
	})
	require.NoError(t, tr.InTx(t.Context(), func(context.Context) error { return nil }))
	assert.True(t, called)
}

func boolString(committed bool) string {
	if committed {
		return "commit"
	}
	return "rollback"
}
