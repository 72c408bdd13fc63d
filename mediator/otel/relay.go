package otel

import (
	"context"
	"errors"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/gocqrs/cqrs/events/outbox"
)

// Instrument names of [ObserveRelay].
const (
	OutboxPendingMetric     = "cqrs.outbox.pending"
	OutboxDeadMetric        = "cqrs.outbox.dead"
	OutboxLagMetric         = "cqrs.outbox.lag"
	OutboxSentMetric        = "cqrs.outbox.sent"
	OutboxFailedMetric      = "cqrs.outbox.failed"
	OutboxStoreErrorsMetric = "cqrs.outbox.store_errors"
)

// RelayOwnerKey is the attribute naming the relay on its metrics.
const RelayOwnerKey = attribute.Key("cqrs.outbox.relay")

// ObserveRelay registers instruments, on a meter of mp (the global
// MeterProvider when nil), that report relay's state each time metrics are
// collected: the store's pending and dead rows and its lag (the age of the
// oldest pending row, in seconds), and the relay's own cumulative counts of
// rows sent, failures recorded and failed store calls. The store is queried
// once per collection; when the query fails, the counters are reported and
// the error is returned to the SDK, which logs it. Call
// Unregister on the returned registration to stop.
func ObserveRelay(mp metric.MeterProvider, relay *outbox.Relay) (metric.Registration, error) {
	if relay == nil {
		return nil, errors.New("otel: ObserveRelay: nil relay")
	}
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	m := mp.Meter(ScopeName)
	pending, err1 := m.Int64ObservableGauge(OutboxPendingMetric, metric.WithDescription("Pending outbox rows, leased ones included."))
	dead, err2 := m.Int64ObservableGauge(OutboxDeadMetric, metric.WithDescription("Dead outbox rows, waiting for an operator."))
	lag, err3 := m.Float64ObservableGauge(OutboxLagMetric, metric.WithUnit("s"), metric.WithDescription("Age of the oldest pending outbox row."))
	sent, err4 := m.Int64ObservableCounter(OutboxSentMetric, metric.WithDescription("Rows this relay marked sent."))
	failed, err5 := m.Int64ObservableCounter(OutboxFailedMetric, metric.WithDescription("Failed sends this relay recorded."))
	storeErrs, err6 := m.Int64ObservableCounter(OutboxStoreErrorsMetric, metric.WithDescription("Failed store calls of this relay."))
	if err := errors.Join(err1, err2, err3, err4, err5, err6); err != nil {
		return nil, err
	}
	attrs := metric.WithAttributes(RelayOwnerKey.String(relay.Owner()))
	return m.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		c := relay.Counters()
		o.ObserveInt64(sent, int64(c.Sent), attrs)
		o.ObserveInt64(failed, int64(c.Failed), attrs)
		o.ObserveInt64(storeErrs, int64(c.StoreErrors), attrs)
		st, err := relay.Stats(ctx)
		if err != nil {
			// The counters are reported; the SDK logs the error.
			return err
		}
		o.ObserveInt64(pending, st.Store.Pending, attrs)
		o.ObserveInt64(dead, st.Store.Dead, attrs)
		o.ObserveFloat64(lag, st.Store.Lag.Seconds(), attrs)
		return nil
	}, pending, dead, lag, sent, failed, storeErrs)
}
