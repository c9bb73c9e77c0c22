package relay

import (
	"crypto/tls"
	"net"
	"strings"
	"testing"

	"github.com/pires/go-proxyproto"

	"github.com/oauthrelay/oauthrelay/internal/testkit"
)

const scannerMsg = "From: scanner@contoso.com\r\nTo: a@example.org\r\nSubject: scan\r\n\r\nscan\r\n"

// oldDevice is a TLS client that speaks only TLS 1.0 with AES-CBC, like
// an old printer. (The test certificate is ECDSA; RSA key exchange, with
// an RSA certificate, is tried with openssl in e2e/oldtls_test.go.)
func (r *testRelay) oldDevice() *tls.Config {
	c := r.tlsConfig()
	c.MinVersion, c.MaxVersion = tls.VersionTLS10, tls.VersionTLS10
	c.CipherSuites = []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA}
	return c
}

func TestTLS10RefusedByDefault(t *testing.T) {
	r := startRelay(t, "", nil)
	c := r.dial()
	c.ehlo()
	c.cmd("220", "STARTTLS")
	if err := tls.Client(c.Conn(), r.oldDevice()).Handshake(); err == nil {
		t.Fatal("a TLS 1.0 handshake succeeded with the default min_tls_version")
	}
	raw, err := net.Dial("tcp", r.tlsAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if err := tls.Client(raw, r.oldDevice()).Handshake(); err == nil {
		t.Fatal("a TLS 1.0 handshake on the implicit-TLS port succeeded with the default min_tls_version")
	}
}

func TestTLS10WhenAskedFor(t *testing.T) {
	var versions []string
	r := startRelay(t, `min_tls_version = "1.0"`, func(r *testRelay) {
		r.srv.hooks.TLSSession = func(v string) { r.mu.Lock(); versions = append(versions, v); r.mu.Unlock() }
	})
	// STARTTLS, then AUTH LOGIN, as printers do.
	c := r.dial()
	c.ehlo()
	c.starttls(r.oldDevice())
	c.ehlo()
	c.cmd("334", "AUTH LOGIN")
	c.cmd("334", "YXBw")             // app
	c.cmd("235", "YXBwLXBhc3N3b3Jk") // app-password
	id := queuedID(t, c.send("noreply@contoso.com", []string{"a@example.org"}, "From: noreply@contoso.com\r\nSubject: x\r\n\r\nx\r\n"))
	if _, env := r.stored(id); env.Client != "app" {
		t.Errorf("stored for client %q", env.Client)
	}
	// Implicit TLS, AUTH PLAIN.
	raw, err := net.Dial("tcp", r.tlsAddr)
	if err != nil {
		t.Fatal(err)
	}
	tc := newClient(t, testkit.NewSMTPClient(t, tls.Client(raw, r.oldDevice())))
	tc.ehlo()
	tc.authPlain("235", "app", appPassword)
	tc.send("noreply@contoso.com", []string{"a@example.org"}, "From: noreply@contoso.com\r\nSubject: y\r\n\r\ny\r\n")
	// A TLS 1.3 client still gets TLS 1.3.
	m := r.dialTLS()
	m.ehlo()
	if v := m.Conn().(*tls.Conn).ConnectionState().Version; v != tls.VersionTLS13 {
		t.Errorf("a modern client negotiated %s", tls.VersionName(v))
	}
	m.cmd("221", "QUIT")
	testkit.Eventually(t, "three TLS sessions counted", func() bool { r.mu.Lock(); defer r.mu.Unlock(); return len(versions) == 3 })
	if strings.Join(versions, ",") != "1.0,1.0,1.3" {
		t.Errorf("sessions counted as %v, want 1.0, 1.0, 1.3", versions)
	}
	logs := r.logs.String()
	if !strings.Contains(logs, `msg="legacy TLS session" remote=127.0.0.1 tls_version=1.0 cipher=TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA`) {
		t.Errorf("no legacy TLS session line naming the version and cipher:\n%s", logs)
	}
	if !strings.Contains(logs, "tls_version=1.0") || !strings.Contains(logs, `msg=accepted`) {
		t.Errorf("the accepted line does not name the TLS version:\n%s", logs)
	}
}

// proxyHeader writes a PROXY header (version 1 or 2) naming client.
func proxyHeader(t *testing.T, c net.Conn, version byte, client string) {
	t.Helper()
	h := proxyproto.HeaderProxyFromAddrs(version, &net.TCPAddr{IP: net.ParseIP(client), Port: 40000}, c.RemoteAddr())
	if _, err := h.WriteTo(c); err != nil {
		t.Fatal(err)
	}
}

// The balancer is 127.0.0.2; it forwards a trusted scanner (192.0.2.50)
// and a stranger (203.0.113.9). The relay never trusts 127.0.0.2 itself.
func TestProxyProtocol(t *testing.T) {
	r := startRelay(t, `proxy_protocol_from = ["127.0.0.2/32"]`+"\nmax_connections_per_ip = 1", nil)

	// v2: the scanner is trusted by its own address and sends without AUTH.
	c := testkit.DialFrom(t, "127.0.0.2", r.addr)
	proxyHeader(t, c, 2, "192.0.2.50")
	s := newClient(t, testkit.NewSMTPClient(t, c))
	s.ehlo()
	id := queuedID(t, s.send("scanner@contoso.com", []string{"a@example.org"}, scannerMsg))
	body, env := r.stored(id)
	if env.Client != "scanner" || env.RemoteAddr != "192.0.2.50" {
		t.Errorf("stored for client %q from %s, want scanner from 192.0.2.50", env.Client, env.RemoteAddr)
	}
	if !strings.HasPrefix(body, "Received: from app.test ([192.0.2.50])") {
		t.Errorf("Received: does not name the client's address:\n%.200s", body)
	}

	// max_connections_per_ip counts the client, not the balancer: a
	// second client through the same balancer gets in; v1 this time.
	c2 := testkit.DialFrom(t, "127.0.0.2", r.addr)
	proxyHeader(t, c2, 1, "203.0.113.9")
	u := newClient(t, testkit.NewSMTPClient(t, c2))
	u.ehlo()
	u.cmd("530 5.7.0 Authentication required: 203.0.113.9 is not a trusted network", "MAIL FROM:<noreply@contoso.com>")
	// ...and a second connection of the scanner is over its limit.
	c3 := testkit.DialFrom(t, "127.0.0.2", r.addr)
	proxyHeader(t, c3, 2, "192.0.2.50")
	testkit.NewSMTPClient(t, c3)
	s.cmd("221", "QUIT")
	u.cmd("221", "QUIT")

	logs := r.logs.String()
	if !strings.Contains(logs, "remote=203.0.113.9") || !strings.Contains(logs, "remote=192.0.2.50") {
		t.Errorf("the log does not name the clients' addresses:\n%s", logs)
	}
	if strings.Contains(logs, "remote=127.0.0.2 ") {
		t.Errorf("the log names the balancer as a session's peer:\n%s", logs)
	}
}

func TestProxyProtocolRefusals(t *testing.T) {
	var reasons []string
	r := startRelay(t, `proxy_protocol_from = ["127.0.0.2/32"]`, func(r *testRelay) {
		r.srv.hooks.Refused = func(reason string) { r.mu.Lock(); reasons = append(reasons, reason); r.mu.Unlock() }
	})
	// A header from an address not in proxy_protocol_from: the stranger
	// would choose the trusted scanner's address.
	for _, v := range []byte{1, 2} {
		c := testkit.DialFrom(t, "127.0.0.1", r.addr)
		s := testkit.NewSMTPClient(t, c) // the greeting: it is not a balancer
		proxyHeader(t, c, v, "192.0.2.50")
		s.ReadExpect("554 5.7.0 relay.test PROXY protocol header refused: 127.0.0.1 is not a load balancer")
		if got := s.Read(); got != "" {
			t.Errorf("after the refusal, read %q; want the connection closed", got)
		}
	}
	r.assertEmpty()
	// A listed balancer without a header.
	c := testkit.DialFrom(t, "127.0.0.2", r.addr)
	if _, err := c.Write([]byte("EHLO direct.test\r\n")); err != nil {
		t.Fatal(err)
	}
	s := testkit.NewSMTPClient(t, c)
	if !strings.HasPrefix(s.Greeting, "554 5.7.0 relay.test No service: connections from 127.0.0.2 must start with a PROXY protocol header") {
		t.Errorf("greeting %q, want the 554 for a missing header", s.Greeting)
	}
	// The implicit-TLS port just closes (a plain reply would break the
	// handshake), and logs the same.
	tc := testkit.DialFrom(t, "127.0.0.2", r.tlsAddr)
	if err := tls.Client(tc, r.tlsConfig()).Handshake(); err == nil {
		t.Error("a TLS handshake without a PROXY header from the balancer succeeded")
	}
	// With a header, implicit TLS works.
	tc = testkit.DialFrom(t, "127.0.0.2", r.tlsAddr)
	proxyHeader(t, tc, 2, "192.0.2.60")
	m := newClient(t, testkit.NewSMTPClient(t, tls.Client(tc, r.tlsConfig())))
	m.ehlo()
	m.send("noreply@contoso.com", []string{"a@example.org"}, "From: noreply@contoso.com\r\nSubject: m\r\n\r\nm\r\n")

	testkit.Eventually(t, "four refusals counted", func() bool { r.mu.Lock(); defer r.mu.Unlock(); return len(reasons) == 4 })
	for _, rs := range reasons {
		if rs != ReasonProxyProtocol {
			t.Errorf("refusal counted as %q", rs)
		}
	}
	logs := r.logs.String()
	for _, want := range []string{
		`level=WARN msg="refused: PROXY header from an address not in listen.proxy_protocol_from" reason=proxy_protocol remote=127.0.0.1`,
		`level=WARN msg="refused: connection from a load balancer in listen.proxy_protocol_from without a PROXY header" reason=proxy_protocol remote=127.0.0.2`,
	} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
}

// Lockout follows the client address in the header: a client guessing
// passwords through the balancer locks itself out, not the balancer's
// other clients.
func TestProxyProtocolLockoutIsPerClient(t *testing.T) {
	r := startRelay(t, `proxy_protocol_from = ["127.0.0.2/32"]`+"\nauth_max_failures = 2\nallow_insecure_auth = true", nil)
	through := func(client string) *client {
		c := testkit.DialFrom(t, "127.0.0.2", r.addr)
		proxyHeader(t, c, 2, client)
		s := newClient(t, testkit.NewSMTPClient(t, c))
		s.ehlo()
		return s
	}
	g := through("198.51.100.7")
	g.authPlain("535", "app", "wrong-1")
	g = through("198.51.100.7")
	g.authPlain("454 4.7.0 Too many failed logins from 198.51.100.7", "app", "wrong-2")
	g = through("198.51.100.7")
	g.authPlain("454 4.7.0 Too many failed logins from 198.51.100.7", "app", appPassword)
	// Another client of the same balancer logs in.
	ok := through("198.51.100.8")
	ok.authPlain("235", "app", appPassword)
	if n := r.srv.LockedOut(); n != 1 {
		t.Errorf("%d addresses locked out, want 1 (the guessing client)", n)
	}
}
