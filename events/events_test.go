package events_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/dig"

	"github.com/gocqrs/cqrs/bootstrap"
	"github.com/gocqrs/cqrs/di"
	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/internal/registry"
	"github.com/gocqrs/cqrs/mediator"
	"github.com/gocqrs/cqrs/requests"
)

type orderPayload struct {
	OrderID string
	Total   int
}

// --- Notification -----------------------------------------------------------

func TestNewNotificationFields(t *testing.T) {
	t.Parallel()
	before := time.Now()

	n := events.NewNotification("order.placed", orderPayload{OrderID: "o-1", Total: 30})

	after := time.Now()
	assert.Equal(t, uuid.Version(7), n.ID.Version())
	assert.Equal(t, uuid.RFC4122, n.ID.Variant())
	assert.Equal(t, "order.placed", n.Name)
	assert.Equal(t, events.DefaultTopic, n.Topic)
	assert.Equal(t, "output_topic", n.Topic)
	assert.Equal(t, orderPayload{OrderID: "o-1", Total: 30}, n.Payload)
	assert.Same(t, time.UTC, n.Timestamp.Location())
	assert.False(t, n.Timestamp.Before(before.Truncate(time.Microsecond)), "timestamp %v before %v", n.Timestamp, before)
	assert.False(t, n.Timestamp.After(after), "timestamp %v after %v", n.Timestamp, after)
}

func TestNotificationIDCarriesCreationTime(t *testing.T) {
	t.Parallel()
	before := time.Now().Add(-time.Millisecond)

	n := events.NewNotification("x", 1)

	sec, nsec := n.ID.Time().UnixTime()
	idTime := time.Unix(sec, nsec)
	assert.False(t, idTime.Before(before.Truncate(time.Millisecond)), "ID time %v, created after %v", idTime, before)
	assert.WithinDuration(t, n.Timestamp, idTime, time.Second)
}

func TestNotificationWithTopicCopies(t *testing.T) {
	t.Parallel()
	orig := events.NewNotification("order.placed", orderPayload{OrderID: "o-2"})

	moved := orig.WithTopic("orders")

	assert.Equal(t, "orders", moved.Topic)
	assert.Equal(t, events.DefaultTopic, orig.Topic, "the original is unchanged")
	assert.Equal(t, orig.ID, moved.ID)
	assert.Equal(t, orig.Name, moved.Name)
	assert.Equal(t, orig.Timestamp, moved.Timestamp)
	assert.Equal(t, orig.Payload, moved.Payload)
}

func TestNotificationImplementsNotificationEvent(t *testing.T) {
	t.Parallel()
	n := events.NewNotification("order.placed", orderPayload{OrderID: "o-3", Total: 7}).WithTopic("t")

	var ne events.NotificationEvent = n

	assert.Equal(t, n.ID, ne.EventID())
	assert.Equal(t, "order.placed", ne.EventName())
	assert.Equal(t, "t", ne.EventTopic())
	assert.Equal(t, n.Timestamp, ne.EventTimestamp())
	assert.Equal(t, orderPayload{OrderID: "o-3", Total: 7}, ne.EventPayload())

	var asEvent events.Event = n
	_, ok := asEvent.(events.NotificationEvent)
	assert.True(t, ok, "a Notification held as an Event is recognised as a NotificationEvent")
}

func TestNotificationIDsAreUniqueAndTimeOrdered(t *testing.T) {
	t.Parallel()
	const n = 2000
	ids := make([]uuid.UUID, n)
	for i := range ids {
		ids[i] = events.NewNotification("tick", i).ID
	}

	seen := make(map[uuid.UUID]bool, n)
	for i, id := range ids {
		require.False(t, seen[id], "duplicate ID %v at %d", id, i)
		seen[id] = true
		if i > 0 {
			require.Negative(t, bytes.Compare(ids[i-1][:], id[:]), "ID %d (%v) does not sort after ID %d (%v)", i, id, i-1, ids[i-1])
		}
	}
}

func TestNotificationIDsAreUniqueAcrossGoroutines(t *testing.T) {
	t.Parallel()
	const goroutines, each = 8, 250
	out := make([][]uuid.UUID, goroutines)
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for range each {
				out[g] = append(out[g], events.NewNotification("tick", g).ID)
			}
		})
	}
	wg.Wait()

	seen := make(map[uuid.UUID]bool, goroutines*each)
	for _, ids := range out {
		for i, id := range ids {
			require.False(t, seen[id], "duplicate ID %v", id)
			seen[id] = true
			if i > 0 {
				require.Negative(t, bytes.Compare(ids[i-1][:], id[:]), "IDs made by one goroutine are ordered")
			}
		}
	}
}

