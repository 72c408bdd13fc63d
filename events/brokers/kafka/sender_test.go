package kafka_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/events/brokers/kafka"
	"github.com/gocqrs/cqrs/events/outbox"
	"github.com/gocqrs/cqrs/events/wire"
)

// batchErrs returns the per-record errors of Send's result.
func batchErrs(t *testing.T, err error, n int) []error {
	t.Helper()
	if err == nil {
		return make([]error, n)
	}
	be, ok := errors.AsType[*outbox.BatchError](err)
	require.True(t, ok, "Send returned %T %v, not a *outbox.BatchError", err, err)
	require.Len(t, be.Errs, n)
	return be.Errs
}

func TestSenderRecords(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	topic := c.topic(t, 4)
	s := c.sender(t)

	full := envelope(t, topic, "k-1", 1)
	full.CorrelationID, full.CausationID = "corr-1", "cause-1"
	full.SetHeader(wire.HeaderTraceparent, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	full.SetHeader("x-tenant", "acme")
	envs := []wire.Envelope{full, envelope(t, topic, "k-2", 2), envelope(t, topic, "k-1", 3), envelope(t, topic, "", 4)}
	require.NoError(t, s.Send(t.Context(), envs))

	recs := c.read(t, topic, len(envs))
	byValue := make(map[string]*kgo.Record)
	for _, r := range recs {
		byValue[string(r.Value)] = r
	}
	for i, env := range envs {
		r := byValue[string(env.Payload)]
		require.NotNil(t, r, "record %d", i)
		if env.Key == "" {
			assert.Nil(t, r.Key, "record %d: an envelope without a key makes a record without a key", i)
		} else {
			assert.Equal(t, env.Key, string(r.Key), "record %d key", i)
		}
		want, err := wire.ToHeaders(env)
		require.NoError(t, err)
		assert.Equal(t, want, headersOf(r), "record %d headers", i)
		assert.True(t, headerOrder(r.Headers), "record %d headers: the fields', then the others in name order", i)
	}
	first, third := byValue[string(envs[0].Payload)], byValue[string(envs[2].Payload)]
	assert.Equal(t, first.Partition, third.Partition, "a key goes to one partition")
	assert.Less(t, first.Offset, third.Offset, "the records of a key are written in batch order")

	// The producer's guarantees are set on the client.
	cl := s.Client()
	assert.Equal(t, false, cl.OptValue(kgo.DisableIdempotentWrite), "idempotent writes")
	assert.Equal(t, kgo.AllISRAcks(), cl.OptValue(kgo.RequiredAcks), "acks from all in-sync replicas")
}

// headerOrder reports whether hs holds the headers of the envelope's
// fields first, in wire's order, then the others in name order.
func headerOrder(hs []kgo.RecordHeader) bool {
	fields := []string{wire.HeaderEventName, wire.HeaderEventID, wire.HeaderEventTimestamp,
		wire.HeaderCorrelationID, wire.HeaderCausationID, wire.HeaderContentType}
	i := 0
	for _, f := range fields {
		if i < len(hs) && hs[i].Key == f {
			i++
		}
	}
	for j := i + 1; j < len(hs); j++ {
		if hs[j-1].Key > hs[j].Key || slices.Contains(fields, hs[j].Key) {
			return false
		}
	}
	return true
}

// Envelopes that can never be sent fail permanently, without being
// produced; the later records of their key are not attempted; other keys
// are sent.
func TestSenderPermanentFailures(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	topic := c.topic(t, 2)
	s, err := kafka.NewSender(kafka.SenderConfig{Brokers: c.brokers, MaxRecordBytes: 1024, Logger: c.log})
	require.NoError(t, err)
	t.Cleanup(s.Close)

	noTopic := envelope(t, "", "k-1", 1)
	big := envelope(t, topic, "k-3", 4)
	big.Payload = []byte(`{"seq":4,"note":"` + strings.Repeat("x", 2048) + `"}`)
	reserved := envelope(t, topic, "k-4", 6)
	reserved.SetHeader("Event-ID", "forged") // reserved, whatever its case
	envs := []wire.Envelope{
		noTopic,                      // 0: permanent
		envelope(t, topic, "k-1", 2), // 1: behind it
		envelope(t, topic, "k-2", 3), // 2: sent
		big,                          // 3: permanent
		envelope(t, topic, "k-3", 5), // 4: behind it
		reserved,                     // 5: permanent (wire.ToHeaders)
		envelope(t, topic, "", 7),    // 6: sent
		envelope(t, topic, "k-2", 8), // 7: sent
	}
	errs := batchErrs(t, s.Send(t.Context(), envs), len(envs))
	for _, i := range []int{0, 3, 5} {
		assert.ErrorIs(t, errs[i], outbox.ErrPermanent, "record %d", i)
	}
	assert.ErrorIs(t, errs[0], kafka.ErrNoTopic)
	assert.ErrorIs(t, errs[3], kafka.ErrRecordTooLarge)
	assert.ErrorIs(t, errs[5], wire.ErrReservedHeader)
	for _, i := range []int{1, 4} {
		assert.ErrorIs(t, errs[i], outbox.ErrNotAttempted, "record %d", i)
	}
	for _, i := range []int{2, 6, 7} {
		assert.NoError(t, errs[i], "record %d", i)
	}
	assert.EqualValues(t, 3, c.count(t, topic), "only the records sent are in the topic")
}

// A record the broker refuses fails the records behind it in its
// partition: none of them is written, and a record of the same key to
// another topic is not attempted.
func TestSenderBrokerFailureHoldsKey(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	if c.fake == nil {
		t.Skip("needs kfake's fault injection")
	}
	topic, other := c.topic(t, 1), c.topic(t, 1)
	s := c.sender(t)
	fault := c.fake.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: topic, Err: kerr.InvalidRecord})
	envs := []wire.Envelope{
		envelope(t, topic, "k-1", 1),
		envelope(t, topic, "k-1", 2),
		envelope(t, other, "k-1", 3), // another topic: waits for the first two
		envelope(t, other, "k-2", 4),
	}
	errs := batchErrs(t, s.Send(t.Context(), envs), len(envs))
	assert.Equal(t, 1, fault.Hits(), "one produce request was refused")
	assert.ErrorIs(t, errs[0], kerr.InvalidRecord)
	var pe *kafka.PartitionError
	require.ErrorAs(t, errs[0], &pe)
	assert.Equal(t, topic, pe.Topic)
	assert.NotErrorIs(t, errs[0], outbox.ErrPermanent, "the broker refuses a whole batch: not the record's own fault")
	assert.Error(t, errs[1], "the record behind the refused one in its partition")
	assert.ErrorIs(t, errs[2], outbox.ErrNotAttempted, "the key's record to another topic")
	assert.NoError(t, errs[3])
	assert.Zero(t, c.count(t, topic))
	assert.EqualValues(t, 1, c.count(t, other))

	// Sent again, in order.
	require.NoError(t, s.Send(t.Context(), envs[:3]))
	recs := c.read(t, topic, 2)
	assert.Equal(t, envs[0].Payload, recs[0].Value)
	assert.Equal(t, envs[1].Payload, recs[1].Value)
}

