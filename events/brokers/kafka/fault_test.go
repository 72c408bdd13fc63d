package kafka_test

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/events/brokers"
	"github.com/gocqrs/cqrs/events/brokers/kafka"
	"github.com/gocqrs/cqrs/events/inbox"
	"github.com/gocqrs/cqrs/events/outbox"
	"github.com/gocqrs/cqrs/events/wire"
)

// proxy is a TCP proxy in front of a kfake broker: clients connect to its
// front listener, and it forwards each connection to the broker. It can cut
// every connection at once, and refuse new ones while down.
//
// kfake advertises its listener's address in metadata: the listener the
// proxy gives kfake (listen, a kfake.ListenFn) reports the front address,
// so clients that learn the broker from metadata come back through the
// proxy.
type proxy struct {
	t     *testing.T
	front net.Listener
	back  string // the broker's real address

	mu      sync.Mutex
	conns   map[net.Conn]struct{}
	down    bool
	refused int
	changed chan struct{} // closed, and replaced, when refused grows
	wg      sync.WaitGroup
}

func newProxy(t *testing.T) *proxy {
	t.Helper()
	front, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &proxy{t: t, front: front, conns: make(map[net.Conn]struct{}), changed: make(chan struct{})}
	p.wg.Go(p.accept)
	t.Cleanup(p.close)
	return p
}

// advertised is the broker's listener, reporting the proxy's address.
type advertised struct {
	net.Listener
	addr net.Addr
}

func (a advertised) Addr() net.Addr { return a.addr }

// listen is kfake's ListenFn: the broker listens on a loopback port of its
// own, and advertises the proxy.
func (p *proxy) listen(network, address string) (net.Listener, error) {
	ln, err := net.Listen(network, address)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	p.back = ln.Addr().String()
	p.mu.Unlock()
	return advertised{Listener: ln, addr: p.front.Addr()}, nil
}

func (p *proxy) accept() {
	for {
		c, err := p.front.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		down, back := p.down, p.back
		if down {
			p.refused++
			close(p.changed)
			p.changed = make(chan struct{})
		}
		p.mu.Unlock()
		if down {
			_ = c.Close()
			continue
		}
		b, err := net.Dial("tcp", back)
		if err != nil {
			_ = c.Close()
			continue
		}
		if !p.track(c, b) {
			continue
		}
		p.wg.Go(func() { p.pipe(c, b) })
		p.wg.Go(func() { p.pipe(b, c) })
	}
}

// track records a connection pair, or closes it if the proxy is down.
func (p *proxy) track(c, b net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.down {
		_, _ = c.Close(), b.Close()
		return false
	}
	p.conns[c], p.conns[b] = struct{}{}, struct{}{}
	return true
}

func (p *proxy) pipe(dst, src net.Conn) {
	_, _ = io.Copy(dst, src)
	_, _ = dst.Close(), src.Close()
	p.mu.Lock()
	delete(p.conns, dst)
	delete(p.conns, src)
	p.mu.Unlock()
}

// cut closes every connection: clients see them drop mid-request.
func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		_ = c.Close()
	}
}

// setDown cuts every connection and refuses new ones while down.
func (p *proxy) setDown(down bool) {
	p.mu.Lock()
	p.down = down
	p.mu.Unlock()
	if down {
		p.cut()
	}
}

