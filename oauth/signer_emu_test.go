package oauth_test

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/msemu"
	"github.com/oauthrelay/oauthrelay/internal/msemu/emutest"
	"github.com/oauthrelay/oauthrelay/internal/testkit"
	"github.com/oauthrelay/oauthrelay/oauth"
	"github.com/oauthrelay/oauthrelay/transport/submit"
)

const (
	emuTenant = "11111111-2222-3333-4444-555555555555"
	emuClient = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
)

// TestSignerDeliversThroughEmulator: a key reached only through the
// Signer interface (a software RSA key standing in for a store key) gets
// a token from the emulated Entra ID, which checks the assertion as Entra
// does, once as a CNG key would sign (PS256, x5t#S256) and once as a
// legacy CSP key would (RS256, x5t); each token then delivers a message
// over SMTP AUTH XOAUTH2. A certificate that is not uploaded is refused
// with AADSTS700027 naming its thumbprint.
func TestSignerDeliversThroughEmulator(t *testing.T) {
	emu := emutest.Start(t, msemu.Options{})
	_, files, err := oauth.NewCertificate("CN=oauthrelay store", 30, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	certs, key, err := oauth.LoadCertificate(files[0], "")
	if err != nil {
		t.Fatal(err)
	}
	const mailbox = "helpdesk@contoso.com"
	emu.AddApp(msemu.App{TenantID: emuTenant, ClientID: emuClient, Certificates: []*x509.Certificate{certs[0]}, Consent: true, ServicePrincipal: true})
	emu.AddMailbox(msemu.Mailbox{Address: mailbox, FullAccess: []string{emuClient}})
	ctx, cancel := context.WithTimeout(context.Background(), testkit.WaitLimit)
	defer cancel()

	for i, pss := range []bool{true, false} {
		signer, err := oauth.NewKeySigner(certs, key.(*rsa.PrivateKey), pss)
		if err != nil {
			t.Fatal(err)
		}
		src, err := oauth.NewSource(oauth.AppSettings{Name: "store", TenantID: emuTenant, ClientID: emuClient,
			Authority: emu.Authority(), Signer: signer, SendCertificateChain: !pss},
			oauth.Options{HTTPClient: emu.HTTPClient(), Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		tok, err := src.Token(ctx)
		if err != nil {
			t.Fatalf("pss=%v: the emulator refused the assertion: %v", pss, err)
		}
		claims, err := oauth.ParseClaims(tok.AccessToken)
		if err != nil || claims.AppIDACR != "2" || claims.AppID != emuClient {
			t.Fatalf("pss=%v: token claims %+v, %v (want a certificate-authenticated app token)", pss, claims, err)
		}
		s, stage, err := submit.Open(ctx, nil, emu.SMTPAddr(), "relay.test", emu.CertPool(), 30*time.Second, mailbox, tok)
		if err != nil {
			t.Fatalf("pss=%v: AUTH failed at %s: %v", pss, stage, err)
		}
		body := "From: " + mailbox + "\r\nTo: a@example.org\r\nSubject: signer\r\n\r\nsigned through the Signer interface\r\n"
		if _, stage, err := s.Send(mailbox, []string{"a@example.org"}, []byte(body)); err != nil {
			t.Fatalf("pss=%v: send failed at %s: %v", pss, stage, err)
		}
		s.Close()
		got := emu.Delivered()
		if len(got) != i+1 || got[i].AppID != emuClient || !strings.Contains(string(got[i].Data), "through the Signer") {
			t.Fatalf("pss=%v: delivered %d messages: %+v", pss, len(got), got)
		}
	}

	// A certificate the app registration does not have.
	_, files2, _ := oauth.NewCertificate("CN=not uploaded", 30, t.TempDir())
	certs2, key2, _ := oauth.LoadCertificate(files2[0], "")
	signer, _ := oauth.NewKeySigner(certs2, key2.(*rsa.PrivateKey), false)
	src, err := oauth.NewSource(oauth.AppSettings{Name: "store", TenantID: emuTenant, ClientID: emuClient, Authority: emu.Authority(), Signer: signer},
		oauth.Options{HTTPClient: emu.HTTPClient(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	_, err = src.Token(ctx)
	var oe *oauth.Error
	if !errors.As(err, &oe) || oe.AADSTS != 700027 || !strings.Contains(oe.Description, oauth.Describe(certs2[0]).SHA1) {
		t.Fatalf("unregistered certificate: %v", err)
	}
}
