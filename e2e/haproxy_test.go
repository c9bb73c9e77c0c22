package e2e

import (
	"strings"
	"testing"

	"github.com/oauthrelay/oauthrelay/internal/msemu"
	"github.com/oauthrelay/oauthrelay/internal/testkit"
)

// Two relays behind a real HAProxy with send-proxy-v2 (and health checks,
// which send the PROXY protocol too). HAProxy connects from 127.0.0.1;
// the clients come from 127.0.0.2 (trusted by its own address) and
// 127.0.0.3 (not). The relays also trust 127.0.0.1 (the harness's "app"
// client), so a relay that took HAProxy's address for the client's would
// let 127.0.0.3 in.
const (
	trustedHost   = "127.0.0.2"
	untrustedHost = "127.0.0.3"
	lbMbx         = "helpdesk@contoso.com"
)

func startBalancedRelay(t *testing.T, emu *msemu.Emulator, proxyFrom string) *testRelay {
	t.Helper()
	return startRelay(t, emu, relayOptions{
		Listen:    `proxy_protocol_from = ["` + proxyFrom + `"]`,
		Apps:      []testkit.App{{Name: "secret", TenantID: tenantID, ClientID: secretApp, ClientSecret: clientSec}},
		Mailboxes: []testkit.Mailbox{{Address: lbMbx, App: "secret"}},
		Clients:   []testkit.Client{{Name: "copier", Networks: []string{trustedHost}, Senders: []string{lbMbx}}},
	})
}

func TestHAProxySendProxyV2(t *testing.T) {
	ctx := ctxFor(t)
	emu := startEmulator(t, msemu.Options{})
	emu.Provision(tenantID, secretApp, clientSec, lbMbx)
	r1 := startBalancedRelay(t, emu, "127.0.0.1/32")
	r2 := startBalancedRelay(t, emu, "127.0.0.1/32")
	// A third relay that expects its balancer elsewhere: HAProxy's header
	// is not welcome there.
	r3 := startBalancedRelay(t, emu, "127.0.0.9/32")
	lb := testkit.StartHAProxy(t,
		testkit.HAProxyFrontend{Servers: []string{r1.addr, r2.addr}, ServerOptions: "send-proxy-v2 check inter 200ms"},
		testkit.HAProxyFrontend{Servers: []string{r3.addr}, ServerOptions: "send-proxy-v2"})

	// The trusted copier sends twice without AUTH: round robin gives
	// each relay one.
	for i := 0; i < 2; i++ {
		c := testkit.NewSMTPClient(t, testkit.DialFrom(t, trustedHost, lb.Addrs[0]))
		c.Expect("EHLO copier.e2e.test", "250")
		msg := "From: " + lbMbx + "\r\nTo: someone@example.org\r\nSubject: through haproxy\r\n\r\nscan\r\n"
		if got := c.Send(lbMbx, []string{"someone@example.org"}, msg); !strings.HasPrefix(got, "250") {
			t.Fatalf("trusted client: %q", got)
		}
		c.Expect("QUIT", "221")
	}
	// The untrusted host must log in.
	c := testkit.NewSMTPClient(t, testkit.DialFrom(t, untrustedHost, lb.Addrs[0]))
	c.Expect("EHLO stranger.e2e.test", "250")
	c.Expect("MAIL FROM:<"+lbMbx+">", "530 5.7.0 Authentication required: "+untrustedHost+" is not a trusted network")
	c.Expect("QUIT", "221")

	msgs, err := emu.WaitDelivered(ctx, 2)
	if err != nil {
		t.Fatalf("delivered %d of 2: %v", len(msgs), err)
	}
	for _, r := range []*testRelay{r1, r2} {
		testkit.Eventually(t, "a health check of "+r.addr, func() bool {
			return strings.Contains(r.logs.String(), "command=LOCAL")
		})
		logs := r.logs.String()
		if !strings.Contains(logs, "msg=accepted") || !strings.Contains(logs, "remote="+trustedHost) {
			t.Errorf("relay %s: no accepted message from %s (round robin over both relays):\n%s", r.addr, trustedHost, logs)
		}
		// Health checks carry the PROXY protocol: no refusal.
		if strings.Contains(logs, "reason=proxy_protocol") {
			t.Errorf("relay %s refused HAProxy's connections:\n%s", r.addr, logs)
		}
	}
	all := r1.logs.String() + r2.logs.String()
	if !strings.Contains(all, `reason=auth_required from=`+lbMbx+` remote=`+untrustedHost) {
		t.Errorf("the 530 is not logged with the client's address %s:\n%s", untrustedHost, all)
	}
	for _, m := range msgs {
		if !strings.Contains(string(m.Data), "Received: from copier.e2e.test (["+trustedHost+"])") {
			t.Errorf("delivered message's Received: does not name %s:\n%.300s", trustedHost, m.Data)
		}
	}

	// Through the second frontend HAProxy's header reaches a relay that
	// does not list it: 554 after the greeting, and the connection ends.
	s := testkit.NewSMTPClient(t, testkit.DialFrom(t, trustedHost, lb.Addrs[1]))
	if got := s.Read(); !strings.HasPrefix(got, "554 5.7.0 relay.e2e.test PROXY protocol header refused: 127.0.0.1 is not a load balancer") {
		t.Errorf("after the greeting %q, got %q; want the 554 refusing the header", s.Greeting, got)
	}
	testkit.Eventually(t, "the refusal in the log", func() bool {
		return strings.Contains(r3.logs.String(), `msg="refused: PROXY header from an address not in listen.proxy_protocol_from" reason=proxy_protocol remote=127.0.0.1`)
	})
	if n := len(emu.Delivered()); n != 2 {
		t.Errorf("%d messages delivered, want 2", n)
	}
}
