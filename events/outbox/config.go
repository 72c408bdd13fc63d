package outbox

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"
)

// Default values of [RelayConfig], all in one place.
const (
	DefaultBatchSize       = 100
	DefaultLease           = 30 * time.Second
	DefaultSendTimeout     = 10 * time.Second
	DefaultPollInterval    = time.Second
	DefaultBackoffBase     = time.Second
	DefaultBackoffMax      = 5 * time.Minute
	DefaultBackoffJitter   = 0.5
	DefaultMaxAttempts     = 20
	DefaultRetainSent      = 24 * time.Hour
	DefaultCleanupInterval = time.Minute
	DefaultCleanupBatch    = 1000
	DefaultFinishTimeout   = 5 * time.Second
	// MaxErrorLen bounds the length, in bytes, of the error text the relay
	// stores in a row's LastError.
	MaxErrorLen = 2048
)

// Backoff computes the delay before a failed row is tried again: Base after
// the first failure, doubling with each further failure, capped at Max,
// then shortened by a random fraction of up to Jitter (so rows that failed
// together, e.g. during a broker outage, do not all come back at once).
type Backoff struct {
	// Base is the delay after the first failure.
	Base time.Duration
	// Max caps the delay.
	Max time.Duration
	// Jitter, in [0, 1], is the largest fraction of the delay removed at
	// random: the delay is drawn uniformly from [d*(1-Jitter), d].
	Jitter float64
}

// Delay returns the delay after the attempt-th consecutive failure
// (attempt >= 1; smaller values count as 1).
func (b Backoff) Delay(attempt int) time.Duration {
	return b.delay(attempt, rand.Float64())
}

// delay is Delay with the random number u in [0, 1) given.
func (b Backoff) delay(attempt int, u float64) time.Duration {
	d := b.Base
	for i := 1; i < attempt && d < b.Max; i++ {
		if d > b.Max/2 {
			d = b.Max
			break
		}
		d *= 2
	}
	d = min(d, b.Max)
	if b.Jitter > 0 {
		d -= time.Duration(float64(d) * b.Jitter * u)
	}
	return d
}

func (b Backoff) validate(errs []error) []error {
	if b.Base <= 0 {
		errs = append(errs, fmt.Errorf("%w: Backoff.Base must be positive, got %v", ErrInvalidConfig, b.Base))
	}
	if b.Max < b.Base {
		errs = append(errs, fmt.Errorf("%w: Backoff.Max (%v) must be at least Backoff.Base (%v)", ErrInvalidConfig, b.Max, b.Base))
	}
	if !(b.Jitter >= 0 && b.Jitter <= 1) { // NaN fails both comparisons
		errs = append(errs, fmt.Errorf("%w: Backoff.Jitter must be in [0, 1], got %v", ErrInvalidConfig, b.Jitter))
	}
	return errs
}

