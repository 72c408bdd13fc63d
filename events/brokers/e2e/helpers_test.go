package e2e_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/gocqrs/cqrs/events/brokers/rabbitmq"
	"github.com/gocqrs/cqrs/internal/testenv"
)

// Environment variables naming the services.
const (
	postgresEnv = "CQRS_POSTGRES_URL"
	rabbitEnv   = "RABBITMQ_URL"
	natsEnv     = "NATS_URL"
	// kafkaEnv names a real cluster; the tests here fault an in-process
	// kfake cluster of their own, and are skipped when it is set.
	kafkaEnv = "KAFKA_BROKERS"

	defaultPostgresURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	defaultRabbitURL   = "amqp://guest:guest@127.0.0.1:5672/"
	defaultNATSURL     = "nats://127.0.0.1:4222"
)

// Environment variables of the helper processes.
const (
	roleEnv   = "E2E_ROLE" // "relay" or "consumer"; unset in the parent
	schemaEnv = "E2E_SCHEMA"
	ownerEnv  = "E2E_OWNER"
)

func postgresURL() string { return testenv.URL(postgresEnv, defaultPostgresURL) }

func rabbitURL() string { return testenv.URL(rabbitEnv, defaultRabbitURL) }

func natsURL() string { return testenv.URL(natsEnv, defaultNATSURL) }

// openPool opens a pgx pool on the test database with at most maxConns
// connections.
func openPool(ctx context.Context, maxConns int32) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(postgresURL())
	if err != nil {
		return nil, err
	}
	cfg.MaxConns = maxConns
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return pool, nil
}

// testPool returns a pool of 8 connections on the test database, closed
// when tb ends, or skips tb.
func testPool(tb testing.TB) *pgxpool.Pool {
	tb.Helper()
	return testPoolOf(tb, 8)
}

// testPoolOf is testPool with at most maxConns connections.
func testPoolOf(tb testing.TB, maxConns int32) *pgxpool.Pool {
	tb.Helper()
	pool, err := openPool(context.Background(), maxConns)
	if err != nil {
		testenv.Unavailable(tb, "PostgreSQL", postgresEnv, defaultPostgresURL, err)
	}
	tb.Cleanup(pool.Close)
	return pool
}

// testBroker returns the URL of the test broker once it answers, or skips
// tb.
func testBroker(tb testing.TB) string {
	tb.Helper()
	u := rabbitURL()
	conn, err := amqp.DialConfig(u, amqp.Config{Dial: amqp.DefaultDial(5 * time.Second)})
	if err != nil {
		testenv.Unavailable(tb, "RabbitMQ", rabbitEnv, defaultRabbitURL, err)
	}
	_ = conn.Close()
	return u
}

// unique returns a name no other test uses.
func unique(prefix string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// newSchema creates a schema of its own for tb, dropped (with everything
// in it) when tb ends, and returns its name.
func newSchema(tb testing.TB, pool *pgxpool.Pool) string {
	tb.Helper()
	name := unique("e2e_")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := pool.Exec(ctx, "CREATE SCHEMA "+name)
	require.NoError(tb, err)
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := pool.Exec(ctx, "DROP SCHEMA "+name+" CASCADE"); err != nil {
			tb.Errorf("drop schema %s: %v", name, err)
		}
	})
	return name
}

// provision declares topo on the broker at u and deletes it when tb ends.
func provision(tb testing.TB, u string, topo rabbitmq.Topology) rabbitmq.Topology {
	tb.Helper()
	sub, err := rabbitmq.NewSubscriber(rabbitmq.SubscriberConfig{URL: u, Topology: topo, Logger: quiet})
	require.NoError(tb, err)
	topo = sub.Topology()
	tb.Cleanup(func() { teardown(tb, u, topo) })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(tb, sub.Declare(ctx))
	return topo
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

// quiet discards the logs of the code under test.
var quiet = slog.New(slog.DiscardHandler)

// child is a helper process: the test binary re-executed with roleEnv
// set, so that it runs TestHelperProcess. Closing its stdin stops it
// gracefully; kill stops it with SIGKILL.
type child struct {
	name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser

	mu  sync.Mutex
	out strings.Builder
}

// Write collects the child's standard output.
func (c *child) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.out.Write(p)
}

// output returns what the child printed so far.
func (c *child) output() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.out.String()
}

// startChild starts a helper process of role with owner as its name; it is
// killed when tb ends, unless it was stopped before.
func startChild(tb testing.TB, role, owner string, env ...string) *child {
	tb.Helper()
	c := &child{name: owner}
	c.cmd = exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1", "-test.v=false")
	c.cmd.Env = append(os.Environ(), append(env,
		roleEnv+"="+role, ownerEnv+"="+owner, postgresEnv+"="+postgresURL())...)
	c.cmd.Stdout = c
	c.cmd.Stderr = os.Stderr
	stdin, err := c.cmd.StdinPipe()
	require.NoError(tb, err)
	c.stdin = stdin
	require.NoError(tb, c.cmd.Start())
	tb.Cleanup(func() {
		if c.cmd.ProcessState == nil {
			_ = c.cmd.Process.Kill()
			_ = c.cmd.Wait()
		}
	})
	return c
}

// kill stops the child with SIGKILL and waits for it.
func (c *child) kill(tb testing.TB) {
	tb.Helper()
	require.NoError(tb, c.cmd.Process.Kill())
	require.Error(tb, c.cmd.Wait(), "%s was killed", c.name)
}

// stop closes the child's stdin, which makes it stop gracefully, and waits
// for it to exit, killing it if it takes longer than timeout.
func (c *child) stop(tb testing.TB, timeout time.Duration) {
	tb.Helper()
	_ = c.stdin.Close()
	done := make(chan error, 1)
	go func() { done <- c.cmd.Wait() }()
	select {
	case err := <-done:
		require.NoError(tb, err, "%s exited with an error; output:\n%s", c.name, c.output())
	case <-time.After(timeout):
		_ = c.cmd.Process.Kill()
		err := <-done
		tb.Fatalf("%s did not stop within %v (killed: %v)", c.name, timeout, err)
	}
}
