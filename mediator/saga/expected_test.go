package saga_test

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gocqrs/cqrs/mediator/saga"
)

// levels is a slog.Handler recording the level of each record by message.
type levels struct {
	mu  sync.Mutex
	got map[string][]slog.Level
}

func (l *levels) Enabled(context.Context, slog.Level) bool { return true }
func (l *levels) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.got[r.Message] = append(l.got[r.Message], r.Level)
	return nil
}
func (l *levels) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *levels) WithGroup(string) slog.Handler      { return l }

var errDeclined = errors.New("payment declined")

// A step failure marked Expected compensates as any failure and reaches
// the caller unchanged, and is logged at Info; an unmarked one at Warn.
func TestExpectedFailureIsLoggedAtInfo(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		err  error
		want slog.Level
	}{
		{"expected", saga.Expected(errDeclined), slog.LevelInfo},
		{"fault", errDeclined, slog.LevelWarn},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv()
			c := &calls{}
			def := &saga.Definition[order]{Name: "order", Steps: []saga.Step[order]{plain("reserve", c), failing("pay", c, tc.err)}}
			logs := &levels{got: map[string][]slog.Level{}}
			opts := e.options("o")
			opts.Logger = slog.New(logs)
			o := e.orchestrator(t, opts, def)
			_, err := saga.Execute(t.Context(), o, def, order{})
			require.ErrorIs(t, err, saga.ErrCompensated)
			require.ErrorIs(t, err, errDeclined, "the step's own error reaches the caller")
			assert.Equal(t, tc.name == "expected", saga.IsExpected(err))
			assert.Equal(t, []string{"reserve", "pay", "undo reserve"}, c.list())
			logs.mu.Lock()
			defer logs.mu.Unlock()
			assert.Equal(t, []slog.Level{slog.LevelInfo, tc.want, slog.LevelInfo}, logs.got["saga step"], "reserve, pay, undo reserve")
			assert.Equal(t, []slog.Level{tc.want}, logs.got["saga compensated"])
		})
	}
	assert.NoError(t, saga.Expected(nil))
}
