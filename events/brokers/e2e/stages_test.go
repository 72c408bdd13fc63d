package e2e_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/gocqrs/cqrs/events/brokers"
	"github.com/gocqrs/cqrs/events/outbox"
	"github.com/gocqrs/cqrs/events/wire"
)

// stages adds up the wall time the pipeline spends in each of its steps,
// for the benchmarks: the relays' claims, sends (publish until every
// acknowledgement is in) and marks, and the consumer's transactions (the
// inbox record, the handler's effect and the commit, with the wait for a
// connection) and acknowledgements.
type stages struct {
	claim, send, mark, tx, ack stage
}

// stage is the number of calls of one step and their total duration.
type stage struct {
	n, ns atomic.Int64
}

func (s *stage) since(t0 time.Time) {
	s.ns.Add(int64(time.Since(t0)))
	s.n.Add(1)
}

// reset forgets the calls counted so far.
func (s *stages) reset() {
	for _, st := range []*stage{&s.claim, &s.send, &s.mark, &s.tx, &s.ack} {
		st.n.Store(0)
		st.ns.Store(0)
	}
}

// mean returns the mean duration of a call.
func (s *stage) mean() time.Duration {
	n := s.n.Load()
	if n == 0 {
		return 0
	}
	return time.Duration(s.ns.Load() / n)
}

// report reports the mean duration of each step, in milliseconds.
func (s *stages) report(b *testing.B) {
	b.Helper()
	for _, st := range []struct {
		name string
		s    *stage
	}{
		{"claim-ms/batch", &s.claim}, {"send-ms/batch", &s.send}, {"mark-ms/batch", &s.mark},
		{"tx-ms/event", &s.tx}, {"ack-ms/event", &s.ack},
	} {
		if st.s.n.Load() > 0 {
			b.ReportMetric(float64(st.s.mean().Microseconds())/1000, st.name)
		}
	}
}

// timedStore times a Store's claims and marks.
type timedStore struct {
	outbox.Store
	s *stages
}

func (t timedStore) Claim(ctx context.Context, owner string, limit int, lease time.Duration) ([]outbox.Row, error) {
	defer t.s.claim.since(time.Now())
	return t.Store.Claim(ctx, owner, limit, lease)
}

func (t timedStore) MarkSent(ctx context.Context, owner string, ids ...uuid.UUID) error {
	defer t.s.mark.since(time.Now())
	return t.Store.MarkSent(ctx, owner, ids...)
}

// timedSender times a Sender's sends.
type timedSender struct {
	outbox.Sender
	s *stages
}

func (t timedSender) Send(ctx context.Context, envs []wire.Envelope) error {
	defer t.s.send.since(time.Now())
	return t.Sender.Send(ctx, envs)
}

// timedTransactor times a Transactor's transactions.
type timedTransactor struct {
	outbox.Transactor
	s *stages
}

func (t timedTransactor) InTx(ctx context.Context, fn func(ctx context.Context) error) error {
	defer t.s.tx.since(time.Now())
	return t.Transactor.InTx(ctx, fn)
}

// timedSubscriber times the acknowledgements of its messages.
type timedSubscriber struct {
	brokers.Subscriber
	s *stages
}

func (t timedSubscriber) Subscribe(ctx context.Context) (brokers.Source, error) {
	src, err := t.Subscriber.Subscribe(ctx)
	if err != nil {
		return nil, err
	}
	return timedSource{Source: src, s: t.s}, nil
}

type timedSource struct {
	brokers.Source
	s *stages
}

func (t timedSource) Receive(ctx context.Context) (brokers.Message, error) {
	msg, err := t.Source.Receive(ctx)
	if err == nil {
		msg.Settler = timedSettler{Settler: msg.Settler, s: t.s}
	}
	return msg, err
}

type timedSettler struct {
	brokers.Settler
	s *stages
}

func (t timedSettler) Ack(ctx context.Context) error {
	defer t.s.ack.since(time.Now())
	return t.Settler.Ack(ctx)
}
