package main

// Tests of `oauthrelay init` against the in-process Microsoft 365
// emulator: a scripted run and an interactive one each write a file that
// passes check and doctor and carries mail; a second run refuses to
// overwrite; the client secret never shows.

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/oauthrelay/oauthrelay/internal/msemu"
	"github.com/oauthrelay/oauthrelay/internal/msemu/emutest"
	"github.com/oauthrelay/oauthrelay/internal/testkit"
)

const (
	initTenant  = "7d3c1b2a-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
	initClient  = "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"
	initSecret  = "Init~secret.VALUE_9876543210abc"
	initMailbox = "helpdesk@contoso.test"
	initSendAs1 = "noreply@contoso.test"
	initSendAs2 = "scanner@contoso.test"
)

// initEnv is an emulator and a directory for init's files.
type initEnv struct {
	t      *testing.T
	emu    *msemu.Emulator
	dir    string
	caFile string
	path   string // the config init writes
}

func newInitEnv(t *testing.T) *initEnv {
	t.Helper()
	emu := emutest.Start(t, msemu.Options{Logger: slog.New(slog.DiscardHandler)})
	dir := t.TempDir()
	e := &initEnv{t: t, emu: emu, dir: dir, caFile: filepath.Join(dir, "emulator-ca.pem"), path: filepath.Join(dir, "etc", "config.toml")}
	if err := os.WriteFile(e.caFile, emu.CACertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	return e
}

// emulatorFlags point init and the file it writes at the emulator, with
// the relay on a free port and the spool in the test's directory.
func (e *initEnv) emulatorFlags() []string {
	return []string{"-config", e.path, "--authority", e.emu.Authority(), "--ca-file", e.caFile,
		"--upstream", e.emu.SMTPAddr(), "--graph-url", e.emu.GraphURL(), "--hve-address", e.emu.HVEAddr(),
		"--listen", "127.0.0.1:0", "--spool", filepath.Join(e.dir, "spool"),
		// bcrypt's default cost takes many seconds under the race detector.
		"--bcrypt-cost", "4"}
}

// secretFile writes the client secret where an admin would keep it.
func (e *initEnv) secretFile() string {
	p := filepath.Join(e.dir, "pasted.secret")
	if err := os.WriteFile(p, []byte(initSecret+"\n"), 0o600); err != nil {
		e.t.Fatal(err)
	}
	return p
}

// init runs `oauthrelay init` with stdin and returns its exit code and
// output.
func (e *initEnv) init(stdin string, args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := runInit(strings.NewReader(stdin), args, &out, &errb)
	e.t.Logf("init %s\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), out.String(), errb.String())
	return code, out.String(), errb.String()
}

// noSecret fails if the client secret is in any of the texts or in the
// written configuration.
func (e *initEnv) noSecret(texts ...string) {
	e.t.Helper()
	cfg, _ := os.ReadFile(e.path)
	for i, s := range append(texts, string(cfg)) {
		if strings.Contains(s, initSecret) {
			e.t.Errorf("text %d (the last is the config file) holds the client secret", i)
		}
	}
}

// checkFiles checks the modes and that `check` accepts the file.
func (e *initEnv) checkFiles() {
	e.t.Helper()
	st, err := os.Stat(e.path)
	if err != nil {
		e.t.Fatal(err)
	}
	if m := st.Mode().Perm(); m != 0o600 {
		e.t.Errorf("config mode %o, want 0600", m)
	}
	if code, out, errOut := oauthrelay("check", "-config", e.path); code != 0 {
		e.t.Fatalf("check: exit %d\n%s%s", code, out, errOut)
	}
}

// deliver starts the relay on the written file, sends one message from
// `from` as the legacy application would (with AUTH when user is set),
// and waits for it at the emulator.
func (e *initEnv) deliver(user, password, from string) msemu.Message {
	e.t.Helper()
	r, _ := startInProcess(e.t, e.path, slog.LevelInfo)
	c, err := smtp.Dial(r.SMTPAddr().String())
	if err != nil {
		e.t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("legacy.app.test"); err != nil {
		e.t.Fatal(err)
	}
	if user != "" {
		if err := c.Auth(sasl.NewPlainClient("", user, password)); err != nil {
			e.t.Fatalf("AUTH PLAIN as %s: %v", user, err)
		}
	}
	msg := "From: <" + from + ">\r\nTo: <someone@example.org>\r\nSubject: invoice\r\n\r\nhello\r\n"
	if err := c.SendMail(from, []string{"someone@example.org"}, strings.NewReader(msg)); err != nil {
		e.t.Fatalf("send from %s: %v", from, err)
	}
	c.Quit()
	ctx, cancel := context.WithTimeout(context.Background(), opsWait)
	defer cancel()
	got, err := e.emu.WaitDelivered(ctx, 1)
	if err != nil {
		e.t.Fatalf("nothing arrived at the emulator: %v", err)
	}
	if got[0].Mailbox != initMailbox || got[0].MailFrom != from {
		e.t.Fatalf("delivered as mailbox %s from %s, want %s from %s", got[0].Mailbox, got[0].MailFrom, initMailbox, from)
	}
	return got[0]
}

func mustContain(t *testing.T, text string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(text, w) {
			t.Errorf("output lacks %q", w)
		}
	}
}

// The scripted path: flags and --yes write a file that passes check and
// doctor, delivers mail with the generated password, and prints the
// PowerShell lines with the real ids; a second run changes nothing.
func TestInitFlagsDeliver(t *testing.T) {
	e := newInitEnv(t)
	e.emu.AddMailbox(msemu.Mailbox{Address: initMailbox, SendAs: []string{initSendAs1, initSendAs2}})
	e.emu.Provision(initTenant, initClient, initSecret, initMailbox)
	args := append(e.emulatorFlags(), "--yes", "--tenant", initTenant, "--client-id", initClient,
		"--secret-file", e.secretFile(), "--mailbox", initMailbox, "--send-as", initSendAs1, "--send-as", initSendAs2,
		"--transport", "smtp", "--auth", "--client-name", "erp")
	code, out, errOut := e.init("", args...)
	if code != 0 {
		t.Fatalf("init: exit %d", code)
	}
	e.checkFiles()
	e.noSecret(out, errOut)
	secretPath := filepath.Join(filepath.Dir(e.path), "contoso.secret")
	if b, err := os.ReadFile(secretPath); err != nil || strings.TrimSpace(string(b)) != initSecret {
		t.Fatalf("secret file %s: %q, %v", secretPath, b, err)
	}
	if st, _ := os.Stat(secretPath); st.Mode().Perm() != 0o600 {
		t.Errorf("secret file mode %o, want 0600", st.Mode().Perm())
	}
	mustContain(t, out,
		"SMTP.SendAsApp",
		"https://login.microsoftonline.com/"+initTenant+"/adminconsent?client_id="+initClient,
		"Connect-MgGraph -TenantId "+initTenant,
		"New-ServicePrincipal -AppId "+initClient+" -ObjectId <enterprise-app-object-id>",
		"Enterprise applications → search "+initClient+" → Overview → Object ID",
		"Add-MailboxPermission -Identity "+initMailbox+" -User <enterprise-app-object-id> -AccessRights FullAccess",
		"Add-RecipientPermission -Identity "+initSendAs1+" -Trustee <enterprise-app-object-id> -AccessRights SendAs",
		"Add-RecipientPermission -Identity "+initSendAs2+" -Trustee <enterprise-app-object-id> -AccessRights SendAs",
		"Set-CASMailbox -Identity "+initMailbox+" -SmtpClientAuthenticationDisabled $false",
		// doctor ran on the written file and passed.
		"$ oauthrelay doctor -config "+e.path, "✓ AUTH XOAUTH2 as "+initMailbox, "Ready: oauthrelay serve")
	cfg, _ := os.ReadFile(e.path)
	t.Logf("written configuration:\n%s", cfg)
	mustContain(t, string(cfg), "client_secret_file = \""+secretPath+"\"", "password_hash = \"$2a$04$", "# ")
	m := regexp.MustCompile(`password  (\S+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatal("init printed no password")
	}
	if strings.Contains(string(cfg), m[1]) {
		t.Error("the config holds the generated password itself")
	}
	e.deliver("erp", m[1], initSendAs1)

	// A second run refuses, names the file and --force, and changes nothing.
	code, out2, errOut := e.init("", args...)
	if code != 1 {
		t.Fatalf("second init: exit %d, want 1", code)
	}
	mustContain(t, errOut, e.path, "--force", "nothing was changed")
	if after, _ := os.ReadFile(e.path); !bytes.Equal(after, cfg) {
		t.Error("the second run changed the configuration")
	}
	e.noSecret(out2, errOut)

	// --force replaces it (with a new password).
	code, out3, _ := e.init("", append(args, "--force", "--no-doctor")...)
	if code != 0 {
		t.Fatalf("init --force: exit %d", code)
	}
	if after, _ := os.ReadFile(e.path); bytes.Equal(after, cfg) {
		t.Error("--force left the configuration as it was")
	}
	e.noSecret(out3)
}

// The interactive path, fed on a pipe: wrong answers are asked again, the
// secret is read but never shown, and a trusted-network client results.
// A second interactive run asks before replacing the file.
func TestInitInteractive(t *testing.T) {
	e := newInitEnv(t)
	e.emu.AddMailbox(msemu.Mailbox{Address: initMailbox, SendAs: []string{initSendAs1, initSendAs2}})
	e.emu.Provision(initTenant, initClient, initSecret, initMailbox)
	answers := strings.Join([]string{
		"not a tenant", initTenant, // asked again after a wrong answer
		"12345", initClient,
		"",                                     // credential: 1 = a client secret
		"00000000-1111-4222-8333-444444444444", // a Secret ID, refused
		initSecret,
		initMailbox,
		initSendAs1 + ", " + initSendAs2,
		"",                  // transport: smtp
		"2", "127.0.0.1/32", // trusted by network
		"printer",
		"y", // run doctor
	}, "\n") + "\n"
	code, out, errOut := e.init(answers, e.emulatorFlags()...)
	if code != 0 {
		t.Fatalf("init: exit %d", code)
	}
	e.checkFiles()
	e.noSecret(out, errOut)
	mustContain(t, out, "Tenant: ", "is neither a tenant id", "not an id like", "that is a Secret ID",
		"Client secret Value (not echoed): ", "✓ AUTH XOAUTH2 as "+initMailbox,
		"Add-RecipientPermission -Identity "+initSendAs2, "no login: connections from 127.0.0.1/32 are trusted")
	cfg, _ := os.ReadFile(e.path)
	mustContain(t, string(cfg), `networks = ["127.0.0.1/32"]`, `name = "printer"`, `send_as = ["noreply@contoso.test", "scanner@contoso.test"]`)
	if strings.Contains(string(cfg), "password_hash =") {
		t.Error("a trusted-network client got a password")
	}
	e.deliver("", "", initSendAs2)

	// Again: the file exists, the answer is no, nothing changes.
	code, out, errOut = e.init("n\n", e.emulatorFlags()...)
	if code != 1 {
		t.Fatalf("second interactive init: exit %d, want 1", code)
	}
	mustContain(t, out, e.path+" already exists. Replace it [y/N]")
	mustContain(t, errOut, "nothing was changed")
	if after, _ := os.ReadFile(e.path); !bytes.Equal(after, cfg) {
		t.Error("declining changed the configuration")
	}
	// Input that ends early writes nothing.
	os.Remove(e.path)
	if code, _, errOut = e.init(initTenant+"\n", e.emulatorFlags()...); code != 1 || !strings.Contains(errOut, "standard input ended") {
		t.Fatalf("truncated answers: exit %d, %s", code, errOut)
	}
	if _, err := os.Stat(e.path); err == nil {
		t.Error("truncated answers wrote a configuration")
	}
}

// --cert-new makes a certificate next to the config, which the app
// registration gets; doctor then signs in with it.
func TestInitCertNew(t *testing.T) {
	e := newInitEnv(t)
	code, out, errOut := e.init("", append(e.emulatorFlags(), "--yes", "--no-doctor", "--tenant", initTenant,
		"--client-id", initClient, "--cert-new", "--mailbox", initMailbox, "--networks", "127.0.0.1")...)
	if code != 0 {
		t.Fatalf("init: exit %d", code)
	}
	e.checkFiles()
	dir := filepath.Dir(e.path)
	cert := testkit.ReadCertificate(t, filepath.Join(dir, "oauthrelay.cer"))
	mustContain(t, out, "Upload certificate → "+filepath.Join(dir, "oauthrelay.cer"), "The portal must show thumbprint ", "oauthrelay doctor -config "+e.path)
	cfg, _ := os.ReadFile(e.path)
	mustContain(t, string(cfg), `certificate_file = "`+filepath.Join(dir, "oauthrelay.pem")+`"`)
	if regexp.MustCompile(`(?m)^client_secret`).Match(cfg) {
		t.Error("a certificate configuration sets a client secret too")
	}
	e.emu.AddApp(msemu.App{TenantID: initTenant, ClientID: initClient, Certificates: []*x509.Certificate{cert}, Consent: true, ServicePrincipal: true})
	e.emu.AddMailbox(msemu.Mailbox{Address: initMailbox, FullAccess: []string{initClient}})
	if code, out, errOut = oauthrelay("doctor", "-config", e.path); code != 0 {
		t.Fatalf("doctor: exit %d\n%s%s", code, out, errOut)
	}
}

// A Graph mailbox gets the Graph steps (Mail.Send, RBAC for Applications,
// SendAs with the mailbox as trustee) and passes doctor.
func TestInitGraph(t *testing.T) {
	e := newInitEnv(t)
	e.emu.AddMailbox(msemu.Mailbox{Address: initMailbox, SendAs: []string{initSendAs1}})
	e.emu.ProvisionGraph(initTenant, initClient, initSecret, initMailbox)
	code, out, errOut := e.init("", append(e.emulatorFlags(), "--yes", "--tenant", initTenant, "--client-id", initClient,
		"--secret-file", e.secretFile(), "--mailbox", initMailbox, "--send-as", initSendAs1, "--transport", "graph")...)
	if code != 0 {
		t.Fatalf("init: exit %d", code)
	}
	e.checkFiles()
	e.noSecret(out, errOut)
	mustContain(t, out, "Microsoft Graph → Application permissions →\n     Mail.Send",
		"/"+initTenant+"/adminconsent?client_id="+initClient,
		"Add-RecipientPermission -Identity "+initSendAs1+" -Trustee "+initMailbox+" -AccessRights SendAs",
		"New-ManagementScope -Name \"oauthrelay mailboxes\" -RecipientRestrictionFilter \"PrimarySmtpAddress -eq '"+initMailbox+"'\"",
		"New-ManagementRoleAssignment -App <enterprise-app-object-id> -Role \"Application Mail.Send\"",
		"✓ Graph would accept mail from "+initMailbox, "Ready: oauthrelay serve")
	steps, _, _ := strings.Cut(out, "$ oauthrelay doctor")
	for _, not := range []string{"SMTP.SendAsApp", "Set-CASMailbox", "Add-MailboxPermission"} {
		if strings.Contains(steps, not) {
			t.Errorf("Graph steps mention %s", not)
		}
	}
}

// A domain is resolved to the tenant id through the tenant's OpenID
// metadata; an unknown one is refused with Entra's reason. The emulator
// answers discovery only for registered tenant ids, so the domain is
// served here.
func TestInitTenantDomain(t *testing.T) {
	e := newInitEnv(t)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/contoso.test/v2.0/.well-known/openid-configuration" {
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, `{"error":"invalid_request","error_description":"AADSTS90002: Tenant 'x' not found.\r\nTrace ID: 1"}`)
			return
		}
		fmt.Fprintf(w, `{"issuer":"https://login.microsoftonline.com/%s/v2.0","token_endpoint":"https://login.microsoftonline.com/%[1]s/oauth2/v2.0/token"}`, initTenant)
	}))
	defer srv.Close()
	ca := filepath.Join(e.dir, "discovery-ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	base := []string{"-config", e.path, "--authority", srv.URL + "/", "--ca-file", ca, "--spool", filepath.Join(e.dir, "spool"),
		"--yes", "--no-doctor", "--client-id", initClient, "--secret-file", e.secretFile(), "--mailbox", initMailbox, "--networks", "127.0.0.1"}
	code, out, _ := e.init("", append(base, "--tenant", "contoso.test")...)
	if code != 0 {
		t.Fatalf("init: exit %d", code)
	}
	mustContain(t, out, "contoso.test is tenant "+initTenant)
	cfg, _ := os.ReadFile(e.path)
	mustContain(t, string(cfg), `tenant_id = "`+initTenant+`"`)

	os.Remove(e.path)
	code, _, errOut := e.init("", append(base, "--tenant", "fabrikam.test")...)
	if code != 1 {
		t.Fatalf("unknown domain: exit %d, want 1", code)
	}
	mustContain(t, errOut, "knows no tenant fabrikam.test", "AADSTS90002", "Directory (tenant) ID")
}

// --yes names every flag it lacks and writes nothing.
func TestInitYesMissingFlags(t *testing.T) {
	e := newInitEnv(t)
	code, _, errOut := e.init("", "-config", e.path, "--yes")
	if code != 2 {
		t.Fatalf("exit %d, want 2", code)
	}
	mustContain(t, errOut, "--tenant", "--client-id", "--secret-file", "--mailbox")
	if _, err := os.Stat(filepath.Dir(e.path)); err == nil {
		t.Error("init --yes without answers created files")
	}
}

// An HVE mailbox gets Mail.Send on Exchange Online and Add-HVEAppAccess,
// no SMTP AUTH switch, and passes doctor.
func TestInitHVE(t *testing.T) {
	e := newInitEnv(t)
	e.emu.ProvisionGraph(initTenant, initClient, initSecret, initMailbox)
	code, out, errOut := e.init("", append(e.emulatorFlags(), "--yes", "--tenant", initTenant, "--client-id", initClient,
		"--secret-file", e.secretFile(), "--mailbox", initMailbox, "--transport", "hve", "--networks", "127.0.0.1")...)
	if code != 0 {
		t.Fatalf("init: exit %d", code)
	}
	e.checkFiles()
	e.noSecret(out, errOut)
	mustContain(t, out, "Office 365 Exchange Online →\n     Application permissions → Mail.Send",
		"Add-HVEAppAccess -Identity "+initMailbox+" -AppIds \""+initClient+"\"",
		"New-ServicePrincipal -AppId "+initClient, "internal recipients only", "Ready: oauthrelay serve")
	steps, _, _ := strings.Cut(out, "$ oauthrelay doctor")
	for _, not := range []string{"SMTP.SendAsApp", "Set-CASMailbox"} {
		if strings.Contains(steps, not) {
			t.Errorf("HVE steps mention %s", not)
		}
	}
}
