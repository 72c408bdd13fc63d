package brokers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/gocqrs/cqrs/events/inbox"
	"github.com/gocqrs/cqrs/events/outbox"
	"github.com/gocqrs/cqrs/internal/engine"
	"github.com/gocqrs/cqrs/internal/registry"
)

// Default values of [Config], all in one place.
const (
	DefaultMaxConcurrency = 1
	// DefaultInFlightPerHandler is how many messages a consumer holds per
	// handler slot when MaxInFlight is 0.
	DefaultInFlightPerHandler = 4
	DefaultMaxDeliveries      = 10
	DefaultBackoffBase        = time.Second
	DefaultBackoffMax         = time.Minute
	DefaultBackoffJitter      = 0.5
	DefaultSettleTimeout      = 10 * time.Second
	DefaultDrainTimeout       = 10 * time.Second
)

// Action is what the consumer does with a message whose handling failed;
// [Config.Classify] chooses it from the error.
type Action int

const (
	// Retry tries the message again after a backoff, until
	// [Config.MaxDeliveries] attempts have failed; it is then
	// dead-lettered ([ReasonExhausted]). The default for handler errors.
	Retry Action = iota
	// Reject dead-letters the message at once. The default for
	// undecodable messages, errors matching outbox.ErrPermanent, and
	// mediator.ErrHandlerNotFound.
	Reject
	// Drop acknowledges the message and logs the error at Warn level: the
	// message is gone. For events a consumer chooses to ignore.
	Drop
)

// String returns "retry", "reject" or "drop".
func (a Action) String() string {
	switch a {
	case Retry:
		return "retry"
	case Reject:
		return "reject"
	case Drop:
		return "drop"
	default:
		return fmt.Sprintf("Action(%d)", int(a))
	}
}

// DefaultClassify is the classification used when [Config.Classify] is nil:
//
//   - [Reject] for an undecodable message ([ErrUndecodable]): decoding it
//     again gives the same error;
//   - [Reject] for an error matching outbox.ErrPermanent (a handler
//     returning outbox.Permanent(err) says retrying cannot help);
//   - [Reject] for mediator.ErrHandlerNotFound: no handler is bound to a
//     decodable event, a wiring mistake of this service; the event is kept
//     in the dead-letter destination, to be replayed once it is fixed,
//     rather than acknowledged and lost;
//   - [Retry] for anything else, panics included.
//
// A custom classifier may delegate to it:
//
//	cfg.Classify = func(err error) brokers.Action {
//		if errors.Is(err, wire.ErrUnknownEvent) {
//			return brokers.Drop // a shared topic: ignore events we do not know
//		}
//		return brokers.DefaultClassify(err)
//	}
func DefaultClassify(err error) Action {
	switch {
	case errors.Is(err, ErrUndecodable),
		errors.Is(err, outbox.ErrPermanent),
		errors.Is(err, engine.ErrHandlerNotFound):
		return Reject
	default:
		return Retry
	}
}

// Config configures a [Consumer]. Start from [DefaultConfig]: its zero
// value is not valid.
type Config struct {
	// Name names the consumer in logs and dead letters, and keys its inbox
	// records: required with Inbox, and then stable across restarts and
	// shared by every process of the consumer (records are per name).
	Name string
	// MaxConcurrency bounds how many messages are handled at once
	// (default 1). Messages of one ordering key are handled one at a time
	// whatever the bound.
	MaxConcurrency int
	// MaxInFlight bounds how many messages the consumer holds received and
	// unsettled: being handled, waiting for a handler slot, queued behind
	// an earlier message of their key, or waiting for a retry in place.
	// Once it is reached the consumer stops receiving until one is
	// settled. 0 means DefaultInFlightPerHandler × MaxConcurrency; else
	// it must be at least MaxConcurrency.
	MaxInFlight int
	// MaxDeliveries is the number of failed attempts after which a message
	// classified [Retry] is dead-lettered (default 10: with the default
	// backoff, about four minutes of retries). Attempts are the broker's
	// delivery count ([Message.Attempt]) plus the retries made in place. A
	// message the broker has already delivered more than MaxDeliveries
	// times (its earlier deliveries crashed the process, or were released
	// at shutdown) is dead-lettered without being handled.
	MaxDeliveries int
	// Backoff spaces the attempts of a failing message (default 1s
	// doubling to 1m, jitter 0.5), and the Receive calls after a transient
	// Source error.
	Backoff outbox.Backoff
	// Unordered turns off ordering: every message is independent, handled
	// as soon as a slot is free, and retried through the broker
	// ([Settler.Retry]). By default (false) messages with an
	// [Message.OrderKey] are handled one at a time per key and retried in
	// place, so a failing message holds its key until it succeeds or is
	// dead-lettered, and never lets a later message of its key overtake it.
	Unordered bool
	// Classify maps the error of a failed attempt to an [Action] (default
	// [DefaultClassify]). It is called for undecodable messages (errors
	// matching [ErrUndecodable]) and for handler failures. A panic in it
	// counts as [Retry].
	Classify func(err error) Action
	// Inbox, if set, deduplicates: each event is handled at most once per
	// Name, in one transaction with the inbox record (inbox.Deduplicator),
	// and a redelivered event that was already handled is acknowledged
	// without calling the handler. It requires Transactor and Name.
	Inbox inbox.Store
	// Transactor, if set, runs each attempt (inbox record and handler) in
	// one transaction, carried by the handler's context: the database's
	// outbox.Transactor, so that the handler's writes, the notification
	// events it emits into an outbox of the same database and the inbox
	// record commit together. With Transactor alone, the handler runs in a
	// transaction without deduplication.
	Transactor outbox.Transactor
	// MaxBatch, above 1, lets one transaction hold up to MaxBatch messages
	// (default 1: a transaction per message). A worker that starts a
	// message first delivered (Attempt 1) takes with it the other first
	// deliveries already waiting to start, each the next of its ordering
	// key, up to MaxBatch, and handles them one after another in one
	// Transactor transaction: each inbox record and handler call, then one
	// commit, then the acknowledgements. With one commit for several
	// events, a database that commits a few thousand transactions a second
	// consumes several times as many events. If any of them fails
	// (undecodable, a handler error or panic, an inbox error), the
	// transaction is rolled back and each message is handled again on its
	// own, as without MaxBatch, so that one failure neither holds back nor
	// fails the others. It requires Transactor. The handlers of a batch
	// share its transaction: a handler sees the writes of those before it,
	// and the locks they take are held until the batch commits, so batches
	// whose handlers update the same rows can deadlock (the database then
	// aborts one, which is handled again one message at a time): batch
	// handlers whose writes do not contend.
	MaxBatch int
	// Extract, if set, derives the handler's context from the message's
	// headers (the extra headers of its envelope, wire.Envelope.Headers,
	// which hold wire.HeaderTraceparent and wire.HeaderTracestate): the
	// hook for trace-context propagation. It is called before the
	// lineage is set and before any transaction begins. A panic in it
	// fails the attempt.
	Extract func(ctx context.Context, headers map[string]string) context.Context
	// SettleTimeout bounds each Ack, Retry and DeadLetter call (default
	// 10s), and Close: each gets a deadline between SettleTimeout and 1.25
	// times it from its start (calls close in time share one context).
	SettleTimeout time.Duration
	// DrainTimeout is how long handlers already running may go on once
	// Run's context is done (default 10s); their context is then
	// cancelled. 0 cancels it at once.
	DrainTimeout time.Duration
	// Logger receives the consumer's logs (default slog.Default()).
	Logger *slog.Logger
}

