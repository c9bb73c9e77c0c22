package interop

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/oauthrelay/oauthrelay/config"
	"github.com/oauthrelay/oauthrelay/delivery"
	"github.com/oauthrelay/oauthrelay/internal/msemu"
	"github.com/oauthrelay/oauthrelay/internal/msemu/emutest"
	"github.com/oauthrelay/oauthrelay/internal/service"
	"github.com/oauthrelay/oauthrelay/internal/testkit"
	"github.com/oauthrelay/oauthrelay/queue"
)

// The message every client sends: a non-ASCII subject, a sender with a
// display name, two recipients (To and Cc) and a binary attachment.
const (
	tenantID  = "8d5d2a5b-3f0e-4c1a-9a59-2c1f5e0b7a11"
	appID     = "3b9f1c2e-7a44-4d0e-b1a2-6f0c9e8d7b55"
	appSecret = "Qx8~interop.secret-value"

	user     = "app"
	password = "interop-Pass_word+42/=" // ASCII: smtplib cannot send others (see README)

	from     = "billing@contoso.com"
	fromName = "Buchhaltung Müller"
	to       = "customer@example.com"
	cc       = "accounts@example.org"
	subject  = "Grüße – Rechnung №42"
	text     = "Guten Tag,\n\nanbei die Rechnung №42.\n\nMit freundlichen Grüßen\n"
	attName  = "Rechnung-42.pdf"
)

// attachment is binary, with every byte value and lines a naive client
// would mangle (a lone dot, CR without LF, NUL).
func attachment() []byte {
	b := []byte("%PDF-1.4\n%\xe2\xe3\xcf\xd3\n.\r\n.\r\nfrom here\x00\r")
	for i := range 3000 {
		b = append(b, byte(i*7+i/256))
	}
	return b
}

// Timeouts: a client's whole run, and each test.
const (
	clientTimeout = 90 * time.Second
	testTimeout   = 3 * time.Minute
)

// relay is an emulator and a relay in front of it that take the clients'
// mail: a [[client]] with a password, STARTTLS on addr and implicit TLS on
// tlsAddr, with a certificate from a test CA the clients must trust.
type relay struct {
	t       *testing.T
	emu     *msemu.Emulator
	spool   *queue.Spool
	addr    string
	tlsAddr string
	// caFile is the test CA's PEM; attFile the attachment to send.
	caFile  string
	attFile string
	logs    *testkit.SyncBuffer
}

var (
	hashOnce sync.Once
	hash     string
)

// startRelay starts the emulator and the relay, as `oauthrelay serve`
// would from the configuration written for them.
func startRelay(t *testing.T) *relay {
	t.Helper()
	return startRelayWith(t, false)
}

// startRelayWith is startRelay; with trustLoopback, a second client,
// "lan", may also send from 127.0.0.1 without AUTH or TLS, as printers
// and old applications on a trusted network do.
func startRelayWith(t *testing.T, trustLoopback bool) *relay {
	t.Helper()
	return startRelayTLS(t, trustLoopback, false)
}

