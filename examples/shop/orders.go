package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/gocqrs/cqrs/bootstrap"
	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/events/inbox"
	"github.com/gocqrs/cqrs/events/outbox"
	"github.com/gocqrs/cqrs/mediator"
	"github.com/gocqrs/cqrs/mediator/saga"
	"github.com/gocqrs/cqrs/requests"
)

// Order statuses. An order ends confirmed, compensated (payment declined:
// its stock released) or rejected (out of stock).
const (
	statusPlaced      = "placed"
	statusReserved    = "reserved"
	statusPaid        = "paid"
	statusConfirmed   = "confirmed"
	statusCancelling  = "cancelling"
	statusCompensated = "compensated"
	statusRejected    = "rejected"
)

func terminal(status string) bool {
	return status == statusConfirmed || status == statusCompensated || status == statusRejected
}

// Errors of the orders service.
var (
	ErrInvalidOrder  = errors.New("invalid order")
	ErrOrderNotFound = errors.New("order not found")
	ErrDeclined      = errors.New("payment declined")
)

// ordersDDL creates the orders service's tables.
func ordersDDL() []string {
	return []string{
		`CREATE TABLE IF NOT EXISTS {s}orders (
			id TEXT PRIMARY KEY,
			sku TEXT NOT NULL,
			quantity INTEGER NOT NULL,
			amount INTEGER NOT NULL,
			card TEXT NOT NULL,
			status TEXT NOT NULL,
			placed_us BIGINT NOT NULL,
			ended_us BIGINT)`,
		`CREATE INDEX IF NOT EXISTS orders_status ON {s}orders (status)`,
		`CREATE TABLE IF NOT EXISTS {s}order_log (
			order_id TEXT NOT NULL,
			seq INTEGER NOT NULL,
			status TEXT NOT NULL,
			detail TEXT NOT NULL,
			at_us BIGINT NOT NULL,
			PRIMARY KEY (order_id, seq))`,
		`CREATE TABLE IF NOT EXISTS {s}payments (
			key TEXT PRIMARY KEY,
			order_id TEXT NOT NULL,
			amount INTEGER NOT NULL,
			status TEXT NOT NULL)`,
	}
}

// ---- Requests -------------------------------------------------------------------

// PlaceOrder places an order; it answers with the order's ID.
type PlaceOrder struct {
	requests.Returns[string]
	SKU      string
	Quantity int
	Card     string
}

// ConfirmOrder confirms a paid order: the checkout saga's last step.
type ConfirmOrder struct {
	requests.Returns[requests.Unit]
	ID string
}

// CancelOrder cancels a reserved order and asks the inventory to release
// its stock: the compensation of the checkout saga's first step.
type CancelOrder struct {
	requests.Returns[requests.Unit]
	ID, Reason string
}

// GetOrder reads an order.
type GetOrder struct {
	requests.Returns[Order]
	ID string
}

// WatchOrder streams an order's progress until it ends.
type WatchOrder struct {
	requests.Returns[Progress]
	ID string
}

// Order is an order as GET /orders/{id} shows it.
type Order struct {
	ID       string    `json:"id"`
	SKU      string    `json:"sku"`
	Quantity int       `json:"quantity"`
	Amount   int       `json:"amount_cents"`
	Status   string    `json:"status"`
	PlacedAt time.Time `json:"placed_at"`
	EndedAt  time.Time `json:"ended_at,omitzero"`
}

// Progress is one step of an order, as its progress stream shows it.
type Progress struct {
	Seq    int       `json:"seq"`
	Status string    `json:"status"`
	Detail string    `json:"detail"`
	At     time.Time `json:"at"`
}

// checkout is the state of the checkout saga of one order.
type checkout struct {
	Order    string `json:"order_id"`
	SKU      string `json:"sku"`
	Quantity int    `json:"quantity"`
	Amount   int    `json:"amount"`
	Card     string `json:"card"`
}

// ---- The service ----------------------------------------------------------------

// ordersService takes orders over HTTP, publishes order events through its
// outbox, consumes the inventory's events and runs the checkout saga.
type ordersService struct {
	service
	m        *mediator.RequestMediator
	sm       *mediator.StreamingRequestMediator
	em       *mediator.EventMediator
	sagas    *saga.Orchestrator
	checkout *saga.Definition[checkout]
	dedup    inbox.Deduplicator
}

