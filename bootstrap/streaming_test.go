package bootstrap_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/dig"
	"go.uber.org/goleak"

	"github.com/gocqrs/cqrs/bootstrap"
	"github.com/gocqrs/cqrs/di"
	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/mediator"
	"github.com/gocqrs/cqrs/requests"
)

// TestMain fails the package if any test leaves a goroutine behind.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// --- fixtures ---------------------------------------------------------------

// streamingCount asks for the numbers 0, By, 2*By... (Up of them); its
// stream handler emits a streamingCounted event per item.
type streamingCount struct {
	requests.Returns[int]
	Up int
}

// streamingOther is a second stream request type.
type streamingOther struct {
	requests.Returns[string]
}

// streamingCounted is emitted for each item of a streamingCount stream.
type streamingCounted struct{ N int }

// streamingStep is provided by the container; streamingUnprovided never is.
type (
	streamingStep       struct{ By int }
	streamingUnprovided struct{}
)

// streamingCounter is the stream handler of streamingCount.
type streamingCounter struct{ by int }

func (h *streamingCounter) Stream(_ context.Context, req streamingCount, yield func(int, []events.Event) bool) ([]events.Event, error) {
	for i := range req.Up {
		n := i * h.by
		if !yield(n, []events.Event{streamingCounted{N: n}}) {
			break
		}
	}
	return nil, nil
}

// streamingNewCounter is a stream-handler constructor resolved from a
// container.
func streamingNewCounter(s *streamingStep) *streamingCounter { return &streamingCounter{by: s.By} }

// streamingPlain is a plain handler of streamingCount.
type streamingPlain struct{}

func (streamingPlain) Handle(context.Context, streamingCount) (int, []events.Event, error) {
	return 0, nil, nil
}

// --- reporting --------------------------------------------------------------

// TestStreamingReportsOptionAndBindingProblemsAtOnce: like Bootstrap,
// Streaming reports every option and binding problem in one error, before
// running any start-up hook.
func TestStreamingReportsOptionAndBindingProblemsAtOnce(t *testing.T) {
	t.Parallel()
	var hooks atomic.Int32

	sm, err := bootstrap.Streaming(nil,
		bootstrap.WithMaxEventDepth(0),
		bootstrap.WithMaxConcurrentEventHandlers(0),
		bootstrap.WithQueries(nil),
		bootstrap.WithCommands(func(r *requests.Map) {
			requests.BindStreamHandler[streamingCount](r, &streamingCounter{by: 1})
			requests.BindStreamHandler[streamingCount](r, &streamingCounter{by: 2}) // duplicate
			requests.BindStream[streamingOther](r, "not a constructor")
		}),
		bootstrap.WithDomainEvents(func(m *events.Map) {
			events.Bind[streamingCounted](m, 42)
		}),
		bootstrap.WithOnStartup(func() error {
			hooks.Add(1)
			return nil
		}),
	)

	require.Error(t, err)
	assert.Nil(t, sm)
	assert.ErrorIs(t, err, mediator.ErrInvalidConfig)
	assert.ErrorIs(t, err, bootstrap.ErrInvalidOption)
	assert.ErrorIs(t, err, requests.ErrDuplicateBinding)
	assert.ErrorIs(t, err, di.ErrInvalidConstructor)
	all := leaves(err)
	assert.Len(t, all, 6, "%v", err)
	assert.Equal(t, 3, countMatching(all, bootstrap.ErrInvalidOption), "%v", err)
	assert.Equal(t, 2, countMatching(all, di.ErrInvalidConstructor), "%v", err)
	assert.Equal(t, 1, countMatching(all, requests.ErrDuplicateBinding), "%v", err)
	assert.Zero(t, hooks.Load(), "hooks do not run when the options or bindings are wrong")
}

