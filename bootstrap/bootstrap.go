package bootstrap

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/gocqrs/cqrs/di"
	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/internal/registry"
	"github.com/gocqrs/cqrs/mediator"
	"github.com/gocqrs/cqrs/mediator/saga"
	"github.com/gocqrs/cqrs/requests"
)

// ErrInvalidOption is matched by every error an option reports.
var ErrInvalidOption = errors.New("bootstrap: invalid option")

// Option configures [Bootstrap], [Streaming] or [Events]. Options are applied
// in order; a later option overrides an earlier one for the same setting,
// except the mappers, the middleware and the start-up hooks, which
// accumulate (WithConfig replaces the middleware lists with its own).
type Option interface {
	apply(*settings)
}

type optionFunc func(*settings)

func (f optionFunc) apply(s *settings) { f(s) }

type settings struct {
	cfg       mediator.Config
	commands  []func(*requests.Map)
	queries   []func(*requests.Map)
	events    []func(*events.Map)
	onStartup []func() error
	errs      []error
}

// optionError marks a configuration problem as an option error too.
type optionError struct{ err error }

func (e optionError) Error() string        { return "bootstrap: invalid option: " + e.err.Error() }
func (e optionError) Unwrap() error        { return e.err }
func (e optionError) Is(target error) bool { return target == ErrInvalidOption }

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

func (s *settings) fail(format string, args ...any) {
	s.errs = append(s.errs, fmt.Errorf("%w: "+format, append([]any{ErrInvalidOption}, args...)...))
}

// WithCommands adds a mapper that binds command handlers. Commands and
// queries share one map, so a request type bound by both is a duplicate.
func WithCommands(mapper func(*requests.Map)) Option {
	return optionFunc(func(s *settings) {
		if mapper == nil {
			s.fail("WithCommands(nil)")
			return
		}
		s.commands = append(s.commands, mapper)
	})
}

// WithQueries adds a mapper that binds query handlers.
func WithQueries(mapper func(*requests.Map)) Option {
	return optionFunc(func(s *settings) {
		if mapper == nil {
			s.fail("WithQueries(nil)")
			return
		}
		s.queries = append(s.queries, mapper)
	})
}

// WithDomainEvents adds a mapper that binds event handlers.
func WithDomainEvents(mapper func(*events.Map)) Option {
	return optionFunc(func(s *settings) {
		if mapper == nil {
			s.fail("WithDomainEvents(nil)")
			return
		}
		s.events = append(s.events, mapper)
	})
}

// WithPublisher sets the publisher of notification events (python-cqrs's
// message broker). Without one, emitting a notification event is an error.
func WithPublisher(p events.Publisher) Option {
	return optionFunc(func(s *settings) {
		if registry.IsNil(p) {
			s.fail("WithPublisher(nil)")
			return
		}
		s.cfg.Publisher = p
	})
}

// WithOutbox makes notification events leave through a transactional outbox
// (mediator.Config.Capture): each request handler runs in a transaction of
// the outbox's database, carried by its context, and the notification events
// it returns are written to the outbox in that transaction; a relay
// (outbox.Relay) then sends them. Build c with outbox.NewCapture. Unless
// WithPublisher is also given, c publishes the notification events that
// event handlers emit later, each in the transaction its context carries or
// in one of its own.
func WithOutbox(c mediator.Capturer) Option {
	return optionFunc(func(s *settings) {
		if registry.IsNil(c) {
			s.fail("WithOutbox(nil)")
			return
		}
		s.cfg.Capture = c
	})
}

// WithMaxConcurrentEventHandlers bounds the event-handler invocations running
// at once within one Send (default 1; must be at least 1). Raising it runs
// different events in parallel; the handlers of one event still run one
// after the other, in bind order, unless [WithEventHandlerOrder] is
// mediator.Parallel. So with one event and the default order, raising the
// limit alone changes nothing. (*mediator.RequestMediator).Mermaid states
// the resulting schedule.
func WithMaxConcurrentEventHandlers(n int) Option {
	return optionFunc(func(s *settings) { s.cfg.MaxConcurrentEventHandlers = n })
}

// WithConcurrentEventHandling enables or disables parallel event handling
// (default enabled). Disabled, events run one by one in emission order.
func WithConcurrentEventHandling(enable bool) Option {
	return optionFunc(func(s *settings) { s.cfg.ConcurrentEventHandleEnable = enable })
}

