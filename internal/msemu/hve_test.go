package msemu

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/testkit"
)

func dialHVE(t *testing.T, e *Emulator) *rawClient {
	t.Helper()
	return &rawClient{SMTPClient: testkit.DialSMTP(t, e.HVEAddr()), t: t, e: e}
}

func TestHVEDeliversToInternalRecipientsOnly(t *testing.T) {
	e := graphEmu(t, Options{})
	tok := tokenFor(t, e, exoScope)
	c := dialHVE(t, e)
	if got := c.login(testMbx, tok); got != ReplyAuthOK {
		t.Fatalf("AUTH: %q", got)
	}
	c.Expect("MAIL FROM:<"+testMbx+">", ReplySenderOK)
	c.Expect("RCPT TO:<colleague@contoso.com>", ReplyRcptOK)
	if got := c.Cmd("RCPT TO:<someone@example.org>"); !strings.HasPrefix(got, "550 5.5.105 ") {
		t.Errorf("external recipient: %q", got)
	}
	c.Expect("DATA", ReplyStartData)
	c.SendData(message(testMbx, "hve"))
	got, err := e.WaitDelivered(context.Background(), 1)
	if err != nil {
		t.Fatal(err)
	}
	if m := got[0]; m.Transport != TransportHVE || strings.Join(m.Recipients, ",") != "colleague@contoso.com" || m.Mailbox != testMbx {
		t.Errorf("message %+v", m)
	}
	if s := e.Stats(); s.HVEConnections != 1 || s.Connections != 0 {
		t.Errorf("HVE %d, SMTP %d connections", s.HVEConnections, s.Connections)
	}
}

func TestHVEAcceptedDomainsOption(t *testing.T) {
	e := graphEmu(t, Options{AcceptedDomains: []string{"fabrikam.com"}})
	c := dialHVE(t, e)
	if got := c.login(testMbx, tokenFor(t, e, exoScope)); got != ReplyAuthOK {
		t.Fatalf("AUTH: %q", got)
	}
	c.Expect("MAIL FROM:<"+testMbx+">", ReplySenderOK)
	c.Expect("RCPT TO:<x@FABRIKAM.com>", ReplyRcptOK)
	c.Expect("RCPT TO:<colleague@contoso.com>", "550 5.5.105 ")
}

func TestHVEAuth(t *testing.T) {
	e := graphEmu(t, Options{})
	// An app with SMTP.SendAsApp only has no Mail.Send for HVE.
	const smtpOnly = "6a1d0e4f-2b3c-4d5e-8f90-a1b2c3d4e5f6"
	e.Provision(testTenant, smtpOnly, testSecret, testMbx)
	noMailSend := tokenForClient(t, e, smtpOnly, exoScope)
	graphTok := tokenFor(t, e, graphScope)
	e.SetTokenLifetime(9 * time.Minute)
	short := tokenFor(t, e, exoScope)

	for _, tc := range []struct{ name, tok, want string }{
		{"no Mail.Send", noMailSend, ReplyAuthFailed},
		{"Graph audience", graphTok, ReplyAuthFailed},
		{"under ten minutes left", short, ReplyHVETokenExpiresSoon},
	} {
		if got := dialHVE(t, e).login(testMbx, tc.tok); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
	// The same short token is fine on SMTP AUTH, which has no such rule.
	if got := dialRaw(t, e).login(testMbx, short); got != ReplyAuthOK {
		t.Errorf("SMTP AUTH with the short token: %q", got)
	}
	if got := dialRaw(t, e).login(testMbx, graphTok); got != ReplyAuthFailed {
		t.Errorf("SMTP AUTH with a Graph token: %q", got)
	}
}

func TestTokenRolesByResource(t *testing.T) {
	e := graphEmu(t, Options{})
	for scope, want := range map[string]string{
		exoScope:                   RoleSendAsApp + "," + RoleMailSend,
		graphScope:                 RoleMailSend + "," + RoleMailReadWrite,
		e.GraphURL() + "/.default": RoleMailSend + "," + RoleMailReadWrite,
	} {
		c, err := e.parseAccessToken(tokenFor(t, e, scope))
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(c.Roles, ","); got != want {
			t.Errorf("%s: roles %s, want %s", scope, got, want)
		}
		if scope == e.GraphURL()+"/.default" && c.Aud != e.GraphURL() {
			t.Errorf("aud %s for the emulator's Graph scope", c.Aud)
		}
	}
}
