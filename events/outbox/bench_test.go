package outbox_test

import (
	"context"
	"encoding/binary"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/gocqrs/cqrs/events/outbox"
	"github.com/gocqrs/cqrs/events/wire"
)

// benchEnvelopes returns a function filling batch with envelopes of fresh,
// cheaply made IDs, spread over 16 keys.
func benchEnvelopes() func(batch []wire.Envelope) {
	var n uint64
	payload := []byte(`{"id":"o-1","total":42}`)
	var keys [16]string
	for i := range keys {
		keys[i] = "k" + strconv.Itoa(i)
	}
	return func(batch []wire.Envelope) {
		for i := range batch {
			n++
			var id uuid.UUID
			binary.BigEndian.PutUint64(id[8:], n)
			batch[i] = wire.Envelope{
				ID: id, Name: "order.placed", Topic: "orders", Key: keys[n%16],
				ContentType: "application/json", Payload: payload,
			}
		}
	}
}

// BenchmarkStoreCycle adds a batch in one transaction, claims it, marks it
// sent and deletes it: the work of the memory store per batch. The baseline
// is a mutex-guarded slice doing the least a queue must: append the batch,
// take it back.
func BenchmarkStoreCycle(b *testing.B) {
	for _, size := range []int{1, 100} {
		b.Run("baseline=mutex-queue/batch="+strconv.Itoa(size), func(b *testing.B) {
			var (
				mu    sync.Mutex
				queue []wire.Envelope
			)
			fill := benchEnvelopes()
			batch := make([]wire.Envelope, size)
			b.ReportAllocs()
			for b.Loop() {
				fill(batch)
				mu.Lock()
				queue = append(queue, batch...)
				mu.Unlock()
				mu.Lock()
				taken := queue[:size]
				queue = queue[size:]
				mu.Unlock()
				_ = taken
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*size), "ns/event")
		})
		b.Run("memory-store/batch="+strconv.Itoa(size), func(b *testing.B) {
			ctx := context.Background()
			s := outbox.NewMemoryStore(outbox.MemoryOptions{})
			fill := benchEnvelopes()
			batch := make([]wire.Envelope, size)
			ids := make([]uuid.UUID, size)
			add := func(ctx context.Context) error { return s.Add(ctx, batch...) }
			b.ReportAllocs()
			for b.Loop() {
				fill(batch)
				if err := s.InTx(ctx, add); err != nil {
					b.Fatal(err)
				}
				rows, err := s.Claim(ctx, "bench", size, time.Minute)
				if err != nil || len(rows) != size {
					b.Fatalf("claimed %d rows: %v", len(rows), err)
				}
				for i := range rows {
					ids[i] = rows[i].Envelope.ID
				}
				if err := s.MarkSent(ctx, "bench", ids...); err != nil {
					b.Fatal(err)
				}
				if _, err := s.DeleteSent(ctx, time.Now().Add(time.Hour), size); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*size), "ns/event")
		})
	}
}

// BenchmarkRelayRoundTrip measures one commit until its events are
// delivered by a running relay, woken by the store's signal. The baseline
// hands the batch to a goroutine over a channel and waits for its answer:
// the least any asynchronous hand-off costs.
func BenchmarkRelayRoundTrip(b *testing.B) {
	for _, size := range []int{1, 100} {
		b.Run("baseline=channel-handoff/batch="+strconv.Itoa(size), func(b *testing.B) {
			in := make(chan []wire.Envelope)
			out := make(chan struct{})
			var wg sync.WaitGroup
			wg.Go(func() {
				for batch := range in {
					for range batch {
					}
					out <- struct{}{}
				}
			})
			fill := benchEnvelopes()
			batch := make([]wire.Envelope, size)
			b.ReportAllocs()
			for b.Loop() {
				fill(batch)
				in <- batch
				<-out
			}
			close(in)
			wg.Wait()
		})
		b.Run("memory-relay/batch="+strconv.Itoa(size), func(b *testing.B) {
			s := outbox.NewMemoryStore(outbox.MemoryOptions{})
			delivered := make(chan struct{}, 1)
			n := 0
			sender := outbox.InProcessSender(func(context.Context, wire.Envelope) error {
				if n++; n == size {
					n = 0
					delivered <- struct{}{}
				}
				return nil
			})
			cfg := testConfig()
			cfg.BatchSize = size
			// Keep the store at a steady size: sent rows go at once.
			cfg.RetainSent = time.Nanosecond
			cfg.CleanupInterval = time.Millisecond
			cfg.CleanupBatch = 10_000
			stop := start(b, newRelay(b, s, sender, cfg))
			fill := benchEnvelopes()
			batch := make([]wire.Envelope, size)
			ctx := context.Background()
			add := func(ctx context.Context) error { return s.Add(ctx, batch...) }
			b.ReportAllocs()
			for b.Loop() {
				fill(batch)
				if err := s.InTx(ctx, add); err != nil {
					b.Fatal(err)
				}
				<-delivered
			}
			stop()
		})
	}
}
