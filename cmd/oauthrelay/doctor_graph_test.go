package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/config"
	"github.com/oauthrelay/oauthrelay/doctor"

	"github.com/oauthrelay/oauthrelay/internal/msemu"
	"github.com/oauthrelay/oauthrelay/internal/msemu/emutest"
	"github.com/oauthrelay/oauthrelay/internal/testkit"
)

// doctorGraphConfig writes a configuration with one SMTP AUTH mailbox and
// one Graph mailbox of the same app, both served by emu.
func doctorGraphConfig(t *testing.T, emu *msemu.Emulator) string {
	t.Helper()
	return testkit.Config{
		Emulator: emu,
		Upstream: testkit.Upstream{GraphURL: emu.GraphURL()},
		Apps:     []testkit.App{{Name: "contoso", TenantID: opsTenant, ClientID: opsClient, ClientSecret: opsSecret}},
		Mailboxes: []testkit.Mailbox{
			{Address: opsMailbox, App: "contoso"},
			{Address: "reports@contoso.test", App: "contoso", Transport: "graph"},
		},
		Clients: []testkit.Client{{Name: "app", Networks: []string{"127.0.0.1"}, Senders: []string{"*"}}},
	}.Write(t)
}

func newGraphEmulator(t *testing.T) *msemu.Emulator {
	t.Helper()
	emu := emutest.Start(t, msemu.Options{})
	return emu
}

// doctor checks a Graph mailbox as far as it can without sending (the
// token for Graph, its roles, what Graph says to the mailbox), and
// -send-test sends through Graph.
func TestDoctorGraphMailbox(t *testing.T) {
	emu := newGraphEmulator(t)
	emu.ProvisionGraph(opsTenant, opsClient, opsSecret, opsMailbox, "reports@contoso.test")
	path := doctorGraphConfig(t, emu)

	code, out, errOut := oauthrelay("doctor", "-config", path)
	t.Logf("doctor output:\n%s", out)
	if code != 0 {
		t.Fatalf("doctor: exit %d\n%s%s", code, out, errOut)
	}
	for _, want := range []string{"graph " + emu.GraphURL(), "✓ TLS: HTTPS with TLS 1.", "✓ token: acquired", "✓ Microsoft Graph token: acquired",
		"roles Mail.Send", "✓ AUTH XOAUTH2 as " + opsMailbox, "mailbox reports@contoso.test (graph)", "✓ Graph would accept mail from reports@contoso.test"} {
		if !strings.Contains(out, want) {
			t.Errorf("doctor output lacks %q", want)
		}
	}
	if n := len(emu.Delivered()); n != 0 {
		t.Fatalf("doctor without -send-test delivered %d messages", n)
	}

	code, out, errOut = oauthrelay("doctor", "-config", path, "-mailbox", "reports@contoso.test", "-send-test", "someone@example.org")
	if code != 0 || !strings.Contains(out, "✓ test message to someone@example.org accepted (from reports@contoso.test): 202") {
		t.Fatalf("doctor -send-test: exit %d\n%s%s", code, out, errOut)
	}
	got := emu.Delivered()
	if len(got) != 1 || got[0].Transport != msemu.TransportGraph || got[0].Mailbox != "reports@contoso.test" {
		t.Fatalf("delivered %+v, want one Graph message from reports@contoso.test", got)
	}
	if strings.Contains(out+errOut, opsSecret) {
		t.Error("doctor printed the client secret")
	}
}

// Without Mail.Send, Graph answers 403 ErrorAccessDenied: doctor fails the
// mailbox and names the grant, the consent link and RBAC for Applications,
// with the app's ids filled in.
func TestDoctorGraphAccessDenied(t *testing.T) {
	emu := newGraphEmulator(t)
	emu.Provision(opsTenant, opsClient, opsSecret, opsMailbox, "reports@contoso.test") // SMTP only: no Graph role
	path := doctorGraphConfig(t, emu)
	code, out, _ := oauthrelay("doctor", "-config", path, "-mailbox", "reports@contoso.test")
	t.Logf("doctor output:\n%s", out)
	if code == 0 {
		t.Fatal("doctor passed an app without Mail.Send")
	}
	for _, want := range []string{"! claims: the token has no Mail.Send role", "✗ Graph sendMail as reports@contoso.test: 403", "ErrorAccessDenied",
		"Mail.Send", "adminconsent?client_id=" + opsClient, "New-ManagementRoleAssignment", opsTenant} {
		if !strings.Contains(out, want) {
			t.Errorf("doctor output lacks %q", want)
		}
	}
}

