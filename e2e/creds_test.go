package e2e

import (
	"bytes"
	"context"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/doctor"
	"github.com/oauthrelay/oauthrelay/internal/guid"
	"github.com/oauthrelay/oauthrelay/internal/msemu"
	"github.com/oauthrelay/oauthrelay/internal/testkit"
	"github.com/oauthrelay/oauthrelay/queue"
	"github.com/oauthrelay/oauthrelay/transport"
)

// Apps of the credential tests.
const (
	fedApp   = "2f1e0d9c-8b7a-4c6d-9e5f-4a3b2c1d0e9f"
	miApp    = "4b3a2918-0706-4f5e-8d4c-3b2a19080706"
	ropcApp  = "6d5c4b3a-2918-4070-9f5e-4d3c2b1a0987"
	teApp    = "8f7e6d5c-4b3a-4291-8f7e-6d5c4b3a2918"
	teFull   = "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d"
	k8sIss   = "https://oidc.cluster.test/7f3c9a/"
	k8sSub   = "system:serviceaccount:mail:oauthrelay"
	k8sSub2  = "system:serviceaccount:mail:oauthrelay-canary"
	svcUser  = "svc-mail@contoso.com"
	svcPass  = "Corr3ct horse battery"
	svcAlias = "noreply@contoso.com"
)

