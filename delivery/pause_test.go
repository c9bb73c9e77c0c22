package delivery

import (
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/testkit"
	"github.com/oauthrelay/oauthrelay/transport"
)

// A delivery by an attempt that started before a throttle began (on a
// connection opened before the 432) must not lift the pause; one that
// started after it may.
func TestOnlyAttemptsAfterAPauseLiftIt(t *testing.T) {
	clock := testkit.NewClock(time.Time{})
	log, _ := testkit.DebugLogger(t)
	s := New(Options{Logger: log, Now: clock.Now})
	mb := s.mailbox("helpdesk@contoso.com")
	before := s.pauseEpoch(mb)

	s.pause(mb, transport.Verdict{Kind: transport.Throttled, Reply: "432 4.3.2 Concurrent connections limit exceeded"}, time.Minute, time.Hour)
	if !clock.Now().Before(mb.pausedUntil) {
		t.Fatal("the throttle did not pause the mailbox")
	}
	s.unpause(mb, before)
	if !clock.Now().Before(mb.pausedUntil) {
		t.Fatal("a delivery started before the 432 lifted the pause")
	}
	after := s.pauseEpoch(mb)
	s.unpause(mb, after)
	if !mb.pausedUntil.IsZero() || mb.faults != 0 {
		t.Fatalf("a delivery started after the pause did not lift it: until %v, faults %d", mb.pausedUntil, mb.faults)
	}
}
