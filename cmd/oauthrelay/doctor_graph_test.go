package main

import (
	"strings"
	"testing"

	"github.com/oauthrelay/oauthrelay/internal/msemu"
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
	emu, err := msemu.New(msemu.Options{})
	if err == nil {
		err = emu.Start()
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { emu.Close() })
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
	if code != 0 || !strings.Contains(out, "✓ test message to someone@example.org accepted: 202") {
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
