package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/gocqrs/cqrs/bootstrap"
	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/events/outbox"
	"github.com/gocqrs/cqrs/mediator"
)

// inventoryDDL creates the inventory service's tables. movements is an
// audit trail with no unique constraint, written in the transaction of each
// effect: an effect applied twice would show there.
func inventoryDDL() []string {
	return []string{
		`CREATE TABLE IF NOT EXISTS {s}stock (
			sku TEXT PRIMARY KEY,
			initial INTEGER NOT NULL,
			available INTEGER NOT NULL,
			reserved INTEGER NOT NULL,
			sold INTEGER NOT NULL)`,
		`CREATE TABLE IF NOT EXISTS {s}reservations (
			order_id TEXT PRIMARY KEY,
			sku TEXT NOT NULL,
			quantity INTEGER NOT NULL,
			status TEXT NOT NULL)`,
		`CREATE TABLE IF NOT EXISTS {s}movements (
			order_id TEXT NOT NULL,
			kind TEXT NOT NULL,
			sku TEXT NOT NULL,
			quantity INTEGER NOT NULL)`,
	}
}

// Reservation statuses.
const (
	reservationHeld     = "held"
	reservationSold     = "sold"
	reservationReleased = "released"
	reservationRejected = "rejected"
)

// inventoryService consumes the orders' events, reserves, sells and
// releases stock, and publishes what it did through its own outbox. Every
// event's effects, its inbox record and the events it emits commit in one
// transaction.
type inventoryService struct {
	service
	em *mediator.EventMediator
}

