package outboxtest

import (
	"sync"
	"time"
)

// Clock is a manual outbox.Clock: it tells the time it was set to and moves
// only when told. It is safe for concurrent use.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// Start is the time a [Clock] from [NewClock] starts at: a whole second in
// UTC, so it survives every database's timestamp precision.
func Start() time.Time { return time.Date(2030, time.January, 2, 3, 4, 5, 0, time.UTC) }

// NewClock returns a clock set to [Start].
func NewClock() *Clock { return &Clock{now: Start()} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d and returns the new time.
func (c *Clock) Advance(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	return c.now
}

// Set sets the clock to t.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}
