package e2e

import (
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/oauthrelay/oauthrelay/config"
	"github.com/oauthrelay/oauthrelay/delivery"
	"github.com/oauthrelay/oauthrelay/internal/msemu"
	"github.com/oauthrelay/oauthrelay/internal/msemu/emutest"
	"github.com/oauthrelay/oauthrelay/internal/service"
	"github.com/oauthrelay/oauthrelay/internal/testkit"
	"github.com/oauthrelay/oauthrelay/oauth"
	"github.com/oauthrelay/oauthrelay/queue"
	"github.com/oauthrelay/oauthrelay/tokens"
	"github.com/oauthrelay/oauthrelay/transport"
)

// testTimeout bounds every test of the package.
const testTimeout = 2 * time.Minute

// Tenants and clients the tests register in the emulator.
const (
	tenantID    = "8d5d2a5b-3f0e-4c1a-9a59-2c1f5e0b7a11"
	otherTenant = "0c1d2e3f-4a5b-4c6d-8e9f-a0b1c2d3e4f5" // never registered: AADSTS90002
	secretApp   = "3b9f1c2e-7a44-4d0e-b1a2-6f0c9e8d7b55"
	pemApp      = "5c2a7e11-90b4-4f3e-a1d2-0e9f8c7b6a51"
	pfxApp      = "7e4d3c2b-1a09-4e8f-9d7c-6b5a4f3e2d1c"
	unknownApp  = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d" // never registered: AADSTS700016
	clientSec   = "Qx8~e2e.secret-value_with+chars"
)

