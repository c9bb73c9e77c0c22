package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/msemu"
	"github.com/oauthrelay/oauthrelay/internal/msemu/emutest"
	"github.com/oauthrelay/oauthrelay/internal/testkit"
	"github.com/oauthrelay/oauthrelay/oauth"
)

const (
	tokTenant = "8d5d2a5b-3f0e-4c1a-9a59-2c1f5e0b7a11"
	tokClient = "3b9f1c2e-7a44-4d0e-b1a2-6f0c9e8d7b55"
	tokCert   = "5c2a7e11-90b4-4f3e-a1d2-0e9f8c7b6a51"
	tokSecret = "Qx8~token.cmd-secret_value+x"
)

var jwtRE = regexp.MustCompile(`eyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+`)

// tokenEmulator starts an emulator with the secret app provisioned.
func tokenEmulator(t *testing.T, consent bool) *msemu.Emulator {
	t.Helper()
	emu := emutest.Start(t, msemu.Options{})
	emu.AddApp(msemu.App{TenantID: tokTenant, ClientID: tokClient, Secrets: []string{tokSecret}, Consent: consent, ServicePrincipal: true})
	emu.AddMailbox(msemu.Mailbox{Address: "helpdesk@contoso.com", FullAccess: []string{tokClient}})
	return emu
}

// tokenConfig writes a configuration whose apps talk to emu.
func tokenConfig(t *testing.T, emu *msemu.Emulator, apps ...testkit.App) string {
	t.Helper()
	return testkit.Config{
		Emulator:  emu,
		Apps:      apps,
		Mailboxes: []testkit.Mailbox{{Address: "helpdesk@contoso.com", App: "contoso"}},
		Clients:   []testkit.Client{{Name: "app", Networks: []string{"127.0.0.1"}, Senders: []string{"*"}}},
	}.Write(t)
}

func secretApp(name, secret string) testkit.App {
	return testkit.App{Name: name, TenantID: tokTenant, ClientID: tokClient, ClientSecret: secret}
}

// runTokenCmd runs `oauthrelay token args...` in-process, bounded by a
// timeout.
func runTokenCmd(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out, errb bytes.Buffer
	done := make(chan int, 1)
	go func() { done <- run(append([]string{"token"}, args...), &out, &errb) }()
	select {
	case code = <-done:
	case <-ctx.Done():
		t.Fatalf("oauthrelay token %v did not finish", args)
	}
	return code, out.String(), errb.String()
}

func TestTokenCommandShowsClaims(t *testing.T) {
	emu := tokenEmulator(t, true)
	cfg := tokenConfig(t, emu, secretApp("contoso", tokSecret))
	// One app: --app may be left out.
	code, out, errs := runTokenCmd(t, "-config", cfg)
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errs)
	}
	for _, want := range []string{
		`app "contoso": token acquired`,
		"audience:   https://outlook.office365.com",
		"tenant:     " + tokTenant,
		"app id:     " + tokClient + " (authenticated with a client secret)",
		"roles:      SMTP.SendAsApp",
		"expires:",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out+errs, "WARNING") {
		t.Errorf("unexpected warning:\n%s%s", out, errs)
	}
	if jwtRE.MatchString(out+errs) || strings.Contains(out+errs, tokSecret) {
		t.Errorf("the token or the secret was printed without --print-token:\n%s%s", out, errs)
	}
	if n := emu.Stats().TokenRequests; n != 1 {
		t.Errorf("%d token requests, want 1", n)
	}
}

func TestTokenCommandPrintToken(t *testing.T) {
	emu := tokenEmulator(t, true)
	cfg := tokenConfig(t, emu, secretApp("contoso", tokSecret))
	code, out, errs := runTokenCmd(t, "-config", cfg, "--app", "contoso", "--print-token")
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out, errs)
	}
	tok := jwtRE.FindString(out)
	if tok == "" {
		t.Fatalf("--print-token printed no token:\n%s", out)
	}
	c, err := oauth.ParseClaims(tok)
	if err != nil || c.AppID != tokClient || c.Tid != tokTenant {
		t.Errorf("printed token: claims %+v, %v", c, err)
	}
	if strings.Contains(out+errs, tokSecret) {
		t.Error("the secret was printed")
	}
}

func TestTokenCommandWarnsWithoutSendAsApp(t *testing.T) {
	emu := tokenEmulator(t, false) // no admin consent: no roles
	cfg := tokenConfig(t, emu, secretApp("contoso", tokSecret))
	code, out, errs := runTokenCmd(t, "-config", cfg)
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out, errs)
	}
	if !strings.Contains(out, "roles:      (none)") || !strings.Contains(out, "WARNING: the token has no SMTP.SendAsApp role") {
		t.Errorf("no SMTP.SendAsApp warning:\n%s", out)
	}
}

