package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestMain fails the package if a test leaves a goroutine behind: every
// stream handler must have returned once its server is closed.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// hangGuard bounds every wait, so a broken stream fails the test instead of
// hanging it. It is never used to let something happen.
const hangGuard = 10 * time.Second

// gate paces the stream handler from the test: the handler announces the
// step it is about to run on asked, and runs it only once the test sends a
// value on release. If the request's context is done first, the handler
// reports the step on stopped and gives up, unless the gate ignores the
// context: then it still waits for release, or for the end of the test.
type gate struct {
	asked     chan int
	release   chan struct{}
	stopped   chan int
	ignoreCtx bool
	abort     <-chan struct{}
}

func newGate(t *testing.T) *gate {
	t.Helper()
	return &gate{
		asked:   make(chan int, 16),
		release: make(chan struct{}, 16),
		stopped: make(chan int, 16),
		abort:   t.Context().Done(), // done before the cleanups run
	}
}

func (g *gate) wait(ctx context.Context, step int) error {
	g.asked <- step
	select {
	case <-g.release:
		return nil
	case <-ctx.Done():
		g.stopped <- step
		if !g.ignoreCtx {
			return ctx.Err()
		}
	}
	select {
	case <-g.release:
		return nil
	case <-g.abort:
		return errors.New("test over")
	}
}

// recv receives from c, failing the test after hangGuard.
func recv[T any](t *testing.T, c <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-c:
		return v
	case <-time.After(hangGuard):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// syncBuffer is a log destination the test can read while the server
// writes to it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// start serves newServer(cfg), wrapped in wrap if given, with httptest and
// returns the server and the store. Closing the server (at cleanup, or
// earlier) waits for every handler to return; the streams are stopped first
// so that a failing test cannot leave a handler waiting.
func start(t *testing.T, cfg config, wrap ...func(http.Handler) http.Handler) (*httptest.Server, *OrderStore) {
	t.Helper()
	if cfg.Store == nil {
		cfg.Store = NewOrderStore()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s, err := newServer(cfg)
	if err != nil {
		t.Fatalf("newServer: %v", err)
	}
	var h http.Handler = s
	for _, w := range wrap {
		h = w(h)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	t.Cleanup(s.stopStreams) // runs before srv.Close
	return srv, cfg.Store
}

// post sends body to POST /orders and returns the status and decoded body.
func post(ctx context.Context, t *testing.T, c *http.Client, base, body string) (int, map[string]string) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/orders", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("POST /orders: %v", err)
	}
	defer func() { _ = resp.Body.Close() }()
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("POST /orders: Content-Type %q, want application/json", ct)
	}
	var out map[string]string
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("POST /orders: decode answer: %v", err)
	}
	return resp.StatusCode, out
}

// placeOrder places an order and returns its ID.
func placeOrder(ctx context.Context, t *testing.T, c *http.Client, base string) OrderID {
	t.Helper()
	status, body := post(ctx, t, c, base, `{"item": "book", "quantity": 2}`)
	if status != http.StatusCreated || body["id"] == "" {
		t.Fatalf("POST /orders = %d %v, want 201 with an id", status, body)
	}
	return OrderID(body["id"])
}

// openProgress starts GET /orders/{id}/progress and returns the response,
// whose body the caller closes.
func openProgress(ctx context.Context, t *testing.T, c *http.Client, base string, id OrderID) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/orders/"+string(id)+"/progress", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET progress: %v", err)
	}
	return resp
}

// checkEventStream checks the headers of a server-sent event stream.
func checkEventStream(t *testing.T, resp *http.Response) {
	t.Helper()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, want 200", resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("Content-Type %q, want text/event-stream", ct)
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "no-cache" {
		t.Errorf("Cache-Control %q, want no-cache", cc)
	}
}

// frame is one server-sent event.
type frame struct {
	event string // empty for a plain data frame
	data  string
}

