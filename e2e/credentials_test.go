package e2e

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"

	pkcs12 "software.sslmate.com/src/go-pkcs12"

	"github.com/oauthrelay/oauthrelay/internal/msemu"
	"github.com/oauthrelay/oauthrelay/internal/testkit"
	"github.com/oauthrelay/oauthrelay/oauth"
	"github.com/oauthrelay/oauthrelay/queue"
)

// provisionCertApp registers an app whose credential is the uploaded
// certificate, with consent, a service principal and FullAccess on mailbox.
func provisionCertApp(emu *msemu.Emulator, clientID string, uploaded *x509.Certificate, mailbox string) {
	emu.AddApp(msemu.App{TenantID: tenantID, ClientID: clientID, Certificates: []*x509.Certificate{uploaded},
		Consent: true, ServicePrincipal: true})
	emu.AddMailbox(msemu.Mailbox{Address: mailbox, FullAccess: []string{clientID}})
}

// newPFX makes a certificate with `cert new`'s code, uploads nothing, and
// re-packs it as a password-protected PKCS#12 file the way Windows exports
// one. It returns the .pfx path, the password file and the certificate.
func newPFX(t *testing.T, password string) (pfxFile, passwordFile string, cert *x509.Certificate) {
	t.Helper()
	pemFile, cert := newCertificate(t, "CN=oauthrelay pfx")
	certs, key, err := oauth.LoadCertificate(pemFile, "")
	if err != nil {
		t.Fatal(err)
	}
	pfx, err := pkcs12.Modern.Encode(key, certs[0], nil, password)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	pfxFile = filepath.Join(dir, "relay.pfx")
	passwordFile = filepath.Join(dir, "relay.pfx.password")
	if err := os.WriteFile(pfxFile, pfx, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(passwordFile, []byte(password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return pfxFile, passwordFile, cert
}

// TestCredentialsDeliver: a client secret, a PEM certificate made by `cert
// new` (its .cer uploaded to the emulated app registration) and a
// password-protected PFX each get a token and deliver mail through the
// whole relay.
func TestCredentialsDeliver(t *testing.T) {
	ctx := ctxFor(t)
	emu := startEmulator(t, msemu.Options{})

	const (
		secretMbx = "helpdesk@contoso.com"
		pemMbx    = "scanner@contoso.com"
		pfxMbx    = "erp@contoso.com"
	)
	emu.Provision(tenantID, secretApp, clientSec, secretMbx)
	pemFile, uploaded := newCertificate(t, "CN=oauthrelay")
	provisionCertApp(emu, pemApp, uploaded, pemMbx)
	pfxFile, pwFile, pfxCert := newPFX(t, "pfx-Password!1")
	provisionCertApp(emu, pfxApp, pfxCert, pfxMbx)

	r := startRelay(t, emu, relayOptions{
		Apps: []testkit.App{
			{Name: "secret", TenantID: tenantID, ClientID: secretApp, ClientSecret: clientSec},
			{Name: "pem", TenantID: tenantID, ClientID: pemApp, CertificateFile: pemFile},
			{Name: "pfx", TenantID: tenantID, ClientID: pfxApp, CertificateFile: pfxFile, CertificatePasswordFile: pwFile},
		},
		Mailboxes: []testkit.Mailbox{{Address: secretMbx, App: "secret"}, {Address: pemMbx, App: "pem"}, {Address: pfxMbx, App: "pfx"}},
	})

	cases := []struct {
		mailbox, client, acr string
	}{
		{secretMbx, secretApp, "1"}, // appidacr 1: client secret
		{pemMbx, pemApp, "2"},       // appidacr 2: certificate assertion
		{pfxMbx, pfxApp, "2"},
	}
	for _, c := range cases {
		r.mustSend(ctx, c.mailbox, "someone@example.org", "sent with the "+c.mailbox+" credential")
	}
	msgs, err := emu.WaitDelivered(ctx, len(cases))
	if err != nil {
		t.Fatalf("delivered %d of %d: %v", len(msgs), len(cases), err)
	}
	for _, c := range cases {
		got := deliveredTo(msgs, c.mailbox)
		if len(got) != 1 || got[0].AppID != c.client {
			t.Errorf("mailbox %s: delivered %+v, want one message sent by app %s", c.mailbox, got, c.client)
		}
	}
	// Each credential got its own token of the right kind.
	kinds := map[string]string{}
	for _, tok := range r.rec.Tokens() {
		cl, err := oauth.ParseClaims(tok)
		if err != nil {
			t.Fatal(err)
		}
		if !cl.HasRole(oauth.RoleSendAsApp) || cl.Tid != tenantID {
			t.Errorf("token for %s: roles %v tid %s", cl.AppID, cl.Roles, cl.Tid)
		}
		kinds[cl.AppID] = cl.AppIDACR
	}
	for _, c := range cases {
		if kinds[c.client] != c.acr {
			t.Errorf("app %s authenticated with appidacr %q, want %q", c.client, kinds[c.client], c.acr)
		}
	}
	st := emu.Stats()
	for _, a := range st.AuthTokens {
		if !a.OK {
			t.Errorf("AUTH as %s refused: %s", a.Mailbox, a.Reply)
		}
	}
	for _, cl := range []string{secretApp, pemApp, pfxApp} {
		if n := st.TokenRequestsByClient[cl]; n != 1 {
			t.Errorf("app %s made %d token requests, want 1", cl, n)
		}
	}
	// Delivered mail leaves the spool.
	testkit.WaitFor(ctx, t, "an empty spool", func() bool {
		return len(r.ids(queue.Incoming))+len(r.ids(queue.Active))+len(r.ids(queue.Deferred))+len(r.ids(queue.Failed)) == 0
	})
}
