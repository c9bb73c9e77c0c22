package relay

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/oauthrelay/oauthrelay/config"
	"github.com/oauthrelay/oauthrelay/internal/testkit"
	"github.com/oauthrelay/oauthrelay/queue"
)

// Test clients and their passwords. The hashes are made once, at bcrypt's
// lowest cost, to keep the tests fast.
const (
	appPassword = "app-password"
	netPassword = "net-password"
)

var (
	hashOnce sync.Once
	appHash  string
	netHash  string
)

func hashes(t testing.TB) (string, string) {
	hashOnce.Do(func() {
		a, _ := bcrypt.GenerateFromPassword([]byte(appPassword), bcrypt.MinCost)
		n, _ := bcrypt.GenerateFromPassword([]byte(netPassword), bcrypt.MinCost)
		appHash, netHash = string(a), string(n)
	})
	return appHash, netHash
}

// testConfig is the relay configuration the tests run with. %s are the spool
// directory, the certificate and key, and the two client hashes; extra is
// added to [listen].
const testConfig = `[listen]
address = "127.0.0.1:0"
tls_address = "127.0.0.1:0"
hostname = "relay.test"
tls_cert_file = %q
tls_key_file = %q
%s

[spool]
dir = %q

[[app]]
name = "contoso"
tenant_id = "00000000-0000-0000-0000-000000000000"
client_id = "11111111-2222-3333-4444-555555555555"
client_secret = "not-a-real-secret"

[[mailbox]]
address = "helpdesk@contoso.com"
app = "contoso"
send_as = ["noreply@contoso.com", "scanner@contoso.com"]

[[mailbox]]
address = "sales@contoso.com"
app = "contoso"

# Logs in from anywhere.
[[client]]
name = "app"
username = "app"
password_hash = %q
senders = ["noreply@contoso.com", "helpdesk@contoso.com", "sales@contoso.com"]

# Logs in, but only from its network.
[[client]]
name = "erpnet"
username = "erpnet"
password_hash = %q
networks = ["10.0.0.0/24"]
senders = ["noreply@contoso.com"]

# Trusted by address, cannot set its sender.
[[client]]
name = "scanner"
networks = ["192.0.2.50"]
senders = ["scanner@contoso.com"]
rewrite_from = "scanner@contoso.com"

# Trusted by address, sends as itself.
[[client]]
name = "monitor"
networks = ["192.0.2.60"]
senders = ["noreply@contoso.com"]
`

// testRelay is an in-process relay on 127.0.0.1:0 with a spool in a
// temporary directory.
type testRelay struct {
	t       testing.TB
	cfg     *config.Config
	src     string // the configuration file's text
	spool   *queue.Spool
	srv     *Server
	addr    string // plain SMTP (STARTTLS offered)
	tlsAddr string // implicit TLS
	ca      *testkit.CA
	logs    *testkit.SyncBuffer

	mu   sync.Mutex
	peer netip.Addr // when valid, the address every session is said to come from
}

// startRelay starts a relay; listenExtra is added to [listen], and setup
// (if not nil) may adjust the server before it serves.
func startRelay(t testing.TB, listenExtra string, setup func(*testRelay)) *testRelay {
	t.Helper()
	dir := t.TempDir()
	ca := testkit.NewCA(t)
	certFile, keyFile := ca.Leaf(t, "relay.test", "127.0.0.1").Files(t)
	appH, netH := hashes(t)
	spoolDir := filepath.Join(dir, "spool")
	src := fmt.Sprintf(testConfig, certFile, keyFile, listenExtra, spoolDir, appH, netH)
	cfg, err := config.Parse("test.toml", []byte(src), func(string) string { return "" })
	if err != nil {
		t.Fatalf("test configuration: %v", err)
	}
	log, logs := testkit.DebugLogger(t) // printed if the test fails
	sp, _, err := queue.Open(spoolDir, queue.Options{Logger: log, Recover: true, Precreate: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.Close() })
	r := &testRelay{t: t, cfg: cfg, src: src, spool: sp, ca: ca, logs: logs}
	r.srv = NewServer(cfg, sp, ServerOptions{Logger: log})
	r.srv.peerIP = func(c net.Conn) netip.Addr {
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.peer.IsValid() {
			return r.peer
		}
		return remoteIP(c)
	}
	if setup != nil {
		setup(r)
	}
	plain, tl, err := r.srv.Listeners()
	if err != nil {
		t.Fatal(err)
	}
	r.addr, r.tlsAddr = plain.Addr().String(), tl.Addr().String()
	done := make(chan error, 1)
	go func() { done <- r.srv.Serve(plain, tl) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		r.srv.Shutdown(ctx)
		checkServeReturned(t, done)
	})
	return r
}

// checkServeReturned fails t unless Serve, whose result done carries,
// returned nil within 10 s of Shutdown: it fails here, with a name,
// rather than hang until the package's timeout.
func checkServeReturned(t testing.TB, done <-chan error) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve after Shutdown: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Errorf("Serve still accepting 10 s after Shutdown returned")
	}
}

