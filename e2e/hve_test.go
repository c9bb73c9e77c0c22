package e2e

import (
	"context"
	"strings"
	"testing"

	"github.com/oauthrelay/oauthrelay/internal/msemu"
	"github.com/oauthrelay/oauthrelay/internal/testkit"
	"github.com/oauthrelay/oauthrelay/oauth"
	"github.com/oauthrelay/oauthrelay/queue"
)

// TestHVEInternalOnly: a mailbox on the High Volume Email transport signs
// in to the emulator's HVE listener with an Exchange token carrying
// Mail.Send and delivers to a recipient inside the organisation; an
// external recipient of the same message is refused with 550 5.5.105 and
// reported to the sender in a delivery status notification that says HVE
// delivers only inside the organisation.
func TestHVEInternalOnly(t *testing.T) {
	ctx := ctxFor(t)
	const (
		hveMbx   = "bulk@contoso.com"
		internal = "colleague@contoso.com"
		external = "someone@example.org"
	)
	emu := startEmulator(t, msemu.Options{})
	emu.ProvisionGraph(tenantID, secretApp, clientSec, hveMbx, internal)
	r := startRelay(t, emu, relayOptions{Apps: contosoApp(),
		Mailboxes: []testkit.Mailbox{{Address: hveMbx, App: "contoso", Transport: "hve"}}})

	if err := r.send(ctx, hveMbx, []string{internal, external}, "hve-1"); err != nil {
		t.Fatal(err)
	}
	// The message for the colleague, then the notification to the sender.
	msgs, err := emu.WaitDelivered(ctx, 2)
	if err != nil {
		t.Fatalf("delivered %d of 2: %v", len(msgs), err)
	}
	r.waitQueueEmptyOrFailed(ctx)
	var orig, dsn *msemu.Message
	for i, m := range msgs {
		if m.Transport != msemu.TransportHVE || !strings.EqualFold(m.Mailbox, hveMbx) {
			t.Errorf("message %d came by %q as %s, want HVE as %s", i, m.Transport, m.Mailbox, hveMbx)
		}
		switch {
		case strings.Contains(string(m.Data), "\r\nhve-1\r\n"):
			orig = &msgs[i]
		case strings.Contains(string(m.Data), "Undelivered Mail Returned to Sender"):
			dsn = &msgs[i]
		}
	}
	if orig == nil || dsn == nil || len(msgs) != 2 {
		t.Fatalf("want the message and a DSN, got %d messages", len(msgs))
	}
	if !sameAddrs(orig.Rcpts, []string{internal}) {
		t.Errorf("HVE took the message for %v, want only %s", orig.Rcpts, internal)
	}
	if !sameAddrs(dsn.Rcpts, []string{hveMbx}) || dsn.MailFrom != "" && !strings.EqualFold(dsn.MailFrom, hveMbx) {
		t.Errorf("the DSN went from %q to %v, want to the sender %s", dsn.MailFrom, dsn.Rcpts, hveMbx)
	}
	text := string(dsn.Data)
	for _, want := range []string{external, "550 5.5.105", "Status: 5.5.105", "only to recipients in the organization"} {
		if !strings.Contains(text, want) {
			t.Errorf("the DSN does not say %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "<"+internal+">\r\n    ") {
		t.Errorf("the DSN lists the delivered recipient %s as failed", internal)
	}

	// The failed recipient is recorded; the delivered one too.
	envs, _, err := r.spool.List(queue.Failed)
	if err != nil {
		t.Fatal(err)
	}
	if len(envs) != 1 {
		t.Fatalf("%d envelopes in failed/, want the original", len(envs))
	}
	for _, rc := range envs[0].Recipients {
		switch {
		case strings.EqualFold(rc.Address, external):
			if rc.State != queue.RcptFailed || !strings.HasPrefix(rc.Reply, "550 5.5.105") {
				t.Errorf("external recipient: %s %q, want failed with 550 5.5.105", rc.State, rc.Reply)
			}
		case strings.EqualFold(rc.Address, internal):
			if rc.State != queue.RcptDelivered {
				t.Errorf("internal recipient: %s %q, want delivered", rc.State, rc.Reply)
			}
		}
	}

	// Signed in at the HVE listener only, with Mail.Send.
	st := emu.Stats()
	if st.HVEConnections == 0 || st.Connections != 0 {
		t.Errorf("%d HVE connections and %d SMTP AUTH connections, want HVE only", st.HVEConnections, st.Connections)
	}
	for _, a := range st.AuthTokens {
		if !a.OK {
			t.Errorf("AUTH as %s refused: %s", a.Mailbox, a.Reply)
		}
	}
	toks := r.rec.Tokens()
	if len(toks) != 1 {
		t.Fatalf("%d tokens handed out, want 1", len(toks))
	}
	cl, err := oauth.ParseClaims(toks[0])
	if err != nil {
		t.Fatal(err)
	}
	if !cl.HasRole(msemu.RoleMailSend) {
		t.Errorf("the HVE token carries roles %v, want %s", cl.Roles, msemu.RoleMailSend)
	}
}

// waitQueueEmptyOrFailed waits until nothing is left to deliver.
func (r *testRelay) waitQueueEmptyOrFailed(ctx context.Context) {
	r.t.Helper()
	testkit.WaitFor(ctx, r.t, "nothing left to deliver", func() bool { return r.queuedCount() == 0 })
}
