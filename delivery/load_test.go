package delivery

import (
	"fmt"
	"sort"
	"testing"
	"time"
)

// With max_per_minute = 20 and 30 messages, no window carries more than
// 20 and all 30 arrive. The window is scaled to 2 s (Options.RateWindow)
// so the test does not take minutes; the emulator's delivery timestamps
// are the judge.
func TestRateLimitSlidingWindow(t *testing.T) {
	const span = 2 * time.Second
	h := newHarness(t, hopts{maxPerMinute: 20, rateWindow: span, noStart: true})
	for i := 0; i < 30; i++ {
		h.enqueue(tSendAs, []string{"a@example.org"}, testMessage(tSendAs, fmt.Sprintf("rate %d", i)))
	}
	h.start()
	msgs := h.waitDelivered(30)
	h.waitDone(30)
	at := make([]time.Time, len(msgs))
	for i, m := range msgs {
		at[i] = m.At
	}
	sort.Slice(at, func(i, j int) bool { return at[i].Before(at[j]) })
	worst := 0
	for i := range at {
		n := 0
		for j := i; j < len(at) && at[j].Sub(at[i]) < span; j++ {
			n++
		}
		worst = max(worst, n)
	}
	if worst > 20 {
		t.Errorf("a %s window carried %d messages, limit 20", span, worst)
	}
	if worst < 20 {
		// Not a failure of the limit, but the test would prove little.
		t.Logf("busiest window carried only %d", worst)
	}
	if len(msgs) != 30 {
		t.Errorf("delivered %d", len(msgs))
	}
	if len(h.throttled) != 0 {
		t.Errorf("throttled: %v", h.throttled)
	}
	t.Logf("busiest %s window: %d messages; first to last %s", span, worst, at[len(at)-1].Sub(at[0]))
}
