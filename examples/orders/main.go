// Command orders places an order through a mediator and prints how the four
// events emitted by the command are handled: at most three event handlers run
// at once, the fourth waits for a free slot, and Send returns only after all
// four have finished. It then reads the order back with a query.
//
// Run it from the repository root:
//
//	go run ./examples/orders
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"go.uber.org/dig"

	"github.com/gocqrs/cqrs/bootstrap"
	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/mediator"
	"github.com/gocqrs/cqrs/requests"
)

func main() {
	if err := run(context.Background(), os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "orders:", err)
		os.Exit(1)
	}
}

// run is the whole program: it records the timeline in a fresh Timeline.
func run(ctx context.Context, w io.Writer) error {
	return runWith(ctx, w, NewTimeline())
}

// runWith wires the container and the mediator, places an order, prints the
// timeline of its event handlers, then queries the order. Tests call it with
// their own Timeline to inspect what was recorded.
func runWith(ctx context.Context, w io.Writer, tl *Timeline) error {
	c := dig.New()
	if err := errors.Join(
		c.Provide(NewOrderRepo),
		c.Provide(func() *Timeline { return tl }),
	); err != nil {
		return err
	}

	m, err := bootstrap.Bootstrap(c,
		bootstrap.WithCommands(func(r *requests.Map) {
			requests.Bind[PlaceOrder](r, NewPlaceOrderHandler)
		}),
		bootstrap.WithQueries(func(r *requests.Map) {
			requests.Bind[GetOrder](r, NewGetOrderHandler)
		}),
		bootstrap.WithDomainEvents(func(e *events.Map) {
			events.Bind[OrderPlaced](e, NewConfirmOrder)
			events.Bind[InventoryUpdated](e, NewSyncWarehouse)
			events.Bind[AuditLogged](e, NewWriteAudit)
			events.Bind[EmailQueued](e, NewSendEmail)
		}),
		bootstrap.WithMaxConcurrentEventHandlers(3),
	)
	if err != nil {
		return fmt.Errorf("bootstrap: %w", err)
	}

	cmd := PlaceOrder{Customer: "ada@example.com", Item: "book", Quantity: 2}
	fmt.Fprintf(w, "PlaceOrder %s x %d for %s: 4 events, at most 3 event handlers at once\n\n",
		cmd.Item, cmd.Quantity, cmd.Customer)

	tl.Begin()
	id, err := mediator.Send(ctx, m, cmd)
	tl.Returned(fmt.Sprintf("Send returned order %s", id))
	if err != nil {
		return fmt.Errorf("place order: %w", err)
	}
	tl.Print(w)

	view, err := mediator.Send(ctx, m, GetOrder{ID: id})
	if err != nil {
		return fmt.Errorf("get order: %w", err)
	}
	fmt.Fprintf(w, "\nGetOrder %s: %s x %d for %s, status %s\n",
		view.ID, view.Item, view.Quantity, view.Customer, view.Status)
	return nil
}

// ---- Domain -----------------------------------------------------------------

// OrderID identifies an order.
type OrderID string

// Order is what the repository stores.
type Order struct {
	ID       OrderID
	Customer string
	Item     string
	Quantity int
	Status   string
}

// OrderRepo is an in-memory order store. Handlers share it and run
// concurrently, so it locks.
type OrderRepo struct {
	mu     sync.RWMutex
	next   int
	orders map[OrderID]Order
}

// NewOrderRepo returns an empty repository.
func NewOrderRepo() *OrderRepo {
	return &OrderRepo{orders: make(map[OrderID]Order)}
}

// Add stores o under a new ID and returns the ID.
func (r *OrderRepo) Add(o Order) OrderID {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.next++
	o.ID = OrderID(fmt.Sprintf("ord-%d", r.next))
	r.orders[o.ID] = o
	return o.ID
}

// SetStatus changes the status of an order.
func (r *OrderRepo) SetStatus(id OrderID, status string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	o, ok := r.orders[id]
	if !ok {
		return fmt.Errorf("%w: %s", ErrOrderNotFound, id)
	}
	o.Status = status
	r.orders[id] = o
	return nil
}

