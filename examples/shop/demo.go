package main

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// demoRun is what the demo needs: the orders API, and the databases to
// check the outcome in (inventory is nil when it runs in another process).
type demoRun struct {
	cfg       config
	base      string
	where     string
	broker    string
	orders    *database
	inventory *database
	tl        *timeline
}

const approvedCard = "4242-4242-4242-4242"

// runDemo runs the script, or a load run with cfg.Orders orders.
func runDemo(ctx context.Context, d demoRun) error {
	out := d.cfg.Stdout
	fmt.Fprintf(out, "shop: orders and inventory services; %s; broker: %s\n\n", d.where, d.broker)
	client := &http.Client{Timeout: 30 * time.Second}
	if d.cfg.Orders > 0 {
		return d.load(ctx, client)
	}
	return d.script(ctx, client)
}

// script places a handful of orders, follows each one's progress stream,
// and prints the timeline, the orders and the stock.
func (d demoRun) script(ctx context.Context, client *http.Client) error {
	out := d.cfg.Stdout
	script := []placeOrderBody{
		{SKU: "book", Quantity: 2, Card: approvedCard},
		{SKU: "lamp", Quantity: 1, Card: approvedCard},
		{SKU: "mug", Quantity: 1, Card: declinedCard}, // payment declined: compensated
		{SKU: "mug", Quantity: 5, Card: approvedCard}, // 3 in stock: rejected
		{SKU: "book", Quantity: 1, Card: approvedCard},
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	var ids []string
	for i, body := range script {
		d.tl.add("client", "orders API", "", "POST /orders %d × %s, card %s", body.Quantity, body.SKU, body.Card)
		id, err := placeOrder(ctx, client, d.base, body)
		if err != nil {
			return err
		}
		d.tl.label(id, fmt.Sprintf("#%d", i+1))
		d.tl.add("orders API", "client", id, "201 Created, id %s", id)
		ids = append(ids, id)
		wg.Go(func() {
			err := follow(ctx, client, d.base, id, func(p Progress) {
				d.tl.add("orders API", "client", id, "SSE progress: %s (%s)", p.Status, p.Detail)
			})
			if err != nil {
				d.tl.add("orders API", "client", id, "SSE stream failed: %v", err)
			}
		})
	}
	wg.Wait()
	d.tl.print(out)

	fmt.Fprintf(out, "\n%-5s %-10s %-12s %-13s %s\n", "order", "item", "amount", "status", "placed → ended")
	var problems []string
	for i, id := range ids {
		o, err := getOrder(ctx, client, d.base, id)
		if err != nil {
			return err
		}
		took := "-"
		if !o.EndedAt.IsZero() {
			took = fmtDuration(o.EndedAt.Sub(o.PlacedAt))
		}
		fmt.Fprintf(out, "#%-4d %-10s %-12s %-13s %s\n", i+1, fmt.Sprintf("%d × %s", o.Quantity, o.SKU), money(o.Amount), o.Status, took)
		if !terminal(o.Status) {
			problems = append(problems, fmt.Sprintf("order #%d is still %s", i+1, o.Status))
		}
	}
	if err := d.checkStock(ctx, out); err != nil {
		problems = append(problems, err.Error())
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

// load places cfg.Orders orders at cfg.Rate, waits for every one to end,
// and reports throughput and latency.
func (d demoRun) load(ctx context.Context, client *http.Client) error {
	out, n := d.cfg.Stdout, d.cfg.Orders
	client.Transport = &http.Transport{MaxIdleConnsPerHost: d.cfg.Workers, MaxConnsPerHost: d.cfg.Workers}
	defer client.CloseIdleConnections()
	skus := slices.Sorted(func(yield func(string) bool) {
		for s := range catalog() {
			if !yield(s) {
				return
			}
		}
	})
	start := time.Now()
	jobs := make(chan int)
	var failed atomic.Int64
	var mu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	for range d.cfg.Workers {
		wg.Go(func() {
			for i := range jobs {
				card := approvedCard
				if i%20 == 19 {
					card = declinedCard
				}
				if _, err := placeOrder(ctx, client, d.base, placeOrderBody{SKU: skus[i%len(skus)], Quantity: 1, Card: card}); err != nil {
					failed.Add(1)
					mu.Lock()
					firstErr = cmp.Or(firstErr, err)
					mu.Unlock()
				}
			}
		})
	}
	var interval time.Duration
	if d.cfg.Rate > 0 {
		interval = time.Duration(float64(time.Second) / d.cfg.Rate)
	}
feed:
	for i := range n {
		if interval > 0 {
			if wait := time.Until(start.Add(time.Duration(i) * interval)); wait > 0 {
				t := time.NewTimer(wait)
				select {
				case <-t.C:
				case <-ctx.Done():
					t.Stop()
					break feed
				}
			}
		}
		select {
		case jobs <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	placed := time.Since(start)
	if f := failed.Load(); f > 0 {
		return fmt.Errorf("%d of %d orders could not be placed, the first: %w", f, n, firstErr)
	}
	fmt.Fprintf(out, "placed %d orders in %.2fs (%.0f/s requested, %.0f/s placed)\n", n, placed.Seconds(), d.cfg.Rate, float64(n)/placed.Seconds())

	r, err := waitForOrders(ctx, d.orders, start, n, 2*time.Minute+time.Duration(n)*20*time.Millisecond)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "%d orders ended in %.2fs: %.0f orders/s end to end (first placed → last ended)\n",
		r.ended, r.span.Seconds(), float64(r.ended)/r.span.Seconds())
	fmt.Fprintf(out, "statuses: %s\n", r.statuses())
	if len(r.latencies) > 0 {
		fmt.Fprintf(out, "placed → confirmed latency: p50 %s, p90 %s, p99 %s, max %s (%d confirmed)\n",
			fmtDuration(r.percentile(50)), fmtDuration(r.percentile(90)), fmtDuration(r.percentile(99)),
			fmtDuration(r.latencies[len(r.latencies)-1]), len(r.latencies))
	}
	return d.checkStock(ctx, out)
}

// waitSettled polls until nothing is left to do once every order ended:
// no stock reserved (the last order.confirmed events consumed), no event
// waiting in an outbox.
func waitSettled(ctx context.Context, orders, inventory *database, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, err := settled(ctx, orders, inventory)
		if err != nil || ok {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("events still in flight after %v", timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// settled reports whether nothing is left to do: no stock reserved, no
// event waiting in an outbox.
func settled(ctx context.Context, orders, inventory *database) (bool, error) {
	sts, err := stocks(ctx, inventory)
	if err != nil {
		return false, err
	}
	for _, st := range sts {
		if st.Reserved != 0 {
			return false, nil
		}
	}
	for _, db := range []*database{orders, inventory} {
		st, err := db.outbox.Stats(ctx)
		if err != nil || st.Pending != 0 {
			return false, err
		}
	}
	return true, nil
}

// outcome is what the orders table says about the orders placed since a
// time.
type outcome struct {
	placed, ended int
	byStatus      map[string]int
	span          time.Duration   // first placed → last ended
	latencies     []time.Duration // placed → confirmed, sorted
}

func (r outcome) statuses() string {
	var parts []string
	for _, s := range []string{statusConfirmed, statusCompensated, statusRejected, statusPlaced, statusReserved, statusPaid, statusCancelling} {
		if n := r.byStatus[s]; n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, s))
		}
	}
	return strings.Join(parts, ", ")
}

func (r outcome) percentile(p int) time.Duration {
	if len(r.latencies) == 0 {
		return 0
	}
	i := (len(r.latencies)*p + 99) / 100
	return r.latencies[min(max(i-1, 0), len(r.latencies)-1)]
}

// readOutcome reads the orders placed since since.
func readOutcome(ctx context.Context, db *database, since time.Time) (outcome, error) {
	r := outcome{byStatus: make(map[string]int)}
	var first, last int64
	err := db.query(ctx, `SELECT status, placed_us, ended_us FROM {s}orders WHERE placed_us >= $1`, []any{since.UnixMicro()},
		func(scan func(...any) error) error {
			var status string
			var placed int64
			var ended sql.NullInt64
			if err := scan(&status, &placed, &ended); err != nil {
				return err
			}
			r.placed++
			r.byStatus[status]++
			if first == 0 || placed < first {
				first = placed
			}
			if ended.Valid && terminal(status) {
				r.ended++
				last = max(last, ended.Int64)
				if status == statusConfirmed {
					r.latencies = append(r.latencies, time.Duration(ended.Int64-placed)*time.Microsecond)
				}
			}
			return nil
		})
	slices.Sort(r.latencies)
	if last > first {
		r.span = time.Duration(last-first) * time.Microsecond
	}
	return r, err
}

// waitForOrders polls the orders table until n orders placed since since
// have ended, or timeout.
func waitForOrders(ctx context.Context, db *database, since time.Time, n int, timeout time.Duration) (outcome, error) {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		r, err := readOutcome(ctx, db, since)
		if err != nil {
			return r, err
		}
		if r.ended >= n {
			return r, nil
		}
		if time.Now().After(deadline) {
			return r, fmt.Errorf("after %v, %d of %d orders ended (%s)", timeout, r.ended, n, r.statuses())
		}
		select {
		case <-ctx.Done():
			return r, ctx.Err()
		case <-tick.C:
		}
	}
}

// checkStock prints the stock and checks that it is conserved: nothing
// held any more, every unit available or sold, and as many sold as the
// confirmed orders bought.
func (d demoRun) checkStock(ctx context.Context, out io.Writer) error {
	if d.inventory == nil {
		return nil // in another process
	}
	// The orders have ended; the inventory may still be consuming the last
	// order.confirmed events.
	if err := waitSettled(ctx, d.orders, d.inventory, 30*time.Second); err != nil {
		return err
	}
	problems, err := stockProblems(ctx, d.orders, d.inventory, out)
	if err != nil {
		return err
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	fmt.Fprintln(out, "stock conserved: every unit is available or sold to a confirmed order; nothing reserved twice or lost")
	return nil
}

// stockProblems compares the inventory's stock and movements with the
// orders' outcomes, and returns what does not add up.
func stockProblems(ctx context.Context, orders, inventory *database, out io.Writer) ([]string, error) {
	sts, err := stocks(ctx, inventory)
	if err != nil {
		return nil, err
	}
	bought := make(map[string]int)
	err = orders.query(ctx, `SELECT sku, SUM(quantity) FROM {s}orders WHERE status = 'confirmed' GROUP BY sku`, nil,
		func(scan func(...any) error) error {
			var sku string
			var n int
			err := scan(&sku, &n)
			bought[sku] = n
			return err
		})
	if err != nil {
		return nil, err
	}
	var problems []string
	fmt.Fprintf(out, "\n%-6s %8s %10s %9s %5s\n", "sku", "initial", "available", "reserved", "sold")
	for _, st := range sts {
		fmt.Fprintf(out, "%-6s %8d %10d %9d %5d\n", st.SKU, st.Initial, st.Available, st.Reserved, st.Sold)
		if st.Available+st.Reserved+st.Sold != st.Initial {
			problems = append(problems, fmt.Sprintf("%s: %d available + %d reserved + %d sold != %d", st.SKU, st.Available, st.Reserved, st.Sold, st.Initial))
		}
		if st.Reserved != 0 {
			problems = append(problems, fmt.Sprintf("%s: %d still reserved", st.SKU, st.Reserved))
		}
		if st.Sold != bought[st.SKU] {
			problems = append(problems, fmt.Sprintf("%s: %d sold, confirmed orders bought %d", st.SKU, st.Sold, bought[st.SKU]))
		}
	}
	err = inventory.query(ctx, `SELECT order_id, kind, COUNT(*) FROM {s}movements GROUP BY order_id, kind HAVING COUNT(*) > 1`, nil,
		func(scan func(...any) error) error {
			var order, kind string
			var n int
			if err := scan(&order, &kind, &n); err != nil {
				return err
			}
			problems = append(problems, fmt.Sprintf("order %s: %s applied %d times", order, kind, n))
			return nil
		})
	return problems, err
}

// ---- The HTTP client ---------------------------------------------------------------

func placeOrder(ctx context.Context, client *http.Client, base string, body placeOrderBody) (string, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return "", err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/orders", bytes.NewReader(b))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusCreated {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return "", fmt.Errorf("POST /orders: %s: %s", resp.Status, bytes.TrimSpace(msg))
	}
	var placed placedBody
	if err := json.NewDecoder(resp.Body).Decode(&placed); err != nil {
		return "", err
	}
	return placed.ID, nil
}

func getOrder(ctx context.Context, client *http.Client, base, id string) (Order, error) {
	var o Order
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/orders/"+id, nil)
	if err != nil {
		return o, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return o, err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return o, fmt.Errorf("GET /orders/%s: %s", id, resp.Status)
	}
	return o, json.NewDecoder(resp.Body).Decode(&o)
}

// follow reads the order's progress stream until it ends, calling step
// for each server-sent event.
func follow(ctx context.Context, client *http.Client, base, id string, step func(Progress)) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/orders/"+id+"/progress", nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "text/event-stream")
	c := *client
	c.Timeout = 0 // a stream: bounded by ctx
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET /orders/%s/progress: %s", id, resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	event := ""
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "event: "):
			event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			data := strings.TrimPrefix(line, "data: ")
			if event == "error" {
				return fmt.Errorf("progress stream: %s", data)
			}
			var p Progress
			if err := json.Unmarshal([]byte(data), &p); err != nil {
				return err
			}
			step(p)
		case line == "":
			event = ""
		}
	}
	return sc.Err()
}