// By default the records of a key to one topic are pipelined: one produce
// request for the batch; with SerialKeys, one request per record.
func TestSenderPipelining(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	if c.fake == nil {
		t.Skip("counts produce requests with kfake")
	}
	for _, serial := range []bool{false, true} {
		topic := c.topic(t, 1)
		s, err := kafka.NewSender(kafka.SenderConfig{Brokers: c.brokers, SerialKeys: serial, Logger: c.log})
		require.NoError(t, err)
		requests := c.fake.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: topic, Observe: true, Count: -1})
		envs := []wire.Envelope{envelope(t, topic, "k", 1), envelope(t, topic, "k", 2), envelope(t, topic, "k", 3)}
		require.NoError(t, s.Send(t.Context(), envs))
		s.Close()
		requests.Remove()
		if serial {
			assert.Equal(t, 3, requests.Hits(), "SerialKeys: one request per record of the key")
		} else {
			assert.Equal(t, 1, requests.Hits(), "pipelined: the key's records in one request")
		}
		recs := c.read(t, topic, 3)
		for i := range envs {
			assert.Equal(t, envs[i].Payload, recs[i].Value, "serial=%v: record %d in order", serial, i)
		}
	}
}

// Send returns promptly once its context is done, reporting every record
// not acknowledged with the context's error.
func TestSenderContextDone(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	topic := c.topic(t, 1)
	s := c.sender(t)

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	envs := []wire.Envelope{envelope(t, topic, "k", 1), envelope(t, topic, "", 2)}
	for i, err := range batchErrs(t, s.Send(ctx, envs), 2) {
		assert.ErrorIs(t, err, context.Canceled, "record %d", i)
	}

	if c.fake == nil {
		return
	}
	// The broker keeps answering with a retriable error: the client
	// retries until the deadline, and Send returns at it.
	fault := c.fake.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: topic, Err: kerr.NotEnoughReplicas, Count: -1})
	defer fault.Remove()
	ctx, cancel = context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	errs := batchErrs(t, s.Send(ctx, envs), 2)
	assert.Less(t, time.Since(start), 10*time.Second, "Send returned promptly")
	for i, err := range errs {
		assert.ErrorIs(t, err, context.DeadlineExceeded, "record %d", i)
	}
}