// --- MemoryPublisher --------------------------------------------------------

func TestMemoryPublisherRecordsInOrder(t *testing.T) {
	t.Parallel()
	var p events.MemoryPublisher
	a := events.NewNotification("a", 1)
	b := events.NewNotification("b", 2)
	c := events.NewNotification("c", 3)

	for _, ev := range []events.NotificationEvent{a, b, c} {
		require.NoError(t, p.Publish(t.Context(), ev))
	}

	assert.Equal(t, []events.NotificationEvent{a, b, c}, p.Published())
}

func TestMemoryPublisherTakeEmpties(t *testing.T) {
	t.Parallel()
	var p events.MemoryPublisher
	a := events.NewNotification("a", 1)
	b := events.NewNotification("b", 2)
	require.NoError(t, p.Publish(t.Context(), a))
	require.NoError(t, p.Publish(t.Context(), b))

	taken := p.Take()

	assert.Equal(t, []events.NotificationEvent{a, b}, taken)
	assert.Empty(t, p.Published())
	assert.Empty(t, p.Take())

	c := events.NewNotification("c", 3)
	require.NoError(t, p.Publish(t.Context(), c))
	assert.Equal(t, []events.NotificationEvent{c}, p.Take(), "publishing after Take starts afresh")
	assert.Equal(t, []events.NotificationEvent{a, b}, taken, "taken events are not disturbed by later publishes")
}

func TestMemoryPublisherPublishedCopies(t *testing.T) {
	t.Parallel()
	var p events.MemoryPublisher
	a := events.NewNotification("a", 1)
	require.NoError(t, p.Publish(t.Context(), a))

	got := p.Published()
	got[0] = events.NewNotification("tampered", 0)
	require.NoError(t, p.Publish(t.Context(), events.NewNotification("b", 2)))

	again := p.Published()
	require.Len(t, again, 2)
	assert.Equal(t, events.NotificationEvent(a), again[0], "modifying the copy does not change the publisher")
	assert.Equal(t, "b", again[1].EventName())
	assert.Len(t, p.Published(), 2, "Published does not remove events")
}

func TestMemoryPublisherUsesDeliver(t *testing.T) {
	t.Parallel()
	errRejected := errors.New("rejected")
	var delivered []events.NotificationEvent
	p := &events.MemoryPublisher{
		Deliver: func(ctx context.Context, ev events.NotificationEvent) error {
			assert.Equal(t, "marker", ctx.Value(ctxKey{}))
			delivered = append(delivered, ev)
			if ev.EventName() == "bad" {
				return errRejected
			}
			return nil
		},
	}
	ctx := context.WithValue(t.Context(), ctxKey{}, "marker")
	good := events.NewNotification("good", 1)
	bad := events.NewNotification("bad", 2)

	require.NoError(t, p.Publish(ctx, good))
	require.ErrorIs(t, p.Publish(ctx, bad), errRejected)

	assert.Equal(t, []events.NotificationEvent{good, bad}, delivered)
	assert.Empty(t, p.Published(), "delivered events are not kept")
	assert.Empty(t, p.Take())
}

type ctxKey struct{}

func TestMemoryPublisherCancelledContext(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	delivered := false
	withDeliver := &events.MemoryPublisher{Deliver: func(context.Context, events.NotificationEvent) error {
		delivered = true
		return nil
	}}
	var plain events.MemoryPublisher
	ev := events.NewNotification("late", 1)

	require.ErrorIs(t, plain.Publish(ctx, ev), context.Canceled)
	require.ErrorIs(t, withDeliver.Publish(ctx, ev), context.Canceled)

	assert.Empty(t, plain.Published(), "nothing is recorded when ctx is done")
	assert.False(t, delivered, "Deliver is not called when ctx is done")
}

func TestMemoryPublisherConcurrentPublish(t *testing.T) {
	t.Parallel()
	const goroutines, each = 16, 100
	var p events.MemoryPublisher
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				assert.NoError(t, p.Publish(t.Context(), events.NewNotification(fmt.Sprintf("g%d", g), i)))
				if i%10 == 0 {
					_ = p.Published() // read concurrently with writes
				}
			}
		})
	}
	wg.Wait()

	got := p.Take()
	require.Len(t, got, goroutines*each)
	// Each goroutine's events appear in the order it published them.
	next := make(map[string]int, goroutines)
	for _, ev := range got {
		seq, ok := ev.EventPayload().(int)
		require.True(t, ok)
		require.Equal(t, next[ev.EventName()], seq, "events of %s out of order", ev.EventName())
		next[ev.EventName()]++
	}
	assert.Len(t, next, goroutines)
	assert.Empty(t, p.Published())
}

