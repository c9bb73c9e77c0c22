package e2e

import (
	"bufio"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/oauthrelay/oauthrelay/internal/msemu"
	"github.com/oauthrelay/oauthrelay/internal/testkit"
)

// connectionWaits is the relay's oauthrelay_cluster_waits_total for a
// connection lease of the shared mailbox.
func (r *haRelay) connectionWaits(t *testing.T) float64 {
	return r.metric(t, `oauthrelay_cluster_waits_total{budget="connection",mailbox="`+haMailbox+`"}`)
}

// metric is the value of the relay's series (name and labels, as
// /metrics writes them), 0 when absent.
func (r *haRelay) metric(t *testing.T, series string) float64 {
	rec := httptest.NewRecorder()
	r.svc.Metrics().Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	want := series + " "
	sc := bufio.NewScanner(rec.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), want); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}

// Graph allows 4 concurrent requests per app and mailbox: two relays
// sending as one Graph mailbox share those 4 through the connection
// leases, so the emulator (which enforces nothing here) never sees a
// fifth, and whichever relay is left out waits for a lease.
func TestTwoRelaysShareGraphConcurrency(t *testing.T) {
	rd := testkit.StartRedis(t, "")
	emu := startEmulator(t, msemu.Options{MaxGraphConcurrency: -1})
	emu.ProvisionGraph(tenantID, secretApp, clientSec, haMailbox)
	graph := func(kc *testkit.Config) {
		// Left to its default: Graph's 4.
		kc.Mailboxes[0].Transport, kc.Mailboxes[0].MaxConnections, kc.Mailboxes[0].MaxPerMinute = "graph", 0, 6000
		kc.Upstream.GraphURL = emu.GraphURL()
	}
	// Every request waits in the emulator until released, so that the
	// leases, not the relays' speed, decide how many are in flight.
	arrived, release := emu.HoldGraph()
	defer release()
	a := startHARelay(t, emu, rd.URL(), "relay-a", graph)
	b := startHARelay(t, emu, rd.URL(), "relay-b", graph)
	const n = 20
	submitThroughBoth(t, n, a, b)()
	ctx := ctxFor(t)
	held := 0
	drain := func() {
		for {
			select {
			case <-arrived:
				held++
			default:
				return
			}
		}
	}
	testkit.WaitFor(ctx, t, "four Graph requests held, the relays' four leases, and a relay waiting for a fifth", func() bool {
		drain()
		leases := a.svc.Cluster().Stats().Leases + b.svc.Cluster().Stats().Leases
		return held >= 4 && leases == 4 && a.connectionWaits(t)+b.connectionWaits(t) > 0
	})
	drain()
	if held != 4 {
		t.Errorf("%d Graph requests in flight for one mailbox across two relays, want 4", held)
	}
	release()
	msgs, err := emu.WaitDelivered(ctx, n)
	if err != nil {
		t.Fatalf("%d of %d delivered: %v", len(msgs), n, err)
	}
	checkGraphCapHeld(t, emu, haMailbox)
}
