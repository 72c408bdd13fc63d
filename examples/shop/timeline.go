package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/events/outbox"
	"github.com/gocqrs/cqrs/events/wire"
)

// timeline records what crossed which boundary, for the scripted demo. A
// nil *timeline records nothing (the services run without one under load
// and in separate processes).
type timeline struct {
	start time.Time

	mu      sync.Mutex
	entries []mark
	labels  map[string]string
}

// mark is one line of the timeline.
type mark struct {
	at       time.Duration
	from, to string
	order    string // the order it concerns, shown by its label
	what     string
}

func newTimeline() *timeline {
	return &timeline{start: time.Now(), labels: make(map[string]string)}
}

// add records that something concerning order went from one side to the
// other.
func (t *timeline) add(from, to, order, format string, args ...any) {
	t.addAt(time.Now(), from, to, order, format, args...)
}

// addAt is add for something that happened at a given time.
func (t *timeline) addAt(at time.Time, from, to, order, format string, args ...any) {
	if t == nil {
		return
	}
	m := mark{at: at.Sub(t.start), from: from, to: to, order: order, what: fmt.Sprintf(format, args...)}
	t.mu.Lock()
	t.entries = append(t.entries, m)
	t.mu.Unlock()
}

// label names an order in the printout ("#1").
func (t *timeline) label(order, label string) {
	if t == nil {
		return
	}
	t.mu.Lock()
	t.labels[order] = label
	t.mu.Unlock()
}

// print writes the timeline, in time order.
func (t *timeline) print(w io.Writer) {
	if t == nil {
		return
	}
	t.mu.Lock()
	entries := slices.Clone(t.entries)
	labels := t.labels
	t.mu.Unlock()
	slices.SortStableFunc(entries, func(a, b mark) int { return cmp.Compare(a.at, b.at) })
	_, _ = fmt.Fprintf(w, "%9s  %-5s %-30s %s\n", "time", "order", "boundary", "what")
	for _, m := range entries {
		l := labels[m.order]
		if l == "" && m.order != "" {
			l = "…" + m.order[max(0, len(m.order)-4):]
		}
		boundary := m.from
		if m.to != "" {
			boundary += " → " + m.to
		}
		_, _ = fmt.Fprintf(w, "%9s  %-5s %-30s %s\n", fmtDuration(m.at), l, boundary, m.what)
	}
}

func fmtDuration(d time.Duration) string {
	return fmt.Sprintf("%.1fms", float64(d.Microseconds())/1000)
}

// recordingSender is the relay's sender, recording each event it sent.
type recordingSender struct {
	outbox.Sender
	tl      *timeline
	service string
	broker  string
}

func (s recordingSender) Send(ctx context.Context, envs []wire.Envelope) error {
	at := time.Now()
	err := s.Sender.Send(ctx, envs)
	be, partial := errors.AsType[*outbox.BatchError](err)
	if s.tl == nil || (err != nil && !partial) {
		return err
	}
	for i, env := range envs {
		if partial && be.Errs[i] != nil {
			continue
		}
		s.tl.addAt(at, s.service+" relay", s.broker, env.Key, "%s published to %s", env.Name, env.Topic)
	}
	return err
}

// receiving wraps a consumer's handler, recording each event received.
func receiving(tl *timeline, service, broker string, handle func(context.Context, events.Event) error) func(context.Context, events.Event) error {
	if tl == nil {
		return handle
	}
	return func(ctx context.Context, ev events.Event) error {
		if n, ok := ev.(events.NotificationEvent); ok {
			key := ""
			if k, ok := ev.(events.Keyed); ok {
				key = k.EventKey()
			}
			tl.add(broker, service, key, "%s received", n.EventName())
		}
		return handle(ctx, ev)
	}
}
