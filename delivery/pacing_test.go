package delivery

import (
	"testing"
	"time"
)

// The sliding window counts exactly: a token bucket (or a fixed window)
// would let 2×limit through across a boundary; this one never lets more
// than limit into any span.
func TestWindow(t *testing.T) {
	t0 := time.Date(2025, 11, 24, 10, 0, 0, 0, time.UTC)
	s := func(n float64) time.Time { return t0.Add(time.Duration(n * float64(time.Second))) }
	w := &window{span: time.Minute}
	if got := w.freeAt(t0, 20, 0); !got.Equal(t0) {
		t.Fatalf("empty window: freeAt %v", got)
	}
	// 20 sends at the end of one minute...
	for i := 0; i < 20; i++ {
		w.add(s(59), 1)
	}
	if c := w.count(s(59)); c != 20 {
		t.Fatalf("count %d", c)
	}
	// ...so at the start of the next minute nothing more may go: a
	// per-minute bucket refilled at 60 s would allow 20 more here.
	if c := w.count(s(60)); c != 20 {
		t.Errorf("count at the boundary %d, want 20", c)
	}
	if got := w.freeAt(s(60), 19, 0); !got.Equal(s(119)) {
		t.Errorf("freeAt %v, want %v (when the first of the 20 leaves the window)", got, s(119))
	}
	// The window is (now-span, now]: an event exactly span old is out.
	if c := w.count(s(119)); c != 0 {
		t.Errorf("count at 119 s = %d, want 0", c)
	}

	// Spread events: freeAt finds the earliest time the count drops.
	w = &window{span: time.Minute}
	for i := 0; i < 10; i++ {
		w.add(s(float64(i*5)), 1) // 0, 5, ..., 45 s
	}
	if got := w.freeAt(s(50), 10, 0); !got.Equal(s(50)) {
		t.Errorf("with room: freeAt %v, want now", got)
	}
	if got := w.freeAt(s(50), 9, 0); !got.Equal(s(60)) {
		t.Errorf("freeAt %v, want 60 s", got)
	}
	if got := w.freeAt(s(50), 7, 0); !got.Equal(s(70)) {
		t.Errorf("freeAt %v, want 70 s", got)
	}
	// Weighted events (recipients): 10 + 3 extra must fit in 10.
	if got := w.freeAt(s(50), 10, 3); !got.Equal(s(70)) {
		t.Errorf("extra 3: freeAt %v, want 70 s", got)
	}
	// More than the limit on its own: let it through once the window is
	// empty, never hold it forever.
	if got := w.freeAt(s(50), 10, 11); !got.Equal(s(105)) {
		t.Errorf("oversized: freeAt %v, want 105 s (when the window empties)", got)
	}

	// Simulate a sender obeying freeAt at a rate limit of 20/min for 10
	// minutes, then check every 60 s window.
	w = &window{span: time.Minute}
	var sent []time.Time
	now := t0
	for now.Before(t0.Add(10 * time.Minute)) {
		at := w.freeAt(now, 20-1, 0) // room for this one
		if at.After(now) {
			now = at
			continue
		}
		w.add(now, 1)
		sent = append(sent, now)
		now = now.Add(137 * time.Millisecond)
	}
	for i := range sent {
		n := 0
		for j := i; j < len(sent) && sent[j].Sub(sent[i]) < time.Minute; j++ {
			n++
		}
		if n > 20 {
			t.Fatalf("window from %v holds %d sends", sent[i].Sub(t0), n)
		}
	}
	if len(sent) < 190 {
		t.Errorf("only %d sends in 10 minutes at 20/min: the window is too strict", len(sent))
	}
}
