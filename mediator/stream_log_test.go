package mediator_test

import (
	"context"
	"log/slog"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gocqrs/cqrs/bootstrap"
	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/mediator"
	"github.com/gocqrs/cqrs/requests"
)

type streamLogReq struct {
	requests.Returns[int]
}

// streamLogRecorder is a slog.Handler that keeps every record.
type streamLogRecorder struct {
	mu      sync.Mutex
	records []slog.Record
}

func (r *streamLogRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *streamLogRecorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.records = append(r.records, rec.Clone())
	return nil
}
func (r *streamLogRecorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *streamLogRecorder) WithGroup(string) slog.Handler      { return r }

func TestStreamPanicAfterConsumerStoppedIsLogged(t *testing.T) {
	t.Parallel()
	rec := &streamLogRecorder{}
	sm, err := bootstrap.Streaming(nil,
		bootstrap.WithLogger(slog.New(rec)),
		bootstrap.WithQueries(func(r *requests.Map) {
			requests.BindStreamHandler(r, requests.StreamHandlerFunc[streamLogReq, int](
				func(_ context.Context, _ streamLogReq, yield func(int, []events.Event) bool) ([]events.Event, error) {
					if !yield(1, nil) {
						panic("cleanup failed")
					}
					return nil, nil
				}))
		}))
	require.NoError(t, err)

	for _, err := range mediator.Stream(context.Background(), sm, streamLogReq{}) {
		require.NoError(t, err)
		break // the consumer leaves; the handler then panics
	}

	rec.mu.Lock()
	defer rec.mu.Unlock()
	require.Len(t, rec.records, 1, "the panic is reported once, in the log")
	assert.Equal(t, slog.LevelError, rec.records[0].Level)
	var errText string
	rec.records[0].Attrs(func(a slog.Attr) bool {
		if a.Key == "error" {
			errText = a.Value.String()
		}
		return true
	})
	assert.Contains(t, errText, "cleanup failed", "the record carries the panic value")
}
