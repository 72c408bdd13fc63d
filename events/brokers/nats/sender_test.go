package nats_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/events/brokers"
	"github.com/gocqrs/cqrs/events/brokers/nats"
	"github.com/gocqrs/cqrs/events/outbox"
	"github.com/gocqrs/cqrs/events/wire"
)

type orderPlaced struct {
	Order string `json:"order"`
	Seq   int    `json:"seq"`
}

// envelope encodes an order.placed event with key and seq to topic.
func envelope(tb testing.TB, topic, key string, seq int) wire.Envelope {
	tb.Helper()
	var enc wire.Encoder
	env, err := enc.Encode(events.NewNotification("order.placed", orderPlaced{Order: key, Seq: seq}).WithTopic(topic).WithKey(key))
	require.NoError(tb, err)
	return env
}

// stored returns every message of stream, in stream order.
func stored(tb testing.TB, nc *natsgo.Conn, stream string) []*jetstream.RawStreamMsg {
	tb.Helper()
	js, err := jetstream.New(nc)
	require.NoError(tb, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, stream)
	require.NoError(tb, err)
	info, err := st.Info(ctx)
	require.NoError(tb, err)
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := st.GetMsg(ctx, seq)
		require.NoError(tb, err)
		out = append(out, m)
	}
	return out
}

func TestNewSenderValidates(t *testing.T) {
	t.Parallel()
	_, err := nats.NewSender(nil, nats.SenderConfig{MaxPending: -1, AckTimeout: -time.Second})
	require.ErrorIs(t, err, nats.ErrInvalidConfig)
	for _, want := range []string{"nil connection", "MaxPending", "AckTimeout"} {
		assert.Contains(t, err.Error(), want, "every problem is reported at once")
	}
	_, err = nats.NewPublisher(nil, nats.PublisherConfig{})
	require.ErrorIs(t, err, nats.ErrInvalidConfig)
}