func TestPublisherFuncCallsFunction(t *testing.T) {
	t.Parallel()
	var got events.NotificationEvent
	var p events.Publisher = events.PublisherFunc(func(_ context.Context, ev events.NotificationEvent) error {
		got = ev
		return nil
	})
	ev := events.NewNotification("f", 1)

	require.NoError(t, p.Publish(t.Context(), ev))

	assert.Equal(t, events.NotificationEvent(ev), got)
}

// --- Bind and BindHandler ---------------------------------------------------

type itemShipped struct{ Item string }

type shipNote struct {
	requests.Returns[string]
	Item string
}

type shipNoteHandler struct{}

func (shipNoteHandler) Handle(_ context.Context, req shipNote) (string, []events.Event, error) {
	return "shipped " + req.Item, []events.Event{itemShipped{Item: req.Item}}, nil
}

// journal records handler calls; it is shared by the handlers of one test.
type journal struct {
	mu      sync.Mutex
	entries []string
}

func (j *journal) add(s string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.entries = append(j.entries, s)
}

func (j *journal) list() []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return append([]string(nil), j.entries...)
}

// namedHandler records its name in the journal.
type namedHandler struct {
	name string
	j    *journal
}

func (h *namedHandler) Handle(_ context.Context, e itemShipped) ([]events.Event, error) {
	h.j.add(h.name + ":" + e.Item)
	return nil, nil
}

func TestHandlersOfOneEventRunInBindOrder(t *testing.T) {
	t.Parallel()
	j := &journal{}
	c := dig.New()
	require.NoError(t, c.Provide(func() *journal { return j }))

	m, err := bootstrap.Bootstrap(c,
		bootstrap.WithCommands(func(r *requests.Map) { requests.BindHandler[shipNote](r, shipNoteHandler{}) }),
		bootstrap.WithDomainEvents(func(e *events.Map) {
			events.Bind[itemShipped](e, func(j *journal) *namedHandler { return &namedHandler{name: "first", j: j} })
			events.BindHandler[itemShipped](e, &namedHandler{name: "second", j: j})
			events.BindHandler(e, events.HandlerFunc[itemShipped](func(_ context.Context, ev itemShipped) ([]events.Event, error) {
				j.add("third:" + ev.Item)
				return nil, nil
			}))
		}),
		bootstrap.WithDomainEvents(func(e *events.Map) {
			// A later mapper appends to the handlers bound by an earlier one.
			events.Bind[itemShipped](e, func(j *journal) (*namedHandler, error) { return &namedHandler{name: "fourth", j: j}, nil })
		}),
		bootstrap.WithConcurrentEventHandling(false),
	)
	require.NoError(t, err)

	res, err := mediator.Send(t.Context(), m, shipNote{Item: "box"})

	require.NoError(t, err)
	assert.Equal(t, "shipped box", res)
	assert.Equal(t, []string{"first:box", "second:box", "third:box", "fourth:box"}, j.list())
}

func TestBindSameHandlerValueTwiceIsReported(t *testing.T) {
	t.Parallel()
	j := &journal{}
	h := &namedHandler{name: "dup", j: j}

	_, err := bootstrap.Bootstrap(nil,
		bootstrap.WithDomainEvents(func(e *events.Map) {
			events.BindHandler[itemShipped](e, h)
			events.BindHandler[itemShipped](e, h)
		}),
	)

	require.ErrorIs(t, err, registry.ErrDuplicate)
	assert.Contains(t, err.Error(), "itemShipped")
	assert.Contains(t, err.Error(), "namedHandler")
}

var sharedHandler = &namedHandler{name: "shared", j: &journal{}}

func TestBindSameHandlerTwiceThroughConstructorsIsReported(t *testing.T) {
	t.Parallel()
	ctor := func() *namedHandler { return sharedHandler }

	_, err := bootstrap.Bootstrap(dig.New(),
		bootstrap.WithDomainEvents(func(e *events.Map) {
			events.Bind[itemShipped](e, ctor)
			events.BindHandler[itemShipped](e, sharedHandler)
		}),
	)

	require.ErrorIs(t, err, registry.ErrDuplicate)
}