// writeFile replaces name's content with s (0600).
func writeFile(t *testing.T, name, s string) {
	t.Helper()
	if err := os.WriteFile(name, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

// lastGrant is the emulator's newest token request by client.
func lastGrant(t *testing.T, emu *msemu.Emulator, client string) msemu.GrantRecord {
	t.Helper()
	gs := emu.Grants()
	for i := len(gs) - 1; i >= 0; i-- {
		if gs[i].ClientID == client {
			return gs[i]
		}
	}
	t.Fatalf("the emulator saw no token request of %s", client)
	return msemu.GrantRecord{}
}

// newToken forces the relay's Exchange token source of app to make a
// token request now, as it does when a token nears its expiry.
func newToken(ctx context.Context, t *testing.T, r *testRelay, app string) {
	t.Helper()
	src, err := r.tokens.Get(app, transport.Exchange)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := src.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	src.Invalidate(tok.AccessToken)
	if _, err := src.Token(ctx); err != nil {
		t.Fatalf("second token request: %v", err)
	}
}

// TestFederatedTokenFile: an app whose only credential is a Kubernetes
// service account token (federated_token_file) delivers mail; the
// emulator sees the token's issuer and subject as the assertion, and a
// token file replaced in place is used at the next token request without
// a reload.
func TestFederatedTokenFile(t *testing.T) {
	ctx := ctxFor(t)
	emu := startEmulator(t, msemu.Options{})
	iss, err := emu.NewIssuer(k8sIss)
	if err != nil {
		t.Fatal(err)
	}
	const mbx = "k8s@contoso.com"
	emu.AddApp(msemu.App{TenantID: tenantID, ClientID: fedApp, Consent: true, ServicePrincipal: true,
		Federated: []msemu.FederatedCredential{{Issuer: k8sIss, Subject: k8sSub}, {Issuer: k8sIss, Subject: k8sSub2}}})
	emu.AddMailbox(msemu.Mailbox{Address: mbx, FullAccess: []string{fedApp}})
	file := filepath.Join(t.TempDir(), "azure-identity-token")
	tok, err := iss.Sign(k8sSub, msemu.TokenExchangeAudience, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, file, tok+"\n")

	r := startRelay(t, emu, relayOptions{
		Apps:      []testkit.App{{Name: "k8s", ClientID: fedApp, Extra: `federated_token_file = "` + file + `"`}},
		Mailboxes: []testkit.Mailbox{{Address: mbx, App: "k8s"}},
	})
	r.mustSend(ctx, mbx, "someone@example.org", "sent with a federated token")
	if msgs, err := emu.WaitDelivered(ctx, 1); err != nil || msgs[0].AppID != fedApp {
		t.Fatalf("delivered %+v: %v", msgs, err)
	}
	g := lastGrant(t, emu, fedApp)
	if g.GrantType != "client_credentials" || g.Credential != "federated" || g.Issuer != k8sIss || g.Subject != k8sSub || g.Code != 0 {
		t.Errorf("token request %+v, want client_credentials with the federated token of %s / %s", g, k8sIss, k8sSub)
	}

	// The platform rotates the token; the next request sends the new one.
	tok2, err := iss.Sign(k8sSub2, msemu.TokenExchangeAudience, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, file, tok2)
	newToken(ctx, t, r, "k8s")
	if g := lastGrant(t, emu, fedApp); g.Subject != k8sSub2 || g.Code != 0 {
		t.Errorf("after the file was replaced the token request was %+v, want the new token (subject %s)", g, k8sSub2)
	}
	if strings.Contains(r.logs.String(), tok2[strings.LastIndexByte(tok2, '.'):]) {
		t.Error("the relay logged the federated token")
	}
}

// TestManagedIdentity: managed_identity = true gets a token for
// api://AzureADTokenExchange from the machine's managed identity (the
// emulator's endpoint, found through IDENTITY_ENDPOINT and
// IDENTITY_HEADER as on App Service) and delivers mail with it as the
// app's federated credential.
func TestManagedIdentity(t *testing.T) {
	ctx := ctxFor(t)
	emu := startEmulator(t, msemu.Options{})
	for k, v := range emu.ManagedIdentityEnv() {
		t.Setenv(k, v)
	}
	// A user-assigned identity of its own, new each run: MSAL caches
	// managed identity tokens process-wide, and a token from an earlier
	// run's emulator (go test -count=2) has an issuer this one does not
	// trust.
	mi := msemu.ManagedIdentity{ClientID: guid.New(), ObjectID: guid.New(), TenantID: tenantID}
	emu.AddManagedIdentity(mi)
	const mbx = "azure@contoso.com"
	emu.AddApp(msemu.App{TenantID: tenantID, ClientID: miApp, Consent: true, ServicePrincipal: true,
		Federated: []msemu.FederatedCredential{{Issuer: emu.ManagedIdentityIssuer(tenantID), Subject: mi.ObjectID}}})
	emu.AddMailbox(msemu.Mailbox{Address: mbx, FullAccess: []string{miApp}})

	r := startRelay(t, emu, relayOptions{
		Apps:      []testkit.App{{Name: "azure", ClientID: miApp, Extra: "managed_identity = true\nmanaged_identity_client_id = \"" + mi.ClientID + "\""}},
		Mailboxes: []testkit.Mailbox{{Address: mbx, App: "azure"}},
	})
	r.mustSend(ctx, mbx, "someone@example.org", "sent with a managed identity")
	if msgs, err := emu.WaitDelivered(ctx, 1); err != nil || msgs[0].AppID != miApp {
		t.Fatalf("delivered %+v: %v", msgs, err)
	}
	g := lastGrant(t, emu, miApp)
	if g.Credential != "federated" || g.Issuer != emu.ManagedIdentityIssuer(tenantID) || g.Subject != mi.ObjectID {
		t.Errorf("token request %+v, want the managed identity's token (issuer %s, subject %s)", g, emu.ManagedIdentityIssuer(tenantID), mi.ObjectID)
	}
}

// TestPasswordGrant: a NexJ-style service account (username and
// password_file, with the app's client secret) delivers mail as itself
// from an address in its send_as. With a wrong password the mail stays
// queued and doctor names AADSTS50126 and its fix; after the file is
// fixed and the relay reloaded, the mail is delivered.
func TestPasswordGrant(t *testing.T) {
	ctx := ctxFor(t)
	emu := startEmulator(t, msemu.Options{})
	emu.AddApp(msemu.App{TenantID: tenantID, ClientID: ropcApp, Secrets: []string{clientSec}, Consent: true, ServicePrincipal: true})
	emu.AddUser(msemu.User{UPN: svcUser, Password: svcPass})
	emu.AddMailbox(msemu.Mailbox{Address: svcUser, SendAs: []string{svcAlias}})
	pwFile := filepath.Join(t.TempDir(), "svc-mail.password")
	writeFile(t, pwFile, "Wr0ng horse battery\n")

	r := startRelay(t, emu, relayOptions{
		Apps: []testkit.App{{Name: "nexj", ClientID: ropcApp, ClientSecret: clientSec,
			Extra: `username = "` + svcUser + `"` + "\n" + `password_file = "` + pwFile + `"`}},
		Mailboxes: []testkit.Mailbox{{Address: svcUser, App: "nexj", SendAs: []string{svcAlias}}},
	})
	r.mustSend(ctx, svcAlias, "someone@example.org", "sent as the service account")
	testkit.WaitFor(ctx, t, "the message deferred by the refused password", func() bool {
		return len(r.ids(queue.Deferred)) == 1 && strings.Contains(r.logs.String(), "AADSTS50126")
	})
	if n := len(emu.Delivered()); n != 0 {
		t.Fatalf("%d messages delivered with a wrong password", n)
	}
	if g := lastGrant(t, emu, ropcApp); g.GrantType != "password" || g.Credential != "secret" || g.Username != svcUser || g.Code != 50126 {
		t.Errorf("token request %+v, want a password grant with the app's secret refused with 50126", g)
	}
	var out bytes.Buffer
	if res := doctor.Run(ctx, doctor.Options{Config: r.cfg, Out: &out}); res.OK() {
		t.Errorf("doctor passed with a wrong password:\n%s", out.String())
	}
	if !strings.Contains(out.String(), "AADSTS50126") || !strings.Contains(out.String(), "password_file") {
		t.Errorf("doctor does not name AADSTS50126 and its fix:\n%s", out.String())
	}
	for _, secret := range []string{"Wr0ng horse battery", svcPass, clientSec} {
		if strings.Contains(r.logs.String()+out.String(), secret) {
			t.Errorf("a secret appears in the log or doctor's report")
		}
	}

	writeFile(t, pwFile, svcPass+"\n")
	if !r.svc.Reload(r.path) {
		t.Fatal("reload refused")
	}
	msgs, err := emu.WaitDelivered(ctx, 1)
	if err != nil {
		t.Fatalf("not delivered after the password was fixed: %v", err)
	}
	if msgs[0].Mailbox != svcUser || msgs[0].MailFrom != svcAlias {
		t.Errorf("delivered as %s from %s, want as %s from %s", msgs[0].Mailbox, msgs[0].MailFrom, svcUser, svcAlias)
	}
	if g := lastGrant(t, emu, ropcApp); g.GrantType != "password" || g.Code != 0 {
		t.Errorf("token request %+v, want a successful password grant", g)
	}
}

// TestTokenEndpoint: a token URL as enaio writes it (#TenantID#) and one
// written out in full both deliver mail.
func TestTokenEndpoint(t *testing.T) {
	ctx := ctxFor(t)
	emu := startEmulator(t, msemu.Options{})
	const mbx1, mbx2 = "enaio@contoso.com", "full@contoso.com"
	emu.Provision(tenantID, teApp, clientSec, mbx1)
	emu.Provision(tenantID, teFull, clientSec, mbx2)
	r := startRelay(t, emu, relayOptions{
		Apps: []testkit.App{
			{Name: "enaio", ClientID: teApp, ClientSecret: clientSec, Extra: `token_endpoint = "` + emu.Authority() + `#TenantID#/oauth2/v2.0/token"`},
			{Name: "full", ClientID: teFull, ClientSecret: clientSec, Extra: `token_endpoint = "` + emu.TokenURL(tenantID) + `"`},
		},
		Mailboxes: []testkit.Mailbox{{Address: mbx1, App: "enaio"}, {Address: mbx2, App: "full"}},
	})
	r.mustSend(ctx, mbx1, "someone@example.org", "enaio")
	r.mustSend(ctx, mbx2, "someone@example.org", "full")
	if _, err := emu.WaitDelivered(ctx, 2); err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{teApp, teFull} {
		if g := lastGrant(t, emu, c); g.GrantType != "client_credentials" || g.Credential != "secret" || g.Code != 0 {
			t.Errorf("token request of %s: %+v", c, g)
		}
	}
}

// TestFixedSecretFileWithoutReload: a wrong client_secret_file keeps mail
// queued with AADSTS7000215; once the file is fixed the relay notices it
// (it watches a refused credential's files), gets a token and delivers
// the held mail at once, although its retry is an hour away and nobody
// reloaded.
func TestFixedSecretFileWithoutReload(t *testing.T) {
	ctx := ctxFor(t)
	emu := startEmulator(t, msemu.Options{})
	const mbx = "fixed@contoso.com"
	emu.Provision(tenantID, secretApp, clientSec, mbx)
	secretFile := filepath.Join(t.TempDir(), "contoso.secret")
	writeFile(t, secretFile, "the-secret-id-not-its-value\n")
	r := startRelay(t, emu, relayOptions{
		Apps:       []testkit.App{{Name: "contoso", ClientID: secretApp, ClientSecretFile: secretFile}},
		Mailboxes:  []testkit.Mailbox{{Address: mbx, App: "contoso"}},
		RetryDelay: time.Hour,
	})
	r.mustSend(ctx, mbx, "someone@example.org", "held by a wrong secret")
	testkit.WaitFor(ctx, t, "the message deferred by the wrong secret", func() bool {
		return len(r.ids(queue.Deferred)) == 1 && strings.Contains(r.logs.String(), "AADSTS7000215")
	})
	writeFile(t, secretFile, clientSec+"\n")
	if _, err := emu.WaitDelivered(ctx, 1); err != nil {
		t.Fatalf("not delivered after the secret file was fixed: %v", err)
	}
	for _, want := range []string{"credential file changed on disk", "mail held back by its credential fault is retried now"} {
		if !strings.Contains(r.logs.String(), want) {
			t.Errorf("the log does not say %q", want)
		}
	}
	if strings.Contains(r.logs.String(), clientSec) {
		t.Error("the secret appears in the log")
	}
}

// TestPasswordGrantWithCertificate: the service account's password with
// the app's certificate (a client assertion signed by its key) instead of
// a secret.
func TestPasswordGrantWithCertificate(t *testing.T) {
	ctx := ctxFor(t)
	emu := startEmulator(t, msemu.Options{})
	pemFile, uploaded := newCertificate(t, "CN=nexj")
	emu.AddApp(msemu.App{TenantID: tenantID, ClientID: ropcApp, Certificates: []*x509.Certificate{uploaded}, Consent: true, ServicePrincipal: true})
	emu.AddUser(msemu.User{UPN: svcUser, Password: svcPass})
	emu.AddMailbox(msemu.Mailbox{Address: svcUser})
	pwFile := filepath.Join(t.TempDir(), "svc-mail.password")
	writeFile(t, pwFile, svcPass)
	r := startRelay(t, emu, relayOptions{
		Apps: []testkit.App{{Name: "nexj", ClientID: ropcApp, CertificateFile: pemFile,
			Extra: `username = "` + svcUser + `"` + "\n" + `password_file = "` + pwFile + `"`}},
		Mailboxes: []testkit.Mailbox{{Address: svcUser, App: "nexj"}},
	})
	r.mustSend(ctx, svcUser, "someone@example.org", "password and certificate")
	if _, err := emu.WaitDelivered(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if g := lastGrant(t, emu, ropcApp); g.GrantType != "password" || g.Credential != "certificate" || g.Username != svcUser || g.Code != 0 {
		t.Errorf("token request %+v, want a password grant with the certificate's assertion", g)
	}
}
