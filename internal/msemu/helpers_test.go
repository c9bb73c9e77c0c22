package msemu

import (
	"context"
	"crypto/tls"
	"strings"
	"testing"

	"github.com/AzureAD/microsoft-authentication-library-for-go/apps/confidential"

	"github.com/oauthrelay/oauthrelay/internal/testkit"
)

const (
	testTenant = "8d5d2a5b-3f0e-4c1a-9a59-2c1f5e0b7a11"
	testClient = "3b9f1c2e-7a44-4d0e-b1a2-6f0c9e8d7b55"
	testSecret = "Qx8~secret.value_with+chars"
	testMbx    = "helpdesk@contoso.com"
	exoScope   = "https://outlook.office365.com/.default"
)

func startEmu(t *testing.T, o Options) *Emulator {
	t.Helper()
	e, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// provisioned starts an emulator with the standard app and mailbox.
func provisioned(t *testing.T, o Options) *Emulator {
	e := startEmu(t, o)
	e.Provision(testTenant, testClient, testSecret, testMbx)
	return e
}

func msalSecretToken(t *testing.T, e *Emulator) string {
	t.Helper()
	cred, err := confidential.NewCredFromSecret(testSecret)
	if err != nil {
		t.Fatal(err)
	}
	c, err := confidential.New(e.Authority()+testTenant, testClient, cred,
		confidential.WithHTTPClient(e.HTTPClient()), confidential.WithInstanceDiscovery(false))
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.AcquireTokenByCredential(context.Background(), []string{exoScope})
	if err != nil {
		t.Fatal(err)
	}
	return res.AccessToken
}

// rawClient is the kit's raw SMTP client with the emulator's trust and
// the exact replies of Exchange Online checked.
type rawClient struct {
	*testkit.SMTPClient
	t *testing.T
	e *Emulator
}

func dialRaw(t *testing.T, e *Emulator) *rawClient {
	t.Helper()
	return &rawClient{SMTPClient: testkit.DialSMTP(t, e.SMTPAddr()), t: t, e: e}
}

// startTLS sends EHLO and STARTTLS and does the handshake with cfg, by
// default trusting the emulator's CA.
func (r *rawClient) startTLS(cfg *tls.Config) {
	r.t.Helper()
	if cfg == nil {
		cfg = &tls.Config{RootCAs: r.e.CertPool(), ServerName: "127.0.0.1"}
	}
	r.Expect("EHLO relay.example", "250")
	if got := r.StartTLS(cfg); !strings.HasPrefix(got, "220 2.0.0 SMTP server ready") {
		r.t.Fatalf("STARTTLS: got %q", got)
	}
}

// login does STARTTLS, EHLO and AUTH XOAUTH2, returning the AUTH reply.
func (r *rawClient) login(user, token string) string {
	r.t.Helper()
	r.startTLS(nil)
	r.Expect("EHLO relay.example", "250")
	return r.AuthXOAUTH2(user, token)
}

// send runs one transaction and returns the reply after the final dot.
func (r *rawClient) send(from string, to []string, data string) string {
	r.t.Helper()
	r.Expect("MAIL FROM:<"+from+">", ReplySenderOK)
	for _, rc := range to {
		r.Expect("RCPT TO:<"+rc+">", ReplyRcptOK)
	}
	r.Expect("DATA", ReplyStartData)
	return r.SendData(data)
}

func message(from, subject string) string {
	return "From: Help Desk <" + from + ">\r\nTo: someone@example.org\r\nSubject: " + subject +
		"\r\nMessage-ID: <" + subject + "@app.example>\r\n\r\nHello.\r\n.leading dot line\r\n"
}
