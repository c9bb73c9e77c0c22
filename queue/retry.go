package queue

import (
	"time"

	"github.com/oauthrelay/oauthrelay/internal/backoff"
)

// RetryPolicy is how long a message waits between attempts and how long it
// may stay in the queue.
type RetryPolicy struct {
	Min    time.Duration
	Max    time.Duration
	MaxAge time.Duration
}

// Delay is the wait after the n-th failed attempt (n >= 1): Min, then
// doubling up to Max. jitter in [0,1) spreads it by ±10% so that a backlog
// does not retry in lockstep; 0.5 means no jitter. The result can exceed Max
// by the jitter, never more.
func (p RetryPolicy) Delay(n int, jitter float64) time.Duration {
	return backoff.Jitter(backoff.Doubling(p.Min, p.Max, n), 0.1, jitter)
}

// Next returns when to try again after the n-th failed attempt of a message
// received at received. expired is true once the message has been queued
// for MaxAge: it then fails instead. The last retry is pulled in to the
// deadline so a message gets its whole lifetime, like Postfix's
// maximal_queue_lifetime.
func (p RetryPolicy) Next(received, now time.Time, n int, jitter float64) (next time.Time, expired bool) {
	if p.MaxAge > 0 {
		deadline := received.Add(p.MaxAge)
		if !now.Before(deadline) {
			return now, true
		}
		next = now.Add(p.Delay(n, jitter))
		if next.After(deadline) {
			next = deadline
		}
		return next, false
	}
	return now.Add(p.Delay(n, jitter)), false
}