// DefaultConfig returns the defaults: one message at a time (four held),
// ordered, ten attempts spaced from 1s doubling to 1m with jitter 0.5,
// [DefaultClassify], 10s to settle, 10s to drain, no inbox.
func DefaultConfig() Config {
	return Config{
		MaxConcurrency: DefaultMaxConcurrency,
		MaxDeliveries:  DefaultMaxDeliveries,
		Backoff:        outbox.Backoff{Base: DefaultBackoffBase, Max: DefaultBackoffMax, Jitter: DefaultBackoffJitter},
		SettleTimeout:  DefaultSettleTimeout,
		DrainTimeout:   DefaultDrainTimeout,
	}
}

// Validate reports every invalid field at once; each problem matches
// [ErrInvalidConfig].
func (c Config) Validate() error {
	var errs []error
	add := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, args...)...))
	}
	if c.MaxConcurrency < 1 {
		add("MaxConcurrency must be at least 1, got %d", c.MaxConcurrency)
	}
	if c.MaxInFlight < 0 || (c.MaxInFlight > 0 && c.MaxInFlight < c.MaxConcurrency) {
		add("MaxInFlight must be 0 (derived) or at least MaxConcurrency (%d), got %d", c.MaxConcurrency, c.MaxInFlight)
	}
	if c.MaxDeliveries < 1 {
		add("MaxDeliveries must be at least 1, got %d", c.MaxDeliveries)
	}
	if c.Backoff.Base <= 0 {
		add("Backoff.Base must be positive, got %v", c.Backoff.Base)
	}
	if c.Backoff.Max < c.Backoff.Base {
		add("Backoff.Max (%v) must be at least Backoff.Base (%v)", c.Backoff.Max, c.Backoff.Base)
	}
	if !(c.Backoff.Jitter >= 0 && c.Backoff.Jitter <= 1) { // NaN fails both comparisons
		add("Backoff.Jitter must be in [0, 1], got %v", c.Backoff.Jitter)
	}
	if c.SettleTimeout <= 0 {
		add("SettleTimeout must be positive, got %v", c.SettleTimeout)
	}
	if c.DrainTimeout < 0 {
		add("DrainTimeout must be 0 or positive, got %v", c.DrainTimeout)
	}
	if c.Inbox != nil && registry.IsNil(c.Inbox) {
		add("Inbox is a nil %T", c.Inbox)
	}
	if c.Transactor != nil && registry.IsNil(c.Transactor) {
		add("Transactor is a nil %T", c.Transactor)
	}
	if c.MaxBatch < 0 {
		add("MaxBatch must be 0 or positive, got %d", c.MaxBatch)
	}
	if c.MaxBatch > 1 && c.Transactor == nil {
		add("MaxBatch (%d) requires a Transactor (a batch is one transaction)", c.MaxBatch)
	}
	if c.Inbox != nil {
		if c.Transactor == nil {
			add("Inbox requires a Transactor (the inbox records in the handler's transaction)")
		}
		if c.Name == "" {
			add("Inbox requires a Name (inbox records are kept per consumer name)")
		}
	}
	return errors.Join(errs...)
}

// inFlight returns the effective MaxInFlight.
func (c Config) inFlight() int {
	if c.MaxInFlight > 0 {
		return c.MaxInFlight
	}
	return DefaultInFlightPerHandler * c.MaxConcurrency
}
