// Command http serves orders over HTTP through two mediators built from one
// dig container:
//
//   - POST /orders places an order with mediator.Send on a RequestMediator;
//   - GET /orders/{id} reads it back with a query;
//   - GET /orders/{id}/progress processes the order with mediator.Stream on
//     a StreamingRequestMediator and sends each step to the client as a
//     server-sent event, once the step's event has been handled.
//
// Run it from the repository root, then talk to it with curl:
//
//	go run ./examples/http
//	curl -s -X POST -d '{"item": "book", "quantity": 2}' http://localhost:8080/orders
//	curl -N http://localhost:8080/orders/ord-1/progress
//	curl -s http://localhost:8080/orders/ord-1
//
// Flags: -addr (default :8080) and -step-delay (default 300ms), the time each
// processing step takes. SIGINT or SIGTERM shuts the server down gracefully.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"go.uber.org/dig"

	"github.com/gocqrs/cqrs/bootstrap"
	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/mediator"
	"github.com/gocqrs/cqrs/requests"
)

func main() {
	addr := flag.String("addr", ":8080", "address to listen on")
	stepDelay := flag.Duration("step-delay", defaultStepDelay, "how long each processing step of an order takes")
	flag.Parse()

	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, *addr, config{StepDelay: *stepDelay, Logger: logger})
	stop()
	if err != nil {
		logger.Error("server stopped", "err", err)
		os.Exit(1)
	}
}

// ---- Configuration and server lifetime ----------------------------------------

// Defaults of config.
const (
	defaultStepDelay       = 300 * time.Millisecond
	defaultShutdownTimeout = 10 * time.Second
)

// config is what main (or a test) chooses; every zero field gets a default.
type config struct {
	// StepDelay is how long each processing step of an order takes.
	StepDelay time.Duration
	// Wait, if set, paces the processing instead of StepDelay: the stream
	// handler calls it before each step (1 to len(Steps)) and stops with
	// its error if it returns one. Tests use it to hold a step back.
	Wait Pacer
	// Store holds the orders (a new, empty one by default).
	Store *OrderStore
	// Confirmer sends order confirmations (one that logs them by default).
	Confirmer Confirmer
	// Logger receives the server's and the mediators' logs
	// (slog.Default() by default).
	Logger *slog.Logger
	// ShutdownTimeout bounds the graceful shutdown.
	ShutdownTimeout time.Duration
	// Ready, if set, is called by run with the address it listens on.
	Ready func(net.Addr)
}

func (c config) withDefaults() config {
	if c.StepDelay <= 0 {
		c.StepDelay = defaultStepDelay
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Wait == nil {
		c.Wait = sleep(c.StepDelay)
	}
	if c.Store == nil {
		c.Store = NewOrderStore()
	}
	if c.Confirmer == nil {
		c.Confirmer = logConfirmer{log: c.Logger}
	}
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = defaultShutdownTimeout
	}
	return c
}

// run serves on addr until ctx is done, then shuts down gracefully: it stops
// accepting connections, ends the progress streams (they would otherwise run
// until their clients leave), and waits for the other requests to finish, at
// most cfg.ShutdownTimeout.
func run(ctx context.Context, addr string, cfg config) error {
	cfg = cfg.withDefaults()
	s, err := newServer(cfg)
	if err != nil {
		return err
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       time.Minute,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn),
		// No WriteTimeout: progress streams are long-lived responses.
	}
	srv.RegisterOnShutdown(s.stopStreams)

	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	cfg.Logger.Info("listening", "addr", ln.Addr().String())
	if cfg.Ready != nil {
		cfg.Ready(ln.Addr())
	}

	select {
	case err := <-serveErr:
		return err
	case <-ctx.Done():
	}
	cfg.Logger.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownTimeout)
	defer cancel()
	err = srv.Shutdown(sctx)
	if serr := <-serveErr; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	if err == nil {
		cfg.Logger.Info("stopped")
	}
	return err
}

// ---- HTTP handlers --------------------------------------------------------------

