package delivery

import "time"

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
