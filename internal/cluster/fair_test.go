package cluster

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/testkit"
)

// renewAll runs one renewal of each lease, as the renewal loop does.
func renewAll(t *testing.T, ls ...*Lease) {
	t.Helper()
	for _, l := range ls {
		if ok, err := l.take(); err != nil || !ok {
			t.Fatalf("renewal of %s: %v %v", l.member, ok, err)
		}
	}
}

// keeps counts the leases whose connections may carry on.
func keeps(ls ...*Lease) (kept []*Lease, gone []*Lease) {
	for _, l := range ls {
		if l.Keep() {
			kept = append(kept, l)
		} else {
			gone = append(gone, l)
		}
	}
	return kept, gone
}

// A relay with a backlog gives up what it holds beyond its fair part
// when another relay waits, instead of keeping every slot until its queue
// is empty (before: the two relays took turns, each draining alone).
func TestLeasesShareBetweenWaitingRelays(t *testing.T) {
	r := testkit.StartRedis(t, "")
	a, b := slowNodes(t, r, time.Now)
	held := leaseAll(t, a, "x", 3)
	renewAll(t, held...)
	if kept, _ := keeps(held...); len(kept) != 3 {
		t.Fatalf("with nobody waiting, a keeps %d of its 3 leases", len(kept))
	}
	if _, ok := b.Lease("x", 3); ok {
		t.Fatal("a fourth lease of 3 was granted")
	}
	renewAll(t, held...)
	kept, gone := keeps(held...)
	if len(gone) != 1 {
		t.Fatalf("b waits: a gives up %d leases, want 1 (3 slots, 2 relays: 2 and 1)", len(gone))
	}
	gone[0].Release()
	if _, ok := a.Lease("x", 3); ok {
		t.Fatal("a took back the slot it gave up for b")
	}
	lb, ok := b.Lease("x", 3)
	if !ok {
		t.Fatal("b did not get the slot a gave up")
	}
	// Both wait for more: the split holds.
	if _, ok := b.Lease("x", 3); ok {
		t.Fatal("a fourth lease of 3 was granted")
	}
	if _, ok := a.Lease("x", 3); ok {
		t.Fatal("a fourth lease of 3 was granted")
	}
	renewAll(t, append(kept, lb)...)
	if k, _ := keeps(append(kept, lb)...); len(k) != 3 {
		t.Fatalf("at 2 and 1, %d of 3 leases carry on, want all", len(k))
	}
}

// With fewer slots than relays wanting one, each gets a turn.
func TestLeaseTurns(t *testing.T) {
	r := testkit.StartRedis(t, "")
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	a, b := slowNodes(t, r, clock)
	la, ok := a.Lease("y", 1)
	if !ok {
		t.Fatal("lease refused")
	}
	if _, ok := b.Lease("y", 1); ok {
		t.Fatal("a second lease of 1 was granted")
	}
	renewAll(t, la)
	if !la.Keep() {
		t.Fatal("a gave its only slot up before its turn was over")
	}
	mu.Lock()
	now = now.Add(leaseTurn + time.Second)
	mu.Unlock()
	if _, ok := b.Lease("y", 1); ok { // b still waits
		t.Fatal("a second lease of 1 was granted")
	}
	renewAll(t, la)
	if la.Keep() {
		t.Fatal("b waits and a's turn is over, but a keeps the slot")
	}
	la.Release()
	if _, ok := a.Lease("y", 1); ok {
		t.Fatal("a took back the slot it gave up for b")
	}
	if _, ok := b.Lease("y", 1); !ok {
		t.Fatal("b did not get its turn")
	}
}

