package outbox_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gocqrs/cqrs/bootstrap"
	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/events/outbox"
	"github.com/gocqrs/cqrs/events/wire"
	"github.com/gocqrs/cqrs/mediator"
	"github.com/gocqrs/cqrs/requests"
)

// orders is an application repository over the memory transaction: a
// write becomes visible when the transaction commits.
type orders struct {
	mu   sync.Mutex
	rows map[string]bool
}

func (o *orders) save(ctx context.Context, id string) error {
	tx, ok := outbox.TxFromContext[*outbox.MemoryTx](ctx)
	if !ok {
		return errors.New("no transaction")
	}
	return tx.OnEnd(func(committed bool) {
		if committed {
			o.mu.Lock()
			o.rows[id] = true
			o.mu.Unlock()
		}
	})
}

func (o *orders) has(id string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.rows[id]
}

type placeOrder struct {
	requests.Returns[string]
	ID   string
	Fail bool
	Bad  bool
}

type placed struct{ ID string }
type orderPlaced struct{ ID string }
type audited struct{ ID string }

type captureFixture struct {
	m         *mediator.RequestMediator
	store     *outbox.MemoryStore
	repo      *orders
	sawCommit chan bool
}

var errRefused = errors.New("refused")

func newCaptureFixture(t *testing.T) *captureFixture {
	t.Helper()
	f := &captureFixture{
		store:     outbox.NewMemoryStore(outbox.MemoryOptions{}),
		repo:      &orders{rows: map[string]bool{}},
		sawCommit: make(chan bool, 1),
	}
	c, err := outbox.NewCapture(outbox.MemoryTransactor{}, f.store, nil)
	require.NoError(t, err)
	f.m, err = bootstrap.Bootstrap(nil, bootstrap.WithOutbox(c),
		bootstrap.WithCommands(func(r *requests.Map) {
			requests.BindHandler(r, requests.Func(func(ctx context.Context, cmd placeOrder) (string, []events.Event, error) {
				if err := f.repo.save(ctx, cmd.ID); err != nil {
					return "", nil, err
				}
				if cmd.Fail {
					return "", nil, errRefused
				}
				n := events.NewNotification("order.placed", orderPlaced{ID: cmd.ID}).WithKey(cmd.ID)
				if cmd.Bad {
					n.ID = uuid.Nil // cannot be encoded: the transaction must roll back
				}
				return cmd.ID, []events.Event{n, placed{ID: cmd.ID}}, nil
			}))
		}),
		bootstrap.WithDomainEvents(func(m *events.Map) {
			events.BindHandler(m, events.HandlerFunc[placed](func(ctx context.Context, e placed) ([]events.Event, error) {
				f.sawCommit <- f.repo.has(e.ID)
				return []events.Event{events.NewNotification("order.audited", audited(e)).WithKey(e.ID)}, nil
			}))
		}))
	require.NoError(t, err)
	return f
}

func (f *captureFixture) rows(t *testing.T) []outbox.Row {
	t.Helper()
	rows, err := f.store.Claim(t.Context(), "test", 100, time.Minute)
	require.NoError(t, err)
	return rows
}

// The command's write and its notification event commit together; the
// domain event runs after the commit, and its own notification follow-up is
// captured too, with the same correlation.
func TestCaptureCommitsWritesAndEventsTogether(t *testing.T) {
	t.Parallel()
	f := newCaptureFixture(t)
	id, err := mediator.Send(t.Context(), f.m, placeOrder{ID: "o-1"})
	require.NoError(t, err)
	assert.Equal(t, "o-1", id)
	assert.True(t, f.repo.has("o-1"))
	assert.True(t, <-f.sawCommit, "the domain event handler ran after the commit")

	rows := f.rows(t)
	require.Len(t, rows, 2)
	first, second := rows[0].Envelope, rows[1].Envelope
	assert.Equal(t, "order.placed", first.Name)
	assert.Equal(t, "o-1", first.Key)
	assert.Equal(t, "order.audited", second.Name)
	assert.NotEmpty(t, first.CorrelationID)
	assert.Equal(t, first.CorrelationID, second.CorrelationID, "one correlation for everything the request caused")
	assert.Equal(t, first.CorrelationID, first.CausationID, "the request's events are caused by the request")
}

// A failing handler, or an event that cannot be written, rolls everything
// back: no write, no outbox row, no domain event.
func TestCaptureRollsBackOnFailure(t *testing.T) {
	t.Parallel()
	for name, cmd := range map[string]placeOrder{
		"handler error":     {ID: "o-2", Fail: true},
		"event not encoded": {ID: "o-3", Bad: true},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			f := newCaptureFixture(t)
			_, err := mediator.Send(t.Context(), f.m, cmd)
			require.Error(t, err)
			if cmd.Fail {
				require.ErrorIs(t, err, errRefused)
			}
			assert.False(t, f.repo.has(cmd.ID))
			assert.Empty(t, f.rows(t))
			select {
			case <-f.sawCommit:
				t.Fatal("a domain event was dispatched for a rolled-back command")
			default:
			}
		})
	}
}

