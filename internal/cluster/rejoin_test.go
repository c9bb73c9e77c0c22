package cluster

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/oauthrelay/oauthrelay/internal/testkit"
)

// stopBeat stops c's heartbeat (and its leases' renewals) so that c
// stays away from Redis until the test joins it.
func stopBeat(t *testing.T, c *Cluster) {
	c.stopOnce.Do(func() {
		close(c.stop)
		c.stopped.Wait()
	})
	t.Cleanup(func() { c.rdb.Close() })
}

// slowNodes are two relays whose heartbeats and renewals never come by
// themselves during a test: it drives each step.
func slowNodes(t *testing.T, r *testkit.Redis, clock func() time.Time) (*Cluster, *Cluster) {
	t.Helper()
	log, _ := testkit.DebugLogger(t)
	var out []*Cluster
	for _, node := range []string{"relay-a", "relay-b"} {
		c, err := New(Options{URL: r.URL(), Node: node, Logger: log, Now: clock, LeaseTTL: time.Hour, Heartbeat: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		out = append(out, c)
	}
	for _, c := range out {
		if err := c.heartbeat(); err != nil {
			t.Fatal(err)
		}
	}
	if out[0].Stats().Nodes != 2 || out[1].Stats().Nodes != 2 {
		t.Fatal("the relays do not see each other")
	}
	return out[0], out[1]
}

// Back from fallback, a relay holds at most its share of a mailbox's
// connections until the others have put theirs back: they still hold
// theirs, which Redis does not know. (Before, the first relay back leased
// against Redis's count alone: 3 + the other's 1 of a 3-connection
// mailbox.)
func TestRejoinLeases(t *testing.T) {
	r := testkit.StartRedis(t, "")
	a, b, _ := twoNodes(t, r, time.Now)
	testkit.Eventually(t, "both relays seen alive", func() bool { return a.Stats().Nodes == 2 && b.Stats().Nodes == 2 })
	stopBeat(t, b)
	r.Stop()
	testkit.Eventually(t, "a in fallback", func() bool { return a.Mode() == ModeFallback })
	if _, ok := b.Lease("x", 3); ok || b.Mode() != ModeFallback {
		t.Fatal("b took a lease at once in fallback, before the others could close what they held over their share")
	}
	var la, lb *Lease
	testkit.Eventually(t, "each relay's share in fallback", func() bool {
		if la == nil {
			la, _ = a.Lease("x", 3)
		}
		if lb == nil {
			lb, _ = b.Lease("x", 3)
		}
		return la != nil && lb != nil
	})
	if _, ok := a.Lease("x", 3); ok {
		t.Fatal("a took more than its share (1 of 3) in fallback")
	}
	r.Start()
	testkit.Eventually(t, "a shared again", func() bool { return a.Mode() == ModeShared })
	for i := 0; i < 3; i++ {
		if _, ok := a.Lease("x", 3); ok {
			t.Fatalf("back in Redis, a took lease %d beyond its share while b still holds its own alone", i+2)
		}
	}
	if err := b.join(); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, "a to see b back", func() bool { return !a.rejoining().waiting })
	l, ok := a.Lease("x", 3)
	if !ok {
		t.Fatal("with both back, the third slot is not a's to take")
	}
	if _, ok := a.Lease("x", 3); ok {
		t.Fatal("a fourth lease of 3")
	}
	l.Release()
	la.Release()
	lb.Release()
}

// Redis restarted empty before the relays noticed: a relay takes no
// connection lease in the new Redis until the others have put back the
// leases they hold. (Before, the lease script took the emptied slots.)
func TestRestartLeases(t *testing.T) {
	r := testkit.StartRedis(t, "")
	a, b := slowNodes(t, r, time.Now)
	held := leaseAll(t, a, "x", 3)
	r.Stop()
	r.Start()
	if _, ok := b.Lease("x", 3); ok {
		t.Fatal("after Redis lost its data, b took a slot that a still holds")
	}
	// a's renewal finds the new Redis and puts its leases back.
	if ok, err := held[0].take(); err != nil || !ok {
		t.Fatalf("a's renewal after the restart: %v, %v", ok, err)
	}
	if err := b.heartbeat(); err != nil {
		t.Fatal(err)
	}
	if b.rejoining().waiting {
		t.Fatal("b still waits for a, which put its leases back")
	}
	if _, ok := b.Lease("x", 3); ok {
		t.Fatal("a fourth lease of 3 after the restart")
	}
	held[0].Release()
	if l, ok := b.Lease("x", 3); !ok {
		t.Fatal("a released slot did not come free")
	} else {
		l.Release()
	}
}

// Redis restarted empty before the relays noticed: a relay reserves
// nothing in a short window until the others have put theirs back, as it
// cannot know how much of it they used. (Before, it took its share beside
// its own: 20 + 10 + 5 of 30.)
func TestRestartWindow(t *testing.T) {
	r := testkit.StartRedis(t, "")
	clock := testkit.NewClock(time.Unix(1_800_000_000, 0))
	a, b := slowNodes(t, r, clock.Now)
	key, lim := []string{"mailbox:x:minute"}, []Limit{{Span: time.Minute, Max: 30}}
	for i := 0; i < 30; i++ {
		c := a
		if i%3 == 2 {
			c = b
		}
		if _, _, ok := c.Reserve(key, lim, 1, clock.Now()); !ok {
			t.Fatalf("reservation %d refused", i+1)
		}
	}
	r.Stop()
	r.Start()
	for i := 0; i < 5; i++ {
		if _, _, ok := b.Reserve(key, lim, 1, clock.Now()); ok {
			t.Fatal("after Redis lost its data, b reserved in a window a had filled")
		}
	}
	// a comes back (its next call finds the new Redis) and b learns it.
	if _, _, ok := a.Reserve(key, lim, 1, clock.Now()); ok {
		t.Fatal("a reserved in a full window")
	}
	if err := b.heartbeat(); err != nil {
		t.Fatal(err)
	}
	if _, _, ok := b.Reserve(key, lim, 1, clock.Now()); ok {
		t.Fatal("with both back, a 31st message fitted in the window")
	}
	clock.Advance(time.Minute)
	took := reserveN(b, key, lim, 40, clock.Now)
	if took != 30 {
		t.Fatalf("a window later %d fitted, want 30", took)
	}
}

// A send reserved alone in fallback and settled once Redis is back is
// settled in Redis too: a cancelled one does not keep counting there.
// (Before, its entry stayed at its in-flight horizon, 10 minutes on.)
func TestSettleAfterReturn(t *testing.T) {
	r := testkit.StartRedis(t, "")
	clock := testkit.NewClock(time.Unix(1_800_000_000, 0))
	a, _, _ := twoNodes(t, r, clock.Now)
	key, lim := []string{"mailbox:x:minute"}, []Limit{{Span: time.Minute, Max: 30}}
	clock.Set(stopIntoHold(t, r, a, key, lim, clock.Now()))
	tk, _, ok := a.Reserve(key, lim, 1, clock.Now().Add(10*time.Minute))
	if !ok {
		t.Fatal("refused in fallback after the hold")
	}
	r.Start()
	testkit.Eventually(t, "a shared again", func() bool { return a.Mode() == ModeShared })
	ctx := context.Background()
	if n := a.rdb.ZCard(ctx, prefix+key[0]).Val(); n != 1 {
		t.Fatalf("Redis holds %d entries of a's send in flight, want 1 put back", n)
	}
	a.Settle(tk, clock.Now(), 0)
	if n := a.rdb.ZCard(ctx, prefix+key[0]).Val(); n != 0 {
		t.Fatalf("after the send was cancelled Redis still holds %d entries", n)
	}
}

// What a relay reserves alone while it joins is in Redis afterwards: the
// join puts back all of the local log or waits, never a snapshot that
// misses a reservation made before the switch back.
func TestJoinMissesNothing(t *testing.T) {
	r := testkit.StartRedis(t, "")
	clock := testkit.NewClock(time.Unix(1_800_000_000, 0))
	a, _, _ := twoNodes(t, r, clock.Now)
	key, lim := []string{"client:x:minute"}, []Limit{{Span: time.Minute, Max: 1_000_000}}
	clock.Set(stopIntoHold(t, r, a, key, lim, clock.Now()))
	r.Start()
	var took atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for a.Mode() != ModeShared || took.Load() < 50 {
				if _, _, ok := a.Reserve(key, lim, 1, clock.Now()); ok {
					took.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if n := a.rdb.ZCard(context.Background(), prefix+key[0]).Val(); n != took.Load() {
		t.Fatalf("a reserved %d around its join, Redis holds %d", took.Load(), n)
	}
}

// In fallback a relay's share of a day's count is of what was left when
// Redis went away, as its heartbeat last read it, not as of its own last
// reservation. (Before, a relay that had reserved 10 of 100 hours ago took
// 45 alone although the other had taken 80 since: 135 of 100.)
func TestFallbackDayCount(t *testing.T) {
	r := testkit.StartRedis(t, "")
	clock := testkit.NewClock(time.Unix(1_800_000_000, 0))
	a, b := slowNodes(t, r, clock.Now)
	key, lim := []string{"mailbox:x:rcpts"}, []Limit{{Span: 24 * time.Hour, Max: 100}}
	if _, _, ok := a.Reserve(key, lim, 10, clock.Now()); !ok {
		t.Fatal("10 of 100 refused")
	}
	clock.Advance(time.Hour)
	if _, _, ok := b.Reserve(key, lim, 80, clock.Now()); !ok {
		t.Fatal("80 more of 100 refused")
	}
	if err := a.heartbeat(); err != nil {
		t.Fatal(err)
	}
	r.Stop()
	took := reserveN(a, key, lim, 50, clock.Now)
	if a.Mode() != ModeFallback {
		t.Fatal("not in fallback")
	}
	if took != 5 {
		t.Fatalf("alone, a took %d of the 10 left to two relays, want its share 5", took)
	}
}

// A send cancelled while Redis answered leaves its key with no entries in
// the local log; the join that follows a fallback still succeeds (before:
// it sent Redis a ZADD without members, which failed the whole
// transaction, so the relay never left fallback).
func TestJoinAfterCancelledSend(t *testing.T) {
	r := testkit.StartRedis(t, "")
	clock := testkit.NewClock(time.Unix(1_800_000_000, 0))
	a, _, _ := twoNodes(t, r, clock.Now)
	key, lim := []string{"mailbox:x:minute"}, []Limit{{Span: time.Minute, Max: 30}}
	tk, _, ok := a.Reserve(key, lim, 1, clock.Now())
	if !ok {
		t.Fatal("refused in an empty window")
	}
	a.Settle(tk, clock.Now(), 0)
	stopIntoHold(t, r, a, key, lim, clock.Now())
	r.Start()
	testkit.Eventually(t, "a shared again", func() bool { return a.Mode() == ModeShared })
}

// Many calls that find Redis restarted at once make one join between
// them, not one each: a join puts back the whole local log (a day of
// recipients), and each extra one logs the loss again and restarts the
// wait for the others. (Before, every call that had read the old epoch
// joined again after the first.)
func TestRestartJoinsOnce(t *testing.T) {
	r := testkit.StartRedis(t, "")
	clock := testkit.NewClock(time.Unix(1_800_000_000, 0))
	a, _ := slowNodes(t, r, clock.Now)
	key, lim := []string{"mailbox:x:minute"}, []Limit{{Span: time.Minute, Max: 30}}
	if _, _, ok := a.Reserve(key, lim, 1, clock.Now()); !ok {
		t.Fatal("refused in an empty window")
	}
	r.Stop()
	r.Start()
	a.mu.Lock()
	joins := a.joins
	a.mu.Unlock()
	const n = 6
	// The gate held, every call finds the new Redis (a reservation and
	// a heartbeat each) and then waits to join.
	a.gate.Lock()
	before := a.roundTrips.Load()
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a.Reserve(key, lim, 1, clock.Now())
		}()
	}
	testkit.Eventually(t, "every call to find Redis restarted", func() bool { return a.roundTrips.Load()-before >= 2*n })
	a.gate.Unlock()
	wg.Wait()
	a.mu.Lock()
	got := a.joins - joins
	a.mu.Unlock()
	if got != 1 {
		t.Fatalf("%d calls found Redis restarted and joined %d times, want once", n, got)
	}
}

// A connection released while its relay joins is not put back into Redis
// by that join: its slot is free at once, not held by nobody until the
// lease's TTL. (Before, the release skipped Redis, as the relay was not
// shared yet, and the join put back the lease it had listed before.)
func TestReleaseDuringJoin(t *testing.T) {
	r := testkit.StartRedis(t, "")
	clock := testkit.NewClock(time.Unix(1_800_000_000, 0))
	a, _ := slowNodes(t, r, clock.Now)
	r.Stop()
	a.toFallback(errors.New("test: Redis stopped"))
	clock.Advance(a.fallbackHold())
	l, ok := a.Lease("x", 3)
	if !ok {
		t.Fatal("no lease within a's share in fallback")
	}
	r.Start()
	ctx := context.Background()
	other := redis.NewClient(&redis.Options{Addr: r.Addr()})
	defer other.Close()
	// Redis answers the join only after the release has been asked for.
	if err := other.ClientPause(ctx, 150*time.Millisecond).Err(); err != nil {
		t.Fatal(err)
	}
	before := a.roundTrips.Load()
	joined := make(chan error, 1)
	go func() { joined <- a.join() }()
	testkit.Eventually(t, "the join to list a's leases and call Redis", func() bool { return a.roundTrips.Load() > before })
	l.Release()
	if err := <-joined; err != nil {
		t.Fatal(err)
	}
	if n := other.ZCard(ctx, prefix+"lease:x").Val(); n != 0 {
		t.Fatalf("after a released its only lease during its join, Redis holds %d leases of x", n)
	}
}
