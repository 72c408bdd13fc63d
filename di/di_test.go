package di_test

import (
	"errors"
	"fmt"
	"reflect"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/dig"

	"github.com/gocqrs/cqrs/di"
)

// Types used as dependencies. Their names are distinctive so that a test can
// check that a diagnostic names them.

type repoDep struct{ name string }

type clockDep struct{ now int }

type missingWidget struct{}

type missingGadget struct{}

type greeter interface{ Greet() string }

type englishGreeter struct{ repo *repoDep }

func (g *englishGreeter) Greet() string { return "hello from " + g.repo.name }

var errCtorFailed = errors.New("constructor failed on purpose")

func newDigWithRepo(t *testing.T) *dig.Container {
	t.Helper()
	c := dig.New()
	require.NoError(t, c.Provide(func() *repoDep { return &repoDep{name: "dig"} }))
	return c
}

// leaves flattens a tree of joined or wrapped errors into its leaves.
func leaves(err error) []error {
	if err == nil {
		return nil
	}
	if u, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range u.Unwrap() {
			out = append(out, leaves(e)...)
		}
		return out
	}
	if next := errors.Unwrap(err); next != nil {
		if _, ok := next.(interface{ Unwrap() []error }); ok {
			return leaves(next)
		}
	}
	return []error{err}
}

func TestResolveFromDig(t *testing.T) {
	t.Parallel()
	c := newDigWithRepo(t)

	got, err := di.Resolve[*repoDep](c)

	require.NoError(t, err)
	require.NotNil(t, got)
	assert.Equal(t, "dig", got.name)
}

func TestResolveFromDigReturnsSingleton(t *testing.T) {
	t.Parallel()
	c := newDigWithRepo(t)

	first, err := di.Resolve[*repoDep](c)
	require.NoError(t, err)
	second, err := di.Resolve[*repoDep](c)
	require.NoError(t, err)

	assert.Same(t, first, second)
}

func TestResolveFromValues(t *testing.T) {
	t.Parallel()
	var vals di.Values
	want := &repoDep{name: "values"}
	di.Provide(&vals, want)
	di.Provide(&vals, clockDep{now: 42})

	got, err := di.Resolve[*repoDep](&vals)
	require.NoError(t, err)
	assert.Same(t, want, got)

	clock, err := di.Resolve[clockDep](&vals)
	require.NoError(t, err)
	assert.Equal(t, 42, clock.now)
}

func TestResolveInterfaceFromValues(t *testing.T) {
	t.Parallel()
	var vals di.Values
	impl := &englishGreeter{repo: &repoDep{name: "iface"}}
	di.Provide[greeter](&vals, impl)

	got, err := di.Resolve[greeter](&vals)

	require.NoError(t, err)
	assert.Same(t, impl, got)
	// Provided as the interface, the value is not reachable by its concrete type.
	_, err = di.Resolve[*englishGreeter](&vals)
	require.ErrorIs(t, err, di.ErrMissingDependency)
}

func TestValuesProvideReplacesEarlierValue(t *testing.T) {
	t.Parallel()
	var vals di.Values
	di.Provide(&vals, clockDep{now: 1})
	di.Provide(&vals, clockDep{now: 2})

	got, err := di.Resolve[clockDep](&vals)

	require.NoError(t, err)
	assert.Equal(t, 2, got.now)
}

func TestResolveMissingFromValues(t *testing.T) {
	t.Parallel()
	var vals di.Values

	_, err := di.Resolve[*missingWidget](&vals)

	require.ErrorIs(t, err, di.ErrMissingDependency)
	assert.Contains(t, err.Error(), "missingWidget")
}

func TestResolveMissingFromDig(t *testing.T) {
	t.Parallel()
	c := dig.New()

	_, err := di.Resolve[*missingWidget](c)

	require.Error(t, err)
	var de dig.Error
	assert.True(t, errors.As(err, &de), "the error should carry dig's error: %v", err)
	assert.Contains(t, err.Error(), "missingWidget")
}