// A request handled as the consequence of an incoming event continues that
// event's correlation.
func TestCaptureContinuesTheContextLineage(t *testing.T) {
	t.Parallel()
	f := newCaptureFixture(t)
	ctx := events.WithLineage(t.Context(), events.Lineage{CorrelationID: "corr-1", CausationID: "event-0"})
	_, err := mediator.Send(ctx, f.m, placeOrder{ID: "o-4"})
	require.NoError(t, err)
	<-f.sawCommit
	rows := f.rows(t)
	require.Len(t, rows, 2)
	for _, r := range rows {
		assert.Equal(t, "corr-1", r.Envelope.CorrelationID)
		assert.Equal(t, "event-0", r.Envelope.CausationID)
	}
}

func TestNewCaptureReportsEveryMissingArgument(t *testing.T) {
	t.Parallel()
	_, err := outbox.NewCapture(nil, nil, nil)
	require.ErrorIs(t, err, outbox.ErrInvalidConfig)
	assert.Contains(t, err.Error(), "Transactor")
	assert.Contains(t, err.Error(), "Adder")
}

// With capture, a notification event bound to an in-process handler is
// not handled by the Send that emitted it: it reaches the handler through
// the relay, once, after the commit.
func TestCapturedNotificationsReachInProcessHandlersThroughTheRelay(t *testing.T) {
	t.Parallel()
	type shipped struct{ ID string }
	type ship struct{ requests.Returns[int] }
	store := outbox.NewMemoryStore(outbox.MemoryOptions{})
	c, err := outbox.NewCapture(outbox.MemoryTransactor{}, store, nil)
	require.NoError(t, err)
	var handled []string
	var mu sync.Mutex
	m, err := bootstrap.Bootstrap(nil, bootstrap.WithOutbox(c),
		bootstrap.WithCommands(func(r *requests.Map) {
			requests.BindHandler(r, requests.Func(func(context.Context, ship) (int, []events.Event, error) {
				return 1, []events.Event{events.NewNotification("shipped", shipped{ID: "s-1"})}, nil
			}))
		}),
		bootstrap.WithDomainEvents(func(m *events.Map) {
			events.BindHandler(m, events.HandlerFunc[events.Notification[shipped]](func(_ context.Context, n events.Notification[shipped]) ([]events.Event, error) {
				mu.Lock()
				handled = append(handled, n.Payload.ID)
				mu.Unlock()
				return nil, nil
			}))
		}))
	require.NoError(t, err)
	_, err = mediator.Send(t.Context(), m, ship{})
	require.NoError(t, err)
	mu.Lock()
	assert.Empty(t, handled, "not handled before the relay sends it")
	mu.Unlock()

	var reg wire.Registry
	require.NoError(t, wire.Register[shipped](&reg, "shipped"))
	dec, err := wire.NewDecoder(&reg, wire.DecoderOptions{})
	require.NoError(t, err)
	var lineage events.Lineage
	sender := outbox.InProcessSender(outbox.Decode(dec, func(ctx context.Context, ev events.Event) error {
		lineage, _ = events.LineageFrom(ctx)
		return m.Events().Send(ctx, ev)
	}))
	rows, err := store.Claim(t.Context(), "relay", 10, time.Minute)
	require.NoError(t, err)
	require.Len(t, rows, 1)
	require.NoError(t, sender.Send(t.Context(), []wire.Envelope{rows[0].Envelope}))
	mu.Lock()
	assert.Equal(t, []string{"s-1"}, handled)
	mu.Unlock()
	assert.Equal(t, rows[0].Envelope.CorrelationID, lineage.CorrelationID, "the consumer continues the correlation")
	assert.Equal(t, rows[0].Envelope.ID.String(), lineage.CausationID, "the received event is the cause of what follows")
}

// Decode: an unknown name is nobody's event here (sent, holds nothing
// back); a malformed body is a permanent failure.
func TestDecodeSkipsUnknownNamesAndRejectsMalformedBodies(t *testing.T) {
	t.Parallel()
	type known struct{ N int }
	var reg wire.Registry
	require.NoError(t, wire.Register[known](&reg, "known"))
	dec, err := wire.NewDecoder(&reg, wire.DecoderOptions{})
	require.NoError(t, err)
	calls := 0
	deliver := outbox.Decode(dec, func(context.Context, events.Event) error { calls++; return nil })
	enc := &wire.Encoder{}
	unknown, err := enc.Encode(events.NewNotification("unknown", known{1}))
	require.NoError(t, err)
	require.NoError(t, deliver(t.Context(), unknown))
	bad, err := enc.Encode(events.NewNotification("known", known{1}))
	require.NoError(t, err)
	bad.Payload = []byte(`{"event_id":`)
	require.ErrorIs(t, deliver(t.Context(), bad), outbox.ErrPermanent)
	good, err := enc.Encode(events.NewNotification("known", known{2}))
	require.NoError(t, err)
	require.NoError(t, deliver(t.Context(), good))
	assert.Equal(t, 1, calls)
}