func TestBindDistinctValuesOfOneTypeIsFine(t *testing.T) {
	t.Parallel()
	j := &journal{}

	m, err := bootstrap.Bootstrap(nil,
		bootstrap.WithCommands(func(r *requests.Map) { requests.BindHandler[shipNote](r, shipNoteHandler{}) }),
		bootstrap.WithDomainEvents(func(e *events.Map) {
			events.BindHandler[itemShipped](e, &namedHandler{name: "a", j: j})
			events.BindHandler[itemShipped](e, &namedHandler{name: "b", j: j})
		}),
		bootstrap.WithConcurrentEventHandling(false),
	)
	require.NoError(t, err)

	_, err = mediator.Send(t.Context(), m, shipNote{Item: "crate"})

	require.NoError(t, err)
	assert.Equal(t, []string{"a:crate", "b:crate"}, j.list())
}

type itemReturned struct{ Item string }

type returnedOnly struct{}

func (*returnedOnly) Handle(context.Context, itemReturned) ([]events.Event, error) {
	return nil, nil
}

func TestBindHandlerNilIsReported(t *testing.T) {
	t.Parallel()
	for name, h := range map[string]events.Handler[itemShipped]{
		"nil interface":   nil,
		"nil pointer":     (*namedHandler)(nil),
		"nil HandlerFunc": events.HandlerFunc[itemShipped](nil),
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var m events.Map
			events.BindHandler(&m, h)
			assert.Equal(t, 0, m.Len())

			_, err := bootstrap.Bootstrap(nil,
				bootstrap.WithDomainEvents(func(e *events.Map) { events.BindHandler(e, h) }),
			)

			require.Error(t, err)
			assert.Contains(t, err.Error(), "itemShipped")
			assert.Contains(t, err.Error(), "nil handler")
		})
	}
}

func TestBindWrongConstructorIsReported(t *testing.T) {
	t.Parallel()

	_, err := bootstrap.Bootstrap(nil,
		bootstrap.WithDomainEvents(func(e *events.Map) {
			// A handler of itemReturned is not a handler of itemShipped.
			events.Bind[itemShipped](e, func() *returnedOnly { return &returnedOnly{} })
		}),
	)

	require.ErrorIs(t, err, di.ErrInvalidConstructor)
	assert.Contains(t, err.Error(), "itemShipped")
}

func TestEventMapLenCountsEventTypes(t *testing.T) {
	t.Parallel()
	var m events.Map
	j := &journal{}
	assert.Equal(t, 0, m.Len())

	events.BindHandler[itemShipped](&m, &namedHandler{name: "a", j: j})
	events.BindHandler[itemShipped](&m, &namedHandler{name: "b", j: j})
	assert.Equal(t, 1, m.Len(), "several handlers of one type count once")

	events.BindHandler[itemReturned](&m, &returnedOnly{})
	assert.Equal(t, 2, m.Len())

	events.Bind[itemReturned](&m, "not a constructor")
	assert.Equal(t, 2, m.Len(), "an invalid binding is not counted")
}

func TestEventsAreMatchedByExactDynamicType(t *testing.T) {
	t.Parallel()
	j := &journal{}
	em, err := bootstrap.Events(nil,
		bootstrap.WithDomainEvents(func(e *events.Map) {
			events.BindHandler[itemShipped](e, &namedHandler{name: "value", j: j})
		}),
	)
	require.NoError(t, err)

	require.NoError(t, em.Send(t.Context(), itemShipped{Item: "v"}))
	require.ErrorIs(t, em.Send(t.Context(), &itemShipped{Item: "p"}), mediator.ErrHandlerNotFound)

	assert.Equal(t, []string{"value:v"}, j.list())
}

func TestHandlerFuncCallsFunction(t *testing.T) {
	t.Parallel()
	var got itemShipped
	h := events.HandlerFunc[itemShipped](func(_ context.Context, e itemShipped) ([]events.Event, error) {
		got = e
		return []events.Event{itemReturned(e)}, nil
	})

	fus, err := h.Handle(t.Context(), itemShipped{Item: "z"})

	require.NoError(t, err)
	assert.Equal(t, itemShipped{Item: "z"}, got)
	assert.Equal(t, []events.Event{itemReturned{Item: "z"}}, fus)
}

func TestBindSameConstructorTwiceIsReportedBeforeItRuns(t *testing.T) {
	t.Parallel()
	calls := 0
	newHandler := func() events.Handler[dupEvent] {
		calls++
		return events.HandlerFunc[dupEvent](func(context.Context, dupEvent) ([]events.Event, error) { return nil, nil })
	}
	_, err := bootstrap.Bootstrap(nil, bootstrap.WithDomainEvents(func(m *events.Map) {
		events.Bind[dupEvent](m, newHandler)
		events.Bind[dupEvent](m, newHandler)
	}))
	require.ErrorIs(t, err, events.ErrDuplicateBinding)
	require.Zero(t, calls, "the duplicate is found before any constructor runs")
}

type dupEvent struct{}