// readFrame reads the next event from r: lines up to a blank line. It
// returns io.EOF at the end of the stream.
func readFrame(r *bufio.Reader) (frame, error) {
	var f frame
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			if err == io.EOF && line == "" && f == (frame{}) {
				return f, io.EOF
			}
			return f, errors.Join(errors.New("incomplete frame"), err)
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "":
			if f != (frame{}) {
				return f, nil
			}
		case strings.HasPrefix(line, "event: "):
			f.event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			f.data += strings.TrimPrefix(line, "data: ")
		default:
			return f, errors.New("unexpected line " + line)
		}
	}
}

// readProgress reads a frame that must be a Progress item.
func readProgress(t *testing.T, r *bufio.Reader) Progress {
	t.Helper()
	f, err := readFrame(r)
	if err != nil {
		t.Fatalf("read frame: %v", err)
	}
	if f.event != "" {
		t.Fatalf("got event %q (data %s), want a data frame", f.event, f.data)
	}
	var p Progress
	if err := json.Unmarshal([]byte(f.data), &p); err != nil {
		t.Fatalf("frame data %q: %v", f.data, err)
	}
	return p
}

// readEOF checks that the stream has ended.
func readEOF(t *testing.T, r *bufio.Reader) {
	t.Helper()
	if f, err := readFrame(r); !errors.Is(err, io.EOF) {
		t.Fatalf("after the last frame: got %+v, %v; want the end of the stream", f, err)
	}
}

// writeObserver shows the test each chunk the handler writes, before it is
// written. Unwrap lets http.ResponseController reach the flusher.
type writeObserver struct {
	http.ResponseWriter
	onWrite func([]byte)
}

func (w writeObserver) Write(p []byte) (int, error) {
	w.onWrite(p)
	return w.ResponseWriter.Write(p)
}

func (w writeObserver) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// atWrite is what the store held when the frame of a step was written.
type atWrite struct{ step, recorded int }

// observeFrames reports, on c, the number of steps store has recorded at the
// moment the frame of each step is written: on the server's goroutine,
// inside the consumer's loop body, before the stream handler goes on.
func observeFrames(store *OrderStore, c chan<- atWrite) func(http.Handler) http.Handler {
	return func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			h.ServeHTTP(writeObserver{w, func(b []byte) {
				data, ok := bytes.CutPrefix(b, []byte("data: "))
				var p Progress
				if !ok || json.Unmarshal(bytes.TrimSpace(data), &p) != nil || p.Step == 0 {
					return
				}
				o, err := store.Get(p.OrderID)
				if err != nil {
					return
				}
				c <- atWrite{step: p.Step, recorded: len(o.Steps)}
			}}, r)
		})
	}
}

// steps returns the steps the store has recorded for id.
func steps(t *testing.T, store *OrderStore, id OrderID) []string {
	t.Helper()
	o, err := store.Get(id)
	if err != nil {
		t.Fatal(err)
	}
	return o.Steps
}

// TestProgressStepByStep holds each step back until the client has read the
// previous one: item n reaches the client before item n+1 is produced, and
// the event of step n has been handled before item n is written (the store
// shows exactly n recorded steps when the frame is written, and still when
// the client reads it).
func TestProgressStepByStep(t *testing.T) {
	t.Parallel()
	g := newGate(t)
	store := NewOrderStore()
	written := make(chan atWrite, 16)
	srv, _ := start(t, config{Wait: g.wait, Store: store}, observeFrames(store, written))
	ctx, cancel := context.WithTimeout(t.Context(), hangGuard)
	defer cancel()
	id := placeOrder(ctx, t, srv.Client(), srv.URL)

	g.release <- struct{}{} // step 1 may run; the headers come with its item
	resp := openProgress(ctx, t, srv.Client(), srv.URL, id)
	defer func() { _ = resp.Body.Close() }()
	checkEventStream(t, resp)
	if got := recv(t, g.asked, "step 1 to be asked"); got != 1 {
		t.Fatalf("first step asked is %d, want 1", got)
	}
	r := bufio.NewReader(resp.Body)

	for n := 1; n <= len(Steps); n++ {
		if n > 1 {
			g.release <- struct{}{} // the client has read item n-1: step n may run
		}
		p := readProgress(t, r)
		want := Progress{OrderID: id, Step: n, Of: len(Steps), Name: Steps[n-1]}
		if p != want {
			t.Fatalf("item %d = %+v, want %+v", n, p, want)
		}
		// (b) The event of step n was handled before item n was written.
		if w := recv(t, written, "the frame to be written"); w != (atWrite{n, n}) {
			t.Fatalf("when the frame of step %d was written the store had %d steps, want %d", w.step, w.recorded, n)
		}
		if got := steps(t, store, id); !slices.Equal(got, Steps[:n]) {
			t.Fatalf("when item %d arrived the store had %v, want %v", n, got, Steps[:n])
		}
		// (a) Item n arrived while step n+1 is held: the handler is
		// waiting to produce it and cannot have done so.
		if n < len(Steps) {
			if got := recv(t, g.asked, "the next step to be asked"); got != n+1 {
				t.Fatalf("after item %d the handler asks for step %d, want %d", n, got, n+1)
			}
		}
	}
	readEOF(t, r)
	if len(g.asked) != 0 {
		t.Errorf("the handler asked for more steps after the last one")
	}
}