// TestStreamingNilStreamHandlerIsReported: binding a nil stream handler is
// a bootstrap error.
func TestStreamingNilStreamHandlerIsReported(t *testing.T) {
	t.Parallel()

	sm, err := bootstrap.Streaming(nil,
		bootstrap.WithQueries(func(r *requests.Map) {
			requests.BindStreamHandler[streamingCount, int](r, nil)
			requests.BindStreamHandler[streamingCount, int](r, (*streamingCounter)(nil))
		}),
	)

	require.Error(t, err)
	assert.Nil(t, sm)
	assert.Len(t, leaves(err), 2, "%v", err)
	assert.Contains(t, err.Error(), "streamingCount")
}

// --- dependencies -----------------------------------------------------------

// TestStreamingBindStreamResolvesConstructorFromDig: the constructor of a
// stream handler and of its event handler get their dependencies from a dig
// container, once, at bootstrap.
func TestStreamingBindStreamResolvesConstructorFromDig(t *testing.T) {
	t.Parallel()
	c := dig.New()
	require.NoError(t, c.Provide(func() *streamingStep { return &streamingStep{By: 5} }))
	seen := &journal{}
	require.NoError(t, c.Provide(func() *journal { return seen }))
	var built atomic.Int32

	sm, err := bootstrap.Streaming(c,
		bootstrap.WithQueries(func(r *requests.Map) {
			requests.BindStream[streamingCount](r, func(s *streamingStep) *streamingCounter {
				built.Add(1)
				return streamingNewCounter(s)
			})
		}),
		bootstrap.WithDomainEvents(func(m *events.Map) {
			events.Bind[streamingCounted](m, func(j *journal) events.HandlerFunc[streamingCounted] {
				return func(_ context.Context, e streamingCounted) ([]events.Event, error) {
					j.add(fmt.Sprintf("counted %d", e.N))
					return nil, nil
				}
			})
		}),
	)
	require.NoError(t, err)
	require.NotNil(t, sm)
	assert.EqualValues(t, 1, built.Load(), "built once, at bootstrap")

	for range 2 {
		var got []int
		for n, err := range mediator.Stream(t.Context(), sm, streamingCount{Up: 3}) {
			require.NoError(t, err)
			require.Contains(t, seen.list(), fmt.Sprintf("counted %d", n), "the event is handled before its item arrives")
			got = append(got, n)
		}
		assert.Equal(t, []int{0, 5, 10}, got)
	}
	assert.EqualValues(t, 1, built.Load(), "not rebuilt per stream")
	assert.Len(t, seen.list(), 6)
}

// TestStreamingMissingDependencyFailsAtBootstrap: a stream-handler
// constructor whose dependency is not provided fails bootstrap, not the
// first stream, and is never called.
func TestStreamingMissingDependencyFailsAtBootstrap(t *testing.T) {
	t.Parallel()
	var built atomic.Int32

	sm, err := bootstrap.Streaming(dig.New(),
		bootstrap.WithCommands(func(r *requests.Map) {
			requests.BindStream[streamingCount](r, func(*streamingUnprovided) *streamingCounter {
				built.Add(1)
				return &streamingCounter{by: 1}
			})
		}),
	)

	require.Error(t, err, "a missing dependency must fail bootstrap, not the first stream")
	assert.Nil(t, sm)
	assert.Zero(t, built.Load())
	var de dig.Error
	assert.True(t, errors.As(err, &de), "dig's error is kept: %v", err)
	assert.Contains(t, err.Error(), "streamingUnprovided", "the error names the missing type")
	assert.Contains(t, err.Error(), "streamingCount", "the error names the request type")
}

// TestStreamingNilContainerWithConstructorIsReported: a constructor needs a
// container.
func TestStreamingNilContainerWithConstructorIsReported(t *testing.T) {
	t.Parallel()

	_, err := bootstrap.Streaming(nil,
		bootstrap.WithQueries(func(r *requests.Map) {
			requests.BindStream[streamingCount](r, func() *streamingCounter { return &streamingCounter{by: 1} })
		}),
	)

	require.ErrorIs(t, err, di.ErrMissingDependency)
}

