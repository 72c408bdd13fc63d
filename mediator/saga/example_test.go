package saga_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/mediator"
	"github.com/gocqrs/cqrs/mediator/saga"
	"github.com/gocqrs/cqrs/requests"
)

// Trip is the state of the booking saga of the examples.
type Trip struct {
	Flight string   `json:"flight"`
	Hotel  string   `json:"hotel"`
	Log    []string `json:"log"`
}

var errNoRooms = errors.New("no rooms left")

func bookTrip(hotelFails bool) *saga.Definition[Trip] {
	return &saga.Definition[Trip]{
		Name: "book-trip",
		Steps: []saga.Step[Trip]{
			{
				Name: "flight",
				Action: saga.Do(func(ctx context.Context, t *Trip) error {
					t.Flight = "LH-123"
					t.Log = append(t.Log, "flight booked")
					return nil
				}),
				Compensation: saga.Do(func(ctx context.Context, t *Trip) error {
					t.Log = append(t.Log, "flight cancelled")
					t.Flight = ""
					return nil
				}),
			},
			{
				Name: "hotel",
				Action: saga.Do(func(ctx context.Context, t *Trip) error {
					if hotelFails {
						return errNoRooms
					}
					t.Hotel = "Grand"
					t.Log = append(t.Log, "hotel booked")
					return nil
				}),
				Compensation: saga.Do(func(ctx context.Context, t *Trip) error {
					t.Log = append(t.Log, "hotel cancelled")
					return nil
				}),
			},
			{
				Name: "confirm",
				Action: saga.Do(func(ctx context.Context, t *Trip) error {
					t.Log = append(t.Log, "confirmed")
					return nil
				}),
			},
		},
	}
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

// A saga whose second step fails: the first is compensated, and the error
// says why, with the step's own error inside.
func Example() {
	trip := bookTrip(true)
	store := saga.NewMemoryStore(saga.MemoryOptions{})
	o, err := saga.New(saga.Options{Store: store, Logger: quiet()}, trip)
	if err != nil {
		panic(err)
	}

	res, err := saga.Execute(context.Background(), o, trip, Trip{})
	fmt.Println("status:", res.Status)
	fmt.Println("log:", strings.Join(res.State.Log, ", "))
	fmt.Println("compensated:", errors.Is(err, saga.ErrCompensated))
	fmt.Println("no rooms:", errors.Is(err, errNoRooms))
	var se *saga.Error
	if errors.As(err, &se) {
		fmt.Println("failed step:", se.FailedStep)
	}
	// Output:
	// status: compensated
	// log: flight booked, flight cancelled
	// compensated: true
	// no rooms: true
	// failed step: hotel
}

// Stream yields each step's result as soon as it is checkpointed.
func ExampleStream() {
	trip := bookTrip(false)
	o, err := saga.New(saga.Options{Store: saga.NewMemoryStore(saga.MemoryOptions{}), Logger: quiet()}, trip)
	if err != nil {
		panic(err)
	}
	for r, err := range saga.Stream(context.Background(), o, trip, Trip{}) {
		if err != nil {
			fmt.Println("saga failed:", err)
			break
		}
		fmt.Printf("%s %s: %s (saga %s)\n", r.Phase, r.Step, r.Outcome, r.Status)
	}
	// Output:
	// forward flight: succeeded (saga running)
	// forward hotel: succeeded (saga running)
	// forward confirm: succeeded (saga completed)
}

// Requests of ExampleSend.
type (
	ChargeCard struct {
		requests.Returns[string]
		Amount int
	}
	RefundCard struct {
		requests.Returns[requests.Unit]
		Payment string
	}
	Payment struct {
		Amount  int    `json:"amount"`
		Payment string `json:"payment"`
	}
)

// A step that sends a request through the mediator: the request is built
// from the state and the response recorded in it, with no type assertion.
// The handler reads the step's idempotency key from its context.
func ExampleSend() {
	var reqs requests.Map
	requests.BindHandler[ChargeCard](&reqs, requests.HandlerFunc[ChargeCard, string](
		func(ctx context.Context, c ChargeCard) (string, []events.Event, error) {
			key := saga.KeyFrom(ctx) // "<saga id>/charge": store it with the charge
			fmt.Println("charging", c.Amount, "with key .../"+key[strings.LastIndex(key, "/")+1:])
			return "pay-1", nil, nil
		}))
	requests.BindHandler[RefundCard](&reqs, requests.HandlerFunc[RefundCard, requests.Unit](
		func(ctx context.Context, r RefundCard) (requests.Unit, []events.Event, error) {
			fmt.Println("refunding", r.Payment)
			return requests.Unit{}, nil, nil
		}))
	m, err := mediator.New(nil, &reqs, nil, mediator.DefaultConfig())
	if err != nil {
		panic(err)
	}

	pay := &saga.Definition[Payment]{
		Name: "pay",
		Steps: []saga.Step[Payment]{
			{
				Name: "charge",
				Action: saga.Send(
					func(p *Payment) ChargeCard { return ChargeCard{Amount: p.Amount} },
					func(p *Payment, id string) { p.Payment = id },
				),
				Compensation: saga.Send(func(p *Payment) RefundCard { return RefundCard{Payment: p.Payment} }, nil),
			},
			{Name: "ship", Action: saga.Do(func(context.Context, *Payment) error { return errors.New("out of stock") })},
		},
	}
	o, err := saga.New(saga.Options{Store: saga.NewMemoryStore(saga.MemoryOptions{}), Mediator: m, Logger: quiet()}, pay)
	if err != nil {
		panic(err)
	}
	res, err := saga.Execute(context.Background(), o, pay, Payment{Amount: 42})
	fmt.Println(res.Status, res.State.Payment, errors.Is(err, saga.ErrCompensated))
	// Output:
	// charging 42 with key .../charge
	// refunding pay-1
	// compensated pay-1 true
}

// A saga interrupted mid-step (its caller gave up) is left running, and
// recovery finishes it.
func ExampleOrchestrator_Recover() {
	ctx, cancel := context.WithCancel(context.Background())
	def := &saga.Definition[Trip]{
		Name: "slow",
		Steps: []saga.Step[Trip]{
			{Name: "one", Action: saga.Do(func(ctx context.Context, t *Trip) error {
				if inv, _ := saga.InvocationFrom(ctx); !inv.Resumed {
					cancel() // the caller goes away while the step runs
					return ctx.Err()
				}
				t.Log = append(t.Log, "one (resumed)")
				return nil
			})},
			{Name: "two", Action: saga.Do(func(ctx context.Context, t *Trip) error {
				t.Log = append(t.Log, "two")
				return nil
			})},
		},
	}
	store := saga.NewMemoryStore(saga.MemoryOptions{})
	o, err := saga.New(saga.Options{Store: store, Logger: quiet()}, def)
	if err != nil {
		panic(err)
	}
	res, err := saga.Execute(ctx, o, def, Trip{})
	fmt.Println(res.Status, errors.Is(err, saga.ErrInterrupted), errors.Is(err, context.Canceled))

	n, err := o.Recover(context.Background())
	fmt.Println("recovered:", n, err)
	snap, err := saga.Load(context.Background(), o, def, res.ID)
	if err != nil {
		panic(err)
	}
	fmt.Println(snap.Record.Status, snap.State.Log)
	// Output:
	// running true true
	// recovered: 1 <nil>
	// completed [one (resumed) two]
}

func ExampleDefinition_Mermaid() {
	fmt.Print(bookTrip(false).Mermaid())
	// Output:
	// sequenceDiagram
	//     participant O as saga book-trip
	//     participant S1 as flight
	//     participant S2 as hotel
	//     participant S3 as confirm
	//     O->>S1: flight
	//     S1-->>O: done, checkpoint
	//     O->>S2: hotel
	//     S2-->>O: done, checkpoint
	//     O->>S3: confirm
	//     alt confirm succeeds
	//         S3-->>O: done, checkpoint: completed
	//     else confirm fails
	//         S3--xO: failed, checkpoint: compensating
	//         O->>S2: compensate hotel, retried with backoff
	//         S2-->>O: done, checkpoint
	//         O->>S1: compensate flight, retried with backoff
	//         S1-->>O: done, checkpoint
	//         Note over O: compensated
	//     end
	//     Note over O,S3: a step that fails is followed by the compensation of the steps before it, in reverse order
}