// TestProgressWithStepDelay runs the default pacing with a short delay: the
// items arrive in order and each one's event is handled by the time the
// client reads it.
func TestProgressWithStepDelay(t *testing.T) {
	t.Parallel()
	srv, store := start(t, config{StepDelay: time.Millisecond})
	ctx, cancel := context.WithTimeout(t.Context(), hangGuard)
	defer cancel()
	id := placeOrder(ctx, t, srv.Client(), srv.URL)

	resp := openProgress(ctx, t, srv.Client(), srv.URL, id)
	defer func() { _ = resp.Body.Close() }()
	checkEventStream(t, resp)
	r := bufio.NewReader(resp.Body)
	for n := 1; n <= len(Steps); n++ {
		p := readProgress(t, r)
		if p.Step != n || p.Name != Steps[n-1] {
			t.Fatalf("item %d = %+v", n, p)
		}
		// The handler may already be further on, never behind.
		if got := steps(t, store, id); len(got) < n {
			t.Fatalf("when item %d arrived the store had %v", n, got)
		}
	}
	readEOF(t, r)
	o, err := store.Get(id)
	if err != nil {
		t.Fatal(err)
	}
	if o.Status != "shipped" || !slices.Equal(o.Steps, Steps) {
		t.Errorf("order after the stream: %+v", o)
	}
}

// TestProgressClientDisconnect cancels the request after the first item: the
// handler sees its context done while waiting for step 2 and produces no
// further step.
func TestProgressClientDisconnect(t *testing.T) {
	t.Parallel()
	g := newGate(t)
	srv, store := start(t, config{Wait: g.wait})
	ctx, cancel := context.WithTimeout(t.Context(), hangGuard)
	defer cancel()
	id := placeOrder(ctx, t, srv.Client(), srv.URL)

	reqCtx, disconnect := context.WithCancel(ctx)
	defer disconnect()
	g.release <- struct{}{}
	resp := openProgress(reqCtx, t, srv.Client(), srv.URL, id)
	defer func() { _ = resp.Body.Close() }()
	checkEventStream(t, resp)
	if p := readProgress(t, bufio.NewReader(resp.Body)); p.Step != 1 {
		t.Fatalf("first item = %+v", p)
	}
	recv(t, g.asked, "step 1 to be asked")
	if got := recv(t, g.asked, "step 2 to be asked"); got != 2 {
		t.Fatalf("second step asked is %d", got)
	}

	disconnect()
	_ = resp.Body.Close()
	if got := recv(t, g.stopped, "the handler to see its context done"); got != 2 {
		t.Fatalf("the handler stopped at step %d, want 2", got)
	}
	srv.Close() // waits for the HTTP handler, hence the stream handler, to return
	if len(g.asked) != 0 {
		t.Errorf("the handler asked for step %d after the client left", <-g.asked)
	}
	if got := steps(t, store, id); !slices.Equal(got, Steps[:1]) {
		t.Errorf("recorded steps %v, want %v", got, Steps[:1])
	}
}

