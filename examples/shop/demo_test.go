package main

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
)

// TestDemo runs the scripted demo on the zero-setup default (SQLite files
// and an embedded NATS server) and checks what it prints.
func TestDemo(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	err := run(t.Context(), config{Data: t.TempDir(), Stdout: &out})
	require.NoError(t, err, "output:\n%s", out.String())
	text := out.String()
	for _, want := range []string{
		"order row and order.placed committed together",
		"order.placed published to shop.orders",
		"nats → inventory",
		"charge 8.00: declined",
		"compensating: order.cancelled committed (payment declined)",
		"released 1 × mug; stock.released committed",
		"SSE progress: compensated",
		"stock conserved",
	} {
		assert.Contains(t, text, want)
	}
	for _, row := range []string{"#1    2 × book   24.00        confirmed", "#3    1 × mug    8.00         compensated", "#4    5 × mug    40.00        rejected"} {
		assert.Contains(t, text, row)
	}
}

// TestDemoOnKafka runs the scripted demo with Kafka as the broker: an
// in-process fake cluster (kfake) stands in for Kafka.
func TestDemoOnKafka(t *testing.T) {
	t.Parallel()
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1))
	require.NoError(t, err)
	t.Cleanup(cluster.Close)
	var out bytes.Buffer
	err = run(t.Context(), config{Data: t.TempDir(), Stdout: &out, Kafka: strings.Join(cluster.ListenAddrs(), ",")})
	require.NoError(t, err, "output:\n%s", out.String())
	assert.Contains(t, out.String(), "kafka → inventory")
	assert.Contains(t, out.String(), "stock conserved")
}

// TestLoadRun runs the demo's load mode: it reports throughput and
// latency, and the stock adds up.
func TestLoadRun(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	err := run(t.Context(), config{Data: t.TempDir(), Stdout: &out, Orders: 60, Rate: 200, Workers: 4, Synchronous: "NORMAL"})
	require.NoError(t, err, "output:\n%s", out.String())
	assert.Contains(t, out.String(), "60 orders ended in")
	assert.Contains(t, out.String(), "statuses: 57 confirmed, 3 compensated")
	assert.Contains(t, out.String(), "placed → confirmed latency: p50")
	assert.Contains(t, out.String(), "stock conserved")
}

// serveShop runs every service in process, serving, until the test ends,
// and returns the API's base URL.
func serveShop(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	addrs := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, config{Data: t.TempDir(), Serve: true, Addr: "127.0.0.1:0", Ready: func(a net.Addr) { addrs <- a }})
	}()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	select {
	case a := <-addrs:
		return "http://" + a.String()
	case err := <-done:
		t.Fatalf("the shop stopped: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("the shop did not start listening")
	}
	return ""
}

// TestHTTPAndProgressStream drives the API with a real HTTP client: bad
// requests, unknown orders, and the progress stream of an order confirmed
// and of one compensated, step by step.
func TestHTTPAndProgressStream(t *testing.T) {
	t.Parallel()
	base := serveShop(t)
	client := &http.Client{Timeout: 30 * time.Second}
	t.Cleanup(client.CloseIdleConnections)
	ctx := t.Context()

	for _, tc := range []struct {
		body string
		want int
	}{
		{`{`, http.StatusBadRequest},
		{`{"sku": "piano", "quantity": 1, "card": "4242"}`, http.StatusBadRequest},
		{`{"sku": "book", "quantity": 0, "card": "4242"}`, http.StatusBadRequest},
		{`{"sku": "book", "quantity": 1}`, http.StatusBadRequest},
	} {
		resp, err := client.Post(base+"/orders", "application/json", strings.NewReader(tc.body))
		require.NoError(t, err)
		_ = resp.Body.Close()
		assert.Equal(t, tc.want, resp.StatusCode, tc.body)
	}
	for _, path := range []string{"/orders/nope", "/orders/nope/progress"} {
		resp, err := client.Get(base + path)
		require.NoError(t, err)
		_ = resp.Body.Close()
		assert.Equal(t, http.StatusNotFound, resp.StatusCode, path)
	}

	for _, tc := range []struct {
		card string
		want []string
	}{
		{approvedCard, []string{statusPlaced, statusReserved, statusPaid, statusConfirmed}},
		{declinedCard, []string{statusPlaced, statusReserved, statusCancelling, statusCompensated}},
	} {
		id, err := placeOrder(ctx, client, base, placeOrderBody{SKU: "lamp", Quantity: 2, Card: tc.card})
		require.NoError(t, err)
		var got []string
		var seqs []int
		require.NoError(t, follow(ctx, client, base, id, func(p Progress) {
			got = append(got, p.Status)
			seqs = append(seqs, p.Seq)
		}))
		assert.Equal(t, tc.want, got, "progress of the order paid with %s", tc.card)
		assert.Equal(t, []int{1, 2, 3, 4}, seqs)
		o, err := getOrder(ctx, client, base, id)
		require.NoError(t, err)
		assert.Equal(t, tc.want[len(tc.want)-1], o.Status)
		assert.Equal(t, 7000, o.Amount)
		assert.False(t, o.EndedAt.Before(o.PlacedAt))

		// The stream of an order that has ended replays its steps and ends.
		got = got[:0]
		require.NoError(t, follow(ctx, client, base, id, func(p Progress) { got = append(got, p.Status) }))
		assert.Equal(t, tc.want, got)
	}
}
