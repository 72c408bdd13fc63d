package testenv_test

import (
	"bufio"
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/gocqrs/cqrs/internal/testenv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// echo starts a line echo server, stopped when tb ends.
func echo(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(tb, err)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() {
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if _, err := c.Write([]byte(line)); err != nil {
						return
					}
				}
			})
		}
	})
	tb.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

func roundTrip(t *testing.T, c net.Conn, r *bufio.Reader, s string) error {
	t.Helper()
	if _, err := c.Write([]byte(s + "\n")); err != nil {
		return err
	}
	got, err := r.ReadString('\n')
	if err != nil {
		return err
	}
	require.Equal(t, s+"\n", got)
	return nil
}

func TestProxyForwardsCutsRefusesAndHolds(t *testing.T) {
	t.Parallel()
	p := testenv.NewProxy(t, echo(t))
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	c, err := net.Dial("tcp", p.Addr())
	require.NoError(t, err)
	defer func() { _ = c.Close() }()
	r := bufio.NewReader(c)
	require.NoError(t, roundTrip(t, c, r, "one"))
	require.Equal(t, 1, p.Accepted())

	// Hold: bytes stop, nothing is closed; Resume delivers them.
	p.Hold()
	_, err = c.Write([]byte("held\n"))
	require.NoError(t, err)
	require.NoError(t, c.SetReadDeadline(time.Now().Add(50*time.Millisecond)))
	_, err = r.ReadString('\n')
	var ne net.Error
	require.ErrorAs(t, err, &ne)
	require.True(t, ne.Timeout(), "held traffic must not arrive: %v", err)
	require.NoError(t, c.SetReadDeadline(time.Time{}))
	p.Resume()
	got, err := r.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "held\n", got)

	// Cut: the connection drops; a new one goes through.
	p.Cut()
	_, err = r.ReadString('\n')
	require.Error(t, err)
	c2, err := net.Dial("tcp", p.Addr())
	require.NoError(t, err)
	defer func() { _ = c2.Close() }()
	require.NoError(t, roundTrip(t, c2, bufio.NewReader(c2), "two"))
	require.NoError(t, p.WaitAccepted(ctx, 2))

	// Down: cut and refused until up again.
	p.SetDown(true)
	c3, err := net.Dial("tcp", p.Addr())
	require.NoError(t, err)
	require.NoError(t, p.WaitRefused(ctx, 1))
	_, err = bufio.NewReader(c3).ReadString('\n')
	require.Error(t, err, "a refused connection is closed")
	_ = c3.Close()
	p.SetDown(false)
	c4, err := net.Dial("tcp", p.Addr())
	require.NoError(t, err)
	defer func() { _ = c4.Close() }()
	require.NoError(t, roundTrip(t, c4, bufio.NewReader(c4), "four"))
	require.Equal(t, 3, p.Accepted())
	require.Equal(t, 1, p.Refused())
}

// A server listening through Listen is reached through the proxy, and
// reports the proxy's address.
func TestProxyListen(t *testing.T) {
	t.Parallel()
	p := testenv.NewProxy(t, "")
	ln, err := p.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	require.Equal(t, p.Addr(), ln.Addr().String())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer func() { _ = ln.Close() }()
	wg.Go(func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer func() { _ = c.Close() }()
		_, _ = c.Write([]byte("hello\n"))
	})
	c, err := net.Dial("tcp", p.Addr())
	require.NoError(t, err)
	defer func() { _ = c.Close() }()
	line, err := bufio.NewReader(c).ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "hello\n", line)
}

func TestURL(t *testing.T) {
	t.Setenv("TESTENV_URL", "")
	require.Equal(t, "def", testenv.URL("TESTENV_URL", "def"))
	t.Setenv("TESTENV_URL", "set")
	require.Equal(t, "set", testenv.URL("TESTENV_URL", "def"))
}

func TestUnavailableSkipsOutsideCI(t *testing.T) {
	t.Setenv(testenv.CIEnv, "")
	var skipped bool
	t.Run("service", func(t *testing.T) {
		defer func() { skipped = t.Skipped() }()
		testenv.Unavailable(t, "the service", "TESTENV_URL", "def", context.DeadlineExceeded)
	})
	require.True(t, skipped)
}