// Get returns the order with the given ID.
func (r *OrderRepo) Get(id OrderID) (Order, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	o, ok := r.orders[id]
	if !ok {
		return Order{}, fmt.Errorf("%w: %s", ErrOrderNotFound, id)
	}
	return o, nil
}

// Errors returned by the handlers.
var (
	ErrOrderNotFound = errors.New("order not found")
	ErrInvalidOrder  = errors.New("invalid order")
)

// ---- Requests ---------------------------------------------------------------

// PlaceOrder is a command; its handler answers with the new order's ID.
type PlaceOrder struct {
	requests.Returns[OrderID]
	Customer string
	Item     string
	Quantity int
}

// GetOrder is a query; its handler answers with a view of the order.
type GetOrder struct {
	requests.Returns[OrderView]
	ID OrderID
}

// OrderView is the read model GetOrder returns.
type OrderView struct {
	ID       OrderID
	Customer string
	Item     string
	Quantity int
	Status   string
}

// PlaceOrderHandler stores the order and emits four events.
type PlaceOrderHandler struct{ repo *OrderRepo }

// NewPlaceOrderHandler is resolved from the container once, at bootstrap.
func NewPlaceOrderHandler(repo *OrderRepo) *PlaceOrderHandler {
	return &PlaceOrderHandler{repo: repo}
}

// Handle implements requests.Handler[PlaceOrder, OrderID].
func (h *PlaceOrderHandler) Handle(_ context.Context, cmd PlaceOrder) (OrderID, []events.Event, error) {
	if cmd.Quantity < 1 || cmd.Item == "" {
		return "", nil, fmt.Errorf("%w: %d x %q", ErrInvalidOrder, cmd.Quantity, cmd.Item)
	}
	id := h.repo.Add(Order{Customer: cmd.Customer, Item: cmd.Item, Quantity: cmd.Quantity, Status: "placed"})
	return id, []events.Event{
		OrderPlaced{ID: id},
		InventoryUpdated{Item: cmd.Item, Delta: -cmd.Quantity},
		AuditLogged{ID: id, Action: "order placed"},
		EmailQueued{ID: id, To: cmd.Customer},
	}, nil
}

// GetOrderHandler reads an order.
type GetOrderHandler struct{ repo *OrderRepo }

// NewGetOrderHandler is resolved from the container once, at bootstrap.
func NewGetOrderHandler(repo *OrderRepo) *GetOrderHandler {
	return &GetOrderHandler{repo: repo}
}

// Handle implements requests.Handler[GetOrder, OrderView].
func (h *GetOrderHandler) Handle(_ context.Context, q GetOrder) (OrderView, []events.Event, error) {
	o, err := h.repo.Get(q.ID)
	if err != nil {
		return OrderView{}, nil, err
	}
	return OrderView(o), nil, nil
}

// ---- Events and their handlers ----------------------------------------------

// OrderPlaced is emitted when an order is stored.
type OrderPlaced struct{ ID OrderID }

// InventoryUpdated is emitted when stock changes.
type InventoryUpdated struct {
	Item  string
	Delta int
}

// AuditLogged is emitted for the audit trail.
type AuditLogged struct {
	ID     OrderID
	Action string
}

// EmailQueued is emitted when a confirmation email should go out.
type EmailQueued struct {
	ID OrderID
	To string
}

// Each handler simulates I/O of a different length, so the timeline shows
// the three slots being shared.
const (
	confirmDelay   = 50 * time.Millisecond
	warehouseDelay = 70 * time.Millisecond
	auditDelay     = 30 * time.Millisecond
	emailDelay     = 25 * time.Millisecond
)

// ConfirmOrder marks the order confirmed after a simulated payment check.
type ConfirmOrder struct {
	repo *OrderRepo
	tl   *Timeline
}

// NewConfirmOrder is resolved from the container once, at bootstrap.
func NewConfirmOrder(repo *OrderRepo, tl *Timeline) *ConfirmOrder {
	return &ConfirmOrder{repo: repo, tl: tl}
}

// Handle implements events.Handler[OrderPlaced].
func (h *ConfirmOrder) Handle(ctx context.Context, e OrderPlaced) ([]events.Event, error) {
	if err := h.tl.Work(ctx, "ConfirmOrder", "OrderPlaced", confirmDelay); err != nil {
		return nil, err
	}
	return nil, h.repo.SetStatus(e.ID, "confirmed")
}

