package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/msemu"
	"github.com/oauthrelay/oauthrelay/internal/testkit"
	"github.com/oauthrelay/oauthrelay/oauth"
	"github.com/oauthrelay/oauthrelay/queue"
)

// TestTokenFaultsExplainedMailStaysQueued: a wrong secret, an unknown app,
// a certificate that was never uploaded and a tenant that does not exist
// each produce a log line naming the AADSTS code and the administrator's
// fix. The mail stays queued in deferred/ (never failed/, never bounced),
// and the relay keeps accepting and delivering other mail.
func TestTokenFaultsExplainedMailStaysQueued(t *testing.T) {
	ctx := ctxFor(t)
	emu := startEmulator(t, msemu.Options{})
	// A working app, so that "nothing crashes" is shown by delivery going on.
	emu.Provision(tenantID, secretApp, clientSec, "helpdesk@contoso.com")
	// An app whose uploaded certificate is not the one the relay holds.
	certFile, _ := newCertificate(t, "CN=oauthrelay not uploaded")
	otherCert, _ := testkit.ClientCert(t, "the uploaded one")
	provisionCertApp(emu, pemApp, otherCert, "scanner@contoso.com")

	cases := []struct {
		name    string
		app     testkit.App
		mailbox string
		code    int
	}{
		{"wrong secret", testkit.App{TenantID: tenantID, ClientID: secretApp, ClientSecret: "the-secret-ID-not-its-value"}, "wrong-secret@contoso.com", 7000215},
		{"unknown app", testkit.App{TenantID: tenantID, ClientID: unknownApp, ClientSecret: clientSec}, "unknown-app@contoso.com", 700016},
		{"certificate not uploaded", testkit.App{TenantID: tenantID, ClientID: pemApp, CertificateFile: certFile}, "no-cert@contoso.com", 700027},
		{"bad tenant", testkit.App{TenantID: otherTenant, ClientID: secretApp, ClientSecret: clientSec}, "bad-tenant@contoso.com", 90002},
	}
	opts := relayOptions{
		Apps:      []testkit.App{{Name: "good", TenantID: tenantID, ClientID: secretApp, ClientSecret: clientSec}},
		Mailboxes: []testkit.Mailbox{{Address: "helpdesk@contoso.com", App: "good"}},
	}
	for i, c := range cases {
		c.app.Name = fmt.Sprintf("broken%d", i)
		opts.Apps = append(opts.Apps, c.app)
		opts.Mailboxes = append(opts.Mailboxes, testkit.Mailbox{Address: c.mailbox, App: c.app.Name})
	}
	r := startRelay(t, emu, opts)
	for _, c := range cases {
		r.mustSend(ctx, c.mailbox, "someone@example.org", c.name)
	}

	for _, c := range cases {
		_, fix, permanent, ok := oauth.Explain(c.code)
		if !ok || !permanent {
			t.Fatalf("AADSTS%d is not explained as a configuration fault", c.code)
		}
		code := fmt.Sprintf("AADSTS%d", c.code)
		var line string
		testkit.WaitFor(ctx, t, c.name+": a log line naming "+code+" and its fix", func() bool {
			line = findLine(r.logs.String(), code, fix)
			return line != ""
		})
		t.Logf("%s: %s", c.name, line)
	}
	// Every broken mailbox's message is back in deferred/ with the reason.
	testkit.WaitFor(ctx, t, "all four messages deferred", func() bool { return len(r.ids(queue.Deferred)) == len(cases) })
	envs, _, err := r.spool.List(queue.Deferred)
	if err != nil {
		t.Fatal(err)
	}
	for _, env := range envs {
		if !strings.Contains(env.LastError, "AADSTS") || len(env.Attempts) == 0 {
			t.Errorf("deferred message for %s: last error %q, %d attempts", env.Mailbox, env.LastError, len(env.Attempts))
		}
		for _, rc := range env.Recipients {
			if rc.State != queue.RcptPending {
				t.Errorf("message for %s: recipient %s is %s, want pending", env.Mailbox, rc.Address, rc.State)
			}
		}
	}
	if ids := r.ids(queue.Failed); len(ids) != 0 {
		t.Errorf("%d messages in failed/: our own configuration faults must never fail mail", len(ids))
	}
	if n := len(emu.Delivered()); n != 0 {
		t.Errorf("%d messages (bounces?) delivered while only broken apps had mail", n)
	}

	// The relay is alive: it accepts and delivers through the good app.
	r.mustSend(ctx, "helpdesk@contoso.com", "someone@example.org", "still working")
	msgs, err := emu.WaitDelivered(ctx, 1)
	if err != nil || msgs[0].Mailbox != "helpdesk@contoso.com" {
		t.Fatalf("after the faults: delivered %+v, %v", msgs, err)
	}
	if ids := r.ids(queue.Failed); len(ids) != 0 {
		t.Errorf("%d messages in failed/", len(ids))
	}
}

// findLine returns the first log line holding all of subs.
func findLine(logs string, subs ...string) string {
	for _, l := range strings.Split(logs, "\n") {
		all := true
		for _, s := range subs {
			if !strings.Contains(l, s) {
				all = false
				break
			}
		}
		if all {
			return l
		}
	}
	return ""
}

// TestTokenOutageBacksOff: while the token endpoint answers 503, the relay
// backs off instead of hammering it, keeps the mail queued, and delivers it
// once the endpoint is back.
func TestTokenOutageBacksOff(t *testing.T) {
	ctx := ctxFor(t)
	emu := startEmulator(t, msemu.Options{})
	emu.Provision(tenantID, secretApp, clientSec, "helpdesk@contoso.com")
	emu.SetTokenOutage(true)
	r := startRelay(t, emu, relayOptions{
		Apps:      []testkit.App{{Name: "contoso", TenantID: tenantID, ClientID: secretApp, ClientSecret: clientSec}},
		Mailboxes: []testkit.Mailbox{{Address: "helpdesk@contoso.com", App: "contoso"}},
	})
	r.mustSend(ctx, "helpdesk@contoso.com", "someone@example.org", "during the outage")
	testkit.WaitFor(ctx, t, "the message deferred by the outage", func() bool { return len(r.ids(queue.Deferred)) == 1 })

	// Watch a fixed window of the outage. The scheduler retries the
	// message every 1-2 s (min/max_retry_delay) and the source's own
	// backoff starts at 1 s and doubles, so a handful of requests is
	// expected; a busy loop would make thousands.
	const window = 4 * time.Second
	select {
	case <-time.After(window):
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	}
	n := emu.Stats().TokenRequests
	if n < 1 || n > 10 {
		t.Errorf("%d token requests during a %s outage, want between 1 and 10", n, window)
	}
	if !strings.Contains(r.logs.String(), "AADSTS90024") {
		t.Error("the outage (AADSTS90024) was not logged")
	}
	if len(emu.Delivered()) != 0 || len(r.ids(queue.Failed)) != 0 {
		t.Error("mail left the queue during the outage")
	}
	t.Logf("%d token requests during the outage", n)

	emu.SetTokenOutage(false)
	if _, err := emu.WaitDelivered(ctx, 1); err != nil {
		t.Fatalf("not delivered after the outage: %v", err)
	}
	testkit.WaitFor(ctx, t, "an empty spool", func() bool {
		return len(r.ids(queue.Deferred))+len(r.ids(queue.Active))+len(r.ids(queue.Incoming)) == 0
	})
}
