package e2e

import (
	"bufio"
	"context"
	"encoding/base64"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/oauthrelay/oauthrelay/internal/msemu"
	"github.com/oauthrelay/oauthrelay/internal/testkit"
	"github.com/oauthrelay/oauthrelay/queue"
)

// An old printer: TLS 1.0 only, with RSA key exchange and AES-CBC, as
// Debian's openssl 3 plays it (its default security level forbids TLS 1.0,
// hence SECLEVEL=0), logging in with AUTH LOGIN.
const (
	printerUser     = "printer"
	printerPassword = "Printer-Pa55"
	printerMbx      = "scanner@contoso.com"
	oldCipher       = "AES128-SHA:@SECLEVEL=0" // TLS_RSA_WITH_AES_128_CBC_SHA
)

func needOpenSSL(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl is not installed (apt-get install openssl); test.sh installs it when run as root")
	}
	return p
}

// rsaCertificate makes the relay's certificate with openssl: RSA, as the
// certificate of a relay serving old devices must be.
func rsaCertificate(t *testing.T, openssl string) (certFile, keyFile string) {
	t.Helper()
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "relay.pem"), filepath.Join(dir, "relay.key")
	out, err := exec.Command(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
		"-subj", "/CN=relay.e2e.test", "-keyout", keyFile, "-out", certFile).CombinedOutput()
	if err != nil {
		t.Fatalf("openssl req: %v\n%s", err, out)
	}
	return certFile, keyFile
}

// startOldTLSRelay starts a relay with STARTTLS and implicit TLS, an RSA
// certificate, min_tls_version (empty: the default) and the printer's
// login.
func startOldTLSRelay(t *testing.T, openssl, minVersion string) (*testRelay, *msemu.Emulator) {
	t.Helper()
	emu := startEmulator(t, msemu.Options{})
	emu.Provision(tenantID, secretApp, clientSec, printerMbx)
	cert, key := rsaCertificate(t, openssl)
	listen := "tls_address = \"127.0.0.1:0\"\ntls_cert_file = \"" + cert + "\"\ntls_key_file = \"" + key + "\"\n"
	if minVersion != "" {
		listen += "min_tls_version = \"" + minVersion + "\"\n"
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(printerPassword), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	r := startRelay(t, emu, relayOptions{
		Listen:    listen,
		Apps:      []testkit.App{{Name: "secret", TenantID: tenantID, ClientID: secretApp, ClientSecret: clientSec}},
		Mailboxes: []testkit.Mailbox{{Address: printerMbx, App: "secret"}},
		Clients:   []testkit.Client{{Name: "printer", Username: printerUser, PasswordHash: string(hash), Senders: []string{printerMbx}}},
	})
	return r, emu
}

// sClient is an openssl s_client session: lines written to it go to the
// relay inside TLS, and its standard output is what the relay answers.
type sClient struct {
	t   *testing.T
	in  io.WriteCloser
	out *bufio.Reader
	cmd *exec.Cmd
	err *testkit.SyncBuffer
}

// startSClient runs openssl s_client -tls1 against addr, with STARTTLS
// when starttls is set.
func startSClient(t *testing.T, ctx context.Context, openssl, addr string, starttls bool) *sClient {
	t.Helper()
	args := []string{"s_client", "-connect", addr, "-tls1", "-cipher", oldCipher, "-quiet", "-nocommands", "-crlf", "-verify_quiet"}
	if starttls {
		args = append(args, "-starttls", "smtp", "-name", "printer.e2e.test")
	}
	cmd := exec.CommandContext(ctx, openssl, args...)
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	s := &sClient{t: t, in: in, out: bufio.NewReader(out), cmd: cmd, err: &testkit.SyncBuffer{}}
	cmd.Stderr = s.err
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Close(); cmd.Process.Kill(); cmd.Wait() })
	return s
}

// reply reads one SMTP reply; "" when s_client ended (a failed handshake).
func (s *sClient) reply() string {
	var lines []string
	for {
		l, err := s.out.ReadString('\n')
		l = strings.TrimRight(l, "\r\n")
		if err != nil {
			return strings.Join(append(lines, l), "\n")
		}
		lines = append(lines, l)
		if len(l) < 4 || l[3] != '-' {
			return strings.Join(lines, "\n")
		}
	}
}

// expect sends line (unless empty) and checks that the reply starts with
// want.
func (s *sClient) expect(line, want string) {
	s.t.Helper()
	if line != "" {
		io.WriteString(s.in, line+"\n")
	}
	if got := s.reply(); !strings.HasPrefix(got, want) {
		s.t.Fatalf("%q: got %q, want %q; openssl said:\n%s", line, got, want, s.err.String())
	}
}