// setPeer makes the next sessions believe they come from ip.
func (r *testRelay) setPeer(ip string) {
	r.mu.Lock()
	r.peer = netip.MustParseAddr(ip)
	r.mu.Unlock()
}

func (r *testRelay) tlsConfig() *tls.Config { return r.ca.ClientTLS("relay.test") }

// client is a raw SMTP conversation, so tests see every reply exactly:
// testkit's line client, with the reply wanted first, as these tests
// read best.
type client struct {
	*testkit.SMTPClient
	t testing.TB
}

func (r *testRelay) dial() *client {
	r.t.Helper()
	return newClient(r.t, testkit.DialSMTP(r.t, r.addr))
}

func (r *testRelay) dialTLS() *client {
	r.t.Helper()
	c, err := tls.Dial("tcp", r.tlsAddr, r.tlsConfig())
	if err != nil {
		r.t.Fatal(err)
	}
	return newClient(r.t, testkit.NewSMTPClient(r.t, c))
}

func newClient(t testing.TB, s *testkit.SMTPClient) *client {
	t.Helper()
	c := &client{SMTPClient: s, t: t}
	c.check("greeting", s.Greeting, "220")
	return c
}

// check fails the test unless got starts with want, e.g. "250" or
// "550 5.7.1", and returns got.
func (c *client) check(what, got, want string) string {
	c.t.Helper()
	if !strings.HasPrefix(got, want) {
		c.t.Fatalf("%s: got reply %q, want %q", what, got, want)
	}
	return got
}

// read reads one (possibly multi-line) reply and checks that it starts with
// want. It returns the whole reply.
func (c *client) read(want string) string { c.t.Helper(); return c.ReadExpect(want) }

// cmd sends a command and checks its reply.
func (c *client) cmd(want, format string, args ...any) string {
	c.t.Helper()
	return c.Expect(fmt.Sprintf(format, args...), want)
}

func (c *client) ehlo() string { c.t.Helper(); return c.cmd("250", "EHLO app.test") }

func (c *client) starttls(conf *tls.Config) { c.t.Helper(); c.StartTLS(conf) }

func (c *client) authPlain(want, user, pass string) string {
	c.t.Helper()
	return c.check("AUTH PLAIN", c.AuthPlain(user, pass), want)
}

// data sends DATA and the message (dot-stuffed) and returns the final reply.
func (c *client) data(want, msg string) string {
	c.t.Helper()
	return c.check("end of data", c.Data(msg), want)
}

// send does a whole transaction; the message must be queued (250).
func (c *client) send(from string, to []string, msg string) string {
	c.t.Helper()
	return c.check("end of data", c.Send(from, to, msg), "250")
}

var queuedRE = regexp.MustCompile(`queued as (\S+)`)

// queuedID extracts the queue id from a 250 reply.
func queuedID(t testing.TB, reply string) string {
	t.Helper()
	m := queuedRE.FindStringSubmatch(reply)
	if m == nil || !queue.ValidID(m[1]) {
		t.Fatalf("reply %q has no queue id", reply)
	}
	return m[1]
}

// stored returns the spooled body and envelope of id.
func (r *testRelay) stored(id string) (string, *queue.Envelope) {
	r.t.Helper()
	env, err := r.spool.Load(queue.Incoming, id)
	if err != nil {
		r.t.Fatalf("envelope %s: %v", id, err)
	}
	b, err := spooledBody(r.spool, id)
	if err != nil {
		r.t.Fatal(err)
	}
	if int64(len(b)) != env.Size {
		r.t.Errorf("body has %d bytes, envelope says %d", len(b), env.Size)
	}
	return string(b), env
}

// assertEmpty checks that nothing at all was spooled (not even in tmp/).
func (r *testRelay) assertEmpty() {
	r.t.Helper()
	for _, d := range []string{"history", "incoming", "active", "deferred", "hold", "failed", "corrupt"} {
		ents, err := os.ReadDir(filepath.Join(r.spool.Dir(), d))
		if err != nil {
			r.t.Fatal(err)
		}
		for _, e := range ents {
			r.t.Errorf("spool holds %s/%s; want nothing spooled", d, e.Name())
		}
	}
	partial, err := r.spool.PartialFiles()
	if err != nil {
		r.t.Fatal(err)
	}
	for _, f := range partial {
		r.t.Errorf("spool holds the partial file %s; want nothing spooled", f)
	}
}

// assertNone checks that no spooled envelope is from sender.
func (r *testRelay) assertNone(sender string) {
	r.t.Helper()
	envs, _, err := r.spool.List()
	if err != nil {
		r.t.Fatal(err)
	}
	for _, e := range envs {
		if e.MailFrom == sender {
			r.t.Errorf("message %s from %s was spooled", e.ID, sender)
		}
	}
}

// spooledBody reads the body of a spooled message as delivery will.
func spooledBody(s *queue.Spool, id string) ([]byte, error) {
	r, _, err := s.Body(id)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}