func TestTokenCommandExplainsAADSTS(t *testing.T) {
	emu := tokenEmulator(t, true)
	const wrong = "Wr0ng~secret-from.the+ID-column"
	cfg := tokenConfig(t, emu, secretApp("contoso", wrong))
	code, out, errs := runTokenCmd(t, "-config", cfg)
	if code != 1 {
		t.Fatalf("exit %d, want 1\n%s%s", code, out, errs)
	}
	_, fix, _, _ := oauth.Explain(7000215)
	for _, want := range []string{"AADSTS7000215", "invalid_client", "HTTP 401", "cause:  the client secret is wrong", "fix:    " + fix} {
		if !strings.Contains(errs, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errs)
		}
	}
	if strings.Contains(out+errs, wrong) || strings.Contains(out+errs, tokSecret) {
		t.Errorf("a secret was printed:\n%s%s", out, errs)
	}
}

func TestTokenCommandChoosesApp(t *testing.T) {
	emu := tokenEmulator(t, true)
	// A second app with a certificate made by `cert new` and uploaded.
	dir := t.TempDir()
	var certOut, certErr bytes.Buffer
	if code := run([]string{"cert", "new", "--out", dir, "--days", "365"}, &certOut, &certErr); code != 0 {
		t.Fatalf("cert new: exit %d\n%s", code, certErr.String())
	}
	cert := testkit.ReadCertificate(t, filepath.Join(dir, oauth.CertPublicFile))
	emu.AddApp(msemu.App{TenantID: tokTenant, ClientID: tokCert, Certificates: []*x509.Certificate{cert}, Consent: true, ServicePrincipal: true})
	certApp := testkit.App{Name: "certapp", TenantID: tokTenant, ClientID: tokCert, CertificateFile: filepath.Join(dir, oauth.CertKeyFile)}
	cfg := tokenConfig(t, emu, secretApp("contoso", tokSecret), certApp)

	code, out, errs := runTokenCmd(t, "-config", cfg)
	if code != 2 || !strings.Contains(errs, "choose one with --app NAME: certapp, contoso") {
		t.Errorf("two apps without --app: exit %d\n%s", code, errs)
	}
	code, out, errs = runTokenCmd(t, "-config", cfg, "--app", "nosuch")
	if code != 1 || !strings.Contains(errs, `no [[app]] named "nosuch"; its apps are: certapp, contoso`) {
		t.Errorf("unknown app: exit %d\n%s", code, errs)
	}
	code, out, errs = runTokenCmd(t, "-config", cfg, "--app", "certapp")
	if code != 0 {
		t.Fatalf("--app certapp: exit %d\n%s%s", code, out, errs)
	}
	info := oauth.Describe(cert)
	for _, want := range []string{"SHA-1 thumbprint " + info.SHA1, "app id:     " + tokCert + " (authenticated with a certificate)", "roles:      SMTP.SendAsApp"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out+errs, "PRIVATE KEY") || jwtRE.MatchString(out+errs) {
		t.Errorf("key or token printed:\n%s%s", out, errs)
	}
}

// --resource graph asks for a Microsoft Graph token and judges it as Graph
// would (audience, Mail.Send), and it is what an app whose mailboxes all
// use Graph gets without the flag.
func TestTokenCommandGraphResource(t *testing.T) {
	emu := tokenEmulator(t, true)
	emu.ProvisionGraph(tokTenant, tokClient, tokSecret, "helpdesk@contoso.com")
	path := testkit.Config{
		Emulator:  emu,
		Upstream:  testkit.Upstream{GraphURL: emu.GraphURL()},
		Apps:      []testkit.App{secretApp("contoso", tokSecret)},
		Mailboxes: []testkit.Mailbox{{Address: "helpdesk@contoso.com", App: "contoso", Transport: "graph"}},
		Clients:   []testkit.Client{{Name: "app", Networks: []string{"127.0.0.1"}, Senders: []string{"*"}}},
	}.Write(t)
	for _, args := range [][]string{{"-config", path, "--resource", "graph"}, {"-config", path}} {
		code, out, errs := runTokenCmd(t, args...)
		if code != 0 {
			t.Fatalf("%v: exit %d\nstdout:\n%s\nstderr:\n%s", args, code, out, errs)
		}
		for _, want := range []string{"for Microsoft Graph", "audience:   " + emu.GraphURL(), "Mail.Send"} {
			if !strings.Contains(out, want) {
				t.Errorf("%v: output lacks %q:\n%s", args, want, out)
			}
		}
		if strings.Contains(out+errs, "WARNING") {
			t.Errorf("%v: unexpected warning:\n%s%s", args, out, errs)
		}
	}
	// The same app asked for Exchange: SMTP.SendAsApp is checked instead.
	code, out, errs := runTokenCmd(t, "-config", path, "--resource", "exchange")
	if code != 0 || !strings.Contains(out, "for Exchange Online") || !strings.Contains(out, "audience:   https://outlook.office365.com") {
		t.Fatalf("exchange: exit %d\n%s%s", code, out, errs)
	}
	if code, _, errs := runTokenCmd(t, "-config", path, "--resource", "imap"); code != 2 || !strings.Contains(errs, "use exchange (SMTP AUTH), hve (High Volume Email) or graph") {
		t.Fatalf("unknown resource: exit %d, %s", code, errs)
	}
}
