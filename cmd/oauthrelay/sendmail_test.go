package main

// Tests of `oauthrelay sendmail` against a real relay in front of the
// Microsoft 365 emulator: what arrives at the emulator, and the exit codes
// and sentences a refused submission gives.

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/oauthrelay/oauthrelay/internal/msemu"
	"github.com/oauthrelay/oauthrelay/internal/msemu/emutest"
	"github.com/oauthrelay/oauthrelay/internal/testkit"
)

const (
	smMailbox = "helpdesk@contoso.com"
	smSendAs  = "noreply@contoso.com"
)

// smEnv is an emulator and a relay configuration for sendmail tests.
type smEnv struct {
	t    *testing.T
	emu  *msemu.Emulator
	dir  string
	path string
	addr string
}

// newSMEnv writes a configuration whose listener is on a free port, with
// extra appended (clients, [sendmail], [listen] TLS keys in listenExtra).
func newSMEnv(t *testing.T, listenExtra, extra string) *smEnv {
	t.Helper()
	emu := emutest.Start(t, msemu.Options{})
	emu.Provision(opsTenant, opsClient, opsSecret)
	emu.AddMailbox(msemu.Mailbox{Address: smMailbox, FullAccess: []string{opsClient}, SendAs: []string{smSendAs}})
	dir := t.TempDir()
	e := &smEnv{t: t, emu: emu, dir: dir, path: filepath.Join(dir, "config.toml"), addr: freePort(t)}
	ca := filepath.Join(dir, "ca.pem")
	secret := filepath.Join(dir, "contoso.secret")
	if err := os.WriteFile(ca, emu.CACertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(secret, []byte(opsSecret), 0o600); err != nil {
		t.Fatal(err)
	}
	src := fmt.Sprintf(`[listen]
address = %q
hostname = "relay.sendmail.test"
%s
[spool]
dir = %q

[upstream]
address = %q
ca_file = %q

[[app]]
name = "contoso"
tenant_id = %q
client_id = %q
client_secret_file = %q
authority = %q

[[mailbox]]
address = %q
app = "contoso"
send_as = [%q]
%s`, e.addr, listenExtra, filepath.Join(dir, "spool"), emu.SMTPAddr(), ca, opsTenant, opsClient, secret, emu.Authority(), smMailbox, smSendAs, extra)
	if err := os.WriteFile(e.path, []byte(src), 0o640); err != nil {
		t.Fatal(err)
	}
	return e
}

// start runs the relay as serve does until the test ends.
func (e *smEnv) start() *testkit.SyncBuffer {
	e.t.Helper()
	_, logs := startInProcess(e.t, e.path, slog.LevelInfo)
	return logs
}

// sendmail runs the command in-process with msg on its standard input.
func sendmail(t *testing.T, msg string, args ...string) (int, string) {
	t.Helper()
	old := sendmailStdin
	sendmailStdin = strings.NewReader(msg)
	defer func() { sendmailStdin = old }()
	var out, errb bytes.Buffer
	code := run(append([]string{"sendmail"}, args...), &out, &errb)
	return code, errb.String()
}

// delivered waits for the n-th message at the emulator.
func (e *smEnv) delivered(n int) msemu.Message {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), opsWait)
	defer cancel()
	msgs, err := e.emu.WaitDelivered(ctx, n)
	if err != nil {
		e.t.Fatalf("waiting for message %d at the emulator: %v", n, err)
	}
	return msgs[n-1]
}

const localClient = `
[[client]]
name = "local"
networks = ["127.0.0.1"]
senders = ["noreply@contoso.com"]
`

// TestSendmailDelivers: the command line, with To: and a Bcc:,
// arrives at the emulator with both recipients in the envelope, no Bcc:
// field, and the Date:, Message-ID: and From: it lacked. The
// configuration comes from OAUTHRELAY_CONFIG.
func TestSendmailDelivers(t *testing.T) {
	e := newSMEnv(t, "", localClient)
	e.start()
	t.Setenv("OAUTHRELAY_CONFIG", e.path)
	code, stderr := sendmail(t, "Subject: t\nTo: someone@example.org\nBcc: hidden@example.org\n\nhi\n.\nnot part of it\n", "-t", "-f", smSendAs)
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
	m := e.delivered(1)
	data := string(m.Data)
	if m.MailFrom != smSendAs || strings.Join(m.Rcpts, ",") != "someone@example.org,hidden@example.org" {
		t.Errorf("envelope %s -> %v", m.MailFrom, m.Rcpts)
	}
	for _, want := range []string{"\r\nSubject: t\r\n", "\r\nTo: someone@example.org\r\n", "From: <noreply@contoso.com>\r\n", "Message-Id: <", "@contoso.com>\r\n", "Date: ", "\r\n\r\nhi\r\n"} {
		if !strings.Contains(data, want) {
			t.Errorf("delivered message lacks %q:\n%s", want, data)
		}
	}
	if strings.Contains(data, "hidden@") || strings.Contains(data, "not part of it") {
		t.Errorf("the Bcc: field, or text after the lone dot, was passed on:\n%s", data)
	}
}

