package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/gocqrs/cqrs/events/brokers/rabbitmq"
	"github.com/gocqrs/cqrs/internal/testenv"
)

// Environment variables naming the servers of the tests that need them.
const (
	postgresEnv = "CQRS_POSTGRES_URL"
	natsEnv     = "NATS_URL"
	rabbitEnv   = "RABBITMQ_URL"

	defaultPostgresURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	defaultNATSURL     = "nats://127.0.0.1:4222"
	defaultRabbitURL   = "amqp://guest:guest@127.0.0.1:5672/"
)

// childEnv holds, in a helper process, the JSON array of its command-line
// arguments: the test binary started again runs the shop instead of the
// tests.
const childEnv = "SHOP_TEST_CHILD_ARGS"

func TestMain(m *testing.M) {
	if args := os.Getenv(childEnv); args != "" {
		os.Exit(runChild(args))
	}
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// runChild runs the shop with the JSON-encoded arguments until its stdin
// is closed (or it is killed). It prints "LISTENING <addr>" once the
// orders API listens.
func runChild(encoded string) int {
	var args []string
	if err := json.Unmarshal([]byte(encoded), &args); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	cfg, err := parseFlags(args, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	cfg.Ready = func(a net.Addr) { fmt.Printf("LISTENING %s\n", a) }
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		cancel()
	}()
	if err := run(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "shop:", err)
		return 1
	}
	return 0
}

// unique returns a name no other test uses.
func unique(prefix string) string {
	var b [5]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// testPostgres returns the URL of the test database, or skips tb; the
// schemas of namespace are dropped when tb ends.
func testPostgres(tb testing.TB, namespace string) string {
	tb.Helper()
	u := testenv.URL(postgresEnv, defaultPostgresURL)
	db, err := sql.Open("pgx", u)
	require.NoError(tb, err)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		_ = db.Close()
		testenv.Unavailable(tb, "PostgreSQL", postgresEnv, defaultPostgresURL, err)
	}
	tb.Cleanup(func() {
		defer func() { _ = db.Close() }()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for _, s := range []string{"orders", "inventory"} {
			if _, err := db.ExecContext(ctx, `DROP SCHEMA IF EXISTS "`+namespace+"_"+s+`" CASCADE`); err != nil {
				tb.Errorf("drop schema: %v", err)
			}
		}
	})
	return u
}

// testNATS returns the URL of the NATS server, or skips tb; the streams of
// namespace are deleted when tb ends.
func testNATS(tb testing.TB, namespace string) string {
	tb.Helper()
	u := testenv.URL(natsEnv, defaultNATSURL)
	nc, err := natsgo.Connect(u, natsgo.Timeout(5*time.Second))
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		js, jerr := jetstream.New(nc)
		if jerr == nil {
			_, jerr = js.AccountInfo(ctx)
		}
		if jerr != nil {
			nc.Close()
			err = fmt.Errorf("JetStream: %w", jerr)
		}
	}
	if err != nil {
		testenv.Unavailable(tb, "the NATS server (with JetStream)", natsEnv, defaultNATSURL, err)
	}
	tb.Cleanup(func() {
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, s := range []string{"orders", "inventory"} {
			stream := natsStream(topicOf(namespace, s))
			_ = js.DeleteStream(ctx, stream)
			_ = js.DeleteStream(ctx, stream+"_DEAD_LETTER")
		}
	})
	return u
}

// testRabbitMQ returns the URL of the RabbitMQ server, or skips tb; the
// queues and exchanges of namespace are deleted when tb ends.
func testRabbitMQ(tb testing.TB, namespace string) string {
	tb.Helper()
	u := testenv.URL(rabbitEnv, defaultRabbitURL)
	conn, err := amqp.DialConfig(u, amqp.Config{Dial: amqp.DefaultDial(5 * time.Second)})
	if err != nil {
		testenv.Unavailable(tb, "RabbitMQ", rabbitEnv, defaultRabbitURL, err)
	}
	tb.Cleanup(func() {
		defer func() { _ = conn.Close() }()
		ch, err := conn.Channel()
		if err != nil {
			tb.Errorf("teardown: %v", err)
			return
		}
		for _, s := range []string{"orders", "inventory"} {
			topo := rabbitmq.Topology{Queue: namespace + ".svc." + s, RetryDelays: []time.Duration{100 * time.Millisecond, time.Second}}
			queues := []string{topo.Queue, topo.Queue + rabbitmq.DeadLetterQueueSuffix}
			for _, d := range topo.RetryDelays {
				queues = append(queues, topo.RetryQueue(d))
			}
			for _, q := range queues {
				_, _ = ch.QueueDelete(q, false, false, false)
			}
			_ = ch.ExchangeDelete(topo.Queue+rabbitmq.DeadLetterExchangeSuffix, false, false)
		}
		_ = ch.ExchangeDelete(namespace, false, false)
	})
	return u
}