// WithEventHandlerOrder says how the handlers of one event run (default
// mediator.Serial, in bind order).
func WithEventHandlerOrder(order mediator.HandlerOrder) Option {
	return optionFunc(func(s *settings) { s.cfg.EventHandlerOrder = order })
}

// WithFailFast stops the fan-out at the first event-handler failure instead
// of running every handler and reporting every failure (the default).
func WithFailFast() Option {
	return optionFunc(func(s *settings) { s.cfg.FailFast = true })
}

// WithMaxEventDepth bounds follow-up nesting (default 16; must be at least 1).
func WithMaxEventDepth(n int) Option {
	return optionFunc(func(s *settings) { s.cfg.MaxEventDepth = n })
}

// WithMediatorWideLimit bounds the event-handler invocations running at once
// across all concurrent Sends of the mediator, to protect a shared downstream
// resource (default 0: no such bound; must not be negative).
func WithMediatorWideLimit(n int) Option {
	return optionFunc(func(s *settings) { s.cfg.MediatorWideLimit = n })
}

// WithLogger sets the logger for warnings (default slog.Default()).
func WithLogger(l *slog.Logger) Option {
	return optionFunc(func(s *settings) {
		if l == nil {
			s.fail("WithLogger(nil)")
			return
		}
		s.cfg.Logger = l
	})
}

// WithMiddleware adds global middleware: each value is added to every list
// whose interface it implements (requests.Middleware for Send,
// requests.StreamMiddleware for Stream, events.Middleware for event
// handlers), so one built-in such as a logger covers all three. A value that
// implements none is an error. The first added is the outermost.
func WithMiddleware(mws ...any) Option {
	return optionFunc(func(s *settings) {
		for i, mw := range mws {
			used := false
			if m, ok := mw.(requests.Middleware); ok && !registry.IsNil(mw) {
				s.cfg.Middleware = append(s.cfg.Middleware, m)
				used = true
			}
			if m, ok := mw.(requests.StreamMiddleware); ok && !registry.IsNil(mw) {
				s.cfg.StreamMiddleware = append(s.cfg.StreamMiddleware, m)
				used = true
			}
			if m, ok := mw.(events.Middleware); ok && !registry.IsNil(mw) {
				s.cfg.EventMiddleware = append(s.cfg.EventMiddleware, m)
				used = true
			}
			if !used {
				s.fail("WithMiddleware: argument %d (%T) is not a requests.Middleware, requests.StreamMiddleware or events.Middleware", i, mw)
			}
		}
	})
}

// WithRequestMiddleware adds global middleware around every request handler
// called by Send.
func WithRequestMiddleware(mws ...requests.Middleware) Option {
	return optionFunc(func(s *settings) { s.cfg.Middleware = append(s.cfg.Middleware, mws...) })
}

// WithStreamMiddleware adds global middleware around every stream handler.
func WithStreamMiddleware(mws ...requests.StreamMiddleware) Option {
	return optionFunc(func(s *settings) { s.cfg.StreamMiddleware = append(s.cfg.StreamMiddleware, mws...) })
}

// WithEventMiddleware adds middleware around every event-handler invocation.
func WithEventMiddleware(mws ...events.Middleware) Option {
	return optionFunc(func(s *settings) { s.cfg.EventMiddleware = append(s.cfg.EventMiddleware, mws...) })
}

// WithConfig replaces every setting of mediator.Config, the middleware lists
// included, with cfg. Options after it still apply on top.
func WithConfig(cfg mediator.Config) Option {
	return optionFunc(func(s *settings) { s.cfg = cfg })
}

// WithOnStartup adds a hook run once by bootstrap, after the options are
// validated and before any handler is built; hooks run in order and the
// first error stops bootstrap.
func WithOnStartup(hook func() error) Option {
	return optionFunc(func(s *settings) {
		if hook == nil {
			s.fail("WithOnStartup(nil)")
			return
		}
		s.onStartup = append(s.onStartup, hook)
	})
}

func apply(base mediator.Config, opts []Option) *settings {
	s := &settings{cfg: base}
	for i, o := range opts {
		if o == nil {
			s.fail("option %d is nil", i)
			continue
		}
		o.apply(s)
	}
	if err := s.cfg.Validate(); err != nil {
		// One error per problem, each matching both ErrInvalidOption and
		// mediator.ErrInvalidConfig.
		for _, e := range unjoin(err) {
			s.errs = append(s.errs, optionError{e})
		}
	}
	return s
}