// server is the HTTP side: it decodes requests, calls the mediators and maps
// their results to HTTP. It knows nothing of how orders are handled.
type server struct {
	mux *http.ServeMux
	m   *mediator.RequestMediator
	sm  *mediator.StreamingRequestMediator
	log *slog.Logger

	// streams is done once the server shuts down; it ends every progress
	// stream.
	streams     context.Context
	stopStreams context.CancelFunc
}

// newServer builds the container, both mediators and the routes. It listens
// on nothing: tests serve the handler it returns with httptest.
func newServer(cfg config) (*server, error) {
	cfg = cfg.withDefaults()

	c := dig.New()
	if err := errors.Join(
		c.Provide(func() *OrderStore { return cfg.Store }),
		c.Provide(func() Confirmer { return cfg.Confirmer }),
		c.Provide(func() Pacer { return cfg.Wait }),
	); err != nil {
		return nil, err
	}

	// Commands and queries: one response each.
	m, err := bootstrap.Bootstrap(c,
		bootstrap.WithCommands(func(r *requests.Map) {
			requests.Bind[PlaceOrder](r, NewPlaceOrderHandler)
		}),
		bootstrap.WithQueries(func(r *requests.Map) {
			requests.Bind[GetOrder](r, NewGetOrderHandler)
		}),
		bootstrap.WithDomainEvents(func(e *events.Map) {
			events.Bind[OrderPlaced](e, NewSendConfirmation)
		}),
		bootstrap.WithLogger(cfg.Logger),
	)
	if err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}

	// Stream requests: a sequence of items, the events of each handled
	// before the item reaches the client.
	sm, err := bootstrap.Streaming(c,
		bootstrap.WithCommands(func(r *requests.Map) {
			requests.BindStream[ProcessOrder](r, NewProcessOrderHandler)
		}),
		bootstrap.WithDomainEvents(func(e *events.Map) {
			events.Bind[StepCompleted](e, NewRecordStep)
		}),
		bootstrap.WithLogger(cfg.Logger),
	)
	if err != nil {
		return nil, fmt.Errorf("bootstrap streaming: %w", err)
	}

	s := &server{mux: http.NewServeMux(), m: m, sm: sm, log: cfg.Logger}
	s.streams, s.stopStreams = context.WithCancel(context.Background())
	s.mux.HandleFunc("POST /orders", s.placeOrder)
	s.mux.HandleFunc("GET /orders/{id}", s.getOrder)
	s.mux.HandleFunc("GET /orders/{id}/progress", s.progress)
	return s, nil
}

// ServeHTTP implements http.Handler.
func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// placeOrderBody is the JSON body of POST /orders.
type placeOrderBody struct {
	Item     string `json:"item"`
	Quantity int    `json:"quantity"`
}

// placedBody is the JSON answer of POST /orders.
type placedBody struct {
	ID OrderID `json:"id"`
}

// errorBody is the JSON body of every error answer and error event.
type errorBody struct {
	Error string `json:"error"`
}

func (s *server) placeOrder(w http.ResponseWriter, r *http.Request) {
	var body placeOrderBody
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&body); err != nil {
		writeJSON(w, http.StatusBadRequest, errorBody{Error: "invalid JSON body: " + err.Error()})
		return
	}
	id, err := mediator.Send(r.Context(), s.m, PlaceOrder{Item: body.Item, Quantity: body.Quantity})
	if de, ok := errors.AsType[*mediator.DispatchError](err); ok {
		// The order was placed and id is valid; only the reaction to it
		// (here, the confirmation) failed. The client gets its order.
		s.log.WarnContext(r.Context(), "order placed, but event handling failed", "id", id, "err", de)
		err = nil
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Location", "/orders/"+string(id))
	writeJSON(w, http.StatusCreated, placedBody{ID: id})
}

func (s *server) getOrder(w http.ResponseWriter, r *http.Request) {
	o, err := mediator.Send(r.Context(), s.m, GetOrder{ID: OrderID(r.PathValue("id"))})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, o)
}

