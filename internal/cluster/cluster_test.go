package cluster

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/testkit"
)

func twoNodes(t *testing.T, r *testkit.Redis, clock func() time.Time) (*Cluster, *Cluster, *testkit.SyncBuffer) {
	t.Helper()
	log, buf := testkit.DebugLogger(t)
	var out []*Cluster
	for _, node := range []string{"relay-a", "relay-b"} {
		c, err := New(Options{URL: r.URL(), Node: node, Logger: log, Now: clock, LeaseTTL: 600 * time.Millisecond, Heartbeat: 100 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		out = append(out, c)
	}
	return out[0], out[1], buf
}

// reserveN asks c n times for one send each in the window of key, and
// says how many fitted.
func reserveN(c *Cluster, key []string, lim []Limit, n int, now func() time.Time) int {
	took := 0
	for range n {
		if _, _, ok := c.Reserve(key, lim, 1, now()); ok {
			took++
		}
	}
	return took
}

// stopIntoHold stops Redis and asks c for one place in key's window at
// now: c must find Redis gone, switch to fallback and hold the window.
// It returns when the hold ends.
func stopIntoHold(t *testing.T, r *testkit.Redis, c *Cluster, key []string, lim []Limit, now time.Time) time.Time {
	t.Helper()
	r.Stop()
	_, hold, ok := c.Reserve(key, lim, 1, now)
	if ok || c.Mode() != ModeFallback {
		t.Fatalf("Redis down: ok=%v mode=%s; want a hold in fallback", ok, c.Mode())
	}
	return hold
}

// pausedFor is key's shared pause as a delivery reads it, in the round
// trip that reserves: when it ends (zero if none) and the reply that
// caused it. A relay that finds Redis restarted joins first and asks again.
func pausedFor(t *testing.T, c *Cluster, key string) (time.Time, string) {
	t.Helper()
	for range 3 {
		if r := c.Take(nil, key); !r.Rejoin {
			return r.PausedUntil, r.PauseReason
		}
	}
	t.Fatalf("%s could not read the pause of %s: still rejoining", c.Node(), key)
	return time.Time{}, ""
}

// leaseAll takes every one of key's limit connection slots on c.
func leaseAll(t *testing.T, c *Cluster, key string, limit int) []*Lease {
	t.Helper()
	var held []*Lease
	for i := range limit {
		l, ok := c.Lease(key, limit)
		if !ok {
			t.Fatalf("lease %d refused", i+1)
		}
		held = append(held, l)
	}
	return held
}

// Two relays sharing one Redis never take more than the limit between
// them in any span, and each is told when the window has room again.
func TestSharedWindow(t *testing.T) {
	r := testkit.StartRedis(t, "")
	clock := testkit.NewClock(time.Unix(1_800_000_000, 0))
	a, b, _ := twoNodes(t, r, clock.Now)
	lim := []Limit{{Span: time.Minute, Max: 30}}
	took := 0
	var retry time.Time
	for i := 0; i < 40; i++ {
		c := a
		if i%2 == 1 {
			c = b
		}
		_, at, ok := c.Reserve([]string{"mailbox:x:minute"}, lim, 1, clock.Now())
		if ok {
			took++
		} else {
			retry = at
		}
		clock.Advance(time.Second)
	}
	if took != 30 {
		t.Fatalf("two relays took %d of a 30-per-minute budget, want 30", took)
	}
	// The first entry was at t0; the window has room at t0+60s.
	if want := time.Unix(1_800_000_000, 0).Add(time.Minute); !retry.Equal(want) {
		t.Fatalf("retry at %v, want %v", retry, want)
	}
	clock.Set(time.Unix(1_800_000_000, 0).Add(time.Minute + time.Millisecond))
	if _, _, ok := b.Reserve([]string{"mailbox:x:minute"}, lim, 1, clock.Now()); !ok {
		t.Fatal("no room once the first entry left the window")
	}
	testkit.Eventually(t, "both relays seen alive", func() bool { return a.Mode() == ModeShared && a.Stats().Nodes == 2 })
}

// A cancelled reservation gives its room back; a settled one keeps only
// what the upstream took.
func TestSettle(t *testing.T) {
	r := testkit.StartRedis(t, "")
	clock := testkit.NewClock(time.Unix(1_800_000_000, 0))
	a, b, _ := twoNodes(t, r, clock.Now)
	lim := []Limit{{Span: 24 * time.Hour, Max: 10}}
	t1, _, ok := a.Reserve([]string{"mailbox:x:rcpts"}, lim, 8, clock.Now())
	if !ok {
		t.Fatal("8 of 10 refused")
	}
	if _, _, ok := b.Reserve([]string{"mailbox:x:rcpts"}, lim, 3, clock.Now()); ok {
		t.Fatal("3 more fitted in 2")
	}
	a.Settle(t1, clock.Now(), 5)
	if _, _, ok := b.Reserve([]string{"mailbox:x:rcpts"}, lim, 5, clock.Now()); !ok {
		t.Fatal("settling 5 of 8 did not give 3 back")
	}
}

// Connection leases are shared, and a relay that dies without releasing
// its leases frees them within the lease TTL.
func TestLeases(t *testing.T) {
	r := testkit.StartRedis(t, "")
	a, b, _ := twoNodes(t, r, time.Now)
	held := leaseAll(t, a, "x", 3)
	if _, ok := b.Lease("x", 3); ok {
		t.Fatal("a fourth lease of 3 was granted to the other relay")
	}
	held[0].Release()
	l, ok := b.Lease("x", 3)
	if !ok {
		t.Fatal("a released lease did not come free")
	}
	// Past a few renewals, a's leases are still a's.
	testkit.Eventually(t, "a's leases to survive renewal while a lives", func() bool { return a.Stats().RoundTrips > 10 })
	if _, ok := b.Lease("x", 3); ok {
		t.Fatal("a lease was granted over the limit after renewals")
	}
	// a dies: it stops renewing without releasing.
	start := time.Now()
	a.Close()
	testkit.Eventually(t, "the dead relay's leases to lapse", func() bool {
		l2, ok := b.Lease("x", 3)
		if ok {
			l2.Release()
		}
		return ok
	})
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("slots came free after %v, lease TTL is 600ms", d)
	}
	l.Release()
}

// Without Redis each relay uses its share, after holding short windows
// once, logs it once, and returns to the shared budgets by itself.
func TestFallback(t *testing.T) {
	r := testkit.StartRedis(t, "")
	clock := testkit.NewClock(time.Unix(1_800_000_000, 0))
	a, b, log := twoNodes(t, r, clock.Now)
	testkit.Eventually(t, "both relays seen alive", func() bool { return a.Stats().Nodes == 2 })
	key, lim := []string{"mailbox:x:minute"}, []Limit{{Span: time.Minute, Max: 30}}
	if _, _, ok := a.Reserve(key, lim, 1, clock.Now()); !ok {
		t.Fatal("refused while shared")
	}
	hold := stopIntoHold(t, r, a, key, lim, clock.Now())
	if want := clock.Now().Add(time.Minute + 600*time.Millisecond); !hold.Equal(want) {
		t.Fatalf("hold until %v, want one window and a lease TTL: %v", hold, want)
	}
	clock.Set(hold)
	took := reserveN(a, key, lim, 30, clock.Now)
	if took != 15 {
		t.Fatalf("in fallback one of two relays took %d, want its share 15", took)
	}
	n := 0
	for _, line := range strings.Split(log.String(), "\n") {
		if strings.Contains(line, "budgets fallback") && strings.Contains(line, "node=relay-a") {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("fallback logged %d times:\n%s", n, log.String())
	}
	r.Start()
	testkit.Eventually(t, "shared budgets again, each relay back", func() bool {
		return a.Mode() == ModeShared && b.Mode() == ModeShared && !a.rejoining().waiting && !b.rejoining().waiting
	})
	if !strings.Contains(log.String(), "budgets are shared again") {
		t.Fatal("the return was not logged")
	}
	// What a counted alone is in Redis now, and both relays have put
	// theirs back: b finds a's 15 there and gets the other 15, no more.
	took = reserveN(b, key, lim, 20, clock.Now)
	if took != 15 {
		t.Fatalf("right after the return, the other relay took %d beside a's 15 counted alone, want 15", took)
	}
	clock.Advance(time.Minute + time.Second)
	took = reserveN(b, key, lim, 40, clock.Now)
	if took != 30 {
		t.Fatalf("a window after the return %d fitted, want the whole 30", took)
	}
	if err := a.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// One relay's pause is the others'.
func TestSharedPause(t *testing.T) {
	r := testkit.StartRedis(t, "")
	a, b, _ := twoNodes(t, r, time.Now)
	until := time.Now().Add(time.Minute).Truncate(time.Millisecond)
	a.Pause("x", until, "432 4.3.2 Concurrent connections limit exceeded")
	got, reason := pausedFor(t, b, "x")
	if !got.Equal(until) || !strings.Contains(reason, "432") {
		t.Fatalf("other relay sees pause until %v (%q), want %v", got, reason, until)
	}
}

// With a password, AUTH is part of the connection; a wrong one fails the
// round trip that doctor runs.
func TestAuth(t *testing.T) {
	r := testkit.StartRedis(t, "s3cret-pw")
	good, err := New(Options{URL: r.URL(), Password: "s3cret-pw", Node: "a"})
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()
	if err := good.Ping(context.Background()); err != nil {
		t.Fatalf("with the right password: %v", err)
	}
	bad, err := New(Options{URL: r.URL(), Password: "wrong", Node: "b"})
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	err = bad.Ping(context.Background())
	if err == nil || strings.Contains(err.Error(), "wrong") {
		t.Fatalf("with a wrong password: %v", err)
	}
}

// One round trip takes a delivery's window and daily places and reads the
// mailbox's shared pause; one settles both.
func TestTakeTogether(t *testing.T) {
	r := testkit.StartRedis(t, "")
	clock := testkit.NewClock(time.Unix(1_800_000_000, 0))
	// No heartbeat of their own during the test: every round trip counted
	// is the test's.
	a, b := slowNodes(t, r, clock.Now)
	now := clock.Now()
	bs := func(rcpts int) []Budget {
		return []Budget{
			{Key: "mailbox:x:minute", Limit: Limit{Span: time.Minute, Max: 30}, N: 1, At: now.Add(10 * time.Minute)},
			{Key: "mailbox:x:rcpts", Limit: Limit{Span: 24 * time.Hour, Max: 8}, N: rcpts, At: now},
		}
	}
	count := func(k string) int64 { return a.rdb.ZCard(context.Background(), prefix+k).Val() }
	until := now.Add(time.Minute)
	a.Pause("mailbox:x", until, "432 4.3.2 Concurrent connections limit exceeded")
	res := b.Take(bs(5), "mailbox:x")
	if res.OK || !res.PausedUntil.Equal(until) || !strings.Contains(res.PauseReason, "432") {
		t.Fatalf("paused elsewhere: %+v", res)
	}
	if count("mailbox:x:minute")+count("mailbox:x:rcpts") != 0 {
		t.Fatal("a paused mailbox reserved")
	}
	a.Unpause("mailbox:x")
	before := b.Stats().RoundTrips
	res = b.Take(bs(5), "mailbox:x")
	if !res.OK || count("mailbox:x:minute") != 1 || count("mailbox:x:rcpts") != 5 {
		t.Fatalf("take: %+v; minute %d, rcpts %d", res, count("mailbox:x:minute"), count("mailbox:x:rcpts"))
	}
	b.SettleEach(res.Ticket, now, []int{1, 3})
	if n := b.Stats().RoundTrips - before; n != 2 {
		t.Fatalf("take and settle cost %d round trips, want 2", n)
	}
	if count("mailbox:x:rcpts") != 3 {
		t.Fatalf("settling 3 of 5 recipients left %d", count("mailbox:x:rcpts"))
	}
	// The day has 5 left: 6 do not fit, and the window is not taken either.
	res = b.Take(bs(6), "mailbox:x")
	if res.OK || !res.Retry[0].IsZero() || res.Retry[1].IsZero() || count("mailbox:x:minute") != 1 {
		t.Fatalf("6 recipients of 5 left: %+v, minute %d", res, count("mailbox:x:minute"))
	}
}