// TestStreamingBindStreamOfWrongTypeIsReported: a constructor that does not
// build a stream handler of the bound request type is reported at
// bootstrap, without calling it, and before any start-up hook.
func TestStreamingBindStreamOfWrongTypeIsReported(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		ctor any
	}{
		{"plain handler", func() streamingPlain { return streamingPlain{} }},
		{"not a handler", func() int { return 1 }},
		{"stream handler of another request", func() requests.StreamHandlerFunc[streamingOther, string] { return nil }},
		{"three results", func() (*streamingCounter, int, error) { return nil, 0, nil }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var hooks atomic.Int32
			c := dig.New()

			sm, err := bootstrap.Streaming(c,
				bootstrap.WithQueries(func(r *requests.Map) { requests.BindStream[streamingCount](r, tc.ctor) }),
				bootstrap.WithOnStartup(func() error {
					hooks.Add(1)
					return nil
				}),
			)

			require.ErrorIs(t, err, di.ErrInvalidConstructor)
			assert.Nil(t, sm)
			assert.Contains(t, err.Error(), "streamingCount", "the error names the request type")
			assert.Zero(t, hooks.Load(), "found without running user code")
		})
	}
}

// TestStreamingBindAndBindStreamIsDuplicate: a request type has one binding,
// plain or stream; binding it both ways is a duplicate, whichever comes
// first and whichever mappers do it.
func TestStreamingBindAndBindStreamIsDuplicate(t *testing.T) {
	t.Parallel()
	plainCtor := func() streamingPlain { return streamingPlain{} }
	streamCtor := func() *streamingCounter { return &streamingCounter{by: 1} }
	cases := []struct {
		name string
		opts []bootstrap.Option
	}{
		{"Bind then BindStream", []bootstrap.Option{
			bootstrap.WithCommands(func(r *requests.Map) {
				requests.Bind[streamingCount](r, plainCtor)
				requests.BindStream[streamingCount](r, streamCtor)
			}),
		}},
		{"BindStream then Bind", []bootstrap.Option{
			bootstrap.WithCommands(func(r *requests.Map) {
				requests.BindStream[streamingCount](r, streamCtor)
				requests.Bind[streamingCount](r, plainCtor)
			}),
		}},
		{"command and query mappers", []bootstrap.Option{
			bootstrap.WithCommands(func(r *requests.Map) { requests.Bind[streamingCount](r, plainCtor) }),
			bootstrap.WithQueries(func(r *requests.Map) { requests.BindStream[streamingCount](r, streamCtor) }),
		}},
		{"BindHandler and BindStreamHandler", []bootstrap.Option{
			bootstrap.WithQueries(func(r *requests.Map) {
				requests.BindStreamHandler[streamingCount](r, &streamingCounter{by: 1})
				requests.BindHandler[streamingCount](r, streamingPlain{})
			}),
		}},
		{"BindStream twice", []bootstrap.Option{
			bootstrap.WithQueries(func(r *requests.Map) {
				requests.BindStream[streamingCount](r, streamCtor)
				requests.BindStream[streamingCount](r, streamingNewCounter)
			}),
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()

			sm, err := bootstrap.Streaming(dig.New(), tc.opts...)

			require.ErrorIs(t, err, requests.ErrDuplicateBinding)
			assert.Nil(t, sm)
			assert.Len(t, leaves(err), 1, "%v", err)
			assert.Contains(t, err.Error(), "streamingCount")

			// Bootstrap reports the same duplicate.
			m, err := bootstrap.Bootstrap(dig.New(), tc.opts...)
			require.ErrorIs(t, err, requests.ErrDuplicateBinding)
			assert.Nil(t, m)
		})
	}
}

// --- start-up and defaults --------------------------------------------------

