package e2e_test

import (
	"context"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/gocqrs/cqrs/events/brokers/nats/natstest"
	"github.com/gocqrs/cqrs/events/wire"
)

// benchTuning is the pipeline of the end-to-end benchmarks: how many
// relays, their batch size, the consumer's concurrency and in-flight
// bound, and the NATS consumer's pull batch and MaxAckPending.
type benchTuning struct {
	Relays, Batch, Concurrency, InFlight, PullBatch, AckPending, MaxBatch int
}

// defaultBenchTuning is the tuning the documented figures were taken
// with.
var defaultBenchTuning = benchTuning{Relays: 1, Batch: 500, Concurrency: 16, InFlight: 256, PullBatch: 128, AckPending: 1024}

// benchTuningEnv overrides the tuning for experiments:
// E2E_BENCH_TUNING="relays=4,batch=200,concurrency=16,inflight=256,pull=64,ackpending=1024,maxbatch=32"
// (any subset).
const benchTuningEnv = "E2E_BENCH_TUNING"

func benchTune(tb testing.TB) benchTuning {
	tb.Helper()
	t := defaultBenchTuning
	spec := os.Getenv(benchTuningEnv)
	if spec == "" {
		return t
	}
	for kv := range strings.SplitSeq(spec, ",") {
		k, v, _ := strings.Cut(kv, "=")
		n, err := strconv.Atoi(v)
		require.NoError(tb, err, "%s: %s", benchTuningEnv, kv)
		switch k {
		case "relays":
			t.Relays = n
		case "batch":
			t.Batch = n
		case "concurrency":
			t.Concurrency = n
		case "inflight":
			t.InFlight = n
		case "pull":
			t.PullBatch = n
		case "ackpending":
			t.AckPending = n
		case "maxbatch":
			t.MaxBatch = n
		default:
			tb.Fatalf("%s: unknown setting %q", benchTuningEnv, k)
		}
	}
	return t
}

// benchTarget is a broker the benchmarks run against: endpoint provisions
// a fresh topology on it, tuned.
type benchTarget struct {
	name     string
	endpoint func(b *testing.B, t benchTuning) endpoint
}

// benchTargets are the brokers the benchmarks run against: the NATS server
// of NATS_URL, a current NATS server embedded in the benchmark's process,
// and a kfake cluster in the benchmark's process (both of which then share
// the benchmark's CPU).
func benchTargets() []benchTarget {
	nats := func(b *testing.B, u string, t benchTuning) endpoint {
		b.Helper()
		ep := natsEndpoint(b, u, 10*time.Second, t.AckPending)
		ep.PullBatch = t.PullBatch
		return ep
	}
	return []benchTarget{
		{"nats-server", func(b *testing.B, t benchTuning) endpoint {
			b.Helper()
			return nats(b, natsServerURL(b), t)
		}},
		{"nats-embedded", func(b *testing.B, t benchTuning) endpoint {
			b.Helper()
			return nats(b, natstest.Run(b).URL(), t)
		}},
		{"kafka-kfake", func(b *testing.B, _ benchTuning) endpoint {
			b.Helper()
			return kafkaEndpoint(b, 0)
		}},
	}
}

// pool returns a pool with a connection for each handler, and two for
// each relay (its claims and marks, and its LISTEN), and a few more.
func (t benchTuning) pool(b *testing.B) *pgxpool.Pool {
	b.Helper()
	return testPoolOf(b, int32(t.Concurrency+2*t.Relays+4))
}

func (t benchTuning) relay(s *stages) relayTuning {
	return relayTuning{BatchSize: t.Batch, Lease: 30 * time.Second, SendTimeout: 10 * time.Second, PollInterval: time.Second, Stages: s}
}

func (t benchTuning) consumer(handled func(Item), s *stages) *consumerTuning {
	return &consumerTuning{MaxConcurrency: t.Concurrency, MaxInFlight: t.InFlight, MaxBatch: t.MaxBatch, Handled: handled, Stages: s}
}

