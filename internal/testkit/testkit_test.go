package testkit_test

import (
	"context"
	"crypto/rsa"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/config"
	"github.com/oauthrelay/oauthrelay/internal/msemu"
	"github.com/oauthrelay/oauthrelay/internal/testkit"
)

// fatalRecorder stands in for a test so that the kit's failures can be
// observed: Fatalf records the message and ends the goroutine, as
// testing.T does.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (f *fatalRecorder) Helper() {}

func (f *fatalRecorder) Fatalf(format string, a ...any) {
	f.msg = fmt.Sprintf(format, a...)
	runtime.Goexit()
}

// failure runs fn with a recorder in its own goroutine and returns the
// Fatalf message ("" if fn did not fail).
func failure(t *testing.T, fn func(tb testing.TB)) string {
	rec := &fatalRecorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(rec)
	}()
	<-done
	return rec.msg
}

func TestClock(t *testing.T) {
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	c := testkit.NewClock(start)
	if !c.Now().Equal(start) {
		t.Fatalf("Now = %v, want %v", c.Now(), start)
	}
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			c.Advance(time.Second)
			_ = c.Now()
		})
	}
	wg.Wait()
	if got := c.Now().Sub(start); got != 10*time.Second {
		t.Errorf("after ten concurrent Advance(1s): %v, want 10s", got)
	}
	c.Set(start)
	if !c.Now().Equal(start) {
		t.Errorf("Set: %v", c.Now())
	}
	if z := testkit.NewClock(time.Time{}).Now(); z.IsZero() || z.Nanosecond() != 0 {
		t.Errorf("NewClock(zero) reads %v, want the current second", z)
	}
}

func TestEventually(t *testing.T) {
	n := 0
	testkit.Eventually(t, "three checks", func() bool { n++; return n == 3 })
	if n != 3 {
		t.Errorf("cond checked %d times, want 3", n)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	msg := failure(t, func(tb testing.TB) { testkit.WaitFor(ctx, tb, "the impossible", func() bool { return false }) })
	if !strings.Contains(msg, "timed out waiting for the impossible") {
		t.Errorf("WaitFor on an ended context: failure %q", msg)
	}
}

func TestDebugLogger(t *testing.T) {
	log, buf := testkit.DebugLogger(t)
	log.Debug("hello", "k", "v")
	if !strings.Contains(buf.String(), "level=DEBUG msg=hello k=v") {
		t.Errorf("buffer holds %q", buf.String())
	}
}

func TestCertificates(t *testing.T) {
	ca := testkit.NewCA(t)
	leaf := ca.Leaf(t)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", leaf.ServerTLS())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	for _, name := range []string{"127.0.0.1", "localhost"} {
		c, err := tls.Dial("tcp", ln.Addr().String(), ca.ClientTLS(name))
		if err != nil {
			t.Errorf("client expecting %s: %v", name, err)
			continue
		}
		c.Close()
	}
	other := testkit.NewCA(t)
	if c, err := tls.Dial("tcp", ln.Addr().String(), other.ClientTLS("127.0.0.1")); err == nil {
		c.Close()
		t.Error("a client trusting another CA accepted the leaf")
	}

	certFile, keyFile := ca.Leaf(t, "relay.test", "127.0.0.1").Files(t)
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if pair.Leaf.Subject.CommonName != "relay.test" || len(pair.Leaf.IPAddresses) != 1 || !pair.Leaf.IPAddresses[0].Equal(net.IPv4(127, 0, 0, 1)) {
		t.Errorf("leaf for relay.test: %v %v", pair.Leaf.Subject, pair.Leaf.IPAddresses)
	}
	if b, err := os.ReadFile(ca.File(t)); err != nil || string(b) != string(ca.PEM) {
		t.Errorf("CA file: %v", err)
	}

	cert, key := testkit.ClientCert(t, "entra app")
	if pub, ok := cert.PublicKey.(*rsa.PublicKey); !ok || !pub.Equal(&key.PublicKey) || key.N.BitLen() != 2048 {
		t.Errorf("client certificate: key %T", cert.PublicKey)
	}
	if err := cert.CheckSignature(cert.SignatureAlgorithm, cert.RawTBSCertificate, cert.Signature); err != nil {
		t.Errorf("client certificate is not self-signed: %v", err)
	}
}