func TestResolveNilContainer(t *testing.T) {
	t.Parallel()

	_, err := di.Resolve[*repoDep](nil)

	require.ErrorIs(t, err, di.ErrMissingDependency)
}

func TestConstructWithDig(t *testing.T) {
	t.Parallel()
	c := newDigWithRepo(t)
	calls := 0
	ctor := func(r *repoDep) *englishGreeter {
		calls++
		return &englishGreeter{repo: r}
	}

	g, err := di.Construct[greeter](c, ctor)

	require.NoError(t, err)
	require.NotNil(t, g)
	assert.Equal(t, "hello from dig", g.Greet())
	assert.Equal(t, 1, calls)
}

func TestConstructWithValues(t *testing.T) {
	t.Parallel()
	var vals di.Values
	di.Provide(&vals, &repoDep{name: "values"})

	g, err := di.Construct[greeter](&vals, func(r *repoDep) (*englishGreeter, error) {
		return &englishGreeter{repo: r}, nil
	})

	require.NoError(t, err)
	assert.Equal(t, "hello from values", g.Greet())
}

func TestConstructWithNoParameters(t *testing.T) {
	t.Parallel()

	g, err := di.Construct[greeter](&di.Values{}, func() *englishGreeter {
		return &englishGreeter{repo: &repoDep{name: "none"}}
	})

	require.NoError(t, err)
	assert.Equal(t, "hello from none", g.Greet())
}

func TestConstructReturnsConstructorError(t *testing.T) {
	t.Parallel()
	ctor := func(*repoDep) (*englishGreeter, error) { return nil, errCtorFailed }

	t.Run("dig", func(t *testing.T) {
		t.Parallel()
		g, err := di.Construct[greeter](newDigWithRepo(t), ctor)
		require.ErrorIs(t, err, errCtorFailed)
		assert.Nil(t, g)
	})
	t.Run("values", func(t *testing.T) {
		t.Parallel()
		var vals di.Values
		di.Provide(&vals, &repoDep{})
		g, err := di.Construct[greeter](&vals, ctor)
		require.ErrorIs(t, err, errCtorFailed)
		assert.Nil(t, g)
	})
}

func TestConstructErrorTakesPrecedenceOverValue(t *testing.T) {
	t.Parallel()
	// A constructor returning both a value and an error has failed.
	g, err := di.Construct[greeter](&di.Values{}, func() (*englishGreeter, error) {
		return &englishGreeter{repo: &repoDep{}}, errCtorFailed
	})

	require.ErrorIs(t, err, errCtorFailed)
	assert.Nil(t, g)
}

func TestConstructNilResultIsAnError(t *testing.T) {
	t.Parallel()
	cases := map[string]any{
		"nil pointer":              func() *englishGreeter { return nil },
		"nil pointer and nil err":  func() (*englishGreeter, error) { return nil, nil },
		"nil interface":            func() greeter { return nil },
		"nil interface, nil error": func() (greeter, error) { return nil, nil },
	}
	for name, ctor := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			for _, c := range []di.Container{dig.New(), &di.Values{}} {
				g, err := di.Construct[greeter](c, ctor)
				require.Error(t, err, "%T", c)
				assert.Nil(t, g)
				assert.Contains(t, err.Error(), "nil", "%T", c)
			}
		})
	}
}

func TestConstructPanicBecomesError(t *testing.T) {
	t.Parallel()
	ctor := func(*repoDep) *englishGreeter { panic("constructor exploded") }

	for name, c := range map[string]di.Container{
		"dig":    newDigWithRepo(t),
		"values": func() *di.Values { var v di.Values; di.Provide(&v, &repoDep{}); return &v }(),
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var (
				g   greeter
				err error
			)
			require.NotPanics(t, func() { g, err = di.Construct[greeter](c, ctor) })
			require.Error(t, err)
			assert.Nil(t, g)
			assert.Contains(t, err.Error(), "constructor exploded")
			assert.Contains(t, err.Error(), "panicked")
		})
	}
}