// waitRefused waits until the proxy has refused n connections in all.
func (p *proxy) waitRefused(ctx context.Context, n int) error {
	for {
		p.mu.Lock()
		refused, ch := p.refused, p.changed
		p.mu.Unlock()
		if refused >= n {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (p *proxy) close() {
	_ = p.front.Close()
	p.cut()
	p.wg.Wait()
}

// The connections to the broker are cut several times, and the broker is
// unreachable for a while, as events flow from a Sender to a Consumer:
// every event is handled, once (the inbox absorbs redeliveries), in order
// per key, and every offset is committed in the end.
func TestConnectionLoss(t *testing.T) {
	t.Parallel()
	if os.Getenv(brokersEnv) != "" {
		t.Skipf("cuts connections to an in-process kfake broker; %s is set", brokersEnv)
	}
	p := newProxy(t)
	c := newCluster(t, kfake.ListenFn(p.listen))
	require.Equal(t, []string{p.front.Addr().String()}, c.brokers, "kfake advertises the proxy")
	// Reconnect, and refresh the metadata after failures, quickly: the test
	// waits for it.
	c.opts = append(c.opts,
		kgo.RetryBackoffFn(func(int) time.Duration { return 20 * time.Millisecond }),
		kgo.MetadataMinAge(50*time.Millisecond),
	)
	topic := c.topic(t, 4)

	const keys, perKey, batch = 8, 50, 16
	var envs []wire.Envelope
	for seq := range perKey {
		for k := range keys {
			envs = append(envs, envelope(t, topic, "k-"+strconv.Itoa(k), seq))
		}
	}
	ids := make([]uuid.UUID, len(envs))
	for i, env := range envs {
		ids[i] = env.ID
	}

	// The consumer, with an inbox.
	h := newHandled()
	cfg := consumerConfig(c)
	mem := inbox.NewMemoryStore(inbox.MemoryOptions{})
	cfg.Inbox, cfg.Transactor = mem, mem
	cfg.SettleTimeout = 30 * time.Second
	group := "billing-" + topic
	consumer, err := brokers.NewConsumer(c.subscriber(t, kafka.SubscriberConfig{Topic: topic, Group: group}),
		decoder(t), eventMediator(t, h, nil), cfg)
	require.NoError(t, err)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	runDone := make(chan error, 1)
	go func() { runDone <- consumer.Run(ctx) }()

	// The producer: batches in order; what fails is sent again, in order.
	sender := c.sender(t)
	sendDone := make(chan error, 1)
	go func() {
		sctx := within(t, 2*time.Minute)
		for start := 0; start < len(envs); start += batch {
			pending := envs[start:min(start+batch, len(envs))]
			for len(pending) > 0 {
				err := sender.Send(sctx, pending)
				if err == nil {
					break
				}
				be, ok := errors.AsType[*outbox.BatchError](err)
				if !ok || sctx.Err() != nil {
					sendDone <- err
					return
				}
				var again []wire.Envelope
				for i, e := range be.Errs {
					if e != nil {
						again = append(again, pending[i])
					}
				}
				pending = again
			}
		}
		sendDone <- nil
	}()

	// Faults, as the events are handled.
	atLeast := func(n int) func([]events.Notification[payload]) bool {
		return func(evs []events.Notification[payload]) bool { return len(evs) >= n }
	}
	total := len(envs)
	h.waitFor(t, "a quarter handled", atLeast(total/4))
	p.cut()
	h.waitFor(t, "half handled", atLeast(total/2))
	p.setDown(true)
	require.NoError(t, p.waitRefused(within(t, time.Minute), 10), "clients try to reconnect")
	p.setDown(false)
	h.waitFor(t, "three quarters handled", atLeast(3*total/4))
	p.cut()

	evs := h.waitFor(t, "every event handled", allOf(ids))
	require.NoError(t, <-sendDone)
	stop()
	require.NoError(t, <-runDone)

	count := make(map[uuid.UUID]int)
	last := make(map[string]int)
	for _, ev := range evs {
		count[ev.ID]++
		if prev, ok := last[ev.Key]; ok {
			assert.Equal(t, prev+1, ev.Payload.Seq, "key %s: order", ev.Key)
		}
		last[ev.Key] = ev.Payload.Seq
	}
	for _, id := range ids {
		assert.Equal(t, 1, count[id], "event %s handled once", id)
	}
	var committed int64
	for part := range int32(4) {
		committed += max(c.committed(t, group, topic, part), 0)
	}
	assert.Equal(t, c.count(t, topic), committed, "every record committed, once handled")
	counters := consumer.Counters()
	assert.Positive(t, counters.ReceiveErrors, "the outage was reported by Receive")
	t.Logf("records %d, consumer %+v", c.count(t, topic), counters)
}