func newOrdersService(ctx context.Context, db *database, opts serviceOptions) (*ordersService, error) {
	base, err := newService(ctx, "orders", "inventory", db, opts, ordersDDL())
	if err != nil {
		return nil, err
	}
	s := &ordersService{
		service: base,
		dedup:   inbox.Deduplicator{Consumer: "orders", Store: db.inbox, Transactor: db.tx},
	}
	capture, err := outbox.NewCapture(db.tx, db.outbox, nil)
	if err != nil {
		return nil, err
	}
	s.m, err = bootstrap.Bootstrap(nil,
		bootstrap.WithCommands(func(r *requests.Map) {
			requests.BindHandler(r, requests.Func(s.placeOrder))
			requests.BindHandler(r, requests.Func(s.confirmOrder))
			requests.BindHandler(r, requests.Func(s.cancelOrder))
		}),
		bootstrap.WithQueries(func(r *requests.Map) {
			requests.BindHandler(r, requests.PlainFunc(s.getOrder))
		}),
		bootstrap.WithOutbox(capture),
		bootstrap.WithLogger(opts.Logger),
	)
	if err != nil {
		return nil, err
	}
	s.sm, err = bootstrap.Streaming(nil,
		bootstrap.WithQueries(func(r *requests.Map) {
			requests.BindStreamHandler(r, requests.StreamHandlerFunc[WatchOrder, Progress](s.watchOrder))
		}),
		bootstrap.WithLogger(opts.Logger),
	)
	if err != nil {
		return nil, err
	}
	s.em, err = bootstrap.Events(nil,
		bootstrap.WithDomainEvents(func(m *events.Map) {
			events.BindHandler(m, events.HandlerFunc[events.Notification[StockReserved]](s.onStockReserved))
			events.BindHandler(m, events.HandlerFunc[events.Notification[StockRejected]](s.onStockRejected))
			events.BindHandler(m, events.HandlerFunc[events.Notification[StockReleased]](s.onStockReleased))
		}),
		bootstrap.WithLogger(opts.Logger),
	)
	if err != nil {
		return nil, err
	}
	s.checkout = s.checkoutSaga()
	s.sagas, err = bootstrap.Sagas(s.m, saga.Options{
		Store:      db.sagas,
		Transactor: db.tx, // each step commits with its checkpoint
		Lease:      10 * time.Second,
		Logger:     opts.Logger,
	}, s.checkout)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// checkoutSaga is the saga an order goes through once its stock is
// reserved: take the payment, then confirm the order. A declined payment
// compensates the reservation: the order is cancelled, and its
// order.cancelled event makes the inventory release the stock.
func (s *ordersService) checkoutSaga() *saga.Definition[checkout] {
	return &saga.Definition[checkout]{
		Name: "checkout",
		Steps: []saga.Step[checkout]{
			{
				Name:   "reserve",
				Action: saga.Do(s.markReserved),
				Compensation: saga.Send(func(c *checkout) CancelOrder {
					return CancelOrder{ID: c.Order, Reason: cancelReason(c.Card)}
				}, nil),
			},
			{
				Name:         "payment",
				Action:       saga.Do(s.charge),
				Compensation: saga.Do(s.refund),
			},
			{
				Name:   "confirm",
				Action: saga.Send(func(c *checkout) ConfirmOrder { return ConfirmOrder{ID: c.Order} }, nil),
			},
		},
	}
}

func cancelReason(card string) string {
	if card == declinedCard {
		return "payment declined"
	}
	return "checkout failed"
}

// run runs the consumer (no inbox at its level: the saga's ID and the
// handlers' Deduplicator drop redeliveries), the saga recoverer and, if
// relay, the relay, until ctx is done.
func (s *ordersService) run(ctx context.Context, tr *transport, relay bool) error {
	return s.consume(ctx, tr, s.em.Send, false, relay, saga.NewRecoverer(s.sagas, 2*time.Second).Run)
}

// ---- Command and query handlers ------------------------------------------------

func (s *ordersService) placeOrder(ctx context.Context, cmd PlaceOrder) (string, []events.Event, error) {
	price, ok := catalog()[cmd.SKU]
	switch {
	case !ok:
		return "", nil, fmt.Errorf("%w: unknown sku %q", ErrInvalidOrder, cmd.SKU)
	case cmd.Quantity < 1 || cmd.Quantity > 1000:
		return "", nil, fmt.Errorf("%w: quantity must be 1 to 1000, got %d", ErrInvalidOrder, cmd.Quantity)
	case cmd.Card == "":
		return "", nil, fmt.Errorf("%w: no card", ErrInvalidOrder)
	}
	id := uuid.Must(uuid.NewV7()).String()
	now := time.Now()
	if _, err := s.db.exec(ctx, `INSERT INTO {s}orders (id, sku, quantity, amount, card, status, placed_us) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
		id, cmd.SKU, cmd.Quantity, price*cmd.Quantity, cmd.Card, statusPlaced, now.UnixMicro()); err != nil {
		return "", nil, err
	}
	if err := s.logStep(ctx, id, statusPlaced, fmt.Sprintf("%d × %s, %s", cmd.Quantity, cmd.SKU, money(price*cmd.Quantity)), now); err != nil {
		return "", nil, err
	}
	return id, []events.Event{notification(s.topic, evOrderPlaced, id, OrderPlaced{Order: id, SKU: cmd.SKU, Quantity: cmd.Quantity})}, nil
}

func (s *ordersService) confirmOrder(ctx context.Context, cmd ConfirmOrder) (requests.Unit, []events.Event, error) {
	ok, err := s.transition(ctx, cmd.ID, statusPaid, statusPaid, statusConfirmed, "confirmed")
	if err != nil || !ok {
		return requests.Unit{}, nil, err
	}
	s.tl.add("checkout saga", "orders outbox", cmd.ID, "order confirmed; %s committed with it", evOrderConfirmed)
	return requests.Unit{}, []events.Event{notification(s.topic, evOrderConfirmed, cmd.ID, OrderConfirmed{Order: cmd.ID})}, nil
}

func (s *ordersService) cancelOrder(ctx context.Context, cmd CancelOrder) (requests.Unit, []events.Event, error) {
	ok, err := s.transition(ctx, cmd.ID, statusReserved, statusPaid, statusCancelling, cmd.Reason+": releasing the stock")
	if err != nil || !ok {
		return requests.Unit{}, nil, err
	}
	s.tl.add("checkout saga", "orders outbox", cmd.ID, "compensating: %s committed (%s)", evOrderCancelled, cmd.Reason)
	return requests.Unit{}, []events.Event{notification(s.topic, evOrderCancelled, cmd.ID, OrderCancelled{Order: cmd.ID, Reason: cmd.Reason})}, nil
}

func (s *ordersService) getOrder(ctx context.Context, q GetOrder) (Order, error) {
	var o Order
	var placed int64
	var ended sql.NullInt64
	err := s.db.queryRow(ctx, `SELECT id, sku, quantity, amount, status, placed_us, ended_us FROM {s}orders WHERE id = $1`, q.ID).
		Scan(&o.ID, &o.SKU, &o.Quantity, &o.Amount, &o.Status, &placed, &ended)
	if errors.Is(err, sql.ErrNoRows) {
		return o, fmt.Errorf("%w: %s", ErrOrderNotFound, q.ID)
	}
	o.PlacedAt = time.UnixMicro(placed).UTC()
	if ended.Valid {
		o.EndedAt = time.UnixMicro(ended.Int64).UTC()
	}
	return o, err
}

// watchOrder yields the order's steps as they are logged, polling the log,
// until the order ends or ctx is done.
func (s *ordersService) watchOrder(ctx context.Context, q WatchOrder, yield func(Progress, []events.Event) bool) ([]events.Event, error) {
	if _, err := s.getOrder(ctx, GetOrder{ID: q.ID}); err != nil {
		return nil, err
	}
	poll := time.NewTicker(s.opts.PollEvery)
	defer poll.Stop()
	last := 0
	for {
		var steps []Progress
		err := s.db.query(ctx, `SELECT seq, status, detail, at_us FROM {s}order_log WHERE order_id = $1 AND seq > $2 ORDER BY seq`,
			[]any{q.ID, last}, func(scan func(...any) error) error {
				var p Progress
				var at int64
				if err := scan(&p.Seq, &p.Status, &p.Detail, &at); err != nil {
					return err
				}
				p.At = time.UnixMicro(at).UTC()
				steps = append(steps, p)
				return nil
			})
		if err != nil {
			return nil, err
		}
		for _, p := range steps {
			last = p.Seq
			if !yield(p, nil) || terminal(p.Status) {
				return nil, nil
			}
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-poll.C:
		}
	}
}

// transition moves an order from one of two statuses to another, and logs
// the step; it reports false if the order was in neither (a step already
// taken).
func (s *ordersService) transition(ctx context.Context, id, from1, from2, to, detail string) (bool, error) {
	now := time.Now()
	var ended any
	if terminal(to) {
		ended = now.UnixMicro()
	}
	n, err := s.db.exec(ctx, `UPDATE {s}orders SET status = $2, ended_us = $3 WHERE id = $1 AND status IN ($4, $5)`,
		id, to, ended, from1, from2)
	if err != nil || n == 0 {
		return false, err
	}
	return true, s.logStep(ctx, id, to, detail, now)
}

func (s *ordersService) logStep(ctx context.Context, id, status, detail string, at time.Time) error {
	_, err := s.db.exec(ctx, `INSERT INTO {s}order_log (order_id, seq, status, detail, at_us)
		SELECT $1, COALESCE(MAX(seq), 0) + 1, CAST($2 AS TEXT), CAST($3 AS TEXT), CAST($4 AS BIGINT) FROM {s}order_log WHERE order_id = $1`,
		id, status, detail, at.UnixMicro())
	return err
}

// ---- The checkout saga's steps ---------------------------------------------------

func (s *ordersService) markReserved(ctx context.Context, c *checkout) error {
	_, err := s.transition(ctx, c.Order, statusPlaced, statusPlaced, statusReserved, fmt.Sprintf("%d × %s reserved", c.Quantity, c.SKU))
	return err
}

// charge is the payment step: it records the payment under the step's
// idempotency key, so a step run again after a crash charges once.
func (s *ordersService) charge(ctx context.Context, c *checkout) error {
	if c.Card == declinedCard {
		s.tl.add("checkout saga", "payments", c.Order, "charge %s: declined", money(c.Amount))
		return saga.Expected(ErrDeclined) // a business outcome: compensated, logged at Info
	}
	if _, err := s.db.exec(ctx, `INSERT INTO {s}payments (key, order_id, amount, status) VALUES ($1, $2, $3, 'charged') ON CONFLICT (key) DO NOTHING`,
		saga.KeyFrom(ctx), c.Order, c.Amount); err != nil {
		return err
	}
	s.tl.add("checkout saga", "payments", c.Order, "charge %s: approved", money(c.Amount))
	_, err := s.transition(ctx, c.Order, statusReserved, statusReserved, statusPaid, "paid "+money(c.Amount))
	return err
}

func (s *ordersService) refund(ctx context.Context, c *checkout) error {
	_, err := s.db.exec(ctx, `UPDATE {s}payments SET status = 'refunded' WHERE order_id = $1`, c.Order)
	return err
}

func money(cents int) string { return fmt.Sprintf("%d.%02d", cents/100, cents%100) }

// ---- Event handlers: what the inventory says --------------------------------------

// onStockReserved starts the order's checkout saga. The saga's ID is the
// order's, so a redelivered event finds it started (saga.ErrExists) and
// is acknowledged; a saga whose process died is finished by a recoverer.
// The saga runs outside any transaction: each step has its own.
func (s *ordersService) onStockReserved(ctx context.Context, ev events.Notification[StockReserved]) ([]events.Event, error) {
	p := ev.Payload
	id, err := uuid.Parse(p.Order)
	if err != nil {
		return nil, outbox.Permanent(fmt.Errorf("order id %q: %w", p.Order, err))
	}
	state := checkout{Order: p.Order}
	if err := s.db.queryRow(ctx, `SELECT sku, quantity, amount, card FROM {s}orders WHERE id = $1`, p.Order).
		Scan(&state.SKU, &state.Quantity, &state.Amount, &state.Card); err != nil {
		return nil, err
	}
	_, err = saga.Execute(ctx, s.sagas, s.checkout, state, saga.WithID(id))
	switch {
	case err == nil, errors.Is(err, saga.ErrCompensated):
		return nil, nil
	case errors.Is(err, saga.ErrExists):
		return nil, nil // a redelivery: the saga runs, or ran, already
	default:
		return nil, err
	}
}

func (s *ordersService) onStockRejected(ctx context.Context, ev events.Notification[StockRejected]) ([]events.Event, error) {
	_, err := s.dedup.Process(ctx, ev.ID, func(ctx context.Context) error {
		_, err := s.transition(ctx, ev.Payload.Order, statusPlaced, statusPlaced, statusRejected, ev.Payload.Reason)
		return err
	})
	return nil, err
}

func (s *ordersService) onStockReleased(ctx context.Context, ev events.Notification[StockReleased]) ([]events.Event, error) {
	_, err := s.dedup.Process(ctx, ev.ID, func(ctx context.Context) error {
		_, err := s.transition(ctx, ev.Payload.Order, statusCancelling, statusCancelling, statusCompensated,
			fmt.Sprintf("%d × %s released", ev.Payload.Quantity, ev.Payload.SKU))
		return err
	})
	return nil, err
}