func TestConstructInvalidShapes(t *testing.T) {
	t.Parallel()
	cases := map[string]any{
		"nil":                    nil,
		"nil func":               (func() *englishGreeter)(nil),
		"not a function":         42,
		"struct value":           englishGreeter{},
		"variadic":               func(...*repoDep) *englishGreeter { return &englishGreeter{} },
		"wrong result type":      func() *repoDep { return &repoDep{} },
		"three results":          func() (*englishGreeter, int, error) { return &englishGreeter{}, 0, nil },
		"no result":              func() {},
		"second result no error": func() (*englishGreeter, int) { return &englishGreeter{}, 0 },
		"error first":            func() (error, *englishGreeter) { return nil, &englishGreeter{} }, //nolint:staticcheck // ST1008: the wrong shape is what this case tests
	}
	for name, ctor := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			called := false
			// The container must not be consulted for a malformed constructor.
			c := containerFunc(func(any, ...dig.InvokeOption) error { called = true; return nil })

			g, err := di.Construct[greeter](c, ctor)

			require.ErrorIs(t, err, di.ErrInvalidConstructor)
			assert.Nil(t, g)
			assert.False(t, called, "the container was invoked")
		})
	}
}

func TestCheckConstructorAcceptsValidShapes(t *testing.T) {
	t.Parallel()
	want := reflect.TypeFor[greeter]()
	for name, ctor := range map[string]any{
		"one result":         func(*repoDep) *englishGreeter { return nil },
		"result and error":   func(*repoDep) (*englishGreeter, error) { return nil, nil },
		"interface result":   func() greeter { return nil },
		"parameter object":   func(digParams) *englishGreeter { return nil },
		"several parameters": func(*repoDep, clockDep) *englishGreeter { return nil },
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			assert.NoError(t, di.CheckConstructor(ctor, want))
		})
	}
}

type containerFunc func(function any, opts ...dig.InvokeOption) error

func (f containerFunc) Invoke(function any, opts ...dig.InvokeOption) error {
	return f(function, opts...)
}

func TestConstructMissingDependencyThroughDig(t *testing.T) {
	t.Parallel()
	c := dig.New()
	called := false

	g, err := di.Construct[greeter](c, func(*missingWidget) *englishGreeter {
		called = true
		return &englishGreeter{}
	})

	require.Error(t, err)
	assert.Nil(t, g)
	assert.False(t, called, "the constructor ran without its dependency")
	var de dig.Error
	require.True(t, errors.As(err, &de), "the error should carry dig's error: %v", err)
	assert.Contains(t, err.Error(), "missingWidget", "the error should name the missing type")
	assert.Contains(t, dig.RootCause(err).Error(), "missingWidget", "dig's root cause should name the missing type")
}

func TestConstructMissingTransitiveDependencyThroughDig(t *testing.T) {
	t.Parallel()
	c := dig.New()
	// *repoDep is provided, but its own constructor needs a missing type.
	require.NoError(t, c.Provide(func(*missingGadget) *repoDep { return &repoDep{} }))

	_, err := di.Construct[greeter](c, func(r *repoDep) *englishGreeter { return &englishGreeter{repo: r} })

	require.Error(t, err)
	assert.Contains(t, err.Error(), "missingGadget", "the error should name the missing type at the end of the path")
	assert.Contains(t, err.Error(), "repoDep", "the error should name the dependency that needed it")
}

func TestConstructErrorNamesConstructor(t *testing.T) {
	t.Parallel()

	_, err := di.Construct[greeter](dig.New(), newGreeterNeedingWidget)

	require.Error(t, err)
	assert.Contains(t, err.Error(), "newGreeterNeedingWidget")
}