// maps applies the mappers and reports, at once, every problem found
// without running user code: invalid options, then binding mistakes.
func (s *settings) maps() (*requests.Map, *events.Map, error) {
	var reqs requests.Map
	for _, f := range s.commands {
		f(&reqs)
	}
	for _, f := range s.queries {
		f(&reqs)
	}
	evs := s.mapEvents()
	err := errors.Join(append(s.errs, (*registry.Requests)(&reqs).Err(), (*registry.Events)(evs).Err())...)
	return &reqs, evs, err
}

func (s *settings) mapEvents() *events.Map {
	var evs events.Map
	for _, f := range s.events {
		f(&evs)
	}
	return &evs
}

func (s *settings) startup() error {
	for i, hook := range s.onStartup {
		if err := hook(); err != nil {
			return fmt.Errorf("bootstrap: start-up hook %d: %w", i, err)
		}
	}
	return nil
}

// Bootstrap builds a RequestMediator: it validates the options, applies the
// command, query and event mappers, runs the start-up hooks, and builds every
// handler from c, once. Problems are reported in two rounds, each in one
// error listing all of them: first everything found without running user
// code (invalid options, duplicate bindings, constructors of the wrong
// shape); if there is none, the hooks run and every handler is built, and
// every constructor that fails or misses a dependency (with dig's dependency
// path) is reported. No request ever fails for a reason bootstrap could have
// seen.
//
// The defaults are those of [mediator.DefaultConfig]: at most one event
// handler at a time per Send, concurrency enabled, handlers of one event in
// bind order, every failure reported, follow-ups at most 16 deep.
//
// c may be nil when every handler is bound as a value (BindHandler).
func Bootstrap(c di.Container, opts ...Option) (*mediator.RequestMediator, error) {
	s := apply(mediator.DefaultConfig(), opts)
	reqs, evs, err := s.maps()
	if err != nil {
		return nil, err
	}
	if err := s.startup(); err != nil {
		return nil, err
	}
	return mediator.New(c, reqs, evs, s.cfg)
}

// Sagas builds the saga orchestrator of m: opts with Mediator set to m (and
// so its events dispatched by m.Dispatch), and the saga definitions,
// validated with every problem reported at once. The application sets
// opts.Store (and opts.Transactor, to commit each step with its checkpoint),
// and runs saga.NewRecoverer(o, interval).Run(ctx) to finish sagas that a
// dead process left behind.
func Sagas(m *mediator.RequestMediator, opts saga.Options, defs ...saga.AnyDefinition) (*saga.Orchestrator, error) {
	if m == nil {
		return nil, fmt.Errorf("%w: Sagas: nil mediator", ErrInvalidOption)
	}
	opts.Mediator = m
	return saga.New(opts, defs...)
}

// Events builds an EventMediator for consuming events received from outside
// the process, like [Bootstrap] does a RequestMediator. Command and query
// mappers have no place here and are reported as errors.
func Events(c di.Container, opts ...Option) (*mediator.EventMediator, error) {
	s := apply(mediator.DefaultConfig(), opts)
	if len(s.commands) > 0 || len(s.queries) > 0 {
		s.fail("command and query mappers are not used by an EventMediator")
	}
	evs := s.mapEvents()
	if err := errors.Join(append(s.errs, (*registry.Events)(evs).Err())...); err != nil {
		return nil, err
	}
	if err := s.startup(); err != nil {
		return nil, err
	}
	return mediator.NewEventMediator(c, evs, s.cfg)
}

// Streaming builds a StreamingRequestMediator, like [Bootstrap] does a
// RequestMediator, with the streaming defaults of
// [mediator.DefaultStreamingConfig] (up to 10 event handlers at once per
// item, concurrency enabled). Bind stream handlers with requests.BindStream
// in the command or query mappers; the same options apply.
func Streaming(c di.Container, opts ...Option) (*mediator.StreamingRequestMediator, error) {
	s := apply(mediator.DefaultStreamingConfig(), opts)
	reqs, evs, err := s.maps()
	if err != nil {
		return nil, err
	}
	if err := s.startup(); err != nil {
		return nil, err
	}
	return mediator.NewStreaming(c, reqs, evs, s.cfg)
}
