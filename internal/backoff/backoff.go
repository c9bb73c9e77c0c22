// Package backoff is the one rule for waiting longer after each consecutive
// failure: the spool's retry policy, the token source's error backoff and the
// scheduler's mailbox pause all use it. Everything here is a pure function
// of its arguments, so callers bring their own clock and random numbers.
package backoff

import "time"

// Doubling is the wait after the n-th consecutive failure: base, then
// doubling, never more than max. n < 1 counts as 1, a base <= 0 gives 0 and
// a base above max gives max. It cannot overflow, however large n is.
func Doubling(base, max time.Duration, n int) time.Duration {
	if base <= 0 {
		return 0
	}
	if n < 1 {
		n = 1
	}
	d := base
	for i := 1; i < n && d < max; i++ {
		if d > max/2 {
			return max
		}
		d *= 2
	}
	return min(d, max)
}

// Jitter spreads d by ±frac so that many waiters do not wake in lockstep:
// r in [0,1) maps to [d·(1-frac), d·(1+frac)); r = 0.5 is d itself. The
// factor is applied in floating point and only then truncated, so no
// precision is lost to an integer multiplier.
func Jitter(d time.Duration, frac, r float64) time.Duration {
	f := (1 - frac) + 2*frac*r
	return time.Duration(float64(d) * f)
}

// Shorten takes up to frac of d off, never adding any: r in [0,1) maps to
// (d·(1-frac), d]. Use it where the wait must not exceed its cap.
func Shorten(d time.Duration, frac, r float64) time.Duration {
	return d - time.Duration(float64(d)*frac*r)
}
