package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gocqrs/cqrs/internal/testenv"
	"github.com/gocqrs/cqrs/mediator/saga"
)

// faultOrders is the number of orders of each fault run; every 20th is
// paid with the declined card.
const faultOrders = 1000

// faultStock is the initial stock of each of the three SKUs: enough for
// every order (so none is rejected), not so much that selling goes
// unnoticed.
const faultStock = 400

// TestFaults runs the services as separate processes (orders, inventory,
// and a relay process for both outboxes), places 1,000 orders through the
// HTTP API, and meanwhile kills the relay process and the inventory
// process with SIGKILL (each replaced by a new one) and cuts every broker
// connection once (a TCP proxy in front of the broker). Then every order
// must have ended confirmed or compensated, the stock must add up with
// nothing reserved twice or lost, every event committed to an outbox must
// have been sent and consumed once, and no effect may have been applied
// twice.
func TestFaults(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		postgres bool
		broker   string
	}{
		{"sqlite+embedded-nats", false, "embedded"},
		{"postgres+nats", true, "nats"},
		{"postgres+rabbitmq", true, "rabbitmq"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ns := unique("shopt")
			dir := t.TempDir()
			// synchronous=NORMAL keeps every commit through a process crash,
			// which is what the test inflicts (not a power loss).
			cfg := config{Namespace: ns, Data: dir, Concurrency: 8, Synchronous: "NORMAL", Service: "relay"} // the test reads with few connections
			if tc.postgres {
				cfg.Postgres = testPostgres(t, ns)
			}
			var brokerFlag, brokerURL string
			switch tc.broker {
			case "embedded":
				e, err := startEmbeddedNATS("127.0.0.1:0", filepath.Join(dir, "nats"))
				require.NoError(t, err)
				t.Cleanup(e.stop)
				brokerFlag, brokerURL = "-nats", e.url
			case "nats":
				brokerFlag, brokerURL = "-nats", testNATS(t, ns)
			case "rabbitmq":
				brokerFlag, brokerURL = "-rabbitmq", testRabbitMQ(t, ns)
			}
			p := testenv.NewProxy(t, hostOf(brokerURL))
			args := []string{
				"-namespace", ns, "-data", dir, "-postgres", cfg.Postgres,
				brokerFlag, withProxy(brokerURL, p.Addr()),
				"-serve", "-relay=false", "-relay-lease", "2s", "-ack-wait", "3s", "-sqlite-sync", cfg.Synchronous,
				"-stock", strconv.Itoa(faultStock), "-concurrency", "8",
			}
			faultRun(t, cfg, p, args)
		})
	}
}