func newInventoryService(ctx context.Context, db *database, opts serviceOptions) (*inventoryService, error) {
	base, err := newService(ctx, "inventory", "orders", db, opts, inventoryDDL())
	if err != nil {
		return nil, err
	}
	s := &inventoryService{service: base}
	capture, err := outbox.NewCapture(db.tx, db.outbox, nil)
	if err != nil {
		return nil, err
	}
	s.em, err = bootstrap.Events(nil,
		bootstrap.WithDomainEvents(func(m *events.Map) {
			events.BindHandler(m, events.HandlerFunc[events.Notification[OrderPlaced]](s.reserve))
			events.BindHandler(m, events.HandlerFunc[events.Notification[OrderConfirmed]](s.sell))
			events.BindHandler(m, events.HandlerFunc[events.Notification[OrderCancelled]](s.release))
		}),
		bootstrap.WithOutbox(capture), // the events handlers emit go to the outbox, in their transaction
		bootstrap.WithLogger(opts.Logger),
	)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// stock is a SKU's stock.
type stock struct {
	SKU                                string
	Initial, Available, Reserved, Sold int
}

// seed adds the SKUs that are not in stock yet.
func (s *inventoryService) seed(ctx context.Context, quantities map[string]int) error {
	return s.db.tx.InTx(ctx, func(ctx context.Context) error {
		for sku, n := range quantities {
			if _, err := s.db.exec(ctx, `INSERT INTO {s}stock (sku, initial, available, reserved, sold) VALUES ($1, $2, $2, 0, 0) ON CONFLICT (sku) DO NOTHING`, sku, n); err != nil {
				return err
			}
		}
		return nil
	})
}

// stocks reads every SKU's stock.
func stocks(ctx context.Context, db *database) ([]stock, error) {
	var out []stock
	err := db.query(ctx, `SELECT sku, initial, available, reserved, sold FROM {s}stock ORDER BY sku`, nil, func(scan func(...any) error) error {
		var st stock
		if err := scan(&st.SKU, &st.Initial, &st.Available, &st.Reserved, &st.Sold); err != nil {
			return err
		}
		out = append(out, st)
		return nil
	})
	return out, err
}

// run runs the consumer, deduplicated by the inbox in each handler's
// transaction, and, if relay, the relay, until ctx is done.
func (s *inventoryService) run(ctx context.Context, tr *transport, relay bool) error {
	return s.consume(ctx, tr, s.em.Send, true, relay)
}

// reserve holds the order's stock, or rejects the order.
func (s *inventoryService) reserve(ctx context.Context, ev events.Notification[OrderPlaced]) ([]events.Event, error) {
	p := ev.Payload
	var left int
	err := s.db.queryRow(ctx, `UPDATE {s}stock SET available = available - $2, reserved = reserved + $2
		WHERE sku = $1 AND available >= $2 RETURNING available`, p.SKU, p.Quantity).Scan(&left)
	if errors.Is(err, sql.ErrNoRows) {
		reason := "out of stock"
		if err := s.db.queryRow(ctx, `SELECT available FROM {s}stock WHERE sku = $1`, p.SKU).Scan(&left); err == nil {
			reason = fmt.Sprintf("out of stock: %d × %s wanted, %d left", p.Quantity, p.SKU, left)
		}
		if err := s.effect(ctx, p.Order, reservationRejected, p.SKU, p.Quantity); err != nil {
			return nil, err
		}
		s.tl.add("inventory", "inventory outbox", p.Order, "%s; %s committed", reason, evStockRejected)
		return []events.Event{notification(s.topic, evStockRejected, p.Order, StockRejected{Order: p.Order, SKU: p.SKU, Quantity: p.Quantity, Reason: reason})}, nil
	}
	if err != nil {
		return nil, err
	}
	if err := s.effect(ctx, p.Order, reservationHeld, p.SKU, p.Quantity); err != nil {
		return nil, err
	}
	s.tl.add("inventory", "inventory outbox", p.Order, "reserved %d × %s (%d left); %s committed", p.Quantity, p.SKU, left, evStockReserved)
	return []events.Event{notification(s.topic, evStockReserved, p.Order, StockReserved{Order: p.Order, SKU: p.SKU, Quantity: p.Quantity, Left: left})}, nil
}

// sell turns the order's reservation into a sale.
func (s *inventoryService) sell(ctx context.Context, ev events.Notification[OrderConfirmed]) ([]events.Event, error) {
	sku, qty, ok, err := s.settle(ctx, ev.Payload.Order, reservationSold)
	if err != nil || !ok {
		return nil, err
	}
	if _, err := s.db.exec(ctx, `UPDATE {s}stock SET reserved = reserved - $2, sold = sold + $2 WHERE sku = $1`, sku, qty); err != nil {
		return nil, err
	}
	s.tl.add("inventory", "", ev.Payload.Order, "sold %d × %s", qty, sku)
	return nil, nil
}

// release gives the order's reserved stock back.
func (s *inventoryService) release(ctx context.Context, ev events.Notification[OrderCancelled]) ([]events.Event, error) {
	order := ev.Payload.Order
	sku, qty, ok, err := s.settle(ctx, order, reservationReleased)
	if err != nil || !ok {
		return nil, err
	}
	if _, err := s.db.exec(ctx, `UPDATE {s}stock SET reserved = reserved - $2, available = available + $2 WHERE sku = $1`, sku, qty); err != nil {
		return nil, err
	}
	s.tl.add("inventory", "inventory outbox", order, "released %d × %s; %s committed", qty, sku, evStockReleased)
	return []events.Event{notification(s.topic, evStockReleased, order, StockReleased{Order: order, SKU: sku, Quantity: qty})}, nil
}

// settle ends a held reservation as sold or released, and records the
// movement; it reports false if the order holds none.
func (s *inventoryService) settle(ctx context.Context, order, to string) (sku string, qty int, ok bool, err error) {
	err = s.db.queryRow(ctx, `UPDATE {s}reservations SET status = $2 WHERE order_id = $1 AND status = $3 RETURNING sku, quantity`,
		order, to, reservationHeld).Scan(&sku, &qty)
	if errors.Is(err, sql.ErrNoRows) {
		s.opts.Logger.WarnContext(ctx, "no stock held for the order", "order", order, "to", to)
		return "", 0, false, nil
	}
	if err != nil {
		return "", 0, false, err
	}
	_, err = s.db.exec(ctx, `INSERT INTO {s}movements (order_id, kind, sku, quantity) VALUES ($1, $2, $3, $4)`, order, to, sku, qty)
	return sku, qty, err == nil, err
}

// effect records a new reservation (held or rejected) and its movement.
func (s *inventoryService) effect(ctx context.Context, order, status, sku string, qty int) error {
	if _, err := s.db.exec(ctx, `INSERT INTO {s}reservations (order_id, sku, quantity, status) VALUES ($1, $2, $3, $4)`, order, sku, qty, status); err != nil {
		return err
	}
	_, err := s.db.exec(ctx, `INSERT INTO {s}movements (order_id, kind, sku, quantity) VALUES ($1, $2, $3, $4)`, order, status, sku, qty)
	return err
}

// notification returns an event of the order, to topic.
func notification[P any](topic, name, order string, payload P) events.Event {
	return events.NewNotification(name, payload).WithTopic(topic).WithKey(order)
}
