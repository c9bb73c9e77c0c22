package testkit

import (
	"context"
	"testing"
	"time"
)

// WaitLimit bounds Eventually, so that a test that would hang reports
// what it waited for instead.
const WaitLimit = 30 * time.Second

// pollInterval is how often a condition is checked: short, so that a wait
// ends soon after the state changes.
const pollInterval = 10 * time.Millisecond

// Eventually checks cond until it holds and fails the test if WaitLimit
// passes first. what says what was awaited ("the message to be delivered").
// Call it from the test's goroutine. It is for state that has no channel:
// prefer waiting on a channel, a hook or a log line when there is one.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), WaitLimit)
	defer cancel()
	WaitFor(ctx, t, what, cond)
}

// WaitFor checks cond until it holds and fails the test if ctx ends first.
// Call it from the test's goroutine.
func WaitFor(ctx context.Context, t testing.TB, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s: %v", what, context.Cause(ctx))
		case <-tick.C:
		}
	}
}
