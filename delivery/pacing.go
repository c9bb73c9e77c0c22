package delivery

import (
	"context"
	"time"

	"github.com/oauthrelay/oauthrelay/config"
	"github.com/oauthrelay/oauthrelay/transport"
)

// Pacing keeps each mailbox within Exchange Online's sending limits: the
// messages per minute (an exact sliding window, with sends in flight
// counted) and the recipients per 24 hours (counted when Microsoft accepts
// them, and saved in the spool across restarts).

// reserve waits for a slot in the mailbox's per-minute window and checks
// the daily recipient quota. It returns false with the time to retry when
// the quota is used up or delivery is shutting down.
func (s *Scheduler) reserve(ctx context.Context, mb *mbox, mc *config.Mailbox, rcpts int) (time.Time, bool) {
	for {
		s.mu.Lock()
		now := s.o.Now()
		if mc.MaxRecipientsPerDay > 0 {
			// Recipients of attempts still in flight count as if accepted.
			if at := mb.rcpts.freeAt(now, mc.MaxRecipientsPerDay-mb.rcptsInflight, rcpts); at.After(now) {
				s.mu.Unlock()
				// Pause the whole mailbox, so its other mail waits too
				// instead of each message finding out on its own.
				d := at.Sub(now)
				s.pause(mb, transport.Verdict{Kind: transport.Quota, Reply: "the relay's count of this mailbox's recipients in the last 24 hours reached max_recipients_per_day",
					Fix: "mail waits for the 24-hour window to roll; spread the load over more mailboxes if this repeats"}, d, d)
				s.log.Warn("mailbox reached its daily recipient limit; mail waits for the 24-hour window to roll", "mailbox", mb.addr, "until", at.Format(time.RFC3339))
				return at, false
			}
		}
		var wait time.Time
		if mb.inflight < mc.MaxPerMinute {
			// In-flight sends count too: their upstream time is not known
			// until they finish.
			at := mb.sent.freeAt(now, mc.MaxPerMinute-mb.inflight-1, 0)
			if !at.After(now) {
				mb.inflight++
				mb.rcptsInflight += rcpts
				s.mu.Unlock()
				return time.Time{}, true
			}
			wait = at
		} else {
			wait = now.Add(time.Second)
		}
		wake := mb.wake
		s.mu.Unlock()
		t := time.NewTimer(max(wait.Sub(now), time.Millisecond))
		select {
		case <-t.C:
		case <-wake:
		case <-ctx.Done():
			t.Stop()
			return s.o.Now(), false
		}
		t.Stop()
	}
}

// release ends an in-flight send: it now counts in the per-minute window
// at the time it finished, which is never earlier than when the upstream
// counted it, and only the recipients the upstream took count toward the
// daily limit (a failed attempt used none of Exchange's quota).
func (s *Scheduler) release(mb *mbox, res transport.Result, rcpts int) {
	taken := 0
	for _, v := range res.Rcpts {
		if v.Kind == transport.Delivered {
			taken++
		}
	}
	s.mu.Lock()
	now := s.o.Now()
	mb.inflight--
	mb.rcptsInflight -= rcpts
	mb.sent.add(now, 1)
	if taken > 0 {
		mb.rcpts.add(now, taken)
	}
	s.broadcast(mb)
	s.mu.Unlock()
}

// window counts events in a sliding time window exactly: it keeps the
// time of each event, so no 60-second span can ever hold more than the
// limit (a token bucket would allow twice the rate across a boundary).
type window struct {
	span   time.Duration
	events []windowEvent
}

type windowEvent struct {
	at time.Time
	n  int
}

func (w *window) prune(now time.Time) {
	i := 0
	for i < len(w.events) && !w.events[i].at.After(now.Add(-w.span)) {
		i++
	}
	if i > 0 {
		w.events = append(w.events[:0], w.events[i:]...)
	}
}

// count is the sum of events in (now-span, now].
func (w *window) count(now time.Time) int {
	w.prune(now)
	n := 0
	for _, e := range w.events {
		n += e.n
	}
	return n
}

// add records n events at t. Events must be added in time order.
func (w *window) add(t time.Time, n int) {
	w.events = append(w.events, windowEvent{t, n})
}

// freeAt is the earliest time at which count+extra <= limit, given that
// no more events are added. It returns now when that already holds.
func (w *window) freeAt(now time.Time, limit, extra int) time.Time {
	c := w.count(now) + extra
	if c <= limit {
		return now
	}
	for _, e := range w.events {
		c -= e.n
		if c <= limit {
			return e.at.Add(w.span)
		}
	}
	// extra alone exceeds limit: it can never fit; let it through alone
	// once the window is empty.
	if len(w.events) == 0 {
		return now
	}
	return w.events[len(w.events)-1].at.Add(w.span)
}
