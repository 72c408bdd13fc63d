package main

import (
	"errors"

	"github.com/gocqrs/cqrs/events/wire"
)

// The events the services exchange: the orders service publishes to
// "<namespace>.orders", the inventory service to "<namespace>.inventory".
// Every event's key is its order's ID, so the events of one order stay in
// order from outbox to handler.
const (
	evOrderPlaced    = "order.placed"
	evOrderConfirmed = "order.confirmed"
	evOrderCancelled = "order.cancelled"
	evStockReserved  = "stock.reserved"
	evStockRejected  = "stock.rejected"
	evStockReleased  = "stock.released"
)

// OrderPlaced asks the inventory to reserve stock for a new order.
type OrderPlaced struct {
	Order    string `json:"order_id"`
	SKU      string `json:"sku"`
	Quantity int    `json:"quantity"`
}

// OrderConfirmed tells the inventory that the reserved stock is sold.
type OrderConfirmed struct {
	Order string `json:"order_id"`
}

// OrderCancelled tells the inventory to release the order's stock: the
// compensation of the checkout saga.
type OrderCancelled struct {
	Order  string `json:"order_id"`
	Reason string `json:"reason"`
}

// StockReserved reports that the order's stock is held for it.
type StockReserved struct {
	Order    string `json:"order_id"`
	SKU      string `json:"sku"`
	Quantity int    `json:"quantity"`
	Left     int    `json:"left"`
}

// StockRejected reports that the order cannot be served.
type StockRejected struct {
	Order    string `json:"order_id"`
	SKU      string `json:"sku"`
	Quantity int    `json:"quantity"`
	Reason   string `json:"reason"`
}

// StockReleased reports that the order's stock is available again.
type StockReleased struct {
	Order    string `json:"order_id"`
	SKU      string `json:"sku"`
	Quantity int    `json:"quantity"`
}

// newDecoder returns the decoder of every event of the shop; producers and
// consumers share the names.
func newDecoder() (*wire.Decoder, error) {
	var reg wire.Registry
	if err := errors.Join(
		wire.Register[OrderPlaced](&reg, evOrderPlaced),
		wire.Register[OrderConfirmed](&reg, evOrderConfirmed),
		wire.Register[OrderCancelled](&reg, evOrderCancelled),
		wire.Register[StockReserved](&reg, evStockReserved),
		wire.Register[StockRejected](&reg, evStockRejected),
		wire.Register[StockReleased](&reg, evStockReleased),
	); err != nil {
		return nil, err
	}
	return wire.NewDecoder(&reg, wire.DecoderOptions{})
}

// catalog is what the shop sells: price in cents by SKU.
func catalog() map[string]int {
	return map[string]int{
		"bag": 4500, "book": 1200, "candle": 900, "cup": 600, "hat": 2500, "ink": 700,
		"kite": 1900, "lamp": 3500, "map": 1100, "mug": 800, "pen": 300, "tea": 650,
	}
}

// declinedCard is the card number the payment step always declines.
const declinedCard = "4000-0000-0000-0002"