func TestSenderConfig(t *testing.T) {
	t.Parallel()
	_, err := kafka.NewSender(kafka.SenderConfig{Brokers: []string{" "}, MaxRecordBytes: -1})
	require.ErrorIs(t, err, kafka.ErrInvalidConfig)
	assert.Contains(t, err.Error(), "Brokers[0] is empty")
	assert.Contains(t, err.Error(), "MaxRecordBytes")

	_, err = kafka.NewSender(kafka.SenderConfig{})
	require.ErrorIs(t, err, kafka.ErrInvalidConfig)

	_, err = kafka.NewSender(kafka.SenderConfig{
		Brokers:       []string{"127.0.0.1:1"},
		ClientOptions: []kgo.Opt{kgo.DisableIdempotentWrite(), kgo.ManualFlushing()},
	})
	require.ErrorIs(t, err, kafka.ErrInvalidConfig)
	assert.Contains(t, err.Error(), "DisableIdempotentWrite")
	assert.Contains(t, err.Error(), "ManualFlushing")

	_, err = kafka.NewPublisher(nil, nil)
	require.ErrorIs(t, err, kafka.ErrInvalidConfig)
}

func TestPublisher(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	topic := c.topic(t, 1)
	s := c.sender(t)
	const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	p, err := kafka.NewPublisher(s, nil, kafka.WithStamp(func(_ context.Context, env *wire.Envelope) {
		env.SetHeader(wire.HeaderTraceparent, traceparent)
	}))
	require.NoError(t, err)

	caused := events.NewNotification(eventName, payload{Seq: 1}).WithTopic(topic).WithKey("k")
	ctx := events.WithLineage(t.Context(), events.Lineage{CorrelationID: "corr-9", CausationID: "event-8"})
	require.NoError(t, p.Publish(ctx, caused))
	first := events.NewNotification(eventName, payload{Seq: 2}).WithTopic(topic).WithKey("k")
	require.NoError(t, p.Publish(t.Context(), first))

	recs := c.read(t, topic, 2)
	h := headersOf(recs[0])
	assert.Equal(t, "corr-9", h[wire.HeaderCorrelationID])
	assert.Equal(t, "event-8", h[wire.HeaderCausationID])
	assert.Equal(t, traceparent, h[wire.HeaderTraceparent])
	assert.Equal(t, caused.ID.String(), h[wire.HeaderEventID])
	h = headersOf(recs[1])
	assert.Equal(t, first.ID.String(), h[wire.HeaderCorrelationID], "an event without a lineage starts its own correlation")
	assert.Equal(t, first.ID.String(), h[wire.HeaderCausationID])

	require.ErrorIs(t, p.Publish(t.Context(), nil), outbox.ErrPermanent)
}