const (
	tenant  = "8d5d2a5b-3f0e-4c1a-9a59-2c1f5e0b7a11"
	client  = "3b9f1c2e-7a44-4d0e-b1a2-6f0c9e8d7b55"
	secret  = "Qx8~kit.secret"
	mailbox = "helpdesk@contoso.com"
)

func startEmulator(t *testing.T) *msemu.Emulator {
	t.Helper()
	e, err := msemu.New(msemu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	e.Provision(tenant, client, secret, mailbox)
	return e
}

// token gets an access token from the emulator with the client secret.
func token(t *testing.T, e *msemu.Emulator) string {
	t.Helper()
	resp, err := e.HTTPClient().PostForm(e.TokenURL(tenant), url.Values{
		"grant_type": {"client_credentials"}, "client_id": {client}, "client_secret": {secret},
		"scope": {"https://outlook.office365.com/.default"},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || body.AccessToken == "" {
		t.Fatalf("token: HTTP %d, %v", resp.StatusCode, err)
	}
	return body.AccessToken
}

func TestSMTPClient(t *testing.T) {
	e := startEmulator(t)
	c := testkit.DialSMTP(t, e.SMTPAddr())
	if !strings.HasPrefix(c.Greeting, "220 ") {
		t.Errorf("greeting %q", c.Greeting)
	}
	if ehlo := c.Expect("EHLO relay.example", "250-"); !strings.Contains(ehlo, "\n250-STARTTLS") && !strings.Contains(ehlo, "\n250 STARTTLS") {
		t.Errorf("EHLO reply, lines with codes: %q", ehlo)
	}
	if got := c.StartTLS(&tls.Config{RootCAs: e.CertPool(), ServerName: "127.0.0.1"}); got != "220 2.0.0 SMTP server ready" {
		t.Errorf("STARTTLS: %q", got)
	}
	c.Expect("EHLO relay.example", "250")
	if got := c.AuthPlain("user", "pass"); !strings.HasPrefix(got, "504 5.7.4") {
		t.Errorf("AUTH PLAIN: %q", got)
	}
	if got := c.AuthXOAUTH2(mailbox, token(t, e)); got != msemu.ReplyAuthOK {
		t.Fatalf("AUTH XOAUTH2: %q", got)
	}
	msg := "From: <" + mailbox + ">\r\nSubject: kit\r\nMessage-ID: <kit@test>\r\n\r\n.leading dot\r\nend\r\n"
	if got := c.Send(mailbox, []string{"a@example.org"}, msg); !strings.HasPrefix(got, "250 2.0.0 OK") {
		t.Fatalf("Send: %q", got)
	}
	if got := e.Delivered(); len(got) != 1 || string(got[0].Data) != msg {
		t.Errorf("delivered %+v, want the message dot-unstuffed as sent", got)
	}
	if got := failure(t, func(tb testing.TB) {
		d := testkit.DialSMTP(tb, e.SMTPAddr())
		d.Expect("MAIL FROM:<"+mailbox+">", "250")
	}); !strings.Contains(got, `MAIL FROM:<`+mailbox+`>: got reply "503 5.5.2 Send hello first", want "250"`) {
		t.Errorf("Expect on an unwanted reply: failure %q", got)
	}
	c.Expect("QUIT", "221")
	if got := c.Read(); got != "" {
		t.Errorf("after QUIT: %q", got)
	}
}

func TestConfigWithEmulator(t *testing.T) {
	e := startEmulator(t)
	kc := testkit.Config{
		Emulator: e,
		Listen:   testkit.Listen{Address: "127.0.0.1:0", Hostname: "relay.kit.test"},
		Spool:    testkit.Spool{MinRetryDelay: "1s", MaxRetryDelay: "2s", BounceTo: "postmaster@contoso.com"},
		Upstream: testkit.Upstream{Timeout: "10s"},
		LogLevel: "debug", MetricsAddress: "127.0.0.1:0",
		Apps: []testkit.App{{Name: "contoso", TenantID: tenant, ClientID: client, ClientSecret: secret, MinTokenLifetime: "10m"}},
		Mailboxes: []testkit.Mailbox{{Address: mailbox, App: "contoso", SendAs: []string{"noreply@contoso.com", "scanner@contoso.com"},
			MaxPerMinute: 600, MaxConnections: 2, MaxRecipientsPerDay: 100}},
		Clients: []testkit.Client{{Name: "app", Networks: []string{"127.0.0.1"}, Senders: []string{"*"}}},
	}
	path := kc.Write(t)
	cfg, err := config.Load(path)
	if err != nil {
		b, _ := os.ReadFile(path)
		t.Fatalf("config.Load: %v\n%s", err, b)
	}
	if cfg.Upstream.Address != e.SMTPAddr() || cfg.Upstream.Timeout.Duration != 10*time.Second {
		t.Errorf("upstream %+v", cfg.Upstream)
	}
	if b, err := os.ReadFile(cfg.Upstream.CAFile); err != nil || string(b) != string(e.CACertPEM()) {
		t.Errorf("ca_file %q does not hold the emulator's CA: %v", cfg.Upstream.CAFile, err)
	}
	if a := cfg.Apps[0]; a.Authority != e.Authority() || a.Secret.Reveal() != secret || a.MinTokenLifetime.Duration != 10*time.Minute {
		t.Errorf("app %+v", a)
	}
	if m := cfg.Mailboxes[0]; len(m.SendAs) != 2 || m.MaxPerMinute != 600 || m.MaxConnections != 2 || m.MaxRecipientsPerDay != 100 {
		t.Errorf("mailbox %+v", m)
	}
	if cfg.Spool.BounceTo != "postmaster@contoso.com" || cfg.Metrics.Address != "127.0.0.1:0" || cfg.Log.Level != "debug" {
		t.Errorf("spool %+v metrics %+v log %+v", cfg.Spool, cfg.Metrics, cfg.Log)
	}
	if len(cfg.Clients) != 1 || !cfg.Clients[0].AnySender {
		t.Errorf("clients %+v", cfg.Clients)
	}
}

func TestConfigOmitsUnsetKeys(t *testing.T) {
	kc := testkit.Config{
		Dir:       t.TempDir(),
		Mailboxes: []testkit.Mailbox{{Address: mailbox, App: "contoso"}},
	}
	text := kc.TOML(t)
	for _, key := range []string{"transport", "graph_url", "hve_address", "[metrics]", "[log]", "authority", "max_connections", "send_as"} {
		if strings.Contains(text, key) {
			t.Errorf("unset %s is written:\n%s", key, text)
		}
	}
	kc.Mailboxes[0].Transport = "graph"
	kc.Upstream = testkit.Upstream{GraphURL: "https://127.0.0.1:1/v1.0", HVEAddress: "127.0.0.1:2"}
	kc.Listen.Extra = "max_recipients = 5"
	text = kc.TOML(t)
	for _, want := range []string{
		"[upstream]\ngraph_url = \"https://127.0.0.1:1/v1.0\"\nhve_address = \"127.0.0.1:2\"\n",
		"[[mailbox]]\naddress = \"" + mailbox + "\"\napp = \"contoso\"\ntransport = \"graph\"\n",
		"[listen]\nmax_recipients = 5\n",
		"[spool]\ndir = ",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("text lacks %q:\n%s", want, text)
		}
	}
}