// child is the shop run in a process of its own: the test binary started
// again with childEnv set. Closing its stdin stops it gracefully; kill
// stops it with SIGKILL.
type child struct {
	name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	done  chan struct{} // closed once the process has exited
	err   error         // how it exited, once done

	mu  sync.Mutex
	out strings.Builder
	// logs collects the child's standard error, shown if the test fails.
	logs lockedBuffer
}

// lockedBuffer is a strings.Builder safe for concurrent use.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Write collects the child's standard output.
func (c *child) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.out.Write(p)
}

func (c *child) output() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.out.String()
}

// startChild starts the shop with args in a new process, killed when tb
// ends unless it was stopped before.
func startChild(tb testing.TB, name string, args ...string) *child {
	tb.Helper()
	encoded, err := json.Marshal(args)
	require.NoError(tb, err)
	c := &child{name: name}
	c.cmd = exec.Command(os.Args[0], "-test.run=^$")
	c.cmd.Env = append(os.Environ(), childEnv+"="+string(encoded))
	c.cmd.Stdout = c
	c.cmd.Stderr = &c.logs
	c.stdin, err = c.cmd.StdinPipe()
	require.NoError(tb, err)
	require.NoError(tb, c.cmd.Start())
	c.done = make(chan struct{})
	go func() {
		c.err = c.cmd.Wait()
		close(c.done)
	}()
	tb.Cleanup(func() {
		_ = c.cmd.Process.Kill()
		<-c.done
		if tb.Failed() {
			logs := c.logs.String()
			tb.Logf("%s's logs (the last 8 KB):\n%s", c.name, logs[max(0, len(logs)-8192):])
		}
	})
	return c
}

// listening waits until the child prints the address it listens on.
func (c *child) listening(tb testing.TB) string {
	tb.Helper()
	var addr string
	require.Eventually(tb, func() bool {
		sc := bufio.NewScanner(strings.NewReader(c.output()))
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), "LISTENING "); ok {
				addr = a
				return true
			}
		}
		return false
	}, 60*time.Second, 10*time.Millisecond, "%s did not start listening", c.name)
	return addr
}

// kill stops the child with SIGKILL and waits for it.
func (c *child) kill(tb testing.TB) {
	tb.Helper()
	require.NoError(tb, c.cmd.Process.Kill())
	<-c.done
	require.Error(tb, c.err, "%s was killed", c.name)
}

// exited reports, without waiting, whether the child has exited, and how.
func (c *child) exited() (bool, error) {
	select {
	case <-c.done:
		return true, c.err
	default:
		return false, nil
	}
}

// stop closes the child's stdin, which stops it gracefully, and waits for
// it to exit, killing it if it takes longer than timeout.
func (c *child) stop(tb testing.TB, timeout time.Duration) {
	tb.Helper()
	_ = c.stdin.Close()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-c.done:
		require.NoError(tb, c.err, "%s exited with an error", c.name)
	case <-timer.C:
		_ = c.cmd.Process.Kill()
		<-c.done
		tb.Fatalf("%s did not stop within %v (killed: %v)", c.name, timeout, c.err)
	}
}

// withProxy returns u with its host replaced by addr.
func withProxy(u, addr string) string {
	scheme, rest, ok := strings.Cut(u, "://")
	if !ok {
		return u
	}
	userinfo, hostpath, hasUser := strings.Cut(rest, "@")
	if !hasUser {
		hostpath, userinfo = rest, ""
	}
	_, path, _ := strings.Cut(hostpath, "/")
	out := scheme + "://"
	if hasUser {
		out += userinfo + "@"
	}
	out += addr
	if strings.Contains(hostpath, "/") {
		out += "/" + path
	}
	return out
}

// hostOf returns the host:port of a URL.
func hostOf(u string) string {
	_, rest, _ := strings.Cut(u, "://")
	if _, after, ok := strings.Cut(rest, "@"); ok {
		rest = after
	}
	host, _, _ := strings.Cut(rest, "/")
	return host
}