// TestStreamingOnStartupHooksRunBeforeHandlersAreBuilt: hooks run once, in
// order, before any handler is built; a failing hook stops bootstrap.
func TestStreamingOnStartupHooksRunBeforeHandlersAreBuilt(t *testing.T) {
	t.Parallel()
	errHook := errors.New("migrations failed")
	for _, failing := range []bool{false, true} {
		t.Run(fmt.Sprintf("failing=%v", failing), func(t *testing.T) {
			t.Parallel()
			log := &journal{}
			c := dig.New()
			require.NoError(t, c.Provide(func() *streamingStep { return &streamingStep{By: 1} }))

			sm, err := bootstrap.Streaming(c,
				bootstrap.WithOnStartup(func() error {
					log.add("hook 1")
					return nil
				}),
				bootstrap.WithOnStartup(func() error {
					log.add("hook 2")
					if failing {
						return errHook
					}
					return nil
				}),
				bootstrap.WithQueries(func(r *requests.Map) {
					requests.BindStream[streamingCount](r, func(s *streamingStep) *streamingCounter {
						log.add("built")
						return streamingNewCounter(s)
					})
				}),
			)

			if failing {
				require.ErrorIs(t, err, errHook)
				assert.Nil(t, sm)
				assert.Equal(t, []string{"hook 1", "hook 2"}, log.list())
				return
			}
			require.NoError(t, err)
			assert.Equal(t, []string{"hook 1", "hook 2", "built"}, log.list())
		})
	}
}

// TestStreamingDefaultConfigValues: the streaming defaults are those of
// DefaultConfig with up to 10 event handlers at once per item.
func TestStreamingDefaultConfigValues(t *testing.T) {
	t.Parallel()
	cfg := mediator.DefaultStreamingConfig()

	assert.Equal(t, 10, cfg.MaxConcurrentEventHandlers)
	assert.Equal(t, mediator.DefaultMaxConcurrentStreamEventHandlers, cfg.MaxConcurrentEventHandlers)
	assert.True(t, cfg.ConcurrentEventHandleEnable)
	want := mediator.DefaultConfig()
	want.MaxConcurrentEventHandlers = 10
	assert.Equal(t, want, cfg, "otherwise the defaults of DefaultConfig")
	assert.NoError(t, cfg.Validate())
}

// TestStreamingOptionsApplyOverDefaults: options given to Streaming override
// its defaults, and WithConfig replaces them.
func TestStreamingOptionsApplyOverDefaults(t *testing.T) {
	t.Parallel()
	cfg := mediator.DefaultStreamingConfig()
	cfg.MaxConcurrentEventHandlers = 0 // invalid: proves WithConfig is used

	_, err := bootstrap.Streaming(nil, bootstrap.WithConfig(cfg))
	require.ErrorIs(t, err, mediator.ErrInvalidConfig)

	sm, err := bootstrap.Streaming(nil, bootstrap.WithConfig(cfg), bootstrap.WithMaxConcurrentEventHandlers(2))
	require.NoError(t, err, "a later option applies on top of WithConfig")
	require.NotNil(t, sm)
}

// TestStreamingPlainBindingIsNotStreamed: plain handlers may be bound in a
// streaming mediator, but Stream reports ErrHandlerNotFound for them, and a
// RequestMediator's Send does likewise for a stream binding.
func TestStreamingPlainBindingIsNotStreamed(t *testing.T) {
	t.Parallel()
	bind := bootstrap.WithQueries(func(r *requests.Map) {
		requests.BindHandler[streamingCount](r, streamingPlain{})
		requests.BindStreamHandler[streamingOther](r, requests.StreamHandlerFunc[streamingOther, string](
			func(_ context.Context, _ streamingOther, yield func(string, []events.Event) bool) ([]events.Event, error) {
				yield("streamed", nil)
				return nil, nil
			}))
	})

	sm, err := bootstrap.Streaming(nil, bind)
	require.NoError(t, err)
	var errs []error
	for _, err := range mediator.Stream(t.Context(), sm, streamingCount{Up: 1}) {
		errs = append(errs, err)
	}
	require.Len(t, errs, 1)
	require.ErrorIs(t, errs[0], mediator.ErrHandlerNotFound)
	var items []string
	for s, err := range mediator.Stream(t.Context(), sm, streamingOther{}) {
		require.NoError(t, err)
		items = append(items, s)
	}
	assert.Equal(t, []string{"streamed"}, items)

	m, err := bootstrap.Bootstrap(nil, bind)
	require.NoError(t, err)
	_, err = mediator.Send(t.Context(), m, streamingOther{})
	require.ErrorIs(t, err, mediator.ErrHandlerNotFound)
}