// BenchmarkEndToEnd measures the whole path of an event: a PostgreSQL
// outbox, relays publishing to a broker, and a consumer applying each
// event's effect (a row) in the transaction of its PostgreSQL inbox
// record, with the tuning of defaultBenchTuning. The brokers are those of
// benchTargets: NATS JetStream (a file stream) on the server of NATS_URL
// and on one embedded in the benchmark's process, and Kafka on an
// in-process kfake cluster.
//
//   - throughput: b.N events are preloaded into the outbox (not timed);
//     the timer runs from the start of the relays and the consumer until
//     the consumer has handled them all. Reports events/s.
//   - relay: the same, with the relays alone, until they have sent
//     everything.
//   - consume: the relays send b.N events first (not timed); then the
//     consumer alone handles them. Reports events/s, and busy-handlers,
//     the mean number of handlers at work.
//   - consume-no-database: the same without inbox, transaction or effect.
//   - latency: b.N events are committed, one a transaction, at a fixed
//     offered rate of 1,000 a second, while the pipeline runs (after 200
//     events of warm-up). Each carries the time taken just before its
//     insert and commit; the handler takes the time once it has applied
//     the effect. Reports the 50th and 99th percentiles and the maximum of
//     the difference, and the rate actually offered.
//
// Each also reports the mean duration of the steps it went through (see
// stages). Run with a fixed count of events, for example
//
//	go test -run '^$' -bench 'EndToEnd/.*/throughput' -benchtime 20000x
func BenchmarkEndToEnd(b *testing.B) {
	tune := benchTune(b)
	for _, target := range benchTargets() {
		b.Run(target.name+"/throughput", func(b *testing.B) {
			pool := tune.pool(b)
			f := newFixture(b, pool)
			ep := target.endpoint(b, tune)
			f.preload(b, ep.Topic, b.N)
			b.ResetTimer()
			st := &stages{}
			p := startPipeline(b, f, ep, tune.Relays, tune.relay(st), tune.consumer(nil, st), quiet)
			waitUntil(b, "every event handled", func() bool { return p.consumer.Counters().Handled >= uint64(b.N) })
			b.StopTimer()
			st.report(b)
			elapsed := b.Elapsed()
			p.stop(b)
			require.Equal(b, int64(b.N), f.applied(b), "effects applied")
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
		})
		b.Run(target.name+"/relay", func(b *testing.B) {
			f := newFixture(b, tune.pool(b))
			ep := target.endpoint(b, tune)
			f.preload(b, ep.Topic, b.N)
			b.ResetTimer()
			st := &stages{}
			p := startPipeline(b, f, ep, tune.Relays, tune.relay(st), nil, quiet)
			waitUntil(b, "every event sent", func() bool { return p.sent() >= b.N })
			b.StopTimer()
			st.report(b)
			elapsed := b.Elapsed()
			p.stop(b)
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
		})
		for _, noDB := range []bool{false, true} {
			name := "/consume"
			if noDB {
				name = "/consume-no-database"
			}
			b.Run(target.name+name, func(b *testing.B) {
				f := newFixture(b, tune.pool(b))
				ep := target.endpoint(b, tune)
				f.preload(b, ep.Topic, b.N)
				p := startPipeline(b, f, ep, tune.Relays, tune.relay(nil), nil, quiet)
				waitUntil(b, "every event sent", func() bool { return p.sent() >= b.N })
				p.stop(b)
				b.ResetTimer()
				st := &stages{}
				ct := tune.consumer(nil, st)
				ct.NoDatabase = noDB
				p = startPipeline(b, f, ep, 0, tune.relay(nil), ct, quiet)
				waitUntil(b, "every event handled", func() bool { return p.consumer.Counters().Handled >= uint64(b.N) })
				b.StopTimer()
				st.report(b)
				elapsed := b.Elapsed()
				p.stop(b)
				if !noDB {
					require.Equal(b, int64(b.N), f.applied(b), "effects applied")
				}
				rate := float64(b.N) / elapsed.Seconds()
				b.ReportMetric(rate, "events/s")
				if !noDB {
					// Handlers busy on average: below MaxConcurrency when
					// the consumer cannot keep them all busy.
					b.ReportMetric(rate*st.tx.mean().Seconds(), "busy-handlers")
				}
			})
		}
		b.Run(target.name+"/latency", func(b *testing.B) {
			const rate, warmup, producers = 1000, 200, 8
			pool := tune.pool(b)
			f := newFixture(b, pool)
			ep := target.endpoint(b, tune)
			lat := &latencies{}
			st := &stages{}
			p := startPipeline(b, f, ep, tune.Relays, tune.relay(st), tune.consumer(lat.add, st), quiet)
			f.offer(b.Context(), b, ep.Topic, 0, warmup, rate, producers)
			waitUntil(b, "the warm-up events handled", func() bool { return lat.n.Load() >= warmup })
			lat.reset(b.N)
			st.reset()
			b.ResetTimer()
			offered := f.offer(b.Context(), b, ep.Topic, warmup, b.N, rate, producers)
			waitUntil(b, "every event handled", func() bool { return lat.n.Load() >= int64(b.N) })
			b.StopTimer()
			st.report(b)
			p.stop(b)
			require.Equal(b, int64(warmup+b.N), f.applied(b), "effects applied")
			d := lat.sorted()
			b.ReportMetric(float64(percentile(d, 50).Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(percentile(d, 99).Microseconds())/1000, "p99-ms")
			b.ReportMetric(float64(d[len(d)-1].Microseconds())/1000, "max-ms")
			b.ReportMetric(offered, "offered-events/s")
		})
	}
}

// latencies collects commit-to-handled durations.
type latencies struct {
	mu sync.Mutex
	d  []time.Duration
	n  atomic.Int64
}

func (l *latencies) add(it Item) {
	d := time.Since(time.Unix(0, it.At))
	l.mu.Lock()
	l.d = append(l.d, d)
	l.mu.Unlock()
	l.n.Add(1)
}

// reset forgets what was collected, and makes room for n durations.
func (l *latencies) reset(n int) {
	l.mu.Lock()
	l.d = make([]time.Duration, 0, n)
	l.mu.Unlock()
	l.n.Store(0)
}

// sorted returns the durations collected, in increasing order.
func (l *latencies) sorted() []time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	d := slices.Clone(l.d)
	slices.Sort(d)
	return d
}

