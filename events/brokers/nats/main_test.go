package nats_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/gocqrs/cqrs/events/brokers/nats"
	"github.com/gocqrs/cqrs/internal/testenv"
)

// urlEnv names the environment variable with the URL of the NATS server
// (JetStream enabled) the tests use.
const urlEnv = "NATS_URL"

const defaultURL = "nats://127.0.0.1:4222"

func natsURL() string { return testenv.URL(urlEnv, defaultURL) }

func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// quiet discards the logs of the code under test.
var quiet = slog.New(slog.DiscardHandler)

// connect connects to the server of NATS_URL, closed when tb ends, or
// skips tb if it is unreachable (fails it when CI is set: CI must run
// these tests).
func connect(tb testing.TB, opts ...natsgo.Option) *natsgo.Conn {
	tb.Helper()
	nc, err := natsgo.Connect(natsURL(), append([]natsgo.Option{natsgo.Timeout(5 * time.Second)}, opts...)...)
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
		testenv.Unavailable(tb, "the NATS server with JetStream", urlEnv, defaultURL, err)
	}
	tb.Cleanup(nc.Close)
	return nc
}

// unique returns a name no other test uses: prefix and random hex, upper
// case (stream names) .
func unique(prefix string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return strings.ToUpper(prefix + "_" + hex.EncodeToString(b[:]))
}

// topology returns a fresh topology on its own stream, in memory, with
// the subject "<stream>.events", whose streams are deleted when tb ends.
func topology(tb testing.TB, nc *natsgo.Conn) nats.Topology {
	tb.Helper()
	name := unique(strings.ReplaceAll(tb.Name(), "/", "_")[:min(len(tb.Name()), 20)])
	name = strings.Map(func(r rune) rune {
		if r == '.' || r == '*' || r == '>' || r == ' ' || r == '/' || r == '\\' {
			return '_'
		}
		return r
	}, name)
	t := nats.Topology{
		Stream:   name,
		Consumer: "consumer",
		Subjects: []string{name + ".events"},
		Storage:  jetstream.MemoryStorage,
	}
	deleteStreams(tb, nc, t.Stream, t.Stream+nats.DeadLetterStreamSuffix, t.Stream+nats.DeadLetterStreamSuffix+nats.DeadLetterStreamSuffix)
	return t
}

// deleteStreams deletes the streams when tb ends.
func deleteStreams(tb testing.TB, nc *natsgo.Conn, names ...string) {
	tb.Helper()
	tb.Cleanup(func() {
		if nc.IsClosed() {
			return
		}
		js, err := jetstream.New(nc)
		if err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, n := range names {
			_ = js.DeleteStream(ctx, n)
		}
	})
}

// provision provisions t on nc.
func provision(tb testing.TB, nc *natsgo.Conn, t nats.Topology) {
	tb.Helper()
	js, err := jetstream.New(nc)
	require.NoError(tb, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(tb, t.Provision(ctx, js))
}

// deadLetterReader returns the topology of a consumer reading the
// dead-letter stream of t from its start.
func deadLetterReader(t nats.Topology) nats.Topology {
	return nats.Topology{
		Stream:   t.Stream + nats.DeadLetterStreamSuffix,
		Consumer: "reader",
		Storage:  jetstream.MemoryStorage,
	}
}

// newSubscriber returns a provisioning subscriber of t.
func newSubscriber(tb testing.TB, nc *natsgo.Conn, t nats.Topology, opts nats.SubscriberConfig) *nats.Subscriber {
	tb.Helper()
	opts.Topology = t
	opts.Provision = true
	if opts.Logger == nil {
		opts.Logger = quiet
	}
	sub, err := nats.NewSubscriber(nc, opts)
	require.NoError(tb, err)
	return sub
}

func newSender(tb testing.TB, nc *natsgo.Conn, opts nats.SenderConfig) *nats.Sender {
	tb.Helper()
	s, err := nats.NewSender(nc, opts)
	require.NoError(tb, err)
	return s
}
