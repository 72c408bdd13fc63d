package rabbitmq_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/gocqrs/cqrs/events/brokers/rabbitmq"
)

// urlEnv names the environment variable with the URL of the test broker.
const urlEnv = "RABBITMQ_URL"

const defaultURL = "amqp://guest:guest@127.0.0.1:5672/"

// quiet discards the logs of the code under test.
var quiet = slog.New(slog.DiscardHandler)

// brokerURL returns the URL of the test broker once it answers, or skips
// tb (fails it when CI is set: CI must run these tests).
func brokerURL(tb testing.TB) string {
	tb.Helper()
	u := os.Getenv(urlEnv)
	if u == "" {
		u = defaultURL
	}
	conn, err := amqp.DialConfig(u, amqp.Config{Dial: amqp.DefaultDial(5 * time.Second)})
	if err != nil {
		if os.Getenv("CI") != "" {
			tb.Fatalf("RabbitMQ at %s=%q is unreachable, and CI is set: %v", urlEnv, u, err)
		}
		tb.Skipf("RabbitMQ is unreachable (set %s to an AMQP URL; default %s): %v", urlEnv, defaultURL, err)
	}
	_ = conn.Close()
	return u
}

// unique returns a name no other test uses.
func unique(prefix string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "cqrs-test." + prefix + "." + hex.EncodeToString(b[:])
}

// adminConn opens a connection for the test's own use (topology cleanup,
// raw publishing and consuming), closed when tb ends.
func adminConn(tb testing.TB, u string) *amqp.Connection {
	tb.Helper()
	conn, err := amqp.Dial(u)
	require.NoError(tb, err)
	tb.Cleanup(func() { _ = conn.Close() })
	return conn
}

// testTopology returns a topology with unique names: a queue bound to a
// fresh exchange with routing key topic, and short delay tiers.
func testTopology(prefix string, qt rabbitmq.QueueType) (rabbitmq.Topology, string) {
	name := unique(prefix)
	topic := name + ".events"
	return rabbitmq.Topology{
		Queue:       name + ".q",
		QueueType:   qt,
		Exchange:    name + ".x",
		Bindings:    []rabbitmq.Binding{{RoutingKey: topic}},
		RetryDelays: []time.Duration{10 * time.Millisecond, 100 * time.Millisecond, time.Second},
	}, topic
}

// provision declares topo on the broker at u and deletes it when tb ends.
func provision(tb testing.TB, u string, topo rabbitmq.Topology) *rabbitmq.Subscriber {
	tb.Helper()
	sub, err := rabbitmq.NewSubscriber(rabbitmq.SubscriberOptions{URL: u, Topology: topo, Logger: quiet})
	require.NoError(tb, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tb.Cleanup(func() { teardown(tb, u, sub.Topology()) })
	require.NoError(tb, sub.Declare(ctx))
	return sub
}

// teardown deletes what topo declares.
func teardown(tb testing.TB, u string, topo rabbitmq.Topology) {
	tb.Helper()
	conn, err := amqp.Dial(u)
	if err != nil {
		tb.Errorf("teardown: %v", err)
		return
	}
	defer func() { _ = conn.Close() }()
	ch, err := conn.Channel()
	if err != nil {
		tb.Errorf("teardown: %v", err)
		return
	}
	queues := []string{topo.Queue, topo.DeadLetterQueue}
	for _, d := range topo.RetryDelays {
		queues = append(queues, topo.RetryQueue(d))
	}
	for _, q := range queues {
		if _, err := ch.QueueDelete(q, false, false, false); err != nil {
			tb.Errorf("teardown: deleting queue %s: %v", q, err)
			return
		}
	}
	for _, x := range []string{topo.Exchange, topo.DeadLetterExchange} {
		if x == "" {
			continue
		}
		if err := ch.ExchangeDelete(x, false, false); err != nil {
			tb.Errorf("teardown: deleting exchange %s: %v", x, err)
			return
		}
	}
}

// newSender returns a Sender to exchange, closed when tb ends.
func newSender(tb testing.TB, u, exchange string) *rabbitmq.Sender {
	tb.Helper()
	s, err := rabbitmq.NewSender(rabbitmq.SenderOptions{URL: u, Exchange: exchange, Logger: quiet})
	require.NoError(tb, err)
	tb.Cleanup(func() { require.NoError(tb, s.Close(context.Background())) })
	return s
}

// proxy forwards TCP connections to a target and can cut them all.
type proxy struct {
	ln     net.Listener
	target string

	mu      sync.Mutex
	conns   map[net.Conn]struct{}
	opened  int
	changed chan struct{}
	wg      sync.WaitGroup
	// gate is held (write-locked) while the proxy holds back traffic.
	gate sync.RWMutex
}

// newProxy starts a proxy to the broker of u; it stops when tb ends.
func newProxy(tb testing.TB, u string) *proxy {
	tb.Helper()
	parsed, err := url.Parse(u)
	require.NoError(tb, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(tb, err)
	p := &proxy{ln: ln, target: parsed.Host, conns: make(map[net.Conn]struct{}), changed: make(chan struct{})}
	p.wg.Go(p.accept)
	tb.Cleanup(p.stop)
	return p
}

// url returns u with the proxy's address.
func (p *proxy) url(tb testing.TB, u string) string {
	tb.Helper()
	parsed, err := url.Parse(u)
	require.NoError(tb, err)
	parsed.Host = p.ln.Addr().String()
	return parsed.String()
}

func (p *proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = c.Close()
			continue
		}
		p.mu.Lock()
		p.conns[c], p.conns[up] = struct{}{}, struct{}{}
		p.opened++
		close(p.changed)
		p.changed = make(chan struct{})
		p.mu.Unlock()
		pipe := func(dst, src net.Conn) {
			buf := make([]byte, 32<<10)
			for {
				n, err := src.Read(buf)
				if n > 0 {
					p.gate.RLock()
					_, werr := dst.Write(buf[:n])
					p.gate.RUnlock()
					if werr != nil {
						break
					}
				}
				if err != nil {
					break
				}
			}
			_ = dst.Close()
			_ = src.Close()
			p.mu.Lock()
			delete(p.conns, dst)
			delete(p.conns, src)
			p.mu.Unlock()
		}
		p.wg.Go(func() { pipe(up, c) })
		p.wg.Go(func() { pipe(c, up) })
	}
}

// hold stops forwarding, as a broker that stopped answering, until
// resume.
func (p *proxy) hold() { p.gate.Lock() }

func (p *proxy) resume() { p.gate.Unlock() }

// cut closes every connection through the proxy.
func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		_ = c.Close()
	}
}

// waitOpened waits until the proxy has accepted more than n connections in
// all.
func (p *proxy) waitOpened(tb testing.TB, n int, timeout time.Duration) {
	tb.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		p.mu.Lock()
		opened, ch := p.opened, p.changed
		p.mu.Unlock()
		if opened > n {
			return
		}
		select {
		case <-ch:
		case <-timer.C:
			tb.Fatalf("proxy: no new connection within %v", timeout)
		}
	}
}

func (p *proxy) accepted() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.opened
}

func (p *proxy) stop() {
	_ = p.ln.Close()
	p.cut()
	p.wg.Wait()
}
