package otel_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/gocqrs/cqrs/events/outbox"
	"github.com/gocqrs/cqrs/events/wire"
	cqrsotel "github.com/gocqrs/cqrs/mediator/otel"
)

func TestObserveRelayReportsStoreAndCounters(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	clock := outbox.ClockFunc(func() time.Time { return now })
	store := outbox.NewMemoryStore(outbox.MemoryOptions{Clock: clock})
	require.NoError(t, store.InTx(t.Context(), func(ctx context.Context) error {
		return store.Add(ctx,
			wire.Envelope{ID: uuid.Must(uuid.NewV7()), Name: "a", Timestamp: now},
			wire.Envelope{ID: uuid.Must(uuid.NewV7()), Name: "b", Timestamp: now})
	}))
	now = now.Add(90 * time.Second)
	cfg := outbox.DefaultRelayConfig()
	cfg.Owner, cfg.Clock, cfg.Logger = "relay-1", clock, slog.New(slog.DiscardHandler)
	relay, err := outbox.NewRelay(store, outbox.InProcessSender(func(context.Context, wire.Envelope) error { return nil }), cfg)
	require.NoError(t, err)

	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	reg, err := cqrsotel.ObserveRelay(mp, relay)
	require.NoError(t, err)
	defer func() { require.NoError(t, reg.Unregister()) }()

	var rm metricdata.ResourceMetrics
	require.NoError(t, reader.Collect(t.Context(), &rm))
	got := map[string]float64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Gauge[int64]:
				got[m.Name] = float64(d.DataPoints[0].Value)
			case metricdata.Gauge[float64]:
				got[m.Name] = d.DataPoints[0].Value
			case metricdata.Sum[int64]:
				got[m.Name] = float64(d.DataPoints[0].Value)
			}
		}
	}
	assert.InDelta(t, 2, got[cqrsotel.OutboxPendingMetric], 0)
	assert.InDelta(t, 0, got[cqrsotel.OutboxDeadMetric], 0)
	assert.InDelta(t, 90, got[cqrsotel.OutboxLagMetric], 0)
	assert.InDelta(t, 0, got[cqrsotel.OutboxSentMetric], 0)
}

func TestObserveRelayRejectsNil(t *testing.T) {
	t.Parallel()
	_, err := cqrsotel.ObserveRelay(nil, nil)
	require.Error(t, err)
}