// progress streams the processing steps of an order as server-sent events:
// one "data: <json>" frame per step, flushed at once. The status is chosen
// from the first pair the stream yields, so an unknown order is a plain 404;
// an error after the first step becomes an "event: error" frame.
//
// The stream runs with the request's context, so a client that disconnects
// cancels the stream handler's context and processing stops.
func (s *server) progress(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	stop := context.AfterFunc(s.streams, cancel) // server shutdown
	defer stop()

	rc := http.NewResponseController(w)
	id := OrderID(r.PathValue("id"))
	started := false
	for p, err := range mediator.Stream(ctx, s.sm, ProcessOrder{ID: id}) {
		if de, ok := errors.AsType[*mediator.DispatchError](err); ok {
			// p is valid: the step happened, but one of its event
			// handlers failed. Report the step and log the failure.
			s.log.WarnContext(ctx, "order step done, but event handling failed", "id", id, "step", p.Step, "err", de)
			err = nil
		}
		if err != nil {
			s.streamFailed(w, r, rc, started, err)
			return
		}
		if !started {
			h := w.Header()
			h.Set("Content-Type", "text/event-stream")
			h.Set("Cache-Control", "no-cache")
			w.WriteHeader(http.StatusOK)
			started = true
		}
		if err := writeEvent(w, rc, "", p); err != nil {
			// The client is gone. Leaving the loop stops the handler.
			s.log.InfoContext(ctx, "progress stream: write failed", "id", id, "err", err)
			return
		}
	}
}

// streamFailed answers a stream that ended with err.
func (s *server) streamFailed(w http.ResponseWriter, r *http.Request, rc *http.ResponseController, started bool, err error) {
	if r.Context().Err() != nil {
		s.log.InfoContext(r.Context(), "progress stream: client left", "path", r.URL.Path)
		return
	}
	var status int
	var msg string
	if s.streams.Err() != nil {
		status, msg = http.StatusServiceUnavailable, "server shutting down"
	} else {
		status, msg = s.status(r, err)
	}
	if !started {
		writeJSON(w, status, errorBody{Error: msg})
		return
	}
	if err := writeEvent(w, rc, "error", errorBody{Error: msg}); err != nil {
		s.log.InfoContext(r.Context(), "progress stream: write failed", "path", r.URL.Path, "err", err)
	}
}

// fail answers a request whose handler returned err.
func (s *server) fail(w http.ResponseWriter, r *http.Request, err error) {
	status, msg := s.status(r, err)
	writeJSON(w, status, errorBody{Error: msg})
}