// ctxFor returns a context that ends with the test or after testTimeout.
func ctxFor(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer = testkit.SyncBuffer

// startEmulator starts an emulator for the test.
func startEmulator(t *testing.T, o msemu.Options) *msemu.Emulator {
	t.Helper()
	e := emutest.Start(t, o)
	return e
}

// relayOptions choose the relay's configuration and runtime hooks.
type relayOptions struct {
	Apps      []testkit.App
	Mailboxes []testkit.Mailbox
	// Listen adds keys to [listen] (max_message_size, for instance).
	Listen string
	// Metrics serves /metrics, /healthz and /readyz on 127.0.0.1.
	Metrics bool
	// Now is the clock of every relay part; nil for real time.
	Now func() time.Time
	// HTTPClient, if set, replaces the token sources' HTTP client.
	HTTPClient *http.Client
	// NoDelivery leaves the scheduler and token sources stopped until
	// startDelivery is called.
	NoDelivery bool
	// SpoolDir, if set, is the spool directory (a small or read-only
	// mount in the fault tests).
	SpoolDir string
	// RetryDelay, if set, is both min_retry_delay and (doubled)
	// max_retry_delay instead of 1s and 2s.
	RetryDelay time.Duration
	// Clients are added after the "app" client (trusted on 127.0.0.1).
	Clients []testkit.Client
}

// testRelay is the relay's real pipeline, wired as `oauthrelay serve`
// wires it (cmd/oauthrelay/cmd_serve.go startRelay), plus the hooks the
// tests need: a clock, a debug log captured in a buffer, and a record of
// every token handed to the delivery code.
type testRelay struct {
	t   *testing.T
	emu *msemu.Emulator
	o   relayOptions
	dir string
	// path is the configuration file, for reloads.
	path   string
	cfg    *config.Config
	log    *slog.Logger
	logs   *syncBuffer
	spool  *queue.Spool
	addr   string
	svc    *service.Relay
	tokens *tokens.Set
	rec    *tokenRecorder
	// sched is the running scheduler (nil while delivery is stopped).
	sched *delivery.Scheduler
	// smtpRoots, if set, replaces the roots the scheduler verifies the
	// upstream SMTP server with (the token endpoint keeps r.roots).
	smtpRoots *x509.CertPool

	// transcripts holds every byte the relay's listener sent to the test
	// clients (its replies, including errors).
	transcripts *syncBuffer
}

// startRelay writes a configuration for o, loads it with the real loader
// and starts listener, spool, token sources and scheduler.
func startRelay(t *testing.T, emu *msemu.Emulator, o relayOptions) *testRelay {
	t.Helper()
	dir := t.TempDir()
	kc := testkit.Config{
		Dir:      dir,
		Emulator: emu,
		Listen:   testkit.Listen{Address: "127.0.0.1:0", Hostname: "relay.e2e.test", Extra: o.Listen},
		Spool:    testkit.Spool{Dir: o.SpoolDir, MinRetryDelay: "1s", MaxRetryDelay: "2s", MaxAge: "1h"},
		// Every door into the emulator: SMTP AUTH (the default address),
		// Graph and High Volume Email.
		Upstream:  testkit.Upstream{Timeout: "30s", GraphURL: emu.GraphURL(), HVEAddress: emu.HVEAddr()},
		LogLevel:  "debug",
		Apps:      o.Apps,
		Mailboxes: o.Mailboxes,
		Clients:   []testkit.Client{{Name: "app", Networks: []string{"127.0.0.1"}, Senders: []string{"*"}}},
	}
	kc.Clients = append(kc.Clients, o.Clients...)
	for i := range kc.Apps {
		if kc.Apps[i].TenantID == "" {
			kc.Apps[i].TenantID = tenantID
		}
	}
	if o.Metrics {
		kc.MetricsAddress = "127.0.0.1:0"
	}
	if d := o.RetryDelay; d > 0 {
		kc.Spool.MinRetryDelay, kc.Spool.MaxRetryDelay = d.String(), (2 * d).String()
	}
	path, cfg := loadConfig(t, kc)

	logs, log := debugLog()
	r := &testRelay{t: t, emu: emu, o: o, dir: dir, path: path, cfg: cfg, log: log, logs: logs,
		rec: &tokenRecorder{}, transcripts: &syncBuffer{}}
	svc, err := service.Start(cfg, service.Options{
		Logger: log, Now: o.Now, HTTPClient: o.HTTPClient, NoDelivery: true,
		WrapTokens: func(get transport.Tokens) transport.Tokens { r.rec.get = get; return r.rec.Get },
		Delivery:   delivery.Options{PollInterval: 100 * time.Millisecond, ShutdownGrace: 5 * time.Second},
	})
	if err != nil {
		t.Fatal(err)
	}
	r.svc, r.spool, r.addr = svc, svc.Spool(), svc.SMTPAddr().String()
	if !o.NoDelivery {
		r.startDelivery()
	}
	t.Cleanup(func() {
		svc.Shutdown(10 * time.Second)
		r.sched, r.tokens = nil, nil
		if t.Failed() || os.Getenv("E2E_DUMP_LOGS") != "" {
			t.Logf("relay log:\n%s", logs.String())
		}
	})
	return r
}

// startDelivery starts the token sources and the scheduler, verifying the
// upstream against r.smtpRoots when set.
func (r *testRelay) startDelivery() {
	r.svc.SetUpstreamRoots(r.smtpRoots)
	if err := r.svc.StartDelivery(); err != nil {
		r.t.Fatal(err)
	}
	r.sched, r.tokens = r.svc.Scheduler(), r.svc.Tokens()
}

// stopDelivery stops them; mail in flight stays spooled.
func (r *testRelay) stopDelivery() {
	r.svc.StopDelivery()
	r.sched, r.tokens = nil, nil
}

// send submits one message through the relay's listener and returns the
// relay's final reply error (nil for 250). Everything the relay answers is
// kept in r.transcripts.
func (r *testRelay) send(ctx context.Context, from string, to []string, body string) error {
	msg := fmt.Sprintf("From: <%s>\r\nTo: <%s>\r\nSubject: e2e\r\nMessage-ID: <%d@app.e2e.test>\r\n\r\n%s\r\n",
		from, strings.Join(to, ">, <"), time.Now().UnixNano(), body)
	return r.sendRaw(ctx, from, to, []byte(msg))
}

// sendRaw submits msg as it is (the client dot-stuffs it) with the
// envelope from and to, and returns the relay's final reply error.
func (r *testRelay) sendRaw(ctx context.Context, from string, to []string, msg []byte) error {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", r.addr)
	if err != nil {
		return err
	}
	if dl, ok := ctx.Deadline(); ok {
		nc.SetDeadline(dl)
	}
	c := smtp.NewClient(&recordingConn{Conn: nc, w: r.transcripts})
	defer c.Close()
	if err := c.Hello("app.e2e.test"); err != nil {
		return err
	}
	if err := c.Mail(from, nil); err != nil {
		return err
	}
	for _, rc := range to {
		if err := c.Rcpt(rc, nil); err != nil {
			return err
		}
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write(msg); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	return c.Quit()
}

// mustSend is send that fails the test on error.
func (r *testRelay) mustSend(ctx context.Context, from, to, body string) {
	r.t.Helper()
	if err := r.send(ctx, from, []string{to}, body); err != nil {
		r.t.Fatalf("sending from %s through the relay: %v", from, err)
	}
}

// ids lists the spool's envelopes in state st.
func (r *testRelay) ids(st queue.State) []string {
	r.t.Helper()
	ids, err := r.spool.IDs(st)
	if err != nil {
		r.t.Fatal(err)
	}
	return ids
}

// recordingConn copies what the relay sends into w.
type recordingConn struct {
	net.Conn
	w io.Writer
}

func (c *recordingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.w.Write(p[:n])
	return n, err
}

// tokenRecorder wraps the relay's token sources and remembers every token
// they hand to the delivery code, so that tests can look for them where
// they must not be. It also counts callers waiting inside Token.
type tokenRecorder struct {
	get transport.Tokens

	mu      sync.Mutex
	tokens  map[string]bool
	waiting int
	peak    int
	changed chan struct{}
}

// Get is the token lookup the transports use.
func (r *tokenRecorder) Get(app string, res transport.Resource) (transport.TokenSource, error) {
	src, err := r.get(app, res)
	if err != nil {
		return nil, err
	}
	return &recordingSource{src: src, rec: r}, nil
}

// Tokens returns the distinct tokens handed out so far.
func (r *tokenRecorder) Tokens() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for tok := range r.tokens {
		out = append(out, tok)
	}
	return out
}

// waitWaiting waits until n callers are inside Token at once.
func (r *tokenRecorder) waitWaiting(ctx context.Context, n int) error {
	for {
		r.mu.Lock()
		if r.changed == nil {
			r.changed = make(chan struct{})
		}
		ch, w := r.changed, r.waiting
		r.mu.Unlock()
		if w >= n {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("%d callers waiting for a token, want %d: %w", w, n, ctx.Err())
		}
	}
}

func (r *tokenRecorder) add(d int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.waiting += d
	r.peak = max(r.peak, r.waiting)
	if r.changed != nil {
		close(r.changed)
	}
	r.changed = make(chan struct{})
}

type recordingSource struct {
	src transport.TokenSource
	rec *tokenRecorder
}

func (s *recordingSource) Token(ctx context.Context) (oauth.Token, error) {
	s.rec.add(1)
	defer s.rec.add(-1)
	tok, err := s.src.Token(ctx)
	if err == nil {
		s.rec.mu.Lock()
		if s.rec.tokens == nil {
			s.rec.tokens = map[string]bool{}
		}
		s.rec.tokens[tok.AccessToken] = true
		s.rec.mu.Unlock()
	}
	return tok, err
}

func (s *recordingSource) Invalidate(accessToken string) { s.src.Invalidate(accessToken) }

// newCertificate makes a certificate the way `oauthrelay cert new` does
// (the relay loads what an admin's `cert new` wrote, so that path stays
// covered) and returns the key+certificate PEM path and the public
// certificate from the .cer file an admin uploads. A certificate that is
// only uploaded, never loaded, comes from testkit.ClientCert.
func newCertificate(t *testing.T, subject string) (pemFile string, uploaded *x509.Certificate) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "cert")
	_, files, err := oauth.NewCertificate(subject, 30, dir)
	if err != nil {
		t.Fatal(err)
	}
	var cerFile string
	for _, f := range files {
		switch filepath.Base(f) {
		case oauth.CertKeyFile:
			pemFile = f
		case oauth.CertPublicFile:
			cerFile = f
		}
	}
	if pemFile == "" || cerFile == "" {
		t.Fatalf("cert new wrote %v: no %s or %s", files, oauth.CertKeyFile, oauth.CertPublicFile)
	}
	return pemFile, testkit.ReadCertificate(t, cerFile)
}

