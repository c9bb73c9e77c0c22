package e2e

// Security tests of issue 7 over the whole pipeline. Others live where
// their subject is: open relay and sender policy in relay/relay_test.go
// (TestUntrustedPeerWithoutAuth, TestDisallowedSender,
// TestDisallowedFromHeader, TestLoginFromOutsideClientNetworks), brute
// force in relay/relay_test.go (TestBruteForce), secrets in e2e/leaks_test.go
// (TestNoSecretsInOutput) and cmd/oauthrelay/security_test.go (ps, SIGHUP),
// file modes in queue/queue_test.go (TestFileModes) and
// cmd/oauthrelay/security_test.go.

import (
	"crypto/tls"
	"strings"
	"testing"

	"github.com/oauthrelay/oauthrelay/internal/msemu"
	"github.com/oauthrelay/oauthrelay/internal/testkit"
	"github.com/oauthrelay/oauthrelay/queue"
)

// An upstream that only speaks TLS 1.1 is refused: no AUTH, no mail, no
// fallback to clear text; the mail stays queued and goes once the server
// speaks TLS 1.2 again.
func TestUpstreamBelowTLS12Refused(t *testing.T) {
	ctx := ctxFor(t)
	emu := startEmulator(t, msemu.Options{})
	emu.SetTLSMax(tls.VersionTLS11)
	r := faultRelay(t, emu, relayOptions{})
	r.sendTagged(ctx, "tls11", 2)
	testkit.WaitFor(ctx, t, "the attempts to fail on the TLS version", func() bool {
		return strings.Contains(r.logs.String(), "protocol version") && len(r.ids(queue.Deferred)) == 2
	})
	st := emu.Stats()
	if len(st.AuthTokens) != 0 || st.AuthFailures != 0 || len(emu.Delivered()) != 0 {
		t.Fatalf("the relay authenticated or sent over TLS 1.1: %+v", st)
	}
	if len(r.ids(queue.Failed)) != 0 {
		t.Error("an upstream TLS problem failed mail")
	}
	emu.SetTLSMax(0)
	r.waitAllDelivered(ctx, "tls11", 2, false)
}

// SMTP smuggling: a bare-LF "\n.\n" inside a message must not become the
// end of the data upstream, even at a server that accepts it (the
// emulator does, like some real ones). The upstream sees one message.
func TestNoSmugglingUpstream(t *testing.T) {
	ctx := ctxFor(t)
	emu := startEmulator(t, msemu.Options{})
	r := faultRelay(t, emu, relayOptions{})
	body := "smuggle-0\r\nbefore\n.\nMAIL FROM:<" + faultMailbox + ">\r\nRCPT TO:<victim@example.org>\r\nDATA\r\n\r\nsmuggled\r\n.\r\nafter"
	if err := r.send(ctx, faultMailbox, []string{"someone@example.org"}, body); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(ctx, t, "an empty spool", func() bool { return r.queuedCount() == 0 && len(emu.Delivered()) >= 1 })
	msgs := emu.Delivered()
	if len(msgs) != 1 {
		for _, m := range msgs {
			t.Logf("delivered to %v: %q", m.Rcpts, m.Data)
		}
		t.Fatalf("the upstream received %d messages, want 1", len(msgs))
	}
	if len(msgs[0].Rcpts) != 1 || msgs[0].Rcpts[0] != "someone@example.org" || !strings.Contains(string(msgs[0].Data), "smuggled") || !strings.Contains(string(msgs[0].Data), "after") {
		t.Errorf("delivered %v: %q", msgs[0].Rcpts, msgs[0].Data)
	}
}