func newGreeterNeedingWidget(*missingWidget) *englishGreeter { return &englishGreeter{} }

func TestConstructNilContainer(t *testing.T) {
	t.Parallel()

	_, err := di.Construct[greeter](nil, func() *englishGreeter { return &englishGreeter{} })

	require.ErrorIs(t, err, di.ErrMissingDependency)
}

func TestValuesReportsEveryMissingParameter(t *testing.T) {
	t.Parallel()
	var vals di.Values
	di.Provide(&vals, &repoDep{})
	called := false

	err := vals.Invoke(func(*missingWidget, *repoDep, missingGadget) { called = true })

	require.ErrorIs(t, err, di.ErrMissingDependency)
	assert.False(t, called)
	assert.Contains(t, err.Error(), "missingWidget")
	assert.Contains(t, err.Error(), "missingGadget")
	assert.NotContains(t, err.Error(), "repoDep")
	missing := leaves(err)
	assert.Len(t, missing, 2, "one error per missing parameter: %v", err)
	for _, e := range missing {
		assert.ErrorIs(t, e, di.ErrMissingDependency)
	}
}

func TestConstructWithValuesReportsEveryMissingParameter(t *testing.T) {
	t.Parallel()

	_, err := di.Construct[greeter](&di.Values{}, func(*missingWidget, missingGadget) *englishGreeter {
		return &englishGreeter{}
	})

	require.ErrorIs(t, err, di.ErrMissingDependency)
	assert.Contains(t, err.Error(), "missingWidget")
	assert.Contains(t, err.Error(), "missingGadget")
}

func TestValuesInvokeReturnsFunctionError(t *testing.T) {
	t.Parallel()
	var vals di.Values
	di.Provide(&vals, 7)
	got := 0

	err := vals.Invoke(func(n int) error { got = n; return errCtorFailed })

	require.ErrorIs(t, err, errCtorFailed)
	assert.Equal(t, 7, got)
}

func TestValuesInvokeRejectsNonFunction(t *testing.T) {
	t.Parallel()
	var vals di.Values

	assert.Error(t, vals.Invoke(42))
	assert.Error(t, vals.Invoke(nil))
	assert.Error(t, vals.Invoke((func())(nil)))
}

// digParams is a dig parameter object.
type digParams struct {
	dig.In

	Repo  *repoDep
	Clock clockDep `optional:"true"`
	Name  string   `name:"greeting"`
}

type paramGreeter struct {
	repo  *repoDep
	clock clockDep
	name  string
}

func (g *paramGreeter) Greet() string {
	return fmt.Sprintf("%s/%s/%d", g.name, g.repo.name, g.clock.now)
}

func TestConstructWithDigParameterObject(t *testing.T) {
	t.Parallel()
	c := newDigWithRepo(t)
	require.NoError(t, c.Provide(func() string { return "named" }, dig.Name("greeting")))

	g, err := di.Construct[greeter](c, func(p digParams) *paramGreeter {
		return &paramGreeter{repo: p.Repo, clock: p.Clock, name: p.Name}
	})

	require.NoError(t, err)
	// Clock is optional and not provided: it is the zero value.
	assert.Equal(t, "named/dig/0", g.Greet())
}

func TestConstructWithDigParameterObjectMissingField(t *testing.T) {
	t.Parallel()
	c := newDigWithRepo(t) // the named string is not provided

	_, err := di.Construct[greeter](c, func(p digParams) *paramGreeter { return &paramGreeter{} })

	require.Error(t, err)
	assert.Contains(t, err.Error(), "greeting", "the error should name the missing named value")
}

func TestFuncName(t *testing.T) {
	t.Parallel()

	assert.Contains(t, di.FuncName(newGreeterNeedingWidget), "di_test.newGreeterNeedingWidget")
	assert.Equal(t, "int", di.FuncName(42))
}