// TestProgressClientDisconnectYield disconnects while the handler is not
// watching its context: its next yield returns false, the item and its event
// are dropped, and the handler returns without producing another step.
func TestProgressClientDisconnectYield(t *testing.T) {
	t.Parallel()
	g := newGate(t)
	g.ignoreCtx = true
	srv, store := start(t, config{Wait: g.wait})
	ctx, cancel := context.WithTimeout(t.Context(), hangGuard)
	defer cancel()
	id := placeOrder(ctx, t, srv.Client(), srv.URL)

	reqCtx, disconnect := context.WithCancel(ctx)
	defer disconnect()
	g.release <- struct{}{}
	resp := openProgress(reqCtx, t, srv.Client(), srv.URL, id)
	defer func() { _ = resp.Body.Close() }()
	checkEventStream(t, resp)
	if p := readProgress(t, bufio.NewReader(resp.Body)); p.Step != 1 {
		t.Fatalf("first item = %+v", p)
	}
	recv(t, g.asked, "step 1 to be asked")
	recv(t, g.asked, "step 2 to be asked")

	disconnect()
	_ = resp.Body.Close()
	recv(t, g.stopped, "the server to see the client leave")
	g.release <- struct{}{} // step 2 runs and is yielded after the client left

	closed := make(chan struct{})
	go func() {
		srv.Close() // waits for the handler to return
		close(closed)
	}()
	recv(t, closed, "the handler to return")
	if len(g.asked) != 0 {
		t.Errorf("the handler asked for step %d after yield returned false", <-g.asked)
	}
	if got := steps(t, store, id); !slices.Equal(got, Steps[:1]) {
		t.Errorf("recorded steps %v, want %v: the event of an undelivered item was dispatched", got, Steps[:1])
	}
}

// TestProgressErrorMidStream fails step 3: the client gets items 1 and 2,
// then an error event, then the end of the stream.
func TestProgressErrorMidStream(t *testing.T) {
	t.Parallel()
	errDeclined := errors.New("payment declined")
	srv, store := start(t, config{Wait: func(_ context.Context, step int) error {
		if step == 3 {
			return errDeclined
		}
		return nil
	}})
	ctx, cancel := context.WithTimeout(t.Context(), hangGuard)
	defer cancel()
	id := placeOrder(ctx, t, srv.Client(), srv.URL)

	resp := openProgress(ctx, t, srv.Client(), srv.URL, id)
	defer func() { _ = resp.Body.Close() }()
	checkEventStream(t, resp)
	r := bufio.NewReader(resp.Body)
	for n := 1; n <= 2; n++ {
		if p := readProgress(t, r); p.Step != n {
			t.Fatalf("item %d = %+v", n, p)
		}
	}
	f, err := readFrame(r)
	if err != nil {
		t.Fatalf("read error frame: %v", err)
	}
	var body errorBody
	if f.event != "error" || json.Unmarshal([]byte(f.data), &body) != nil || body.Error == "" {
		t.Fatalf("got %+v, want an error event with a JSON error", f)
	}
	readEOF(t, r)
	if got := steps(t, store, id); !slices.Equal(got, Steps[:2]) {
		t.Errorf("recorded steps %v, want %v", got, Steps[:2])
	}
}