// TestSendMessage checks what a record becomes: subject, body, headers,
// key, message id.
func TestSendMessage(t *testing.T) {
	t.Parallel()
	nc := connect(t)
	topo := topology(t, nc)
	provision(t, nc, topo)
	env := envelope(t, topo.Subjects[0], "customer-7", 1)
	env.CorrelationID, env.CausationID = "corr-1", "cause-1"
	env.SetHeader(wire.HeaderTraceparent, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	env.SetHeader("x-tenant", "acme")

	require.NoError(t, newSender(t, nc, nats.SenderConfig{}).Send(t.Context(), []wire.Envelope{env}))
	msgs := stored(t, nc, topo.Stream)
	require.Len(t, msgs, 1)
	m := msgs[0]
	assert.Equal(t, topo.Subjects[0], m.Subject)
	assert.Equal(t, env.Payload, m.Data)
	want := map[string]string{
		wire.HeaderEventName:      "order.placed",
		wire.HeaderEventID:        env.ID.String(),
		wire.HeaderEventTimestamp: env.Timestamp.Format(time.RFC3339Nano),
		wire.HeaderCorrelationID:  "corr-1",
		wire.HeaderCausationID:    "cause-1",
		wire.HeaderContentType:    wire.ContentTypeJSON,
		wire.HeaderTraceparent:    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"x-tenant":                "acme",
		brokers.HeaderKey:         "customer-7",
		jetstream.MsgIDHeader:     env.ID.String(),
	}
	got := make(map[string]string)
	for k, vs := range m.Header {
		got[k] = vs[0]
	}
	assert.Equal(t, want, got)
}

// TestSendDeduplicates sends an event twice: the stream stores it once.
func TestSendDeduplicates(t *testing.T) {
	t.Parallel()
	nc := connect(t)
	topo := topology(t, nc)
	provision(t, nc, topo)
	s := newSender(t, nc, nats.SenderConfig{})
	env := envelope(t, topo.Subjects[0], "k", 1)
	require.NoError(t, s.Send(t.Context(), []wire.Envelope{env}))
	require.NoError(t, s.Send(t.Context(), []wire.Envelope{env, envelope(t, topo.Subjects[0], "k", 2)}))
	assert.Len(t, stored(t, nc, topo.Stream), 2, "the second publish of the event is dropped")
}

// TestSendOrderPerKey sends many keys at once, with a small window: each
// key's records are stored in batch order.
func TestSendOrderPerKey(t *testing.T) {
	t.Parallel()
	nc := connect(t)
	topo := topology(t, nc)
	provision(t, nc, topo)
	const keys, perKey = 8, 25
	var envs []wire.Envelope
	for seq := range perKey {
		for k := range keys {
			envs = append(envs, envelope(t, topo.Subjects[0], fmt.Sprintf("k-%d", k), seq))
		}
		envs = append(envs, envelope(t, topo.Subjects[0], "", seq)) // unkeyed ones among them
	}
	require.NoError(t, newSender(t, nc, nats.SenderConfig{MaxPending: 4}).Send(t.Context(), envs))

	msgs := stored(t, nc, topo.Stream)
	require.Len(t, msgs, len(envs))
	next := make(map[string]int)
	var reg wire.Registry
	require.NoError(t, wire.Register[orderPlaced](&reg, "order.placed"))
	dec, err := wire.NewDecoder(&reg, wire.DecoderOptions{})
	require.NoError(t, err)
	for _, m := range msgs {
		key := m.Header.Get(brokers.HeaderKey)
		if key == "" {
			continue
		}
		ev, err := wire.DecodeAs[orderPlaced](dec, wire.Envelope{Payload: m.Data})
		require.NoError(t, err)
		assert.Equal(t, next[key], ev.Payload.Seq, "key %s: stored out of order", key)
		next[key] = ev.Payload.Seq + 1
	}
}

// TestSendReportsPerRecord mixes records that fail for good, records behind
// them on their key, and records that succeed.
func TestSendReportsPerRecord(t *testing.T) {
	t.Parallel()
	nc := connect(t)
	topo := topology(t, nc)
	provision(t, nc, topo)
	subject := topo.Subjects[0]

	badHeader := envelope(t, subject, "k-1", 2)
	badHeader.SetHeader("bad header", "x")
	newline := envelope(t, subject, "k-3", 1)
	newline.SetHeader("x-note", "two\nlines")
	noTopic := envelope(t, "", "k-2", 1)
	wildcard := envelope(t, subject+".*", "", 1)
	envs := []wire.Envelope{
		envelope(t, subject, "k-1", 1), // 0: sent
		badHeader,                      // 1: permanent
		envelope(t, subject, "k-1", 3), // 2: not attempted
		noTopic,                        // 3: permanent
		envelope(t, subject, "k-2", 2), // 4: not attempted
		envelope(t, subject, "", 1),    // 5: sent
		newline,                        // 6: permanent
		wildcard,                       // 7: permanent
		envelope(t, subject, "k-4", 1), // 8: sent
	}
	err := newSender(t, nc, nats.SenderConfig{}).Send(t.Context(), envs)
	be, ok := errors.AsType[*outbox.BatchError](err)
	require.True(t, ok, "a *outbox.BatchError, got %v", err)
	require.Len(t, be.Errs, len(envs))
	for _, i := range []int{0, 5, 8} {
		assert.NoError(t, be.Errs[i], "record %d", i)
	}
	for _, i := range []int{1, 3, 6, 7} {
		assert.ErrorIs(t, be.Errs[i], outbox.ErrPermanent, "record %d", i)
		assert.ErrorIs(t, be.Errs[i], nats.ErrInvalidMessage, "record %d", i)
		pe, ok := errors.AsType[*nats.PublishError](be.Errs[i])
		if assert.True(t, ok, "record %d: a *PublishError", i) {
			assert.Equal(t, envs[i].ID, pe.EventID, "record %d", i)
		}
	}
	for _, i := range []int{2, 4} {
		assert.ErrorIs(t, be.Errs[i], outbox.ErrNotAttempted, "record %d", i)
	}
	assert.Len(t, stored(t, nc, topo.Stream), 3, "only the records reported sent are stored")
}

// TestSendWithoutStream publishes to a subject no stream captures: the
// record fails (the stream may be created later: not permanent).
func TestSendWithoutStream(t *testing.T) {
	t.Parallel()
	nc := connect(t)
	env := envelope(t, strings.ToLower(unique("nostream"))+".events", "k", 1)
	err := newSender(t, nc, nats.SenderConfig{}).Send(t.Context(), []wire.Envelope{env, envelope(t, env.Topic, "k", 2)})
	be, ok := errors.AsType[*outbox.BatchError](err)
	require.True(t, ok, "a *outbox.BatchError, got %v", err)
	require.Error(t, be.Errs[0])
	assert.NotErrorIs(t, be.Errs[0], outbox.ErrPermanent)
	assert.ErrorIs(t, be.Errs[1], outbox.ErrNotAttempted)
}

// TestSendCancelled returns at once, every record failing with ctx's error.
func TestSendCancelled(t *testing.T) {
	t.Parallel()
	nc := connect(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	envs := []wire.Envelope{envelope(t, "any.subject", "k", 1), envelope(t, "any.subject", "", 2)}
	err := newSender(t, nc, nats.SenderConfig{}).Send(ctx, envs)
	be, ok := errors.AsType[*outbox.BatchError](err)
	require.True(t, ok, "a *outbox.BatchError, got %v", err)
	for i := range envs {
		assert.ErrorIs(t, be.Errs[i], context.Canceled, "record %d", i)
	}
	require.NoError(t, newSender(t, nc, nats.SenderConfig{}).Send(ctx, nil), "an empty batch")
}

// TestSendSubject routes records with SenderConfig.Subject.
func TestSendSubject(t *testing.T) {
	t.Parallel()
	nc := connect(t)
	topo := topology(t, nc)
	topo.Subjects = []string{topo.Stream + ".events.>"}
	provision(t, nc, topo)
	s := newSender(t, nc, nats.SenderConfig{Subject: func(env wire.Envelope) (string, error) {
		if env.Key == "" {
			return "", errors.New("a key is required")
		}
		return env.Topic + "." + env.Key, nil
	}})
	base := topo.Stream + ".events"
	err := s.Send(t.Context(), []wire.Envelope{envelope(t, base, "k1", 1), envelope(t, base, "", 2)})
	be, ok := errors.AsType[*outbox.BatchError](err)
	require.True(t, ok, "a *outbox.BatchError, got %v", err)
	assert.NoError(t, be.Errs[0])
	assert.ErrorIs(t, be.Errs[1], outbox.ErrPermanent)
	msgs := stored(t, nc, topo.Stream)
	require.Len(t, msgs, 1)
	assert.Equal(t, base+".k1", msgs[0].Subject)
}

// TestPublisher publishes an event with the lineage of its context and a
// stamped trace header, and reports a record's error as it is.
func TestPublisher(t *testing.T) {
	t.Parallel()
	nc := connect(t)
	topo := topology(t, nc)
	provision(t, nc, topo)
	p, err := nats.NewPublisher(newSender(t, nc, nats.SenderConfig{}), nats.PublisherConfig{
		Stamp: func(_ context.Context, env *wire.Envelope) { env.SetHeader(wire.HeaderTraceparent, "00-trace-span-01") },
	})
	require.NoError(t, err)

	ctx := events.WithLineage(t.Context(), events.Lineage{CorrelationID: "corr-9", CausationID: "request-3"})
	ev := events.NewNotification("order.placed", orderPlaced{Order: "o-1"}).WithTopic(topo.Subjects[0])
	require.NoError(t, p.Publish(ctx, ev))
	orphan := events.NewNotification("order.placed", orderPlaced{Order: "o-2"}).WithTopic(topo.Subjects[0])
	require.NoError(t, p.Publish(t.Context(), orphan))

	msgs := stored(t, nc, topo.Stream)
	require.Len(t, msgs, 2)
	assert.Equal(t, "corr-9", msgs[0].Header.Get(wire.HeaderCorrelationID))
	assert.Equal(t, "request-3", msgs[0].Header.Get(wire.HeaderCausationID))
	assert.Equal(t, "00-trace-span-01", msgs[0].Header.Get(wire.HeaderTraceparent))
	assert.Equal(t, orphan.ID.String(), msgs[1].Header.Get(wire.HeaderCorrelationID), "an event without a lineage starts one")
	assert.Equal(t, orphan.ID.String(), msgs[1].Header.Get(wire.HeaderCausationID))

	err = p.Publish(t.Context(), events.NewNotification("order.placed", orderPlaced{}).WithTopic(""))
	require.ErrorIs(t, err, outbox.ErrPermanent, "an event without a topic")
	_, isBatch := errors.AsType[*outbox.BatchError](err)
	assert.False(t, isBatch, "the record's own error, not a batch")
	assert.ErrorIs(t, p.Publish(t.Context(), events.Notification[orderPlaced]{}), wire.ErrInvalidEvent)
}

// TestSendTooLarge fails a record larger than the server accepts, for good,
// and goes on with the others.
func TestSendTooLarge(t *testing.T) {
	t.Parallel()
	nc := connect(t)
	topo := topology(t, nc)
	provision(t, nc, topo)
	big := envelope(t, topo.Subjects[0], "k", 1)
	big.Payload = make([]byte, nc.MaxPayload()+1)
	err := newSender(t, nc, nats.SenderConfig{}).Send(t.Context(),
		[]wire.Envelope{big, envelope(t, topo.Subjects[0], "k", 2), envelope(t, topo.Subjects[0], "other", 1)})
	be, ok := errors.AsType[*outbox.BatchError](err)
	require.True(t, ok, "a *outbox.BatchError, got %v", err)
	assert.ErrorIs(t, be.Errs[0], outbox.ErrPermanent)
	assert.ErrorIs(t, be.Errs[0], natsgo.ErrMaxPayload)
	assert.ErrorIs(t, be.Errs[1], outbox.ErrNotAttempted)
	assert.NoError(t, be.Errs[2])
}