// status maps a handler's error to an HTTP status and the message the client
// sees. Errors are told apart by their sentinels, with errors.Is; an
// unexpected error is logged and its text is not shown to the client.
func (s *server) status(r *http.Request, err error) (int, string) {
	switch {
	case errors.Is(err, ErrInvalidOrder):
		return http.StatusBadRequest, err.Error()
	case errors.Is(err, ErrOrderNotFound):
		return http.StatusNotFound, err.Error()
	case errors.Is(err, mediator.ErrHandlerNotFound):
		return http.StatusNotFound, "no handler for this request"
	default:
		s.log.ErrorContext(r.Context(), "request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		return http.StatusInternalServerError, "internal error"
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v) // a client gone away is not our error
}

// writeEvent writes one server-sent event, "event: <name>" (when name is not
// empty) then "data: <v as JSON>", and flushes it to the client.
func writeEvent(w http.ResponseWriter, rc *http.ResponseController, name string, v any) error {
	data, err := json.Marshal(v) // one line: JSON escapes newlines in strings
	if err != nil {
		return err
	}
	frame := make([]byte, 0, len(name)+len(data)+16)
	if name != "" {
		frame = fmt.Appendf(frame, "event: %s\n", name)
	}
	frame = fmt.Appendf(frame, "data: %s\n\n", data)
	if _, err := w.Write(frame); err != nil {
		return err
	}
	return rc.Flush()
}

// ---- Domain ---------------------------------------------------------------------

// OrderID identifies an order.
type OrderID string

// Order is what the store holds.
type Order struct {
	ID       OrderID  `json:"id"`
	Item     string   `json:"item"`
	Quantity int      `json:"quantity"`
	Status   string   `json:"status"`
	Steps    []string `json:"steps"` // the processing steps reached, in order
}

// Errors returned by the handlers; the HTTP layer maps them with errors.Is.
var (
	ErrInvalidOrder  = errors.New("invalid order")
	ErrOrderNotFound = errors.New("order not found")
)

// OrderStore is an in-memory order store, shared by handlers that run
// concurrently, so it locks.
type OrderStore struct {
	mu     sync.Mutex
	next   int
	orders map[OrderID]*Order
}

// NewOrderStore returns an empty store.
func NewOrderStore() *OrderStore {
	return &OrderStore{orders: make(map[OrderID]*Order)}
}

// Add stores a new order and returns its ID.
func (s *OrderStore) Add(item string, quantity int) OrderID {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.next++
	id := OrderID(fmt.Sprintf("ord-%d", s.next))
	s.orders[id] = &Order{ID: id, Item: item, Quantity: quantity, Status: "placed", Steps: []string{}}
	return id
}

// Get returns a copy of the order with the given ID.
func (s *OrderStore) Get(id OrderID) (Order, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	o, ok := s.orders[id]
	if !ok {
		return Order{}, fmt.Errorf("%w: %s", ErrOrderNotFound, id)
	}
	c := *o
	c.Steps = append([]string{}, o.Steps...)
	return c, nil
}

// RecordStep records that the order reached processing step n (from 1),
// named name. Recording a step already reached changes nothing, so
// processing an order again leaves it as it was.
func (s *OrderStore) RecordStep(id OrderID, n int, name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	o, ok := s.orders[id]
	if !ok {
		return fmt.Errorf("%w: %s", ErrOrderNotFound, id)
	}
	switch {
	case n <= len(o.Steps):
		return nil
	case n > len(o.Steps)+1:
		return fmt.Errorf("order %s: step %d (%s) recorded before step %d", id, n, name, len(o.Steps)+1)
	}
	o.Steps = append(o.Steps, name)
	o.Status = name
	return nil
}

// Confirmer sends the confirmation of a placed order (by email, say).
type Confirmer interface {
	Confirm(ctx context.Context, o Order) error
}

// logConfirmer "sends" confirmations by logging them.
type logConfirmer struct{ log *slog.Logger }

func (c logConfirmer) Confirm(ctx context.Context, o Order) error {
	c.log.InfoContext(ctx, "confirmation sent", "id", o.ID, "item", o.Item, "quantity", o.Quantity)
	return nil
}

// Pacer is called by the stream handler before each processing step and
// returns when the step may run, or an error to stop processing.
type Pacer func(ctx context.Context, step int) error

// sleep returns a Pacer that gives each step d, or less if ctx is done.
func sleep(d time.Duration) Pacer {
	return func(ctx context.Context, _ int) error {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// ---- Commands and queries ------------------------------------------------------

// PlaceOrder is a command; its handler answers with the new order's ID.
type PlaceOrder struct {
	requests.Returns[OrderID]
	Item     string
	Quantity int
}

// OrderPlaced is emitted when an order is stored.
type OrderPlaced struct{ ID OrderID }

// PlaceOrderHandler validates and stores an order.
type PlaceOrderHandler struct{ store *OrderStore }

// NewPlaceOrderHandler is resolved from the container once, at bootstrap.
func NewPlaceOrderHandler(store *OrderStore) *PlaceOrderHandler {
	return &PlaceOrderHandler{store: store}
}

// Handle implements requests.Handler[PlaceOrder, OrderID].
func (h *PlaceOrderHandler) Handle(_ context.Context, cmd PlaceOrder) (OrderID, []events.Event, error) {
	switch {
	case cmd.Item == "":
		return "", nil, fmt.Errorf("%w: item is empty", ErrInvalidOrder)
	case cmd.Quantity < 1:
		return "", nil, fmt.Errorf("%w: quantity must be at least 1, got %d", ErrInvalidOrder, cmd.Quantity)
	}
	id := h.store.Add(cmd.Item, cmd.Quantity)
	return id, []events.Event{OrderPlaced{ID: id}}, nil
}

// SendConfirmation confirms a placed order.
type SendConfirmation struct {
	store     *OrderStore
	confirmer Confirmer
}

// NewSendConfirmation is resolved from the container once, at bootstrap.
func NewSendConfirmation(store *OrderStore, confirmer Confirmer) *SendConfirmation {
	return &SendConfirmation{store: store, confirmer: confirmer}
}

// Handle implements events.Handler[OrderPlaced].
func (h *SendConfirmation) Handle(ctx context.Context, e OrderPlaced) ([]events.Event, error) {
	o, err := h.store.Get(e.ID)
	if err != nil {
		return nil, err
	}
	return nil, h.confirmer.Confirm(ctx, o)
}

// GetOrder is a query; its handler answers with the order.
type GetOrder struct {
	requests.Returns[Order]
	ID OrderID
}

// GetOrderHandler reads an order.
type GetOrderHandler struct{ store *OrderStore }

// NewGetOrderHandler is resolved from the container once, at bootstrap.
func NewGetOrderHandler(store *OrderStore) *GetOrderHandler {
	return &GetOrderHandler{store: store}
}

// Handle implements requests.Handler[GetOrder, Order].
func (h *GetOrderHandler) Handle(_ context.Context, q GetOrder) (Order, []events.Event, error) {
	o, err := h.store.Get(q.ID)
	return o, nil, err
}

// ---- The stream request ---------------------------------------------------------

// Steps are the processing steps of an order, in order.
var Steps = []string{"validated", "reserved", "charged", "packed", "shipped"}

// ProcessOrder is a stream request: its handler processes the order and
// yields a Progress item per step.
type ProcessOrder struct {
	requests.Returns[Progress]
	ID OrderID
}

// Progress is one item of the stream, sent to the client as one event.
type Progress struct {
	OrderID OrderID `json:"order_id"`
	Step    int     `json:"step"` // 1 to Of
	Of      int     `json:"of"`
	Name    string  `json:"name"`
}

// StepCompleted is emitted with each Progress item; the mediator dispatches
// it before the item reaches the client.
type StepCompleted struct {
	ID   OrderID
	Step int
	Name string
}

// ProcessOrderHandler runs the processing steps of an order.
type ProcessOrderHandler struct {
	store *OrderStore
	wait  Pacer
}

// NewProcessOrderHandler is resolved from the container once, at bootstrap.
func NewProcessOrderHandler(store *OrderStore, wait Pacer) *ProcessOrderHandler {
	return &ProcessOrderHandler{store: store, wait: wait}
}

// Stream implements requests.StreamHandler[ProcessOrder, Progress]. It is a
// plain loop: each yield hands one item and its event to the mediator, which
// handles the event, then passes the item to the consumer, and returns false
// once the consumer has gone.
func (h *ProcessOrderHandler) Stream(ctx context.Context, req ProcessOrder, yield func(Progress, []events.Event) bool) ([]events.Event, error) {
	if _, err := h.store.Get(req.ID); err != nil {
		return nil, err // before any item: the client gets a 404
	}
	for i, name := range Steps {
		step := i + 1
		if err := h.wait(ctx, step); err != nil {
			return nil, fmt.Errorf("order %s, step %d (%s): %w", req.ID, step, name, err)
		}
		p := Progress{OrderID: req.ID, Step: step, Of: len(Steps), Name: name}
		if !yield(p, []events.Event{StepCompleted{ID: req.ID, Step: step, Name: name}}) {
			return nil, nil
		}
	}
	return nil, nil
}

// RecordStep records each completed step in the store.
type RecordStep struct{ store *OrderStore }

// NewRecordStep is resolved from the container once, at bootstrap.
func NewRecordStep(store *OrderStore) *RecordStep { return &RecordStep{store: store} }

// Handle implements events.Handler[StepCompleted].
func (h *RecordStep) Handle(_ context.Context, e StepCompleted) ([]events.Event, error) {
	return nil, h.store.RecordStep(e.ID, e.Step, e.Name)
}