// TestSendmailRefusedSender: a sender the client may not use exits
// EX_NOPERM with the relay's own sentence; an unreachable relay exits
// EX_TEMPFAIL; a refused recipient EX_NOUSER (and nothing is sent); a
// message the relay refuses, or a broken header, EX_DATAERR; no recipient
// EX_USAGE.
func TestSendmailRefusedSender(t *testing.T) {
	e := newSMEnv(t, "", localClient)
	msg := "To: someone@example.org\nSubject: t\n\nhi\n"
	if code, stderr := sendmail(t, msg, "-config", e.path, "-t", "-f", smSendAs); code != exTempFail || !strings.Contains(stderr, "cannot reach the relay at "+e.addr) {
		t.Errorf("relay not running: exit %d, want %d (EX_TEMPFAIL)\n%s", code, exTempFail, stderr)
	}
	e.start()
	code, stderr := sendmail(t, msg, "-config", e.path, "-t", "-f", "boss@contoso.com")
	if code != exNoPerm || !strings.Contains(stderr, `550 5.7.1 Sender <boss@contoso.com> is not allowed for client "local"`) {
		t.Errorf("refused sender: exit %d, want %d (EX_NOPERM) and the relay's sentence\n%s", code, exNoPerm, stderr)
	}
	if code, stderr := sendmail(t, msg, "-config", e.path, "-f", smSendAs, "someone@example.org", "nobody"); code != exNoUser || !strings.Contains(stderr, "recipient <nobody>: the relay answered 501 5.1.3 ") || !strings.Contains(stderr, "nothing was sent") {
		t.Errorf("refused recipient: exit %d, want %d (EX_NOUSER)\n%s", code, exNoUser, stderr)
	}
	if code, stderr := sendmail(t, "From: <noreply@contoso.com>\nFrom: <helpdesk@contoso.com>\n\nhi\n", "-config", e.path, "-f", smSendAs, "someone@example.org"); code != exDataErr || !strings.Contains(stderr, "550 5.6.0 The message has 2 From: fields") {
		t.Errorf("two From: fields: exit %d, want %d (EX_DATAERR)\n%s", code, exDataErr, stderr)
	}
	if code, stderr := sendmail(t, "Subject: t\n\nhi\n", "-config", e.path, "-f", smSendAs); code != exUsage || !strings.Contains(stderr, "no recipients") {
		t.Errorf("no recipients: exit %d\n%s", code, stderr)
	}
	if code, stderr := sendmail(t, "To: someone@example.org\nSubject: t\n broken: \nnot a field\n\nhi\n", "-config", e.path, "-t"); code != exDataErr {
		t.Errorf("malformed header: exit %d, want %d\n%s", code, exDataErr, stderr)
	}
	if code, stderr := sendmail(t, msg, "-config", e.path, "-bs"); code != exUsage {
		t.Errorf("-bs: exit %d, want %d\n%s", code, exUsage, stderr)
	}
	if n := len(e.emu.Delivered()); n != 0 {
		t.Errorf("%d messages arrived; every submission here was refused", n)
	}
}

