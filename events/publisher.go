package events

import (
	"context"
	"sync"
)

// Publisher sends notification events out of the process (to a broker, an
// outbox, or memory). Publish may be called from several goroutines at once.
// An error from Publish is reported like an event-handler failure.
type Publisher interface {
	Publish(ctx context.Context, event NotificationEvent) error
}

// PublisherFunc adapts a function to a [Publisher].
type PublisherFunc func(ctx context.Context, event NotificationEvent) error

// Publish calls f(ctx, event).
func (f PublisherFunc) Publish(ctx context.Context, event NotificationEvent) error {
	return f(ctx, event)
}

// MemoryPublisher is a [Publisher] that keeps every published event in memory,
// in publication order, until [MemoryPublisher.Take] removes them. It suits
// tests and single-process programs; it is safe for concurrent use. The zero
// value is ready to use.
//
// Events are kept until taken, so a long-running program that publishes
// through it must Take regularly, or use a Deliver function instead.
type MemoryPublisher struct {
	// Deliver, if set, is called for each event instead of keeping it; its
	// error is returned by Publish. Use it to hand events straight to an
	// in-process consumer such as an EventMediator.
	Deliver func(ctx context.Context, event NotificationEvent) error

	mu     sync.Mutex
	events []NotificationEvent
}

// Publish records event, or passes it to Deliver when that is set.
func (p *MemoryPublisher) Publish(ctx context.Context, event NotificationEvent) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if p.Deliver != nil {
		return p.Deliver(ctx, event)
	}
	p.mu.Lock()
	p.events = append(p.events, event)
	p.mu.Unlock()
	return nil
}

// Published returns a copy of the events recorded so far.
func (p *MemoryPublisher) Published() []NotificationEvent {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]NotificationEvent(nil), p.events...)
}

// Take returns the events recorded so far and forgets them.
func (p *MemoryPublisher) Take() []NotificationEvent {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := p.events
	p.events = nil
	return out
}
