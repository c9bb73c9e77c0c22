package backoff

import (
	"math"
	"testing"
	"time"
)

func TestDoubling(t *testing.T) {
	for _, tt := range []struct {
		base, max time.Duration
		n         int
		want      time.Duration
	}{
		{time.Second, 5 * time.Minute, 0, time.Second},
		{time.Second, 5 * time.Minute, 1, time.Second},
		{time.Second, 5 * time.Minute, 2, 2 * time.Second},
		{time.Second, 5 * time.Minute, 9, 256 * time.Second},
		{time.Second, 5 * time.Minute, 10, 5 * time.Minute}, // 512s clamped
		{time.Second, 5 * time.Minute, 1000, 5 * time.Minute},
		{time.Minute, time.Hour, 7, time.Hour},
		{time.Minute, time.Hour, math.MaxInt, time.Hour},
		{time.Minute, 64 * time.Minute, 7, 64 * time.Minute}, // exactly max
		{time.Hour, time.Hour, 5, time.Hour},
		{2 * time.Hour, time.Hour, 1, time.Hour}, // base above max
		{0, time.Hour, 5, 0},
		{-time.Second, time.Hour, 5, 0},
		// A max near the limit of time.Duration must not overflow.
		{time.Second, time.Duration(math.MaxInt64), 100, time.Duration(math.MaxInt64)},
		{time.Duration(math.MaxInt64/2 + 1), time.Duration(math.MaxInt64), 2, time.Duration(math.MaxInt64)},
	} {
		if got := Doubling(tt.base, tt.max, tt.n); got != tt.want {
			t.Errorf("Doubling(%v, %v, %d) = %v, want %v", tt.base, tt.max, tt.n, got, tt.want)
		}
	}
}

// TestSpread covers Jitter (±frac around d) and Shorten (up to frac off).
func TestSpread(t *testing.T) {
	jitter, shorten := spread{"Jitter", Jitter}, spread{"Shorten", Shorten}
	for _, tt := range []struct {
		f    spread
		d    time.Duration
		frac float64
		r    float64
		want time.Duration
	}{
		{jitter, time.Minute, 0.1, 0.5, time.Minute},
		{jitter, time.Minute, 0.1, 0, 54 * time.Second},
		{jitter, 4 * time.Minute, 0.1, 0.25, 228 * time.Second}, // ×0.95, not truncated to ×0
		{jitter, time.Minute, 0, 0.9, time.Minute},
		{shorten, time.Second, 0.2, 0, time.Second},
		{shorten, time.Second, 0.2, 1, 800 * time.Millisecond},
		{shorten, 30 * time.Minute, 0.2, 0.5, 27 * time.Minute},
		{shorten, 0, 0.2, 0.5, 0},
	} {
		if got := tt.f.fn(tt.d, tt.frac, tt.r); got != tt.want {
			t.Errorf("%s(%v, %v, %v) = %v, want %v", tt.f.name, tt.d, tt.frac, tt.r, got, tt.want)
		}
	}
	// Just under r = 1 stays just under +frac.
	if got := Jitter(time.Minute, 0.1, 0.999999); got >= 66*time.Second || got < 65*time.Second {
		t.Errorf("Jitter(1m, 0.1, 0.999999) = %v, want just under 66s", got)
	}
}

type spread struct {
	name string
	fn   func(time.Duration, float64, float64) time.Duration
}