// TestSendmailAsClientWithPassword: [sendmail] names a client that logs
// in; the listener requires TLS with a certificate of its own CA, and the
// command trusts exactly that certificate. A wrong password in the file is
// EX_NOPERM with the relay's 535, and check names the file and the fix.
func TestSendmailAsClientWithPassword(t *testing.T) {
	ca := testkit.NewCA(t)
	certFile, keyFile := ca.Leaf(t, "relay.internal.example").Files(t)
	hash, err := bcrypt.GenerateFromPassword([]byte("cron-password"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	pwFile := testkit.WriteFile(t, "sendmail.password", []byte("cron-password\n"))
	listen := fmt.Sprintf("tls_cert_file = %q\ntls_key_file = %q\nrequire_tls = true\n", certFile, keyFile)
	clients := fmt.Sprintf(`
[[client]]
name = "cron"
username = "cron"
password_hash = %q
senders = ["noreply@contoso.com"]
rewrite_from = "noreply@contoso.com"

[sendmail]
client = "cron"
password_file = %q
`, hash, pwFile)
	e := newSMEnv(t, listen, clients)
	e.start()
	// As cron calls it: no -f, an unqualified From: that rewrite_from
	// replaces, the recipient as an argument.
	code, stderr := sendmail(t, "From: root (Cron Daemon)\nTo: admin@example.org\nSubject: Cron <root@host> run-parts\n\nout\n", "-config", e.path, "-FCronDaemon", "-i", "-B8BITMIME", "-oem", "-v", "admin@example.org")
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
	if !strings.Contains(stderr, "STARTTLS: the relay's certificate") || !strings.Contains(stderr, `logged in as "cron"`) || strings.Contains(stderr, "cron-password") {
		t.Errorf("-v does not show the steps, or shows the password:\n%s", stderr)
	}
	m := e.delivered(1)
	if m.MailFrom != smSendAs || !strings.Contains(string(m.Data), "<noreply@contoso.com>\r\n") || !strings.Contains(string(m.Data), "\r\n\r\nout\r\n") {
		t.Errorf("delivered %s:\n%s", m.MailFrom, m.Data)
	}

	if err := os.WriteFile(pwFile, []byte("wrong\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, stderr = sendmail(t, "Subject: t\n\nhi\n", "-config", e.path, "admin@example.org")
	if code != exNoPerm || !strings.Contains(stderr, "535 5.7.8") {
		t.Errorf("wrong password: exit %d, want %d with the relay's 535\n%s", code, exNoPerm, stderr)
	}
	var out, errb bytes.Buffer
	if code := run([]string{"check", "-config", e.path}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "sendmail.password_file: the password in "+pwFile+" is not the one whose hash is client \"cron\"'s password_hash — fix: ") {
		t.Errorf("check with the wrong password file: exit %d\n%s", code, errb.String())
	}
}

// TestSendmailSymlink: the binary started through a link named sendmail
// is the sendmail command, with the options cron and PHP pass; an unknown
// -o option is ignored with a warning.
func TestSendmailSymlink(t *testing.T) {
	e := newSMEnv(t, "", localClient)
	e.start()
	link := filepath.Join(t.TempDir(), "sendmail")
	if err := os.Symlink(buildBinary(t), link); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(link, "-oi", "-odi", "-oXweird", "-t", "-f", smSendAs)
	cmd.Env = append(os.Environ(), "OAUTHRELAY_CONFIG="+e.path)
	cmd.Stdin = strings.NewReader("To: Someone <someone@example.org>\nSubject: php\n\n.\nline after a dot\n")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", link, err, out)
	}
	if !strings.Contains(string(out), "warning: ignoring unknown option -oXweird") {
		t.Errorf("no warning about -oXweird:\n%s", out)
	}
	m := e.delivered(1)
	if !strings.Contains(string(m.Data), "\r\n\r\n.\r\nline after a dot\r\n") || strings.Join(m.Rcpts, ",") != "someone@example.org" {
		t.Errorf("with -oi a lone dot is text; got %v:\n%s", m.Rcpts, m.Data)
	}
}

// TestSendmailCheck: check validates [sendmail] with the line, key and fix.
func TestSendmailCheck(t *testing.T) {
	for _, tt := range []struct{ extra, want string }{
		{"\n[sendmail]\nclient = \"nobody\"\n", `sendmail.client: no [[client]] is named "nobody" — fix: name one of the [[client]] entries ("local")`},
		{"\n[sendmail]\nclient = \"local\"\npassword_file = \"/nonexistent\"\n", `sendmail.password_file: client "local" has no username`},
		{"\n[sendmail]\npassword_file = \"/etc/x\"\n", "sendmail.password_file: is set but client is not"},
		{strings.Replace(localClient, "127.0.0.1", "10.0.0.0/8", 1) + "\n[sendmail]\nclient = \"local\"\n", `sendmail.client: oauthrelay sendmail connects from 127.0.0.1, which is not in client "local"'s networks — fix: add "127.0.0.1" to the client's networks`},
	} {
		extra := tt.extra
		if !strings.Contains(extra, "[[client]]") {
			extra = localClient + extra
		}
		e := newSMEnv(t, "", extra)
		var out, errb bytes.Buffer
		if code := run([]string{"check", "-config", e.path}, &out, &errb); code != 1 || !strings.Contains(errb.String(), tt.want) || !strings.Contains(errb.String(), e.path+":") {
			t.Errorf("check: exit %d, want 1 and %q\n%s", code, tt.want, errb.String())
		}
	}
}

// TestSendmailInput: how the input becomes the message, without a relay.
func TestSendmailInput(t *testing.T) {
	for _, tt := range []struct {
		name, in   string
		opts       sendmailOpts
		has, hasnt []string
		rcpts      string
	}{
		{"no header at all", "just a line\nand another\n", sendmailOpts{recipients: []string{"a@example.org, B <b@example.org>"}, from: "x@contoso.com", fromSet: true},
			[]string{"From: <x@contoso.com>\r\n", "\r\n\r\njust a line\nand another\n"}, nil, "a@example.org,b@example.org"},
		{"mbox From line and -F", "From someone Mon Jan  1 00:00:00 2026\nSubject: s\n\nbody\n", sendmailOpts{recipients: []string{"a@example.org"}, from: "x@contoso.com", fromSet: true, fullName: "Backup Job"},
			[]string{`From: "Backup Job" <x@contoso.com>`, "Subject: s\r\n"}, []string{"From someone"}, "a@example.org"},
		{"-t dedupes and keeps From:", "From: Me <me@contoso.com>\nTo: a@example.org\nCc: A@example.org, c@example.org\nDate: Mon, 1 Jan 2026 00:00:00 +0000\n\nx\n", sendmailOpts{extract: true},
			[]string{"From: Me <me@contoso.com>\r\n", "Date: Mon, 1 Jan 2026 00:00:00 +0000\r\n"}, []string{"Date: " + "Tue"}, "a@example.org,c@example.org"},
	} {
		m, err := readOutgoing(strings.NewReader(tt.in), &tt.opts)
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		var b bytes.Buffer
		if err := writeOutgoing(&b, m); err != nil {
			t.Fatal(err)
		}
		for _, w := range tt.has {
			if !strings.Contains(b.String(), w) {
				t.Errorf("%s: lacks %q:\n%s", tt.name, w, b.String())
			}
		}
		for _, w := range tt.hasnt {
			if strings.Contains(b.String(), w) {
				t.Errorf("%s: has %q:\n%s", tt.name, w, b.String())
			}
		}
		if got := strings.Join(m.rcpts, ","); got != tt.rcpts {
			t.Errorf("%s: recipients %s, want %s", tt.name, got, tt.rcpts)
		}
		if tt.opts.extract && m.from != "me@contoso.com" {
			t.Errorf("%s: envelope sender %q, want the From: address", tt.name, m.from)
		}
	}
}

// TestRecipientsRefusedMixed: one recipient refused for now and another
// for good ends with the permanent code, since the whole message would be
// refused again; only refusals that are all temporary say "try later".
func TestRecipientsRefusedMixed(t *testing.T) {
	temp := &submitError{exTempFail, "recipient <a@example.com>: the relay answered 451 4.3.0 try later"}
	user := &submitError{exNoUser, "recipient <b@example.com>: the relay answered 550 5.1.1 no such user"}
	perm := &submitError{exNoPerm, "recipient <c@example.com>: the relay answered 550 5.7.1 not allowed"}
	for _, tt := range []struct {
		name string
		in   []*submitError
		want int
	}{
		{"temporary then permanent", []*submitError{temp, user}, exNoUser},
		{"permanent then temporary", []*submitError{user, temp}, exNoUser},
		{"policy and recipient", []*submitError{user, perm, temp}, exNoPerm},
		{"all temporary", []*submitError{temp, temp}, exTempFail},
	} {
		got := recipientsRefused(tt.in)
		if got.code != tt.want {
			t.Errorf("%s: exit %d, want %d", tt.name, got.code, tt.want)
		}
		for _, e := range tt.in {
			if !strings.Contains(got.msg, e.msg) {
				t.Errorf("%s: message lacks %q:\n%s", tt.name, e.msg, got.msg)
			}
		}
		if !strings.HasSuffix(got.msg, "nothing was sent") {
			t.Errorf("%s: message %q", tt.name, got.msg)
		}
	}
}