// RelayConfig configures a [Relay]. Start from [DefaultRelayConfig]: its
// zero value is not valid.
type RelayConfig struct {
	// Owner names the relay in leases and logs (default: "relay-" and a
	// random UUID, set by NewRelay). Relays running at the same time must
	// have different owners.
	Owner string
	// BatchSize is the most rows claimed and sent at once (default 100).
	BatchSize int
	// Lease is how long claimed rows are reserved for this relay (default
	// 30s). If the relay dies, its rows are claimable again when their
	// lease expires: this bounds how long a crash delays them.
	Lease time.Duration
	// SendTimeout bounds one Send (default 10s). It must be shorter than
	// Lease, so that rows are marked before another relay may take them
	// over.
	SendTimeout time.Duration
	// PollInterval is how long an idle relay waits before claiming again
	// when nothing woke it (default 1s). With a [Notifier] it is only a
	// fallback: for rows whose lease expired, and for a notifier that is
	// down.
	PollInterval time.Duration
	// Backoff spaces the attempts of a failing row (default 1s doubling to
	// 5m, jitter 0.5). It also spaces the claims retried after store errors,
	// but never more than PollInterval (or Backoff.Base, if longer) apart.
	Backoff Backoff
	// MaxAttempts is the number of failed sends after which a row is dead
	// (default 20: with the default backoff, a row is retried for half an
	// hour to an hour before it is dead).
	MaxAttempts int
	// RetainSent is how long sent rows are kept before the relay deletes
	// them (default 24h); 0 keeps them forever.
	RetainSent time.Duration
	// CleanupInterval is how often the relay deletes sent rows older than
	// RetainSent (default 1m).
	CleanupInterval time.Duration
	// CleanupBatch is the most rows one DeleteSent call deletes (default
	// 1000).
	CleanupBatch int
	// FinishTimeout bounds the bookkeeping after a Send (marking and
	// releasing rows), which runs even when Run's context is done (default
	// 5s).
	FinishTimeout time.Duration
	// Notifier wakes the relay after commits (default: the store, if it
	// implements [Notifier]; otherwise the relay only polls).
	Notifier Notifier
	// Clock tells the time (default [SystemClock]). Give the relay the
	// store's clock.
	Clock Clock
	// Logger receives the relay's logs (default slog.Default()).
	Logger *slog.Logger
}

// DefaultRelayConfig returns the defaults: batches of 100, 30s leases, 10s
// send timeout, 1s poll fallback, backoff from 1s to 5m with jitter 0.5,
// 20 attempts (half an hour to an hour of retries), sent rows kept 24h.
func DefaultRelayConfig() RelayConfig {
	return RelayConfig{
		BatchSize:       DefaultBatchSize,
		Lease:           DefaultLease,
		SendTimeout:     DefaultSendTimeout,
		PollInterval:    DefaultPollInterval,
		Backoff:         Backoff{Base: DefaultBackoffBase, Max: DefaultBackoffMax, Jitter: DefaultBackoffJitter},
		MaxAttempts:     DefaultMaxAttempts,
		RetainSent:      DefaultRetainSent,
		CleanupInterval: DefaultCleanupInterval,
		CleanupBatch:    DefaultCleanupBatch,
		FinishTimeout:   DefaultFinishTimeout,
	}
}

// Validate reports every invalid field at once; each problem matches
// [ErrInvalidConfig].
func (c RelayConfig) Validate() error {
	var errs []error
	positive := func(name string, d time.Duration) {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("%w: %s must be positive, got %v", ErrInvalidConfig, name, d))
		}
	}
	if c.BatchSize < 1 {
		errs = append(errs, fmt.Errorf("%w: BatchSize must be at least 1, got %d", ErrInvalidConfig, c.BatchSize))
	}
	positive("Lease", c.Lease)
	positive("SendTimeout", c.SendTimeout)
	if c.SendTimeout > 0 && c.Lease > 0 && c.SendTimeout >= c.Lease {
		errs = append(errs, fmt.Errorf("%w: SendTimeout (%v) must be shorter than Lease (%v)", ErrInvalidConfig, c.SendTimeout, c.Lease))
	}
	positive("PollInterval", c.PollInterval)
	positive("FinishTimeout", c.FinishTimeout)
	errs = c.Backoff.validate(errs)
	if c.MaxAttempts < 1 {
		errs = append(errs, fmt.Errorf("%w: MaxAttempts must be at least 1, got %d", ErrInvalidConfig, c.MaxAttempts))
	}
	if c.RetainSent < 0 {
		errs = append(errs, fmt.Errorf("%w: RetainSent must be 0 (keep forever) or positive, got %v", ErrInvalidConfig, c.RetainSent))
	}
	if c.RetainSent > 0 {
		positive("CleanupInterval", c.CleanupInterval)
		if c.CleanupBatch < 1 {
			errs = append(errs, fmt.Errorf("%w: CleanupBatch must be at least 1, got %d", ErrInvalidConfig, c.CleanupBatch))
		}
	}
	return errors.Join(errs...)
}
