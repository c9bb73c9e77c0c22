package testkit_test

import (
	"context"
	"crypto/rsa"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"net"
	"net/textproto"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/BurntSushi/toml"

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
	addr := testkit.Serve(t, func(c net.Conn) { tls.Server(c, leaf.ServerTLS()).Handshake() })
	for _, name := range []string{"127.0.0.1", "localhost"} {
		c, err := tls.Dial("tcp", addr, ca.ClientTLS(name))
		if err != nil {
			t.Errorf("client expecting %s: %v", name, err)
			continue
		}
		c.Close()
	}
	other := testkit.NewCA(t)
	if c, err := tls.Dial("tcp", addr, other.ClientTLS("127.0.0.1")); err == nil {
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
	if got := testkit.ReadCertificate(t, ca.File(t)); !got.Equal(ca.Cert) {
		t.Errorf("CA file holds %v", got.Subject)
	}
	if got := testkit.ReadCertificate(t, testkit.WriteFile(t, "key-then-cert.pem", append(leaf.KeyPEM, leaf.CertPEM...))); !got.Equal(leaf.Cert) {
		t.Errorf("ReadCertificate after a key: %v", got.Subject)
	}
	if msg := failure(t, func(tb testing.TB) { testkit.ReadCertificate(tb, testkit.WriteFile(tb, "key.pem", leaf.KeyPEM)) }); !strings.Contains(msg, "holds no PEM certificate") {
		t.Errorf("ReadCertificate of a key alone: failure %q", msg)
	}

	cert, key := testkit.ClientCert(t, "entra app")
	if pub, ok := cert.PublicKey.(*rsa.PublicKey); !ok || !pub.Equal(&key.PublicKey) || key.N.BitLen() != 2048 {
		t.Errorf("client certificate: key %T", cert.PublicKey)
	}
	if err := cert.CheckSignature(cert.SignatureAlgorithm, cert.RawTBSCertificate, cert.Signature); err != nil {
		t.Errorf("client certificate is not self-signed: %v", err)
	}
}

// smtpServer answers SMTP connections the way the client tests need: it
// echoes what AUTH decoded, supports STARTTLS with leaf and sends every
// message it receives, dot-unstuffed, on the returned channel.
func smtpServer(t *testing.T, leaf *testkit.Leaf) (addr string, msgs <-chan string) {
	ch := make(chan string, 10)
	return testkit.Serve(t, func(c net.Conn) { serveSMTP(c, leaf, ch) }), ch
}

func serveSMTP(c net.Conn, leaf *testkit.Leaf, msgs chan<- string) {
	tp := textproto.NewConn(c)
	tp.PrintfLine("220 kit.test ESMTP")
	for {
		line, err := tp.ReadLine()
		if err != nil {
			return
		}
		verb, arg, _ := strings.Cut(line, " ")
		switch strings.ToUpper(verb) {
		case "EHLO":
			tp.PrintfLine("250-kit.test\r\n250-STARTTLS\r\n250 AUTH PLAIN XOAUTH2")
		case "STARTTLS":
			tp.PrintfLine("220 2.0.0 ready")
			tc := tls.Server(c, leaf.ServerTLS())
			if tc.Handshake() != nil {
				return
			}
			c, tp = tc, textproto.NewConn(tc)
		case "AUTH":
			_, b64, _ := strings.Cut(arg, " ")
			b, _ := base64.StdEncoding.DecodeString(b64)
			tp.PrintfLine("235 2.7.0 %q", b)
		case "MAIL", "RCPT":
			tp.PrintfLine("250 2.1.0 ok")
		case "DATA":
			tp.PrintfLine("354 go ahead")
			var b strings.Builder
			for {
				l, err := tp.ReadLine()
				if err != nil {
					return
				}
				if l == "." {
					break
				}
				b.WriteString(strings.TrimPrefix(l, ".") + "\r\n")
			}
			msgs <- b.String()
			tp.PrintfLine("250 2.0.0 queued")
		case "QUIT":
			tp.PrintfLine("221 bye")
			return
		default:
			tp.PrintfLine("500 5.5.1 unknown command")
		}
	}
}

func TestSMTPClient(t *testing.T) {
	ca := testkit.NewCA(t)
	addr, msgs := smtpServer(t, ca.Leaf(t))
	c := testkit.DialSMTP(t, addr)
	if c.Greeting != "220 kit.test ESMTP" {
		t.Errorf("greeting %q", c.Greeting)
	}
	if got := c.Expect("EHLO relay.example", "250-"); got != "250-kit.test\n250-STARTTLS\n250 AUTH PLAIN XOAUTH2" {
		t.Errorf("EHLO reply: %q, want its lines with their codes", got)
	}
	if got := c.StartTLS(ca.ClientTLS("127.0.0.1")); got != "220 2.0.0 ready" {
		t.Errorf("STARTTLS: %q", got)
	}
	if _, ok := c.Conn().(*tls.Conn); !ok {
		t.Errorf("after STARTTLS the connection is a %T", c.Conn())
	}
	c.Expect("EHLO relay.example", "250")
	if got := c.AuthPlain("user", "pass"); got != `235 2.7.0 "\x00user\x00pass"` {
		t.Errorf("AUTH PLAIN sent %q", got)
	}
	if got := c.AuthXOAUTH2("helpdesk@contoso.com", "tok"); got != `235 2.7.0 "user=helpdesk@contoso.com\x01auth=Bearer tok\x01\x01"` {
		t.Errorf("AUTH XOAUTH2 sent %q", got)
	}
	msg := "Subject: kit\r\n\r\n.leading dot\r\n..two\r\nend\r\n"
	if got := c.Send("a@example.org", []string{"b@example.org", "c@example.org"}, msg); got != "250 2.0.0 queued" {
		t.Fatalf("Send: %q", got)
	}
	if got := <-msgs; got != msg {
		t.Errorf("server received %q, want %q", got, msg)
	}
	if got := failure(t, func(tb testing.TB) { testkit.DialSMTP(tb, addr).Expect("VRFY x", "250") }); got != `VRFY x: got reply "500 5.5.1 unknown command", want "250"` {
		t.Errorf("Expect on an unwanted reply: failure %q", got)
	}
	c.Expect("QUIT", "221")
	if got := c.Read(); got != "" {
		t.Errorf("after QUIT: %q", got)
	}
}

// fakeEmulator stands in for *msemu.Emulator.
type fakeEmulator struct{ ca []byte }

func (fakeEmulator) Authority() string   { return "https://127.0.0.1:4443/" }
func (fakeEmulator) SMTPAddr() string    { return "127.0.0.1:5587" }
func (f fakeEmulator) CACertPEM() []byte { return f.ca }

func TestConfigWithEmulator(t *testing.T) {
	e := fakeEmulator{ca: testkit.NewCA(t).PEM}
	const mailbox = "helpdesk@contoso.com"
	kc := testkit.Config{
		Emulator: e,
		Listen:   testkit.Listen{Address: "127.0.0.1:0", Hostname: "relay.kit.test"},
		Spool:    testkit.Spool{MinRetryDelay: "1s", MaxRetryDelay: "2s", BounceTo: "postmaster@contoso.com"},
		Upstream: testkit.Upstream{Timeout: "10s"},
		LogLevel: "debug", MetricsAddress: "127.0.0.1:0",
		Apps: []testkit.App{{Name: "contoso", TenantID: "8d5d2a5b-3f0e-4c1a-9a59-2c1f5e0b7a11",
			ClientID: "3b9f1c2e-7a44-4d0e-b1a2-6f0c9e8d7b55", ClientSecret: "Qx8~kit.secret", MinTokenLifetime: "10m"}},
		Mailboxes: []testkit.Mailbox{{Address: mailbox, App: "contoso", SendAs: []string{"noreply@contoso.com", "scanner@contoso.com"},
			MaxPerMinute: 600, MaxConnections: 2, MaxRecipientsPerDay: 100}},
		Clients: []testkit.Client{{Name: "app", Networks: []string{"127.0.0.1"}, Senders: []string{"*"}}},
	}
	path := kc.Write(t)
	// Decoded generically, not with config.Load, so that the kit's tests
	// do not depend on config; the key names are config/types.go's.
	var got map[string]any
	if _, err := toml.DecodeFile(path, &got); err != nil {
		b, _ := os.ReadFile(path)
		t.Fatalf("%v\n%s", err, b)
	}
	dir := filepath.Dir(path)
	caFile := filepath.Join(dir, "emulator-ca.pem")
	want := map[string]any{
		"listen":   map[string]any{"address": "127.0.0.1:0", "hostname": "relay.kit.test"},
		"spool":    map[string]any{"dir": filepath.Join(dir, "spool"), "min_retry_delay": "1s", "max_retry_delay": "2s", "bounce_to": "postmaster@contoso.com"},
		"upstream": map[string]any{"address": e.SMTPAddr(), "ca_file": caFile, "timeout": "10s"},
		"metrics":  map[string]any{"address": "127.0.0.1:0"},
		"log":      map[string]any{"level": "debug"},
		"app": []map[string]any{{"name": "contoso", "tenant_id": "8d5d2a5b-3f0e-4c1a-9a59-2c1f5e0b7a11",
			"client_id": "3b9f1c2e-7a44-4d0e-b1a2-6f0c9e8d7b55", "client_secret": "Qx8~kit.secret",
			"authority": e.Authority(), "min_token_lifetime": "10m"}},
		"mailbox": []map[string]any{{"address": mailbox, "app": "contoso", "send_as": []any{"noreply@contoso.com", "scanner@contoso.com"},
			"max_per_minute": int64(600), "max_connections": int64(2), "max_recipients_per_day": int64(100)}},
		"client": []map[string]any{{"name": "app", "networks": []any{"127.0.0.1"}, "senders": []any{"*"}}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("decoded configuration:\n%#v\nwant:\n%#v", got, want)
	}
	if b, err := os.ReadFile(caFile); err != nil || string(b) != string(e.CACertPEM()) {
		t.Errorf("ca_file does not hold the emulator's CA: %v", err)
	}
}

func TestConfigOmitsUnsetKeys(t *testing.T) {
	kc := testkit.Config{
		Dir:       t.TempDir(),
		Mailboxes: []testkit.Mailbox{{Address: "helpdesk@contoso.com", App: "contoso"}},
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
		"[[mailbox]]\naddress = \"helpdesk@contoso.com\"\napp = \"contoso\"\ntransport = \"graph\"\n",
		"[listen]\nmax_recipients = 5\n",
		"[spool]\ndir = ",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("text lacks %q:\n%s", want, text)
		}
	}
}