// TestHTTPErrors checks the status codes and JSON bodies of POST /orders and
// of the lookups of an unknown order.
func TestHTTPErrors(t *testing.T) {
	t.Parallel()
	srv, store := start(t, config{})
	ctx, cancel := context.WithTimeout(t.Context(), hangGuard)
	t.Cleanup(cancel) // the parallel subtests run after this function returns
	c := srv.Client()

	t.Run("POST /orders", func(t *testing.T) {
		t.Parallel()
		for _, tc := range []struct {
			name, body string
			status     int
		}{
			{"valid", `{"item": "book", "quantity": 2}`, http.StatusCreated},
			{"malformed JSON", `{"item": "book", "quantity": `, http.StatusBadRequest},
			{"wrong JSON type", `{"item": "book", "quantity": "two"}`, http.StatusBadRequest},
			{"zero quantity", `{"item": "book", "quantity": 0}`, http.StatusBadRequest},
			{"no item", `{"quantity": 1}`, http.StatusBadRequest},
		} {
			status, body := post(ctx, t, c, srv.URL, tc.body)
			if status != tc.status {
				t.Errorf("%s: status %d %v, want %d", tc.name, status, body, tc.status)
				continue
			}
			if status == http.StatusCreated {
				if _, err := store.Get(OrderID(body["id"])); err != nil {
					t.Errorf("%s: answered id %q: %v", tc.name, body["id"], err)
				}
			} else if body["error"] == "" {
				t.Errorf("%s: body %v has no error", tc.name, body)
			}
		}
	})

	for _, path := range []string{"/orders/ord-404", "/orders/ord-404/progress"} {
		t.Run("GET "+path, func(t *testing.T) {
			t.Parallel()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+path, nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = resp.Body.Close() }()
			var body errorBody
			if resp.StatusCode != http.StatusNotFound ||
				resp.Header.Get("Content-Type") != "application/json" ||
				json.NewDecoder(resp.Body).Decode(&body) != nil || body.Error == "" {
				t.Errorf("status %d, Content-Type %q, body %+v; want 404 with a JSON error",
					resp.StatusCode, resp.Header.Get("Content-Type"), body)
			}
		})
	}
}

// failingConfirmer fails every confirmation.
type failingConfirmer struct{}

func (failingConfirmer) Confirm(context.Context, Order) error { return errors.New("mail server down") }

// TestPlaceOrderEventFailure: the order is placed but its confirmation
// fails. The client still gets 201 and the ID; the failure is logged.
func TestPlaceOrderEventFailure(t *testing.T) {
	t.Parallel()
	var logs syncBuffer
	srv, store := start(t, config{
		Confirmer: failingConfirmer{},
		Logger:    slog.New(slog.NewTextHandler(&logs, nil)),
	})
	ctx, cancel := context.WithTimeout(t.Context(), hangGuard)
	defer cancel()

	id := placeOrder(ctx, t, srv.Client(), srv.URL)
	if _, err := store.Get(id); err != nil {
		t.Fatalf("answered id %q: %v", id, err)
	}
	if out := logs.String(); !strings.Contains(out, "event handling failed") || !strings.Contains(out, "mail server down") {
		t.Errorf("the failure was not logged:\n%s", out)
	}
}

// TestRunGracefulShutdown serves on a real port with run, cancels its
// context while a progress stream is open, and checks that the stream ends
// with an error event and that run returns without error.
func TestRunGracefulShutdown(t *testing.T) {
	t.Parallel()
	g := newGate(t)
	ctx, cancel := context.WithTimeout(t.Context(), hangGuard)
	defer cancel()
	runCtx, shutdown := context.WithCancel(ctx)
	defer shutdown()

	addrs := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() {
		done <- run(runCtx, "127.0.0.1:0", config{
			Wait:   g.wait,
			Logger: slog.New(slog.DiscardHandler),
			Ready:  func(a net.Addr) { addrs <- a },
		})
	}()
	base := "http://" + recv(t, addrs, "the server to listen").String()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr}

	id := placeOrder(ctx, t, c, base)
	g.release <- struct{}{}
	resp := openProgress(ctx, t, c, base, id)
	defer func() { _ = resp.Body.Close() }()
	checkEventStream(t, resp)
	r := bufio.NewReader(resp.Body)
	if p := readProgress(t, r); p.Step != 1 {
		t.Fatalf("first item = %+v", p)
	}
	recv(t, g.asked, "step 1 to be asked")
	recv(t, g.asked, "step 2 to be asked")

	shutdown()
	if got := recv(t, g.stopped, "the handler to see its context done"); got != 2 {
		t.Errorf("the handler stopped at step %d, want 2", got)
	}
	f, err := readFrame(r)
	if err != nil || f.event != "error" || !strings.Contains(f.data, "shutting down") {
		t.Errorf("after shutdown: got %+v, %v; want an error event", f, err)
	}
	readEOF(t, r)
	if err := recv(t, done, "run to return"); err != nil {
		t.Errorf("run: %v", err)
	}
}
