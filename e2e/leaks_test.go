package e2e

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/oauthrelay/oauthrelay/internal/msemu"
	"github.com/oauthrelay/oauthrelay/internal/testkit"
	"github.com/oauthrelay/oauthrelay/oauth"
	"github.com/oauthrelay/oauthrelay/queue"
)

// needle is a secret that must not show up anywhere the relay writes.
type needle struct {
	what, value string
}

// secretNeedles are the forms a client secret or password could leak in.
func secretNeedles(what, secret string) []needle {
	return []needle{{what, secret}, {what + " (form-encoded)", url.QueryEscape(secret)}}
}

// keyNeedles are fragments of a credential's private key: every 64-char
// base64 line of its PKCS#8 and PKCS#1 encodings (as in a PEM file; each is
// also a substring of any unwrapped base64 rendering), and the private
// exponent in decimal and hex.
func keyNeedles(t *testing.T, what, file, password string) []needle {
	t.Helper()
	_, k, err := oauth.LoadCertificate(file, password)
	if err != nil {
		t.Fatal(err)
	}
	key := k.(*rsa.PrivateKey)
	pk8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	var out []needle
	for form, der := range map[string][]byte{"PKCS#8": pk8, "PKCS#1": x509.MarshalPKCS1PrivateKey(key)} {
		enc := base64.StdEncoding.EncodeToString(der)
		for i := 0; i+64 <= len(enc); i += 64 {
			out = append(out, needle{what + " (" + form + " base64 line)", enc[i : i+64]})
		}
	}
	out = append(out, needle{what + " (private exponent)", key.D.String()[:40]}, needle{what + " (private exponent, hex)", key.D.Text(16)[:40]})
	return out
}

// tokenNeedles are an access token, its payload and signature, and the
// XOAUTH2 initial response that carries it for each mailbox.
func tokenNeedles(tok string, mailboxes []string) []needle {
	out := []needle{{"access token", tok}}
	if parts := strings.Split(tok, "."); len(parts) == 3 {
		out = append(out, needle{"access token payload", parts[1]}, needle{"access token signature", parts[2]})
	}
	for _, m := range mailboxes {
		ir := "user=" + m + "\x01auth=Bearer " + tok + "\x01\x01"
		out = append(out, needle{"XOAUTH2 response for " + m, base64.StdEncoding.EncodeToString([]byte(ir))})
	}
	return out
}

// anyJWT matches any JSON Web Token: access tokens and client assertions.
var anyJWT = regexp.MustCompile(`eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*`)

// haystack is one place the relay wrote to.
type haystack struct {
	name, text string
}

// findLeaks reports every needle (and any JWT) found in a haystack.
func findLeaks(needles []needle, stacks []haystack) []string {
	var leaks []string
	for _, h := range stacks {
		for _, n := range needles {
			if n.value != "" && strings.Contains(h.text, n.value) {
				leaks = append(leaks, fmt.Sprintf("%s holds the %s", h.name, n.what))
			}
		}
		if m := anyJWT.FindString(h.text); m != "" {
			leaks = append(leaks, fmt.Sprintf("%s holds a JWT (%.20s…)", h.name, m))
		}
	}
	return leaks
}

