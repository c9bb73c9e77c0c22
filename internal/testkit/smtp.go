package testkit

import (
	"crypto/tls"
	"encoding/base64"
	"io"
	"net"
	"net/textproto"
	"strings"
	"testing"
	"time"
)

// smtpDeadline bounds a whole raw SMTP conversation, so that a server that
// stops answering fails the test instead of hanging it.
const smtpDeadline = 30 * time.Second

// SMTPClient speaks SMTP line by line, so that tests see every reply
// exactly. A reply is returned as the server sent it, its lines (codes
// included) joined with "\n": "250-relay.test\n250 STARTTLS". Methods that
// check a reply fail the test when it does not start with what is wanted.
type SMTPClient struct {
	t    testing.TB
	conn net.Conn
	tp   *textproto.Conn
	// Greeting is the server's first reply; "" if it closed at once.
	Greeting string
}

// DialSMTP connects to addr and reads the greeting. The connection is
// closed when the test ends.
func DialSMTP(t testing.TB, addr string) *SMTPClient {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, smtpDeadline)
	if err != nil {
		t.Fatal(err)
	}
	return NewSMTPClient(t, c)
}

// DialFrom connects to addr from the loopback address local, as a load
// balancer (or a client) on that address would. The connection is closed
// when the test ends.
func DialFrom(t testing.TB, local, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// NewSMTPClient runs SMTP over c, an implicit-TLS connection for
// instance, and reads the greeting. c is closed when the test ends.
func NewSMTPClient(t testing.TB, c net.Conn) *SMTPClient {
	t.Helper()
	c.SetDeadline(time.Now().Add(smtpDeadline))
	t.Cleanup(func() { c.Close() })
	s := &SMTPClient{t: t}
	s.setConn(c)
	s.Greeting = s.Read()
	return s
}

func (s *SMTPClient) setConn(c net.Conn) {
	s.conn = c
	s.tp = textproto.NewConn(c)
}

// Conn returns the current connection (the TLS one after StartTLS), for
// tests that write bytes no method would.
func (s *SMTPClient) Conn() net.Conn { return s.conn }

// Read returns the next reply; "" once the server has closed.
func (s *SMTPClient) Read() string {
	var lines []string
	for {
		l, err := s.tp.ReadLine()
		if err != nil {
			return strings.Join(lines, "\n")
		}
		lines = append(lines, l)
		if len(l) < 4 || l[3] != '-' {
			return strings.Join(lines, "\n")
		}
	}
}

// ReadExpect reads the next reply and checks it starts with want.
func (s *SMTPClient) ReadExpect(want string) string {
	s.t.Helper()
	return s.check("reply", s.Read(), want)
}

// Cmd sends line and returns the reply, whatever it is; "" if the server
// has closed.
func (s *SMTPClient) Cmd(line string) string {
	if err := s.tp.PrintfLine("%s", line); err != nil {
		return ""
	}
	return s.Read()
}

// Expect sends line and checks that the reply starts with want, for
// instance "250" or "550 5.7.1".
func (s *SMTPClient) Expect(line, want string) string {
	s.t.Helper()
	return s.check(line, s.Cmd(line), want)
}

func (s *SMTPClient) check(what, got, want string) string {
	s.t.Helper()
	if !strings.HasPrefix(got, want) {
		s.t.Fatalf("%s: got reply %q, want %q", what, got, want)
	}
	return got
}

// StartTLS sends STARTTLS, expects 220 and does the TLS handshake with
// cfg. It returns the 220 reply. Send EHLO again afterwards.
func (s *SMTPClient) StartTLS(cfg *tls.Config) string {
	s.t.Helper()
	reply := s.Expect("STARTTLS", "220")
	tc := tls.Client(s.conn, cfg)
	if err := tc.Handshake(); err != nil {
		s.t.Fatalf("STARTTLS handshake: %v", err)
	}
	s.setConn(tc)
	return reply
}

// AuthPlain sends AUTH PLAIN with user and pass and returns the reply.
func (s *SMTPClient) AuthPlain(user, pass string) string {
	return s.Cmd("AUTH PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00"+user+"\x00"+pass)))
}

// AuthXOAUTH2 sends AUTH XOAUTH2 for user with the bearer token and
// returns the reply.
func (s *SMTPClient) AuthXOAUTH2(user, token string) string {
	return s.Cmd("AUTH XOAUTH2 " + base64.StdEncoding.EncodeToString(XOAUTH2(user, token)))
}

// XOAUTH2 is the initial response of SASL XOAUTH2 (before base64).
func XOAUTH2(user, token string) []byte {
	return []byte("user=" + user + "\x01auth=Bearer " + token + "\x01\x01")
}

// SendData writes msg dot-stuffed and the final dot, once DATA has been
// accepted, and returns the reply to the dot ("" if the server closed).
// Bare LFs are sent as CRLF.
func (s *SMTPClient) SendData(msg string) string {
	s.t.Helper()
	w := s.tp.DotWriter()
	if _, err := io.WriteString(w, msg); err != nil {
		return ""
	}
	if err := w.Close(); err != nil {
		return ""
	}
	return s.Read()
}

// Data sends DATA, expects 354 and sends msg; it returns the final reply.
func (s *SMTPClient) Data(msg string) string {
	s.t.Helper()
	s.Expect("DATA", "354")
	return s.SendData(msg)
}

// Send runs one transaction: MAIL and each RCPT must get 250 and DATA
// 354. It returns the reply after the message.
func (s *SMTPClient) Send(from string, to []string, msg string) string {
	s.t.Helper()
	s.Expect("MAIL FROM:<"+from+">", "250")
	for _, rc := range to {
		s.Expect("RCPT TO:<"+rc+">", "250")
	}
	return s.Data(msg)
}
