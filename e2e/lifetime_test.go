package e2e

import (
	"fmt"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/msemu"
	"github.com/oauthrelay/oauthrelay/internal/testkit"
)

// TestNoAuthWithLessThanMinLifetime: with 10.5-minute tokens and the
// default 10-minute minimum, an hour of simulated time with mail sent
// throughout never sees an AUTH presenting a token with less than 10
// minutes left. The emulator, the token sources, the spool, the listener
// and the scheduler share one simulated clock; the secret credential is
// used because MSAL stamps certificate assertions with the real clock.
func TestNoAuthWithLessThanMinLifetime(t *testing.T) {
	ctx := ctxFor(t)
	clk := testkit.NewClock(time.Time{})
	const lifetime, minLifetime = 630 * time.Second, 10 * time.Minute
	emu := startEmulator(t, msemu.Options{Now: clk.Now, TokenLifetime: lifetime})
	mailboxes := []string{"helpdesk@contoso.com", "sales@contoso.com"}
	emu.Provision(tenantID, secretApp, clientSec, mailboxes...)
	r := startRelay(t, emu, relayOptions{
		Apps:      []testkit.App{{Name: "contoso", TenantID: tenantID, ClientID: secretApp, ClientSecret: clientSec, MinTokenLifetime: "10m"}},
		Mailboxes: []testkit.Mailbox{{Address: mailboxes[0], App: "contoso"}, {Address: mailboxes[1], App: "contoso"}},
		Now:       clk.Now,
	})

	// Irregular steps: some land exactly on the moment a token has 10
	// minutes left, some just after, some reuse an open connection.
	steps := []time.Duration{7, 11, 12, 30, 1, 45, 61, 29, 31, 90, 3, 27}
	start := clk.Now()
	sent := 0
	for i := 0; clk.Now().Sub(start) < time.Hour; i++ {
		clk.Advance(steps[i%len(steps)] * time.Second)
		r.mustSend(ctx, mailboxes[i%len(mailboxes)], "someone@example.org", fmt.Sprintf("message %d at +%s", i, clk.Now().Sub(start)))
		sent++
		if msgs, err := emu.WaitDelivered(ctx, sent); err != nil {
			t.Fatalf("at +%s: delivered %d of %d: %v", clk.Now().Sub(start), len(msgs), sent, err)
		}
	}

	st := emu.Stats()
	if len(st.AuthTokens) == 0 {
		t.Fatal("no AUTH was recorded")
	}
	for _, a := range st.AuthTokens {
		if !a.OK {
			t.Errorf("AUTH at +%s as %s refused: %s", a.At.Sub(start), a.Mailbox, a.Reply)
		}
		if a.Remaining < minLifetime {
			t.Errorf("AUTH at +%s as %s presented a token with %s left, want at least %s", a.At.Sub(start), a.Mailbox, a.Remaining, minLifetime)
		}
	}
	// A source that kept tokens until they expire would need only one
	// request per 630 s; honouring the minimum needs many more.
	if maxStale := int64(time.Hour/lifetime) + 1; st.TokenRequests <= maxStale {
		t.Errorf("%d token requests in a simulated hour of 630 s tokens, want more than %d", st.TokenRequests, maxStale)
	}
	t.Logf("%d messages, %d AUTH commands, %d token requests over %s of simulated time", sent, len(st.AuthTokens), st.TokenRequests, clk.Now().Sub(start))
}
