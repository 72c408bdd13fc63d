// Package natstest runs a NATS server with JetStream inside a test
// process, for the tests of the NATS adapter and of the modules that use
// it: a server the test can stop and start again, on the same port and
// with the same data, to see what clients do while it is gone.
//
// The server listens on a loopback port chosen at start and stores
// JetStream data in a directory of the test's (tb.TempDir). Stop and Start
// are meant for the test's goroutine; the server is stopped when the test
// ends, and every goroutine it started has ended when Stop returns.
package natstest

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// startTimeout bounds how long Start waits for the server to accept
// connections.
const startTimeout = 10 * time.Second

// Server is an embedded NATS server with JetStream.
type Server struct {
	tb   testing.TB
	opts server.Options
	srv  *server.Server
}

// Run starts a server for tb, stopped when tb ends.
func Run(tb testing.TB) *Server {
	tb.Helper()
	s := &Server{tb: tb, opts: server.Options{
		Host:      "127.0.0.1",
		Port:      server.RANDOM_PORT,
		JetStream: true,
		StoreDir:  tb.TempDir(),
		NoLog:     true,
		NoSigs:    true,
	}}
	s.Start()
	addr, ok := s.srv.Addr().(*net.TCPAddr)
	if !ok {
		tb.Fatalf("natstest: the server listens on %v, not TCP", s.srv.Addr())
	}
	s.opts.Port = addr.Port // the same port after a restart
	tb.Cleanup(s.Stop)
	return s
}

// Start starts the server, stopped or never started, and waits until it
// accepts connections; it fails the test if it does not within 10s.
func (s *Server) Start() {
	s.tb.Helper()
	if s.srv != nil {
		return
	}
	srv, err := server.NewServer(&s.opts)
	if err != nil {
		s.tb.Fatalf("natstest: %v", err)
	}
	srv.Start()
	if !srv.ReadyForConnections(startTimeout) {
		srv.Shutdown()
		s.tb.Fatalf("natstest: the server did not accept connections within %v", startTimeout)
	}
	s.srv = srv
}

// Stop shuts the server down and waits until it has; clients see their
// connections close. It does nothing if the server is stopped.
func (s *Server) Stop() {
	if s.srv == nil {
		return
	}
	s.srv.Shutdown()
	s.srv.WaitForShutdown()
	s.srv = nil
}

// Addr returns the server's address, host:port.
func (s *Server) Addr() string { return fmt.Sprintf("%s:%d", s.opts.Host, s.opts.Port) }

// URL returns the server's client URL.
func (s *Server) URL() string { return "nats://" + s.Addr() }