// startRelayTLS is startRelayWith; with oldTLS the relay takes TLS 1.0
// clients (min_tls_version = "1.0") with an RSA certificate, as an admin
// sets it up for old devices.
func startRelayTLS(t *testing.T, trustLoopback, oldTLS bool) *relay {
	t.Helper()
	hashOnce.Do(func() {
		h, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
		if err != nil {
			panic(err)
		}
		hash = string(h)
	})
	emu := emutest.Start(t, msemu.Options{})
	emu.Provision(tenantID, appID, appSecret, from)
	ca, listenExtra := testkit.NewCA(t), ""
	if oldTLS {
		ca, listenExtra = testkit.NewRSACA(t), `min_tls_version = "1.0"`+"\n"
	}
	certFile, keyFile := ca.Leaf(t, "localhost", "127.0.0.1").Files(t)
	dir := t.TempDir()
	kc := testkit.Config{
		Dir:      dir,
		Emulator: emu,
		Listen: testkit.Listen{Address: "127.0.0.1:0", TLSAddress: "127.0.0.1:0", Hostname: "relay.interop.test",
			TLSCertFile: certFile, TLSKeyFile: keyFile, Extra: listenExtra},
		Spool:     testkit.Spool{MinRetryDelay: "1s", MaxRetryDelay: "2s", MaxAge: "1h"},
		Upstream:  testkit.Upstream{Timeout: "30s"},
		LogLevel:  "debug",
		Apps:      []testkit.App{{Name: "contoso", TenantID: tenantID, ClientID: appID, ClientSecret: appSecret}},
		Mailboxes: []testkit.Mailbox{{Address: from, App: "contoso"}},
		Clients:   []testkit.Client{{Name: "app", Username: user, PasswordHash: hash, Senders: []string{from}}},
	}
	if trustLoopback {
		kc.Clients = append(kc.Clients, testkit.Client{Name: "lan", Networks: []string{"127.0.0.1"}, Senders: []string{from}})
	}
	cfg, err := config.Load(kc.Write(t))
	if err != nil {
		t.Fatalf("config: %v\n%s", err, kc.TOML(t))
	}
	log, logs := testkit.DebugLogger(t)
	svc, err := service.Start(cfg, service.Options{Logger: log,
		Delivery: delivery.Options{PollInterval: 100 * time.Millisecond, ShutdownGrace: 5 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Shutdown(10 * time.Second) })
	r := &relay{t: t, emu: emu, spool: svc.Spool(), addr: svc.SMTPAddr().String(), tlsAddr: svc.TLSAddr().String(),
		caFile: filepath.Join(dir, "relay-ca.pem"), attFile: filepath.Join(dir, attName), logs: logs}
	for f, b := range map[string][]byte{r.caFile: ca.PEM, r.attFile: attachment()} {
		if err := os.WriteFile(f, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

// Security is how a client protects the connection.
type security string

const (
	startTLS    security = "starttls"
	implicitTLS security = "tls"
	// noTLS is neither TLS nor AUTH: the trusted-network client.
	noTLS security = "none"
)

// pick is ifStartTLS for STARTTLS and ifImplicit for implicit TLS: the
// one setting each client spells differently for the two.
func (sec security) pick(ifStartTLS, ifImplicit string) string {
	if sec == implicitTLS {
		return ifImplicit
	}
	return ifStartTLS
}

// secretFile writes a client's settings file holding the password where
// only the owner can read it, as an admin would, and returns its path.
func secretFile(t *testing.T, name, content string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(f, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// port is the relay's port for sec.
func (r *relay) port(sec security) string {
	a := r.addr
	if sec == implicitTLS {
		a = r.tlsAddr
	}
	return a[strings.LastIndexByte(a, ':')+1:]
}

// env is what every client program reads: where to connect, how, whom
// to trust and what to send. The password travels in the environment,
// never on a command line.
func (r *relay) env(sec security) []string {
	return append(os.Environ(),
		"LC_ALL=C.UTF-8",
		"SMTP_HOST=127.0.0.1",
		"SMTP_PORT="+r.port(sec),
		"SMTP_SECURITY="+string(sec),
		"SMTP_CA_FILE="+r.caFile,
		"SMTP_USER="+user,
		"SMTP_PASSWORD="+password,
		"MAIL_FROM="+from,
		"MAIL_FROM_NAME="+fromName,
		"MAIL_TO="+to,
		"MAIL_CC="+cc,
		"MAIL_SUBJECT="+subject,
		"MAIL_TEXT="+text,
		"MAIL_ATTACHMENT="+r.attFile,
	)
}

// run runs a client program with the environment for sec (and stdin if
// not empty) and fails the test with its output if it fails.
func (r *relay) run(sec security, stdin string, name string, args ...string) string {
	r.t.Helper()
	return r.runWith(sec, nil, stdin, name, args...)
}

// runEnv is run with more environment variables (later ones win).
func (r *relay) runEnv(sec security, env []string, name string, args ...string) string {
	r.t.Helper()
	return r.runWith(sec, env, "", name, args...)
}

func (r *relay) runWith(sec security, env []string, stdin string, name string, args ...string) string {
	r.t.Helper()
	out, err := r.tryStdin(sec, env, stdin, name, args...)
	if err != nil {
		r.t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

// try runs a client program and returns its output and error.
func (r *relay) try(sec security, env []string, name string, args ...string) (string, error) {
	return r.tryStdin(sec, env, "", name, args...)
}

func (r *relay) tryStdin(sec security, env []string, stdin string, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(r.env(sec), env...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// arrived waits for the one message the client sent to reach the
// emulator and checks it (see checkMessage).
func (r *relay) arrived(opt checks) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if _, err := r.emu.WaitDelivered(ctx, 1); err != nil {
		r.t.Fatalf("no message reached the emulator: %v", err)
	}
	// The client has exited, so all it sent is spooled: once the queue is
	// empty every copy has been delivered, and a duplicate (a client that
	// sent twice, a delivery repeated) would be counted below.
	testkit.WaitFor(ctx, r.t, "an empty queue", func() bool {
		for _, st := range []queue.State{queue.Incoming, queue.Active, queue.Deferred} {
			if ids, err := r.spool.IDs(st); err != nil || len(ids) > 0 {
				return false
			}
		}
		return true
	})
	msgs := r.emu.Delivered()
	if len(msgs) != 1 {
		r.t.Fatalf("%d messages reached the emulator, want 1", len(msgs))
	}
	checkMessage(r.t, msgs[0], opt)
}

// need returns the path of program, or skips the test saying how to
// install it.
func need(t *testing.T, program, install string) string {
	t.Helper()
	p, err := exec.LookPath(program)
	if err != nil {
		t.Skipf("%s is not installed (%s)", program, install)
	}
	return p
}

// version logs the client's version, read from the installed program,
// for the README's table.
func version(t *testing.T, what string, name string, args ...string) {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	line := strings.TrimSpace(string(out))
	if i := strings.IndexByte(line, '\n'); i >= 0 {
		line = line[:i]
	}
	if err != nil {
		line = fmt.Sprintf("unknown (%v: %s)", err, line)
	}
	t.Logf("%s version: %s", what, line)
}

// debVersion is the version of an installed Debian package.
func debVersion(t *testing.T, what, pkg string) {
	t.Helper()
	version(t, what, "dpkg-query", "-W", "-f=${Package} ${Version}", pkg)
}

// eachSecurity runs f as a subtest for each way of securing the session.
func eachSecurity(t *testing.T, secs []security, f func(t *testing.T, r *relay, sec security)) {
	for _, sec := range secs {
		t.Run(string(sec), func(t *testing.T) {
			f(t, startRelay(t), sec)
		})
	}
}

// both is STARTTLS and implicit TLS.
var both = []security{startTLS, implicitTLS}
