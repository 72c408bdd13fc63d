package testenv

import (
	"context"
	"net"
	"sync"
	"testing"
)

// Proxy forwards TCP connections to a target address and breaks them on
// demand. Create it with [NewProxy]; its methods are safe for concurrent
// use.
type Proxy struct {
	ln net.Listener
	wg sync.WaitGroup
	// gate is write-locked while the proxy holds traffic back.
	gate sync.RWMutex

	mu       sync.Mutex
	target   string
	conns    map[net.Conn]struct{}
	down     bool
	held     bool
	closed   bool
	accepted int
	refused  int
	// changed is closed, and replaced, when accepted or refused grows.
	changed chan struct{}
}

// NewProxy starts a proxy to target (host:port) on a loopback port of its
// own; target may be empty and set later with [Proxy.SetTarget]. The proxy
// is closed when tb ends.
func NewProxy(tb testing.TB, target string) *Proxy {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("testenv: proxy: %v", err)
	}
	p := &Proxy{ln: ln, target: target, conns: make(map[net.Conn]struct{}), changed: make(chan struct{})}
	p.wg.Go(p.accept)
	tb.Cleanup(p.Close)
	return p
}

// Addr returns the proxy's address, host:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// SetTarget sets the address new connections are forwarded to.
func (p *Proxy) SetTarget(target string) {
	p.mu.Lock()
	p.target = target
	p.mu.Unlock()
}

func (p *Proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		refuse, target := p.down || p.closed, p.target
		if refuse {
			p.refused++
			p.signalLocked()
		}
		p.mu.Unlock()
		if refuse {
			_ = c.Close()
			continue
		}
		up, err := net.Dial("tcp", target)
		if err != nil {
			_ = c.Close()
			continue
		}
		if !p.track(c, up) {
			continue
		}
		p.wg.Go(func() { p.pipe(up, c) })
		p.wg.Go(func() { p.pipe(c, up) })
	}
}

func (p *Proxy) signalLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// track records a connection pair, or closes it if the proxy is down.
func (p *Proxy) track(c, up net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.down || p.closed {
		_, _ = c.Close(), up.Close()
		return false
	}
	p.conns[c], p.conns[up] = struct{}{}, struct{}{}
	p.accepted++
	p.signalLocked()
	return true
}

// pipe copies src to dst, chunk by chunk through the gate, until either
// fails; it then closes both.
func (p *Proxy) pipe(dst, src net.Conn) {
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
	_, _ = dst.Close(), src.Close()
	p.mu.Lock()
	delete(p.conns, dst)
	delete(p.conns, src)
	p.mu.Unlock()
}

// Cut closes every connection in progress; clients may connect again.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		_ = c.Close()
	}
}

// SetDown cuts every connection and refuses new ones (they are accepted,
// closed at once and counted) when down is true; when it is false, new
// connections are forwarded again.
func (p *Proxy) SetDown(down bool) {
	p.mu.Lock()
	p.down = down
	p.mu.Unlock()
	if down {
		p.Cut()
	}
}

// Hold stops forwarding bytes, in both directions, without closing
// anything, until [Proxy.Resume]: a server that stopped answering. It does
// nothing if traffic is already held.
func (p *Proxy) Hold() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.held || p.closed {
		return
	}
	p.held = true
	p.gate.Lock()
}

// Resume forwards bytes again after [Proxy.Hold].
func (p *Proxy) Resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.held {
		return
	}
	p.held = false
	p.gate.Unlock()
}

// Accepted returns how many connections the proxy has forwarded in all.
func (p *Proxy) Accepted() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.accepted
}

// Refused returns how many connections the proxy has refused in all.
func (p *Proxy) Refused() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.refused
}

// WaitAccepted waits until the proxy has forwarded at least n connections
// in all, or ctx is done (its error).
func (p *Proxy) WaitAccepted(ctx context.Context, n int) error {
	return p.wait(ctx, func() bool { return p.accepted >= n })
}

// WaitRefused waits until the proxy has refused at least n connections in
// all, or ctx is done (its error).
func (p *Proxy) WaitRefused(ctx context.Context, n int) error {
	return p.wait(ctx, func() bool { return p.refused >= n })
}

func (p *Proxy) wait(ctx context.Context, done func() bool) error {
	for {
		p.mu.Lock()
		ok, ch := done(), p.changed
		p.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Close stops the proxy: it resumes held traffic, closes the listener and
// every connection, and waits for its goroutines. It may be called more
// than once.
func (p *Proxy) Close() {
	p.Resume()
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	_ = p.ln.Close()
	p.Cut()
	p.wg.Wait()
}

// Listen is a listen function for a server embedded in the test that
// advertises its own address to clients (kfake's ListenFn): the server
// listens on network and address as asked, the proxy forwards to that
// listener, and the listener reports the proxy's address as its own, so
// clients that learn the server's address from the server come back
// through the proxy.
func (p *Proxy) Listen(network, address string) (net.Listener, error) {
	front, err := net.ResolveTCPAddr("tcp", p.Addr())
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen(network, address)
	if err != nil {
		return nil, err
	}
	p.SetTarget(ln.Addr().String())
	return advertised{Listener: ln, addr: front}, nil
}

// advertised is a listener that reports another address.
type advertised struct {
	net.Listener
	addr net.Addr
}

func (a advertised) Addr() net.Addr { return a.addr }