// SyncWarehouse tells a (simulated) warehouse service about the stock change.
type SyncWarehouse struct{ tl *Timeline }

// NewSyncWarehouse is resolved from the container once, at bootstrap.
func NewSyncWarehouse(tl *Timeline) *SyncWarehouse { return &SyncWarehouse{tl: tl} }

// Handle implements events.Handler[InventoryUpdated].
func (h *SyncWarehouse) Handle(ctx context.Context, _ InventoryUpdated) ([]events.Event, error) {
	return nil, h.tl.Work(ctx, "SyncWarehouse", "InventoryUpdated", warehouseDelay)
}

// WriteAudit writes the audit record to (simulated) storage.
type WriteAudit struct{ tl *Timeline }

// NewWriteAudit is resolved from the container once, at bootstrap.
func NewWriteAudit(tl *Timeline) *WriteAudit { return &WriteAudit{tl: tl} }

// Handle implements events.Handler[AuditLogged].
func (h *WriteAudit) Handle(ctx context.Context, _ AuditLogged) ([]events.Event, error) {
	return nil, h.tl.Work(ctx, "WriteAudit", "AuditLogged", auditDelay)
}

// SendEmail hands the email to a (simulated) mail service.
type SendEmail struct{ tl *Timeline }

// NewSendEmail is resolved from the container once, at bootstrap.
func NewSendEmail(tl *Timeline) *SendEmail { return &SendEmail{tl: tl} }

// Handle implements events.Handler[EmailQueued].
func (h *SendEmail) Handle(ctx context.Context, _ EmailQueued) ([]events.Event, error) {
	return nil, h.tl.Work(ctx, "SendEmail", "EmailQueued", emailDelay)
}

// ---- Timeline -----------------------------------------------------------------

// Kind says what an Entry records.
type Kind string

// The kinds of timeline entries.
const (
	Start    Kind = "start"
	End      Kind = "end"
	Returned Kind = "return"
)

// Entry is one line of the timeline.
type Entry struct {
	At       time.Duration // since Begin
	Kind     Kind
	Handler  string // empty for Returned
	Event    string // the event type, or the text of a Returned entry
	InFlight int    // handlers running after this entry
}

// Timeline records when handlers start and end. Handlers call it from
// several goroutines at once; every entry is taken under one mutex, so the
// recorded order is the order in which things happened.
type Timeline struct {
	mu       sync.Mutex
	t0       time.Time
	inFlight int
	entries  []Entry
}

// NewTimeline returns an empty timeline.
func NewTimeline() *Timeline { return &Timeline{t0: time.Now()} }

// Begin resets the clock; call it just before Send.
func (t *Timeline) Begin() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.t0 = time.Now()
}

// Work records the start of handler, waits d (or until ctx is done) as a
// stand-in for I/O, and records its end.
func (t *Timeline) Work(ctx context.Context, handler, event string, d time.Duration) error {
	t.record(Start, handler, event, +1)
	defer t.record(End, handler, event, -1)
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Returned records that Send returned.
func (t *Timeline) Returned(text string) { t.record(Returned, "", text, 0) }

func (t *Timeline) record(k Kind, handler, event string, delta int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.inFlight += delta
	t.entries = append(t.entries, Entry{
		At: time.Since(t.t0), Kind: k, Handler: handler, Event: event, InFlight: t.inFlight,
	})
}

// Entries returns a copy of the entries, in the order they were recorded.
func (t *Timeline) Entries() []Entry {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]Entry(nil), t.entries...)
}

// Print writes the timeline, one entry a line.
func (t *Timeline) Print(w io.Writer) {
	fmt.Fprintf(w, "%6s  %-6s %-14s %-17s %s\n", "ms", "what", "handler", "event", "in flight")
	for _, e := range t.Entries() {
		ms := e.At.Milliseconds()
		if e.Kind == Returned {
			fmt.Fprintf(w, "%6d  %s\n", ms, e.Event)
			continue
		}
		fmt.Fprintf(w, "%6d  %-6s %-14s %-17s %d\n", ms, e.Kind, e.Handler, e.Event, e.InFlight)
	}
}
