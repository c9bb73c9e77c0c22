package msemu

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"math/big"
	"net"
	"net/textproto"
	"strings"
	"testing"
	"time"

	"github.com/AzureAD/microsoft-authentication-library-for-go/apps/confidential"
)

const (
	testTenant = "8d5d2a5b-3f0e-4c1a-9a59-2c1f5e0b7a11"
	testClient = "3b9f1c2e-7a44-4d0e-b1a2-6f0c9e8d7b55"
	testSecret = "Qx8~secret.value_with+chars"
	testMbx    = "helpdesk@contoso.com"
	exoScope   = "https://outlook.office365.com/.default"
)

func startEmu(t *testing.T, o Options) *Emulator {
	t.Helper()
	e, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// provisioned starts an emulator with the standard app and mailbox.
func provisioned(t *testing.T, o Options) *Emulator {
	e := startEmu(t, o)
	e.Provision(testTenant, testClient, testSecret, testMbx)
	return e
}

func msalSecretToken(t *testing.T, e *Emulator) string {
	t.Helper()
	cred, err := confidential.NewCredFromSecret(testSecret)
	if err != nil {
		t.Fatal(err)
	}
	c, err := confidential.New(e.Authority()+testTenant, testClient, cred,
		confidential.WithHTTPClient(e.HTTPClient()), confidential.WithInstanceDiscovery(false))
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.AcquireTokenByCredential(context.Background(), []string{exoScope})
	if err != nil {
		t.Fatal(err)
	}
	return res.AccessToken
}

func newCert(t *testing.T) (*x509.Certificate, *rsa.PrivateKey) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(42),
		Subject:      pkix.Name{CommonName: "oauthrelay test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

// rawClient speaks SMTP line by line so tests can assert exact replies.
type rawClient struct {
	t        *testing.T
	e        *Emulator
	c        net.Conn
	tp       *textproto.Conn
	greeting string
}

func dialRaw(t *testing.T, e *Emulator) *rawClient {
	t.Helper()
	c, err := net.Dial("tcp", e.SMTPAddr())
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	t.Cleanup(func() { c.Close() })
	r := &rawClient{t: t, e: e, c: c, tp: textproto.NewConn(c)}
	r.greeting = r.read()
	return r
}

// read returns one reply, its lines joined with "\n"; "" on EOF.
func (r *rawClient) read() string {
	var lines []string
	for {
		l, err := r.tp.ReadLine()
		if err != nil {
			return strings.Join(lines, "\n")
		}
		lines = append(lines, l)
		if len(l) < 4 || l[3] != '-' {
			return strings.Join(lines, "\n")
		}
	}
}

func (r *rawClient) cmd(line string) string {
	r.t.Helper()
	if err := r.tp.PrintfLine("%s", line); err != nil {
		return ""
	}
	return r.read()
}

func (r *rawClient) startTLS(cfg *tls.Config) {
	r.t.Helper()
	if cfg == nil {
		cfg = &tls.Config{RootCAs: r.e.CertPool(), ServerName: "127.0.0.1"}
	}
	r.expect("EHLO relay.example", "250")
	r.expect("STARTTLS", "220 2.0.0 SMTP server ready")
	tc := tls.Client(r.c, cfg)
	if err := tc.Handshake(); err != nil {
		r.t.Fatal(err)
	}
	r.c = tc
	r.tp = textproto.NewConn(tc)
}

// expect sends line and checks the reply starts with want.
func (r *rawClient) expect(line, want string) string {
	r.t.Helper()
	got := r.cmd(line)
	if !strings.HasPrefix(got, want) {
		r.t.Fatalf("%s: got %q, want %q", line, got, want)
	}
	return got
}

func xoauth2(user, token string) string {
	return base64.StdEncoding.EncodeToString([]byte("user=" + user + "\x01auth=Bearer " + token + "\x01\x01"))
}

// login does STARTTLS, EHLO and AUTH XOAUTH2, returning the AUTH reply.
func (r *rawClient) login(user, token string) string {
	r.t.Helper()
	r.startTLS(nil)
	r.expect("EHLO relay.example", "250")
	return r.cmd("AUTH XOAUTH2 " + xoauth2(user, token))
}

// send runs one transaction and returns the reply after the final dot.
func (r *rawClient) send(from string, to []string, data string) string {
	r.t.Helper()
	r.expect("MAIL FROM:<"+from+">", ReplySenderOK)
	for _, rc := range to {
		r.expect("RCPT TO:<"+rc+">", ReplyRcptOK)
	}
	r.expect("DATA", ReplyStartData)
	w := bufio.NewWriter(r.c)
	w.WriteString(dotStuff(data))
	w.WriteString(".\r\n")
	w.Flush()
	return r.read()
}

func message(from, subject string) string {
	return "From: Help Desk <" + from + ">\r\nTo: someone@example.org\r\nSubject: " + subject +
		"\r\nMessage-ID: <" + subject + "@app.example>\r\n\r\nHello.\r\n.leading dot line\r\n"
}

func dotStuff(data string) string {
	return strings.ReplaceAll("\r\n"+data, "\r\n.", "\r\n..")[2:]
}
