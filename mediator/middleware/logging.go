package middleware

import (
	"context"
	"log/slog"
	"time"

	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/requests"
)

// Logger logs every request, stream and event-handler invocation: the
// request or event type, the handler, the duration and the outcome. A
// success is logged at Level (default Info), a failure at Error with the
// error. Payloads (the request, the response, the event) are logged only
// when Payloads is true, since they may hold personal data.
type Logger struct {
	// Log receives the records; NewLogger sets it.
	Log *slog.Logger
	// Level is the level of success records.
	Level slog.Level
	// Payloads adds the request, response and event values to records.
	Payloads bool
}

var (
	_ requests.Middleware       = (*Logger)(nil)
	_ requests.StreamMiddleware = (*Logger)(nil)
	_ events.Middleware         = (*Logger)(nil)
)

// NewLogger returns a Logger writing to l (slog.Default() if nil) at Info.
func NewLogger(l *slog.Logger) *Logger {
	if l == nil {
		l = slog.Default()
	}
	return &Logger{Log: l, Level: slog.LevelInfo}
}

func (l *Logger) record(ctx context.Context, msg string, start time.Time, err error, attrs ...slog.Attr) {
	attrs = append(attrs, slog.Duration("duration", time.Since(start)))
	if err != nil {
		attrs = append(attrs, slog.String("error", err.Error()))
		l.Log.LogAttrs(ctx, slog.LevelError, msg+" failed", attrs...)
		return
	}
	l.Log.LogAttrs(ctx, l.Level, msg, attrs...)
}

// WrapRequest implements requests.Middleware. The record covers the whole
// Send: the handler and the dispatch of its events.
func (l *Logger) WrapRequest(info requests.Info, next requests.AnyHandlerFunc) requests.AnyHandlerFunc {
	reqType := slog.String("request_type", info.Request.String())
	handler := slog.String("handler", info.Handler)
	return func(ctx context.Context, req any) (any, error) {
		start := time.Now()
		res, err := next(ctx, req)
		if err == nil && !l.Log.Enabled(ctx, l.Level) {
			return res, nil
		}
		attrs := []slog.Attr{reqType, handler}
		if l.Payloads {
			attrs = append(attrs, slog.Any("request", req), slog.Any("response", res))
		}
		l.record(ctx, "cqrs: request", start, err, attrs...)
		return res, err
	}
}

// WrapStream implements requests.StreamMiddleware: one record per stream,
// with the number of items delivered, and one per item with Payloads.
func (l *Logger) WrapStream(info requests.Info, next requests.AnyStreamFunc) requests.AnyStreamFunc {
	reqType := slog.String("request_type", info.Request.String())
	handler := slog.String("handler", info.Handler)
	return func(ctx context.Context, req any, yield func(any, error) bool) error {
		start := time.Now()
		items := 0
		err := next(ctx, req, func(item any, err error) bool {
			items++
			if l.Payloads {
				l.Log.LogAttrs(ctx, l.Level, "cqrs: stream item", reqType, slog.Int("index", items-1), slog.Any("item", item))
			}
			return yield(item, err)
		})
		attrs := []slog.Attr{reqType, handler, slog.Int("items", items)}
		if l.Payloads {
			attrs = append(attrs, slog.Any("request", req))
		}
		l.record(ctx, "cqrs: stream", start, err, attrs...)
		return err
	}
}

// WrapEvent implements events.Middleware.
func (l *Logger) WrapEvent(inv events.Invocation, next events.InvocationFunc) events.InvocationFunc {
	evType := slog.String("event_type", inv.EventType.String())
	handler := slog.String("handler", inv.Handler)
	return func(ctx context.Context, ev events.Event) ([]events.Event, error) {
		start := time.Now()
		fus, err := next(ctx, ev)
		if err == nil && !l.Log.Enabled(ctx, l.Level) {
			return fus, nil
		}
		attrs := []slog.Attr{evType, handler, slog.Int("follow_ups", len(fus))}
		if l.Payloads {
			attrs = append(attrs, slog.Any("event", ev))
		}
		l.record(ctx, "cqrs: event", start, err, attrs...)
		return fus, err
	}
}
