package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/gocqrs/cqrs/mediator"
)

// placeOrderBody is the JSON body of POST /orders.
type placeOrderBody struct {
	SKU      string `json:"sku"`
	Quantity int    `json:"quantity"`
	Card     string `json:"card"`
}

// placedBody is the JSON answer of POST /orders.
type placedBody struct {
	ID string `json:"id"`
}

type errorBody struct {
	Error string `json:"error"`
}

// api is the orders service's HTTP side:
//
//	POST /orders                 {"sku": "book", "quantity": 2, "card": "4242-4242-4242-4242"} → 201 {"id": "…"}
//	GET  /orders/{id}            the order
//	GET  /orders/{id}/progress   the order's steps as server-sent events, until it ends
type api struct {
	s   *ordersService
	mux *http.ServeMux
	log *slog.Logger
	// streams is done once the server shuts down; it ends every progress
	// stream.
	streams     context.Context
	stopStreams context.CancelFunc
}

func newAPI(s *ordersService) *api {
	a := &api{s: s, mux: http.NewServeMux(), log: s.opts.Logger}
	a.streams, a.stopStreams = context.WithCancel(context.Background())
	a.mux.HandleFunc("POST /orders", a.placeOrder)
	a.mux.HandleFunc("GET /orders/{id}", a.getOrder)
	a.mux.HandleFunc("GET /orders/{id}/progress", a.progress)
	return a
}

// serve serves the API on addr until ctx is done, then shuts down
// gracefully; ready is told the address it listens on.
func (a *api) serve(ctx context.Context, addr string, ready func(net.Addr)) error {
	defer a.stopStreams()
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           a.mux,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       time.Minute,
		ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelWarn),
	}
	srv.RegisterOnShutdown(a.stopStreams)
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	a.log.Info("orders API listening", "addr", ln.Addr().String())
	if ready != nil {
		ready(ln.Addr())
	}
	select {
	case err := <-serveErr:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	err = srv.Shutdown(sctx)
	if serr := <-serveErr; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	return err
}

func (a *api) placeOrder(w http.ResponseWriter, r *http.Request) {
	var body placeOrderBody
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&body); err != nil {
		writeJSON(w, http.StatusBadRequest, errorBody{Error: "invalid JSON body: " + err.Error()})
		return
	}
	id, err := mediator.Send(r.Context(), a.s.m, PlaceOrder{SKU: body.SKU, Quantity: body.Quantity, Card: body.Card})
	if err != nil {
		a.fail(w, r, err)
		return
	}
	a.s.tl.add("orders", "orders outbox", id, "order row and %s committed together", evOrderPlaced)
	w.Header().Set("Location", "/orders/"+id)
	writeJSON(w, http.StatusCreated, placedBody{ID: id})
}

func (a *api) getOrder(w http.ResponseWriter, r *http.Request) {
	o, err := mediator.Send(r.Context(), a.s.m, GetOrder{ID: r.PathValue("id")})
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, o)
}

// progress streams the order's steps as server-sent events, one
// "data: <json>" frame per step, and ends once the order has; an unknown
// order is a plain 404.
func (a *api) progress(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	stop := context.AfterFunc(a.streams, cancel) // server shutdown
	defer stop()

	rc := http.NewResponseController(w)
	started := false
	for p, err := range mediator.Stream(ctx, a.s.sm, WatchOrder{ID: r.PathValue("id")}) {
		if err != nil {
			if ctx.Err() != nil {
				return // the client left, or the server is shutting down
			}
			if !started {
				a.fail(w, r, err)
				return
			}
			_ = writeEvent(w, rc, "error", errorBody{Error: "internal error"})
			a.log.ErrorContext(ctx, "progress stream failed", "path", r.URL.Path, "err", err)
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
			return // the client is gone
		}
	}
}

func (a *api) fail(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, ErrInvalidOrder):
		writeJSON(w, http.StatusBadRequest, errorBody{Error: err.Error()})
	case errors.Is(err, ErrOrderNotFound):
		writeJSON(w, http.StatusNotFound, errorBody{Error: err.Error()})
	default:
		a.log.ErrorContext(r.Context(), "request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		writeJSON(w, http.StatusInternalServerError, errorBody{Error: "internal error"})
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v) // a client gone away is not our error
}

// writeEvent writes one server-sent event and flushes it.
func writeEvent(w http.ResponseWriter, rc *http.ResponseController, name string, v any) error {
	data, err := json.Marshal(v)
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
