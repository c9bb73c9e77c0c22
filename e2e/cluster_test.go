package e2e

import (
	"fmt"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/oauthrelay/oauthrelay/delivery"
	"github.com/oauthrelay/oauthrelay/internal/cluster"
	"github.com/oauthrelay/oauthrelay/internal/msemu"
	"github.com/oauthrelay/oauthrelay/internal/service"
	"github.com/oauthrelay/oauthrelay/internal/testkit"
)

// The shared mailbox's limits in these tests; the relays' rate window is
// shortened to a second so that 200 messages take seconds, not minutes.
const (
	haMailbox  = "shared@contoso.com"
	haConns    = 3
	haPerSpan  = 30
	haSpan     = time.Second
	haMessages = 200
)

type haRelay struct {
	svc  *service.Relay
	logs *syncBuffer
}

// startHARelay starts a relay (its own spool) that shares budgets through
// redisURL as node.
func startHARelay(t *testing.T, emu *msemu.Emulator, redisURL, node string, tweaks ...func(*testkit.Config)) *haRelay {
	t.Helper()
	kc := testkit.Config{
		Dir:      t.TempDir(),
		Emulator: emu,
		Listen:   testkit.Listen{Address: "127.0.0.1:0", Hostname: node + ".e2e.test"},
		Spool:    testkit.Spool{MinRetryDelay: "1s", MaxRetryDelay: "2s", MaxAge: "1h"},
		// The fallback holds a window and the longest send ([upstream]
		// timeout) after Redis goes away: keep it short here.
		Upstream:  testkit.Upstream{Timeout: "3s"},
		LogLevel:  "debug",
		Apps:      []testkit.App{{Name: "contoso", TenantID: tenantID, ClientID: secretApp, ClientSecret: clientSec}},
		Mailboxes: []testkit.Mailbox{{Address: haMailbox, App: "contoso", MaxConnections: haConns, MaxPerMinute: haPerSpan}},
		Clients:   []testkit.Client{{Name: "app", Networks: []string{"127.0.0.1"}, Senders: []string{"*"}}},
		Extra:     fmt.Sprintf("[cluster]\nredis = %q\nnode = %q\n", redisURL, node),
	}
	for _, tw := range tweaks {
		tw(&kc)
	}
	_, cfg := loadConfig(t, kc)
	logs, log := debugLog()
	svc, err := service.Start(cfg, service.Options{
		Logger:   log,
		Delivery: delivery.Options{PollInterval: 100 * time.Millisecond, ShutdownGrace: 5 * time.Second, RateWindow: haSpan},
		Cluster:  cluster.Options{LeaseTTL: time.Second, Heartbeat: 100 * time.Millisecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		svc.Shutdown(5 * time.Second)
		if t.Failed() {
			t.Logf("%s log:\n%s", node, logs.String())
		}
	})
	return &haRelay{svc: svc, logs: logs}
}

// submit hands n messages to the relay over one SMTP connection.
func (r *haRelay) submit(t *testing.T, n int, tag string) {
	c, err := smtp.Dial(r.svc.SMTPAddr().String())
	if err != nil {
		t.Error(err)
		return
	}
	defer c.Close()
	for i := range n {
		msg := fmt.Sprintf("From: <%s>\r\nTo: <to@example.com>\r\nSubject: %s %d\r\n\r\nbody\r\n", haMailbox, tag, i)
		if err := c.SendMail(haMailbox, []string{"to@example.com"}, strings.NewReader(msg)); err != nil {
			t.Errorf("submit %s %d: %v", tag, i, err)
			return
		}
	}
}

// checkLimits asserts what the emulator saw: at most haConns connections
// at once and at most haPerSpan messages in any haSpan.
func checkLimits(t *testing.T, emu *msemu.Emulator, msgs []msemu.Message) {
	t.Helper()
	if worst := mostInSpan(msgs); worst > 0 {
		t.Logf("peak connections %d, most messages in any %v: %d", emu.Stats().MaxConcurrentByMailbox[haMailbox], haSpan, worst)
	}
	if peak := emu.Stats().MaxConcurrentByMailbox[haMailbox]; peak > haConns || peak == 0 {
		t.Errorf("the emulator saw %d connections at once for %s, want 1..%d", peak, haMailbox, haConns)
	}
	if worst := mostInSpan(msgs); worst > haPerSpan {
		seen := map[string]int{}
		for _, m := range msgs {
			seen[m.QueueID]++
		}
		t.Errorf("the emulator saw %d messages within %v, want at most %d (%d distinct of %d)", worst, haSpan, haPerSpan, len(seen), len(msgs))
	}
}

// mostInSpan is the most messages the emulator received in any haSpan.
func mostInSpan(msgs []msemu.Message) int {
	at := make([]time.Time, len(msgs))
	for i, m := range msgs {
		at[i] = m.At
	}
	sort.Slice(at, func(i, j int) bool { return at[i].Before(at[j]) })
	worst := 0
	for i := range at {
		j := sort.Search(len(at), func(k int) bool { return at[k].After(at[i].Add(-haSpan)) })
		worst = max(worst, i-j+1)
	}
	return worst
}

func haEmulator(t *testing.T) *msemu.Emulator {
	// No limits of its own: it records what the relays do together.
	emu := startEmulator(t, msemu.Options{MaxConnsPerMailbox: -1, MaxPerMinute: -1})
	emu.Provision(tenantID, secretApp, clientSec, haMailbox)
	return emu
}

// Two relays, each with its own spool, share one Redis and one mailbox
// limited to 3 connections and 30 messages per window: together they keep
// within both, and deliver everything.
func TestTwoRelaysShareBudgets(t *testing.T) {
	rd := testkit.StartRedis(t, "")
	emu := haEmulator(t)
	a := startHARelay(t, emu, rd.URL(), "relay-a")
	b := startHARelay(t, emu, rd.URL(), "relay-b")
	msgs := sendThroughBoth(t, emu, a, b)
	checkLimits(t, emu, msgs)
	trips := a.svc.Cluster().Stats().RoundTrips + b.svc.Cluster().Stats().RoundTrips
	t.Logf("Redis round trips: %d for %d messages, %.2f per message (heartbeats and lease renewals included)", trips, len(msgs), float64(trips)/float64(len(msgs)))
	if a.svc.Cluster().Mode() != cluster.ModeShared || a.svc.Cluster().Stats().Nodes != 2 {
		t.Errorf("relay-a: mode %s with %d nodes, want shared with 2", a.svc.Cluster().Mode(), a.svc.Cluster().Stats().Nodes)
	}
	// Each remembers, in its spool, how many relays it saw: a restart
	// while Redis is away then keeps to its share of them.
	for _, r := range []*haRelay{a, b} {
		testkit.Eventually(t, "the spool to remember 2 relays", func() bool {
			n, err := r.svc.Spool().LoadState("cluster-nodes")
			return err == nil && strings.TrimSpace(string(n)) == "2"
		})
	}
	// The metrics show each relay's node and mode, and the waits for the
	// window the two filled together.
	waits := 0.0
	for _, r := range []*haRelay{a, b} {
		node := r.svc.Cluster().Node()
		if v := r.metric(t, `oauthrelay_cluster_info{mode="shared",node="`+node+`"}`); v != 1 {
			t.Errorf("%s: oauthrelay_cluster_info for shared mode is %v, want 1", node, v)
		}
		if v := r.metric(t, "oauthrelay_cluster_nodes"); v != 2 {
			t.Errorf("%s: oauthrelay_cluster_nodes is %v, want 2", node, v)
		}
		waits += r.metric(t, `oauthrelay_cluster_waits_total{budget="minute",mailbox="`+haMailbox+`"}`)
	}
	if waits == 0 {
		t.Error("200 messages through a 30-per-window mailbox, and no wait for the shared window counted")
	}
}

// Redis stopped mid-run: each relay keeps to its share (no limit is
// exceeded), says "fallback" in its log and /readyz, loses nothing, and
// shares again once Redis is back.
func TestRelaysWithoutRedis(t *testing.T) {
	rd := testkit.StartRedis(t, "")
	emu := haEmulator(t)
	a := startHARelay(t, emu, rd.URL(), "relay-a")
	b := startHARelay(t, emu, rd.URL(), "relay-b")
	testkit.Eventually(t, "both relays to see each other", func() bool {
		return a.svc.Cluster().Stats().Nodes == 2 && b.svc.Cluster().Stats().Nodes == 2
	})
	submitted := submitThroughBoth(t, haMessages, a, b)
	ctx := ctxFor(t)
	if _, err := emu.WaitDelivered(ctx, 40); err != nil {
		t.Fatal(err)
	}
	rd.Stop()
	for _, r := range []*haRelay{a, b} {
		testkit.Eventually(t, "fallback in the log", func() bool { return strings.Contains(r.logs.String(), "budgets fallback") })
		rec := httptest.NewRecorder()
		r.svc.Metrics().Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
		if !strings.Contains(rec.Body.String(), "cluster: fallback") {
			t.Errorf("/readyz in fallback:\n%s", rec.Body.String())
		}
	}
	if _, err := emu.WaitDelivered(ctx, 120); err != nil {
		t.Fatal(err)
	}
	// Up to Redis's return, through the switch to fallback and the
	// fallback itself, no limit was exceeded.
	checkLimits(t, emu, emu.Delivered())
	rd.Start()
	for _, r := range []*haRelay{a, b} {
		testkit.Eventually(t, "shared again", func() bool { return r.svc.Cluster().Mode() == cluster.ModeShared })
	}
	submitted()
	msgs, err := emu.WaitDelivered(ctx, haMessages)
	if err != nil {
		t.Fatalf("%d of %d delivered: %v", len(msgs), haMessages, err)
	}
	if len(msgs) != haMessages {
		t.Errorf("%d messages delivered, want %d", len(msgs), haMessages)
	}
	// Through the return to shared budgets too, no limit was exceeded.
	checkLimits(t, emu, msgs)
}

// What a delivery costs in Redis round trips when no budget makes it wait:
// one to take its places in the window and the daily count (reading the
// shared pause with them) and one to settle both, besides the upkeep
// (heartbeats, lease renewals) and the leases themselves.
func TestRelaysRoundTrips(t *testing.T) {
	rd := testkit.StartRedis(t, "")
	emu := haEmulator(t)
	roomy := func(kc *testkit.Config) { kc.Mailboxes[0].MaxPerMinute = 100 * haMessages }
	a := startHARelay(t, emu, rd.URL(), "relay-a", roomy)
	b := startHARelay(t, emu, rd.URL(), "relay-b", roomy)
	msgs := sendThroughBoth(t, emu, a, b)
	var trips, upkeep uint64
	for _, r := range []*haRelay{a, b} {
		st := r.svc.Cluster().Stats()
		trips, upkeep = trips+st.RoundTrips, upkeep+st.Upkeep
	}
	per := float64(trips-upkeep) / float64(len(msgs))
	t.Logf("Redis round trips: %d in all, %d of them upkeep; %.2f per delivered message besides upkeep", trips, upkeep, per)
	// Two per message, and the connection leases (taken, waited for,
	// released) spread over the messages: well under the five of a
	// separate pause read, two reservations and two settlements.
	if per > 3 {
		t.Errorf("%.2f Redis round trips per delivered message besides upkeep, want at most 3", per)
	}
}

// submitThroughBoth submits half of n messages to each relay, each tagged
// with its relay's node, and returns a wait for both submissions to end.
func submitThroughBoth(t *testing.T, n int, a, b *haRelay) (wait func()) {
	var wg sync.WaitGroup
	for _, r := range []*haRelay{a, b} {
		wg.Add(1)
		go func() { defer wg.Done(); r.submit(t, n/2, r.svc.Cluster().Node()) }()
	}
	return wg.Wait
}

// sendThroughBoth submits half of haMessages to each relay and waits
// until the emulator has them all.
func sendThroughBoth(t *testing.T, emu *msemu.Emulator, a, b *haRelay) []msemu.Message {
	t.Helper()
	submitThroughBoth(t, haMessages, a, b)()
	msgs, err := emu.WaitDelivered(ctxFor(t), haMessages)
	if err != nil {
		t.Fatalf("%d of %d delivered: %v", len(msgs), haMessages, err)
	}
	return msgs
}