// deliveredTo filters msgs by mailbox.
func deliveredTo(msgs []msemu.Message, mailbox string) []msemu.Message {
	var out []msemu.Message
	for _, m := range msgs {
		if strings.EqualFold(m.Mailbox, mailbox) {
			out = append(out, m)
		}
	}
	return out
}

// loadConfig writes kc where the test can keep it and loads it as the relay
// does, failing with the TOML when it does not load.
func loadConfig(t *testing.T, kc testkit.Config) (path string, cfg *config.Config) {
	t.Helper()
	path = kc.Write(t)
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatalf("config: %v\n%s", err, kc.TOML(t))
	}
	return path, cfg
}

// debugLog is a debug-level text logger and the buffer it writes to, for
// tests that wait on or inspect the relay's log lines. Not
// testkit.DebugLogger: these starters dump the log themselves after
// shutdown (labelled by node, or on E2E_DUMP_LOGS), so its dump would
// print the log twice.
func debugLog() (*syncBuffer, *slog.Logger) {
	logs := &syncBuffer{}
	return logs, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// checkGraphCapHeld checks the emulator saw exactly Microsoft's four
// concurrent Graph requests for mbx at most, and no 429: the relay filled
// the per-mailbox cap without ever going over it.
func checkGraphCapHeld(t *testing.T, emu *msemu.Emulator, mbx string) {
	t.Helper()
	st := emu.Stats()
	if got := st.MaxConcurrentGraphByMailbox[mbx]; got != 4 {
		t.Errorf("at most %d Graph requests in flight for the mailbox, want 4", got)
	}
	if got := st.GraphStatuses[http.StatusTooManyRequests]; got != 0 {
		t.Errorf("%d answers of 429", got)
	}
}