func faultRun(t *testing.T, cfg config, p *testenv.Proxy, args []string) {
	t.Helper()
	ctx := t.Context()
	cfg = cfg.withDefaults()

	// Create the tables and the stock before any process starts.
	ordersDB, err := openDatabase(ctx, cfg.dbOptions("orders"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = ordersDB.close() })
	inventoryDB, err := openDatabase(ctx, cfg.dbOptions("inventory"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = inventoryDB.close() })
	opts := serviceOptions{Namespace: cfg.Namespace, Concurrency: 1, RelayLease: time.Second, PollEvery: time.Second, Logger: cfg.Logger}
	_, err = newOrdersService(ctx, ordersDB, opts)
	require.NoError(t, err)
	inv, err := newInventoryService(ctx, inventoryDB, opts)
	require.NoError(t, err)
	require.NoError(t, inv.seed(ctx, map[string]int{"book": faultStock, "lamp": faultStock, "mug": faultStock}))

	service := func(name string) []string {
		return append(append([]string(nil), args...), "-service", name, "-addr", "127.0.0.1:0")
	}
	orders := startChild(t, "orders", service("orders")...)
	inventory := startChild(t, "inventory-1", service("inventory")...)
	relay := startChild(t, "relay-1", service("relay")...)
	base := "http://" + orders.listening(t)

	// Place the orders, 8 clients at once, while the faults happen.
	start := time.Now()
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	t.Cleanup(client.CloseIdleConnections)
	skus := []string{"book", "lamp", "mug"}
	var placing sync.WaitGroup
	var failed atomic.Int64
	var firstErr atomic.Pointer[error]
	jobs := make(chan int)
	for range 8 {
		placing.Go(func() {
			for i := range jobs {
				card := approvedCard
				if i%20 == 19 {
					card = declinedCard
				}
				if _, err := placeOrder(ctx, client, base, placeOrderBody{SKU: skus[i%3], Quantity: 1, Card: card}); err != nil {
					failed.Add(1)
					err = fmt.Errorf("order %d: %w", i, err)
					firstErr.CompareAndSwap(nil, &err)
				}
			}
		})
	}
	placing.Go(func() {
		defer close(jobs)
		for i := range faultOrders {
			select {
			case jobs <- i:
			case <-ctx.Done():
				return
			}
		}
	})

	// Watch the orders end, killing and cutting on the way.
	var relayKilled, inventoryKilled, cut bool
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(200 * time.Second)
	var r outcome
	for {
		r, err = readOutcome(ctx, ordersDB, start)
		require.NoError(t, err)
		if err := firstErr.Load(); err != nil {
			t.Fatalf("%d orders could not be placed; the first: %v", failed.Load(), *err)
		}
		for _, c := range []*child{orders, inventory, relay} {
			if gone, err := c.exited(); gone {
				t.Fatalf("%s exited: %v", c.name, err)
			}
		}
		elapsed := time.Since(start).Round(time.Millisecond)
		switch {
		case !relayKilled && r.ended >= faultOrders*15/100:
			relay.kill(t)
			relayKilled = true
			t.Logf("%v: killed relay-1 with %d orders ended", elapsed, r.ended)
			relay = startChild(t, "relay-2", service("relay")...)
		case !inventoryKilled && r.ended >= faultOrders*40/100:
			inventory.kill(t)
			inventoryKilled = true
			t.Logf("%v: killed inventory-1 with %d orders ended", elapsed, r.ended)
			inventory = startChild(t, "inventory-2", service("inventory")...)
		case !cut && r.ended >= faultOrders*65/100:
			accepted := p.Accepted()
			p.Cut()
			cut = true
			t.Logf("%v: cut the broker connections with %d orders ended", elapsed, r.ended)
			// Every process connects again.
			wait, cancel := context.WithTimeout(ctx, 60*time.Second)
			require.NoError(t, p.WaitAccepted(wait, accepted+1), "a process connected again through the proxy")
			cancel()
		}
		if cut && r.ended == faultOrders {
			done, err := settled(ctx, ordersDB, inventoryDB)
			require.NoError(t, err)
			if done {
				break
			}
		}
		select {
		case <-tick.C:
		case <-deadline:
			st, _ := stocks(ctx, inventoryDB)
			t.Fatalf("not done after 200s: %d orders placed, %d ended (%s); stock %+v; relay killed %v, inventory killed %v, cut %v",
				r.placed, r.ended, r.statuses(), st, relayKilled, inventoryKilled, cut)
		}
	}
	elapsed := time.Since(start)
	placing.Wait()
	require.Zero(t, failed.Load(), "orders that could not be placed")
	relay.stop(t, 30*time.Second)
	inventory.stop(t, 30*time.Second)
	orders.stop(t, 30*time.Second)

	// Every order ended, as its card says.
	assert.Equal(t, map[string]int{statusConfirmed: faultOrders - faultOrders/20, statusCompensated: faultOrders / 20}, r.byStatus)
	// The stock adds up: nothing reserved twice, nothing lost.
	problems, err := stockProblems(ctx, ordersDB, inventoryDB, io.Discard)
	require.NoError(t, err)
	assert.Empty(t, problems)

	// Every event was sent once, nothing is pending or dead.
	for name, want := range map[*database]int64{
		ordersDB:    faultOrders + faultOrders,    // placed, then confirmed or cancelled
		inventoryDB: faultOrders + faultOrders/20, // reserved, and released for the declined
	} {
		st, err := name.outbox.Stats(ctx)
		require.NoError(t, err)
		assert.Equal(t, want, st.Sent, "sent from %s", name.where)
		assert.Zero(t, st.Pending, "pending in %s", name.where)
		assert.Zero(t, st.Dead, "dead in %s", name.where)
	}
	// Every event was consumed once: one inbox record per event, one saga
	// per reservation, one payment per confirmed order, one movement per
	// effect.
	count := func(db *database, query string) int {
		var n int
		require.NoError(t, db.queryRow(ctx, query).Scan(&n), query)
		return n
	}
	assert.Equal(t, 2*faultOrders, count(inventoryDB, `SELECT COUNT(*) FROM {s}cqrs_inbox`), "inventory inbox records")
	assert.Equal(t, faultOrders/20, count(ordersDB, `SELECT COUNT(*) FROM {s}cqrs_inbox`), "orders inbox records (stock.released)")
	assert.Equal(t, faultOrders-faultOrders/20, count(ordersDB, fmt.Sprintf(`SELECT COUNT(*) FROM {s}cqrs_sagas WHERE status = %d`, saga.Completed)), "sagas completed")
	assert.Equal(t, faultOrders/20, count(ordersDB, fmt.Sprintf(`SELECT COUNT(*) FROM {s}cqrs_sagas WHERE status = %d`, saga.Compensated)), "sagas compensated")
	assert.Equal(t, faultOrders-faultOrders/20, count(ordersDB, `SELECT COUNT(DISTINCT order_id) FROM {s}payments WHERE status = 'charged'`), "orders charged")
	assert.Equal(t, faultOrders-faultOrders/20, count(ordersDB, `SELECT COUNT(*) FROM {s}payments`), "payments")
	assert.Equal(t, 2*faultOrders, count(inventoryDB, `SELECT COUNT(*) FROM {s}movements`), "stock movements")

	// Each order went through its steps in order, each once.
	steps := make(map[string][]string)
	require.NoError(t, ordersDB.query(ctx, `SELECT order_id, status FROM {s}order_log ORDER BY order_id, seq`, nil, func(scan func(...any) error) error {
		var id, status string
		err := scan(&id, &status)
		steps[id] = append(steps[id], status)
		return err
	}))
	confirmed := fmt.Sprint([]string{statusPlaced, statusReserved, statusPaid, statusConfirmed})
	compensated := fmt.Sprint([]string{statusPlaced, statusReserved, statusCancelling, statusCompensated})
	for id, s := range steps {
		if got := fmt.Sprint(s); got != confirmed && got != compensated {
			t.Errorf("order %s went through %s", id, got)
		}
	}
	assert.Len(t, steps, faultOrders)
	t.Logf("%d orders ended in %v (%s); placed → confirmed p50 %s, p99 %s",
		faultOrders, elapsed.Round(time.Millisecond), r.statuses(), fmtDuration(r.percentile(50)), fmtDuration(r.percentile(99)))
}