// TestNoSecretsInOutput runs the relay at debug level with a secret app, a
// PEM certificate app and a PFX app delivering, two broken apps (wrong
// secret, certificate not uploaded), a refused token (535 5.7.3, so one is
// invalidated), a 451 after DATA and a refused recipient (so a DSN is
// written and delivered), and a refused sender. Then the captured log,
// every file of the spool, everything the listener answered (including its
// error replies), the token sources' last errors and every message handed
// to the emulator must hold no client secret, no private key material and
// no access token.
func TestNoSecretsInOutput(t *testing.T) {
	ctx := ctxFor(t)
	emu := startEmulator(t, msemu.Options{})
	const (
		secretMbx  = "helpdesk@contoso.com"
		pemMbx     = "scanner@contoso.com"
		pfxMbx     = "erp@contoso.com"
		wrongMbx   = "wrong@contoso.com"
		noCertMbx  = "nocert@contoso.com"
		wrongSec   = "Wr0ng~secret.value-copied_from+ID"
		pfxPass    = "Pfx~password-that.must+not_leak"
		refusedRcp = "nobody@example.org"
	)
	emu.Provision(tenantID, secretApp, clientSec, secretMbx, wrongMbx)
	pemFile, uploaded := newCertificate(t, "CN=oauthrelay")
	provisionCertApp(emu, pemApp, uploaded, pemMbx)
	pfxFile, pwFile, pfxCert := newPFX(t, pfxPass)
	provisionCertApp(emu, pfxApp, pfxCert, pfxMbx)
	const noCertApp = "2f3e4d5c-6b7a-4980-a1b2-c3d4e5f6a7b8"
	noCertFile, _ := newCertificate(t, "CN=not uploaded")
	someOther, _ := testkit.ClientCert(t, "uploaded instead")
	provisionCertApp(emu, noCertApp, someOther, noCertMbx)

	r := startRelay(t, emu, relayOptions{
		Apps: []testkit.App{
			{Name: "secret", TenantID: tenantID, ClientID: secretApp, ClientSecret: clientSec},
			{Name: "pem", TenantID: tenantID, ClientID: pemApp, CertificateFile: pemFile},
			{Name: "pfx", TenantID: tenantID, ClientID: pfxApp, CertificateFile: pfxFile, CertificatePasswordFile: pwFile},
			{Name: "wrong", TenantID: tenantID, ClientID: secretApp, ClientSecret: wrongSec},
			{Name: "nocert", TenantID: tenantID, ClientID: noCertApp, CertificateFile: noCertFile},
		},
		Mailboxes: []testkit.Mailbox{
			{Address: secretMbx, App: "secret"}, {Address: pemMbx, App: "pem"}, {Address: pfxMbx, App: "pfx"},
			{Address: wrongMbx, App: "wrong"}, {Address: noCertMbx, App: "nocert"},
		},
	})

	// 1. The first AUTH is refused: the token is invalidated and AUTH
	// retried with a fresh one.
	emu.FailNextAuth(1, "535 5.7.3 Authentication unsuccessful [SN2PR00CA0018.namprd00.prod.outlook.com]")
	r.mustSend(ctx, secretMbx, "someone@example.org", "secret app")
	if _, err := emu.WaitDelivered(ctx, 1); err != nil {
		t.Fatal(err)
	}
	// 2. A temporary failure after DATA: deferred, retried, delivered.
	emu.FailNextData(1, "451 4.7.0 Temporary server error. Please try again later. PRX4")
	r.mustSend(ctx, pemMbx, "someone@example.org", "pem app")
	if _, err := emu.WaitDelivered(ctx, 2); err != nil {
		t.Fatal(err)
	}
	// 3. One recipient refused for good: partial delivery and a DSN.
	emu.FailRcptAddress(refusedRcp, "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup")
	if err := r.send(ctx, pfxMbx, []string{"someone@example.org", refusedRcp}, "pfx app"); err != nil {
		t.Fatal(err)
	}
	// 4. Broken credentials: stay deferred.
	r.mustSend(ctx, wrongMbx, "someone@example.org", "wrong secret")
	r.mustSend(ctx, noCertMbx, "someone@example.org", "certificate not uploaded")

	// 5. A sender the client may not use: refused with an error reply.
	if err := r.send(ctx, "stranger@example.net", []string{"someone@example.org"}, "refused"); err == nil {
		t.Error("the relay accepted a sender that is not configured")
	}

	// The pfx message, its DSN, and the two stuck messages.
	msgs, err := emu.WaitDelivered(ctx, 4)
	if err != nil {
		t.Fatalf("delivered %d of 4: %v", len(msgs), err)
	}
	testkit.WaitFor(ctx, t, "both broken apps' mail deferred", func() bool { return len(r.ids(queue.Deferred)) == 2 })
	// The partly failed message is logged as failed after its DSN was
	// queued, so the DSN may be delivered before that line is written.
	for _, code := range []string{"AADSTS7000215", "AADSTS700027", "cached token invalidated", "4.7.0", "5.1.10"} {
		testkit.WaitFor(ctx, t, "the log to mention "+code+" (else the run did not exercise that failure)", func() bool {
			return strings.Contains(r.logs.String(), code)
		})
	}
	if !strings.Contains(r.transcripts.String(), "550 5.7.1") {
		t.Error("the listener's replies hold no error reply")
	}
	if !strings.Contains(r.logs.String(), "level=DEBUG") {
		t.Error("no debug lines were logged")
	}

	var needles []needle
	needles = append(needles, secretNeedles("client secret", clientSec)...)
	needles = append(needles, secretNeedles("wrong client secret", wrongSec)...)
	needles = append(needles, secretNeedles("PFX password", pfxPass)...)
	needles = append(needles, keyNeedles(t, "PEM app key", pemFile, "")...)
	needles = append(needles, keyNeedles(t, "PFX app key", pfxFile, pfxPass)...)
	needles = append(needles, keyNeedles(t, "not-uploaded key", noCertFile, "")...)
	tokens := r.rec.Tokens()
	// The secret app got two (one refused and invalidated), pem and pfx one each.
	if len(tokens) < 4 {
		t.Errorf("only %d distinct tokens were handed out; the run did not exercise the token paths", len(tokens))
	}
	for _, tok := range tokens {
		needles = append(needles, tokenNeedles(tok, []string{secretMbx, pemMbx, pfxMbx})...)
	}

	stacks := []haystack{{"the relay's log", r.logs.String()}, {"the listener's replies", r.transcripts.String()}}
	spoolDir := r.cfg.Spool.Dir
	nfiles := 0
	err = filepath.WalkDir(spoolDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		nfiles++
		rel, _ := filepath.Rel(spoolDir, path)
		stacks = append(stacks, haystack{"spool file " + rel, string(b)})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if nfiles < 4 { // two envelopes and two bodies at least
		t.Errorf("the spool holds %d files, want the stuck messages' envelopes and bodies", nfiles)
	}
	for _, st := range r.tokens.Statuses() {
		if st.LastError != nil {
			stacks = append(stacks, haystack{"token source error of " + st.App, st.LastError.Error()})
		}
	}
	for i, m := range emu.Delivered() {
		stacks = append(stacks, haystack{fmt.Sprintf("delivered message %d (to %s)", i, m.Mailbox), string(m.Data)})
	}
	for _, leak := range findLeaks(needles, stacks) {
		t.Error(leak)
	}

	// The checker itself finds what it looks for.
	planted := []haystack{{"planted", "x " + url.QueryEscape(clientSec) + " " + tokens[0][:len(tokens[0])-1]}}
	if got := findLeaks(needles, planted); len(got) < 2 {
		t.Errorf("the leak checker missed planted secrets: %v", got)
	}
}