// printerSends is the printer's conversation after TLS: AUTH LOGIN and a
// scan.
func (s *sClient) printerSends(subject string) {
	s.t.Helper()
	b64 := base64.StdEncoding.EncodeToString
	s.expect("EHLO printer.e2e.test", "250")
	s.expect("AUTH LOGIN", "334")
	s.expect(b64([]byte(printerUser)), "334")
	s.expect(b64([]byte(printerPassword)), "235")
	s.expect("MAIL FROM:<"+printerMbx+">", "250")
	s.expect("RCPT TO:<someone@example.org>", "250")
	s.expect("DATA", "354")
	io.WriteString(s.in, "From: "+printerMbx+"\nTo: someone@example.org\nSubject: "+subject+"\n\nScanned document.\n")
	s.expect(".", "250")
	s.expect("QUIT", "221")
}

func TestOldPrinterTLS10RefusedByDefault(t *testing.T) {
	openssl := needOpenSSL(t)
	ctx := ctxFor(t)
	r, _ := startOldTLSRelay(t, openssl, "")
	for _, starttls := range []bool{true, false} {
		addr := r.svc.TLSAddr().String()
		if starttls {
			addr = r.addr
		}
		s := startSClient(t, ctx, openssl, addr, starttls)
		if got := s.reply(); got != "" {
			t.Errorf("starttls=%v: a TLS 1.0 client read %q", starttls, got)
		}
		if err := s.cmd.Wait(); err == nil {
			t.Errorf("starttls=%v: openssl s_client -tls1 succeeded against the default min_tls_version", starttls)
		}
		if !strings.Contains(s.err.String(), "alert protocol version") {
			t.Errorf("starttls=%v: openssl did not report a protocol version alert:\n%s", starttls, s.err.String())
		}
	}
	// The handshake fails inside crypto/tls; the log must still say which
	// client, and what to change. Both attempts were answered above, so
	// both lines are written.
	want := `msg="refused: client offers only an old TLS version" remote=127.0.0.1:`
	if logs := r.logs.String(); strings.Count(logs, want) != 2 || !strings.Contains(logs, `client_max_tls_version=1.0 min_tls_version=1.2`) {
		t.Errorf("want two log lines %q naming TLS 1.0 against 1.2:\n%s", want, logs)
	}
	if n := len(r.ids(queue.Incoming)) + len(r.ids(queue.Active)) + len(r.ids(queue.Deferred)); n != 0 {
		t.Errorf("%d messages queued", n)
	}
}

func TestOldPrinterTLS10Delivered(t *testing.T) {
	openssl := needOpenSSL(t)
	ctx := ctxFor(t)
	r, emu := startOldTLSRelay(t, openssl, "1.0")
	startSClient(t, ctx, openssl, r.addr, true).printerSends("over STARTTLS")
	implicit := startSClient(t, ctx, openssl, r.svc.TLSAddr().String(), false)
	implicit.expect("", "220")
	implicit.printerSends("over implicit TLS")

	msgs, err := emu.WaitDelivered(ctx, 2)
	if err != nil {
		t.Fatalf("delivered %d of 2: %v", len(msgs), err)
	}
	for i, subj := range []string{"over STARTTLS", "over implicit TLS"} {
		if !strings.Contains(string(msgs[i].Data), "Subject: "+subj) || !strings.EqualFold(msgs[i].Mailbox, printerMbx) {
			t.Errorf("delivered message %d: mailbox %s\n%s", i, msgs[i].Mailbox, msgs[i].Data)
		}
	}
	logs := r.logs.String()
	if strings.Count(logs, `msg="legacy TLS session" remote=127.0.0.1 tls_version=1.0 cipher=TLS_RSA_WITH_AES_128_CBC_SHA`) != 2 {
		t.Errorf("want two legacy TLS session lines naming TLS 1.0 and the cipher:\n%s", logs)
	}
	if !strings.Contains(logs, "min_tls_version lets TLS 1.0 clients in") {
		t.Errorf("no warning at start about min_tls_version:\n%s", logs)
	}
	// Only TLS 1.0 sessions here, so the sum is theirs.
	if got := counterValue(t, r.svc.Metrics().Registry(), "oauthrelay_tls_sessions_total"); got != 2 {
		t.Errorf(`oauthrelay_tls_sessions_total = %v, want 2 (version="1.0")`, got)
	}
}
