package e2e_test

import (
	"net"

	"github.com/gocqrs/cqrs/internal/testenv"
)

// advertised is a listener that reports another address: kfake advertises
// its listener's address in metadata, so a listener of its own that
// reports the proxy's address brings the clients that learn the broker
// from metadata back through the proxy.
type advertised struct {
	net.Listener
	addr net.Addr
}

func (a advertised) Addr() net.Addr { return a.addr }

// behind returns a kfake.ListenFn: the broker listens on a loopback port
// of its own, which becomes p's target, and advertises p.
func behind(p *testenv.Proxy) func(network, address string) (net.Listener, error) {
	return func(network, address string) (net.Listener, error) {
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
}
