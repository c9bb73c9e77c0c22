package testkit

import (
	"sync"
	"time"
)

// Clock is a fake clock that moves only when told to. It is safe for
// concurrent use; pass its Now method wherever a func() time.Time is taken.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock returns a clock reading start. The zero time means the current
// time truncated to the second: certificates and TLS still check validity
// against the real clock, so a clock near it keeps both views consistent.
func NewClock(start time.Time) *Clock {
	if start.IsZero() {
		start = time.Now().Truncate(time.Second)
	}
	return &Clock{t: start}
}

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// Set moves the clock to t.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}
