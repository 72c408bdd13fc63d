package outbox_test

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gocqrs/cqrs/events/outbox"
	"github.com/gocqrs/cqrs/events/wire"
)

func TestInProcessSender(t *testing.T) {
	t.Parallel()
	a, b, none := envs("a", 3), envs("b", 2), envs("", 2)
	batch := []wire.Envelope{a[0], b[0], none[0], a[1], b[1], a[2], none[1]}
	boom := errors.New("handler failed")
	var got []string
	s := outbox.InProcessSender(func(_ context.Context, e wire.Envelope) error {
		got = append(got, e.Headers["x-body"])
		switch e.ID {
		case a[1].ID:
			return boom
		case none[0].ID:
			panic("handler bug")
		}
		return nil
	})
	err := s.Send(t.Context(), batch)
	be, ok := errors.AsType[*outbox.BatchError](err)
	require.True(t, ok, "%v", err)
	require.Len(t, be.Errs, len(batch))
	assert.Equal(t, []string{"a-0", "b-0", "-0", "a-1", "b-1", "-1"}, got, "in batch order; a-2 is not attempted")
	assert.NoError(t, be.Errs[0])
	assert.NoError(t, be.Errs[1])
	_, isPanic := errors.AsType[*outbox.PanicError](be.Errs[2])
	assert.True(t, isPanic, "a panic is that record's failure: %v", be.Errs[2])
	assert.ErrorIs(t, be.Errs[3], boom)
	assert.NoError(t, be.Errs[4])
	assert.ErrorIs(t, be.Errs[5], outbox.ErrNotAttempted)
	assert.NoError(t, be.Errs[6], "a failed row without key holds nothing back")
	assert.Equal(t, 3, be.Failed())
	assert.ErrorIs(t, err, boom, "BatchError unwraps to the record errors")
	assert.Contains(t, err.Error(), "3 of 7 records not sent; record 2: panic: handler bug")

	require.NoError(t, s.Send(t.Context(), batch[1:2]), "nil when every record is delivered")
}

func TestInProcessSenderCancelled(t *testing.T) {
	t.Parallel()
	es := envs("", 3)
	ctx, cancel := context.WithCancel(t.Context())
	n := 0
	s := outbox.InProcessSender(func(context.Context, wire.Envelope) error {
		n++
		cancel()
		return nil
	})
	err := s.Send(ctx, es)
	be, ok := errors.AsType[*outbox.BatchError](err)
	require.True(t, ok)
	assert.Equal(t, 1, n, "nothing is delivered once ctx is done")
	assert.NoError(t, be.Errs[0])
	assert.ErrorIs(t, be.Errs[1], context.Canceled)
	assert.ErrorIs(t, be.Errs[2], context.Canceled)
}

func TestErrors(t *testing.T) {
	t.Parallel()
	assert.NoError(t, outbox.Permanent(nil))
	cause := errors.New("too large")
	p := outbox.Permanent(cause)
	assert.ErrorIs(t, p, outbox.ErrPermanent)
	assert.ErrorIs(t, p, cause)
	assert.Equal(t, "permanent: too large", p.Error())

	le := &outbox.LeaseError{Owner: "A", IDs: idsOf(envs("", 5)...)}
	assert.ErrorIs(t, le, outbox.ErrLeaseLost)
	assert.Contains(t, le.Error(), `owner "A" does not hold the lease of 5 row(s)`)
	assert.Contains(t, le.Error(), "and 2 more")

	be := &outbox.BatchError{Errs: []error{nil, nil}}
	assert.Equal(t, "outbox: 0 of 2 records not sent", be.Error())
	assert.Empty(t, be.Unwrap())

	assert.Equal(t, "pending", outbox.Pending.String())
	assert.Equal(t, "sent", outbox.Sent.String())
	assert.Equal(t, "dead", outbox.Dead.String())
	assert.Equal(t, "State(9)", outbox.State(9).String())
}
