package e2e

// Graph pacing end to end: Retry-After, the per-mailbox concurrency cap
// and connection reuse, observed on the wire to the emulator.

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/msemu"
	"github.com/oauthrelay/oauthrelay/internal/testkit"
)

// graphCall is one HTTP request the relay made to Graph.
type graphCall struct {
	path          string
	status        int
	start, answer time.Time
}

// graphWatch is the relay's HTTP transport, recording when each Graph
// request left and when its answer came back.
type graphWatch struct {
	base  http.RoundTripper
	graph string // Graph's host:port

	mu    sync.Mutex
	calls []graphCall
}

func (g *graphWatch) RoundTrip(req *http.Request) (*http.Response, error) {
	start := time.Now()
	resp, err := g.base.RoundTrip(req)
	if req.URL.Host == g.graph {
		c := graphCall{path: req.URL.Path, start: start, answer: time.Now()}
		if err == nil {
			c.status = resp.StatusCode
		}
		g.mu.Lock()
		g.calls = append(g.calls, c)
		g.mu.Unlock()
	}
	return resp, err
}

func (g *graphWatch) all() []graphCall {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.calls)
}

// TestGraphRetryAfterHonoured: a 429 with Retry-After: 5 holds the
// mailbox: the emulator sees no request for it until five seconds after
// the relay got the 429, and the message is delivered afterwards.
func TestGraphRetryAfterHonoured(t *testing.T) {
	ctx := ctxFor(t)
	emu := startEmulator(t, msemu.Options{})
	emu.ProvisionGraph(tenantID, secretApp, clientSec, graphMbx)
	gu, err := url.Parse(emu.GraphURL())
	if err != nil {
		t.Fatal(err)
	}
	watch := &graphWatch{base: emu.HTTPClient().Transport, graph: gu.Host}
	r := startRelay(t, emu, relayOptions{Apps: contosoApp(), Mailboxes: []testkit.Mailbox{graphBox(graphMbx)},
		HTTPClient: &http.Client{Transport: watch}})
	const wait = 5 * time.Second
	emu.FailNextGraph(1, msemu.GraphFault{Status: http.StatusTooManyRequests, Code: "ApplicationThrottled",
		Message: "Application is over its MailboxConcurrency limit.", RetryAfter: int(wait / time.Second)})
	r.mustSend(ctx, graphMbx, "alice@fabrikam.example", "throttled once")
	msgs, err := emu.WaitDelivered(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}

	// When the relay had the 429 in hand.
	var throttledAt time.Time
	for _, c := range watch.all() {
		if c.status == http.StatusTooManyRequests {
			throttledAt = c.answer
			break
		}
	}
	if throttledAt.IsZero() {
		t.Fatalf("the relay never got the 429: %+v", watch.all())
	}
	// Every request the emulator saw for the mailbox after the 429 (the
	// 429 itself is answered before authentication and is not listed)
	// came at least Retry-After later.
	st := emu.Stats()
	after := 0
	for _, g := range st.GraphTokens {
		if !strings.EqualFold(g.Mailbox, graphMbx) {
			continue
		}
		after++
		if gap := g.At.Sub(throttledAt); gap < wait {
			t.Errorf("a Graph request for %s arrived %s after the 429 with Retry-After: 5", graphMbx, gap)
		}
	}
	if after == 0 {
		t.Error("the emulator recorded no request after the 429")
	}
	if !msgs[0].At.After(throttledAt.Add(wait)) {
		t.Errorf("delivered %s after the 429", msgs[0].At.Sub(throttledAt))
	}
	if n := st.GraphStatuses[http.StatusTooManyRequests]; n != 1 {
		t.Errorf("%d answers of 429, want the one scripted", n)
	}
	if !strings.Contains(r.logs.String(), "throttled the mailbox; backing off") {
		t.Error("the throttle was not logged")
	}
	r.waitQueueEmpty(ctx)
}

// TestGraphAtMostFourConcurrent: forty messages at once for one Graph
// mailbox never have more than four Graph requests in flight (Graph's
// MailboxConcurrency), and do use all four. The emulator lets any number
// through, so that only the relay is what keeps to four.
func TestGraphAtMostFourConcurrent(t *testing.T) {
	ctx := ctxFor(t)
	emu, r := startGraphRelay(t, msemu.Options{MaxGraphConcurrency: -1}, true)
	const n = 40
	for i := range n {
		r.mustSend(ctx, graphMbx, "alice@fabrikam.example", fmt.Sprintf("load %d", i))
	}
	// Hold every request until all the deliveries the relay has started
	// are parked in the emulator, so that the relay's limit, not its
	// speed, decides how many are in flight.
	arrived, release := emu.HoldGraph()
	defer release()
	r.startDelivery()
	held := 0
	testkit.WaitFor(ctx, t, "four Graph requests held, and all the relay's deliveries among them", func() bool {
		for {
			select {
			case <-arrived:
				held++
				continue
			default:
			}
			break
		}
		return held >= 4 && r.statusOf(graphMbx).Connections == held
	})
	release()
	if msgs, err := emu.WaitDelivered(ctx, n); err != nil {
		t.Fatalf("delivered %d of %d: %v", len(msgs), n, err)
	}
	checkGraphCapHeld(t, emu, graphMbx)
	r.waitQueueEmpty(ctx)
}

// TestGraphConnectionsReused: a hundred messages over one Graph mailbox
// ride a handful of TLS connections (at most one per concurrent request),
// not one each.
func TestGraphConnectionsReused(t *testing.T) {
	ctx := ctxFor(t)
	emu, r := startGraphRelay(t, msemu.Options{}, false)
	const n = 100
	for i := range n {
		r.mustSend(ctx, graphMbx, "alice@fabrikam.example", fmt.Sprintf("reuse %d", i))
	}
	if msgs, err := emu.WaitDelivered(ctx, n); err != nil {
		t.Fatalf("delivered %d of %d: %v", len(msgs), n, err)
	}
	st := emu.Stats()
	if st.GraphRequests < n {
		t.Errorf("%d Graph requests for %d messages", st.GraphRequests, n)
	}
	if st.GraphConnections < 1 || st.GraphConnections > 4 {
		t.Errorf("%d TLS connections to Graph for %d messages, want 1 to 4 (one per concurrent request at most)", st.GraphConnections, n)
	}
	t.Logf("%d messages, %d Graph requests, %d connections", n, st.GraphRequests, st.GraphConnections)
	r.waitQueueEmpty(ctx)
}