// percentile returns the p-th percentile (0 < p < 100) of the durations.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted)) * p / 100)
	return sorted[min(i, len(sorted)-1)]
}

// offer commits n events of topic, numbered from first, one a
// transaction, at rate events a second, spread over producers goroutines,
// and returns the rate achieved.
func (f *fixture) offer(ctx context.Context, tb testing.TB, topic string, first, n, rate, producers int) float64 {
	tb.Helper()
	enc, err := wire.NewEncoder(wire.EncoderOptions{})
	require.NoError(tb, err)
	interval := time.Second / time.Duration(rate)
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, producers)
	for p := range producers {
		wg.Go(func() {
			for i := p; i < n; i += producers {
				seq := first + i
				if wait := time.Until(start.Add(time.Duration(i) * interval)); wait > 0 {
					select {
					case <-time.After(wait): // the offered rate, not a synchronisation
					case <-ctx.Done():
						return
					}
				}
				err := f.db.InTx(ctx, func(ctx context.Context) error {
					env, err := item(enc, topic, seq, time.Now().UnixNano())
					if err != nil {
						return err
					}
					return f.store.Add(ctx, env)
				})
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(errs)
	for err := range errs {
		require.NoError(tb, err)
	}
	return float64(n) / elapsed.Seconds()
}