// A send_as address without its SendAs grant: doctor fails naming the
// address and the fix, for SMTP AUTH (MAIL FROM, reset before any
// recipient) and Graph alike, and sends nothing.
func TestDoctorSendAsWithoutGrant(t *testing.T) {
	emu := newGraphEmulator(t)
	emu.ProvisionGraph(opsTenant, opsClient, opsSecret, opsMailbox, "reports@contoso.test")
	path := testkit.Config{
		Emulator: emu,
		Upstream: testkit.Upstream{GraphURL: emu.GraphURL()},
		Apps:     []testkit.App{{Name: "contoso", TenantID: opsTenant, ClientID: opsClient, ClientSecret: opsSecret}},
		Mailboxes: []testkit.Mailbox{
			{Address: opsMailbox, App: "contoso", SendAs: []string{"billing@contoso.test"}},
			{Address: "reports@contoso.test", App: "contoso", Transport: "graph", SendAs: []string{"news@contoso.test"}},
		},
		Clients: []testkit.Client{{Name: "app", Networks: []string{"127.0.0.1"}, Senders: []string{"*"}}},
	}.Write(t)
	code, out, _ := oauthrelay("doctor", "-config", path)
	t.Logf("doctor output:\n%s", out)
	if code == 0 {
		t.Fatal("doctor passed send_as addresses without their grants")
	}
	for _, want := range []string{
		"✗ MAIL FROM:<billing@contoso.test> (send_as): 550 5.7.60", "Add-RecipientPermission -Identity billing@contoso.test",
		"✗ Graph sendMail as reports@contoso.test from news@contoso.test (send_as): 403", "Add-RecipientPermission -Identity news@contoso.test -Trustee reports@contoso.test",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("doctor output lacks %q", want)
		}
	}
	if n := len(emu.Delivered()); n != 0 {
		t.Errorf("doctor delivered %d messages without -send-test", n)
	}

	// With the grants, both pass; -send-test sends from every address.
	emu.AddMailbox(msemu.Mailbox{Address: opsMailbox, FullAccess: []string{opsClient}, SendAs: []string{"billing@contoso.test"}})
	emu.AddMailbox(msemu.Mailbox{Address: "reports@contoso.test", FullAccess: []string{opsClient}, SendAs: []string{"news@contoso.test"}})
	code, out, _ = oauthrelay("doctor", "-config", path, "-send-test", "someone@example.org")
	if code != 0 || !strings.Contains(out, "✓ MAIL FROM:<billing@contoso.test> accepted") {
		t.Fatalf("doctor after the grants: exit %d\n%s", code, out)
	}
	from := map[string]bool{}
	for _, m := range emu.Delivered() {
		from[m.MailFrom] = true
	}
	for _, a := range []string{opsMailbox, "billing@contoso.test", "reports@contoso.test", "news@contoso.test"} {
		if !from[a] {
			t.Errorf("-send-test sent nothing from %s (sent from %v)", a, from)
		}
	}
}

// A server that accepts TCP and never answers: each step gives up at its
// deadline and says so, instead of waiting minutes.
func TestDoctorSilentServer(t *testing.T) {
	emu := newGraphEmulator(t)
	emu.Provision(opsTenant, opsClient, opsSecret, opsMailbox)
	silent := testkit.Serve(t, func(c net.Conn) { io.Copy(io.Discard, c) })
	path := testkit.Config{
		Emulator:  emu,
		Upstream:  testkit.Upstream{Address: silent},
		Apps:      []testkit.App{{Name: "contoso", TenantID: opsTenant, ClientID: opsClient, ClientSecret: opsSecret}},
		Mailboxes: []testkit.Mailbox{{Address: opsMailbox, App: "contoso"}},
		Clients:   []testkit.Client{{Name: "app", Networks: []string{"127.0.0.1"}, Senders: []string{"*"}}},
	}.Write(t)
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	res := doctor.Run(context.Background(), doctor.Options{Config: cfg, Out: &out, Timeout: 300 * time.Millisecond})
	t.Logf("doctor output:\n%s", out.String())
	if res.OK() || !strings.Contains(out.String(), "no answer from "+silent+" in 300ms") {
		t.Fatalf("doctor did not report the silent server")
	}
}