// A relay remembers how many relays it saw, and one that starts while
// Redis is away keeps to its share of that many rather than the whole
// budgets (before: it had seen nobody, so its share was everything).
func TestRememberedNodes(t *testing.T) {
	r := testkit.StartRedis(t, "")
	log, _ := testkit.DebugLogger(t)
	got := make(chan int, 10)
	var cs []*Cluster
	for _, node := range []string{"relay-a", "relay-b"} {
		o := Options{URL: r.URL(), Node: node, Logger: log, LeaseTTL: 600 * time.Millisecond, Heartbeat: 100 * time.Millisecond}
		if node == "relay-a" {
			o.Remember = func(n int) { got <- n }
		}
		c, err := New(o)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		cs = append(cs, c)
	}
	remembered := 0
	testkit.Eventually(t, "relay-a to remember 2 relays", func() bool {
		for {
			select {
			case n := <-got:
				remembered = n
			default:
				return remembered == 2
			}
		}
	})
	r.Stop()
	clock := testkit.NewClock(time.Now())
	c, err := New(Options{URL: r.URL(), Node: "relay-a", Logger: log, Now: clock.Now, Nodes: remembered, LeaseTTL: 600 * time.Millisecond, Heartbeat: time.Hour, Timeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	if c.Mode() != ModeFallback || c.Stats().Nodes != 2 {
		t.Fatalf("started without Redis: mode %s, %d relays; want fallback with the 2 remembered", c.Mode(), c.Stats().Nodes)
	}
	clock.Set(clock.Now().Add(c.fallbackHold() + time.Second))
	var held []*Lease
	for {
		l, ok := c.Lease("x", 3)
		if !ok {
			break
		}
		held = append(held, l)
	}
	if len(held) != 1 {
		t.Fatalf("started without Redis after seeing 2 relays: %d leases of 3, want its share, 1", len(held))
	}
}

// A pause a relay earns while Redis is away reaches the others when it
// joins again, if it still lasts (before: it stayed that relay's own).
func TestPauseWhileAwayIsShared(t *testing.T) {
	r := testkit.StartRedis(t, "")
	a, b := slowNodes(t, r, time.Now)
	stopBeat(t, a)
	r.Stop()
	a.toFallback(errors.New("test: Redis stopped"))
	until := time.Now().Add(time.Hour).Truncate(time.Millisecond)
	a.Pause("x", until, "432 4.3.2 Concurrent connections limit exceeded")
	a.Pause("y", time.Now().Add(time.Hour), "421 4.4.2")
	a.Unpause("y") // mail got through again meanwhile
	r.Start()
	if err := a.heartbeat(); err != nil {
		t.Fatal(err)
	}
	if a.Mode() != ModeShared {
		t.Fatalf("a did not join: %s", a.Mode())
	}
	if got, reason := pausedFor(t, b, "x"); !got.Equal(until) || !strings.Contains(reason, "432") {
		t.Fatalf("b sees a's pause until %v (%q), want %v", got, reason, until)
	}
	if got, _ := pausedFor(t, b, "y"); !got.IsZero() {
		t.Fatalf("b sees a pause a lifted while away, until %v", got)
	}
}

// Two changes in the count of relays alive, one right after the other,
// leave the later count remembered, even when the earlier call is slower
// (before: each call ran in its own goroutine, and the slower one, with
// the stale count, could be written last).
func TestRememberKeepsTheLatest(t *testing.T) {
	log, _ := testkit.DebugLogger(t)
	for range 20 {
		release := make(chan struct{})
		got := make(chan int, 4)
		c, err := New(Options{Node: "relay-a", Logger: log, Remember: func(n int) {
			if n == 2 {
				<-release
			}
			got <- n
		}})
		if err != nil {
			t.Fatal(err)
		}
		now := time.Now()
		c.learn([]any{"relay-a", "1", "relay-b", "1"}, now)
		c.learn([]any{"relay-a", "1", "relay-b", "1", "relay-c", "1"}, now)
		close(release)
		last := 0
		for range 2 {
			select {
			case last = <-got:
			case <-time.After(10 * time.Second):
				t.Fatal("Remember was not called twice")
			}
		}
		if last != 3 {
			t.Fatalf("remembered %d relays last, want the latest count, 3", last)
		}
		c.Close()
	}
}

// A pause whose sharing finds Redis gone is kept for the join like one
// earned in fallback (before: the failed write was dropped, and the
// others never learnt of the pause).
func TestPauseWhenRedisFailsIsShared(t *testing.T) {
	r := testkit.StartRedis(t, "")
	a, b := slowNodes(t, r, time.Now)
	stopBeat(t, a)
	r.Stop()
	until := time.Now().Add(time.Hour).Truncate(time.Millisecond)
	a.Pause("x", until, "432 4.3.2 Concurrent connections limit exceeded")
	if a.Mode() != ModeFallback {
		t.Fatalf("a's pause reached a stopped Redis: mode %s", a.Mode())
	}
	r.Start()
	if err := a.join(); err != nil {
		t.Fatal(err)
	}
	if got, reason := pausedFor(t, b, "x"); !got.Equal(until) || !strings.Contains(reason, "432") {
		t.Fatalf("b sees a's pause until %v (%q), want %v", got, reason, until)
	}
}
