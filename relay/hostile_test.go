package relay

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/oauthrelay/oauthrelay/internal/testkit"
	"github.com/oauthrelay/oauthrelay/queue"
)

// rawSession writes raw bytes and checks replies by their last line, for
// input no well-behaved client library would send.
type rawSession struct {
	*testkit.SMTPClient
	t testing.TB
}

func (r *testRelay) raw() *rawSession {
	r.t.Helper()
	s := &rawSession{SMTPClient: testkit.DialSMTP(r.t, r.addr), t: r.t}
	if !strings.HasPrefix(s.Greeting, "220 ") {
		r.t.Fatalf("greeting %q", s.Greeting)
	}
	return s
}

func (s *rawSession) write(b string) {
	s.t.Helper()
	if _, err := s.Conn().Write([]byte(b)); err != nil {
		s.t.Fatalf("write: %v", err)
	}
}

// expect reads one whole (multi-line) reply, checks that its last line
// starts with want and returns that line.
func (s *rawSession) expect(want string) string {
	s.t.Helper()
	got := s.Read()
	last := got[strings.LastIndexByte(got, '\n')+1:]
	if !strings.HasPrefix(last, want) {
		s.t.Fatalf("got reply %q, want %q", got, want)
	}
	return last
}

// closed checks that the server has hung up.
func (s *rawSession) closed() {
	s.t.Helper()
	if got := s.Read(); got != "" {
		s.t.Fatalf("the connection is still open; got %q", got)
	}
}

func (s *rawSession) login() {
	s.t.Helper()
	s.write("EHLO hostile.test\r\n")
	s.expect("250 ")
	s.write("AUTH PLAIN " + plainAuth("app", appPassword) + "\r\n")
	s.expect("235 ")
}

// intact checks what every hostile case must leave behind: no recovered
// panic, no partial file, only readable envelopes with sendable addresses
// and bodies of the size they claim.
func (r *testRelay) intact() {
	r.t.Helper()
	p := &pipeRelay{spool: r.spool, logs: r.logs}
	p.checkIntact(r.t)
}

func (r *testRelay) queued() []*queue.Envelope {
	r.t.Helper()
	envs, _, err := r.spool.List()
	if err != nil {
		r.t.Fatal(err)
	}
	return envs
}

// TestHostileInput sends what broken or malicious clients send, over
// TCP, and checks each reply, that nothing panicked and that the spool is
// intact. The data and idle timeouts are short so a stalled client is cut
// off quickly.
func TestHostileInput(t *testing.T) {
	const msg = "From: noreply@contoso.com\r\nTo: a@example.com\r\nSubject: hostile\r\n\r\nbody\r\n"
	for _, tc := range []struct {
		name string
		run  func(t *testing.T, r *testRelay, s *rawSession)
	}{
		{"bare LF line endings", func(t *testing.T, r *testRelay, s *rawSession) {
			// Commands ending in LF are understood (as go-smtp does)...
			s.write("EHLO hostile.test\nAUTH PLAIN " + plainAuth("app", appPassword) + "\nMAIL FROM:<noreply@contoso.com>\nRCPT TO:<a@example.com>\nDATA\n")
			s.expect("250 ")
			s.expect("235 ")
			s.expect("250 ")
			s.expect("250 ")
			s.expect("354 ")
			// ...but "\n.\n" does not end the data: only CRLF.CRLF does,
			// so a client that never sends it times out with nothing queued.
			s.write("From: noreply@contoso.com\n\nbody\n.\n")
			s.expect("421 4.4.2 Timeout waiting for message data; nothing was accepted")
			if n := len(r.queued()); n != 0 {
				t.Errorf("%d messages queued", n)
			}
		}},
		{"bare LF smuggling attempt", func(t *testing.T, r *testRelay, s *rawSession) {
			// A "\n.\n" inside the data followed by commands is body text,
			// not a second message (SMTP smuggling).
			s.login()
			s.write("MAIL FROM:<noreply@contoso.com>\r\nRCPT TO:<a@example.com>\r\nDATA\r\n")
			s.expect("250 ")
			s.expect("250 ")
			s.expect("354 ")
			s.write(msg + "\n.\nMAIL FROM:<noreply@contoso.com>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\nsmuggled\r\n.\r\n")
			id := queuedID(t, s.expect("250 2.0.0"))
			envs := r.queued()
			if len(envs) != 1 || len(envs[0].Recipients) != 1 || envs[0].Recipients[0].Address != "a@example.com" {
				t.Fatalf("queued %+v, want one message to a@example.com", envs)
			}
			body, _ := r.stored(id)
			// Its lone LFs are spooled as CRLF, as Microsoft 365 reads them.
			if !strings.HasSuffix(body, "\r\n\r\nbody\r\n\r\n.\r\nMAIL FROM:<noreply@contoso.com>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\nsmuggled\r\n") {
				t.Errorf("the smuggled text is not kept as body text:\n%q", body)
			}
		}},
		{"NUL bytes", func(t *testing.T, r *testRelay, s *rawSession) {
			s.login()
			s.write("MAIL FROM:<noreply@contoso.com\x00evil@example.com>\r\n")
			s.expect("550 5.7.1")
			s.write("MAIL FROM:<noreply@contoso.com>\r\nRCPT TO:<a@exa\x00mple.com>\r\nRCPT TO:<a@example.com>\r\nDATA\r\n")
			s.expect("250 ")
			s.expect("501 5.1.3")
			s.expect("250 ")
			s.expect("354 ")
			// In the body a NUL is data: kept byte for byte.
			s.write("From: noreply@contoso.com\r\n\r\nbo\x00dy\r\n.\r\n")
			body, env := r.stored(queuedID(t, s.expect("250 2.0.0")))
			if !strings.HasSuffix(body, "\r\n\r\nbo\x00dy\r\n") || len(env.Recipients) != 1 {
				t.Errorf("body %q, recipients %d", body, len(env.Recipients))
			}
		}},
		{"10 MB command line", func(t *testing.T, r *testRelay, s *rawSession) {
			s.write("EHLO hostile.test\r\n")
			s.expect("250 ")
			go s.Conn().Write([]byte("MAIL FROM:<" + strings.Repeat("a", 10<<20) + "@contoso.com>\r\n"))
			s.expect("500 5.4.0")
			s.closed()
		}},
		{"10 MB line in DATA", func(t *testing.T, r *testRelay, s *rawSession) {
			s.login()
			s.write("MAIL FROM:<noreply@contoso.com>\r\nRCPT TO:<a@example.com>\r\nDATA\r\n")
			s.expect("250 ")
			s.expect("250 ")
			s.expect("354 ")
			// Written in the background: the relay may answer (and stop
			// reading) before all of it is sent.
			go func() {
				s.Conn().Write([]byte("From: noreply@contoso.com\r\n\r\n" + strings.Repeat("x", 10<<20) + "\r\n.\r\n"))
			}()
			s.expect("554 5.6.0")
			if n := len(r.queued()); n != 0 {
				t.Errorf("%d messages queued", n)
			}
		}},
		{"pipelined junk", func(t *testing.T, r *testRelay, s *rawSession) {
			// "BDAT 6" out of sequence is refused, and its 6-byte chunk
			// ("NOOP\r\n") is consumed, not run as a command (RFC 3030).
			s.write("EHLO hostile.test\r\nJUNK\r\n\x01\x02\x03\r\nMAIL\r\nRCPT TO:<x>\r\nDATA\r\nBDAT 6\r\nNOOP\r\nBDAT x\r\nHELO\r\nNOOP\r\n")
			for _, want := range []string{"250 ", "500 5.5.2", "501 5.5.2", "501 5.5.2", "502 5.5.1", "502 5.5.1", "502 5.5.1", "501 5.5.4", "501 5.5.2", "250 "} {
				s.expect(want)
			}
			// The connection still works.
			s.write("AUTH PLAIN " + plainAuth("app", appPassword) + "\r\nMAIL FROM:<noreply@contoso.com>\r\nRCPT TO:<a@example.com>\r\nDATA\r\n" + msg + ".\r\n")
			s.expect("235 ")
			s.expect("250 ")
			s.expect("250 ")
			s.expect("354 ")
			s.expect("250 2.0.0")
		}},
		{"AUTH with broken base64", func(t *testing.T, r *testRelay, s *rawSession) {
			s.write("EHLO hostile.test\r\n")
			s.expect("250 ")
			// Undecodable SASL data is the client's syntax error: 501
			// 5.5.2 (RFC 4954), not go-smtp's 454 4.7.0 that invites a
			// retry of the same bytes. No password was tried.
			s.write("AUTH PLAIN !!!notbase64\r\n")
			s.expect("501 5.5.2 Invalid base64 data in AUTH")
			s.write("AUTH LOGIN\r\n")
			s.expect("334 ")
			s.write("%%%\r\n")
			s.expect("501 5.5.2 Invalid base64 data in AUTH")
			s.write("AUTH PLAIN AGFwcA==\r\n") // "\0app": no password at all
			s.expect("501 5.5.2")
			s.write("MAIL FROM:<noreply@contoso.com>\r\n")
			s.expect("530 5.7.0")
			// The right credentials still work.
			s.write("AUTH PLAIN " + plainAuth("app", appPassword) + "\r\n")
			s.expect("235 ")
		}},
		{"10,000 RCPTs", func(t *testing.T, r *testRelay, s *rawSession) {
			s.login()
			var b strings.Builder
			b.WriteString("MAIL FROM:<noreply@contoso.com>\r\n")
			for i := range 10000 {
				fmt.Fprintf(&b, "RCPT TO:<r%d@example.com>\r\n", i)
			}
			b.WriteString("DATA\r\n")
			go s.Conn().Write([]byte(b.String())) // replies are read meanwhile
			s.expect("250 ")
			for i := range 10000 {
				want := "250 "
				if i >= 500 {
					want = "452 4.5.3"
				}
				s.expect(want)
			}
			s.expect("354 ")
			s.write(msg + ".\r\n")
			_, env := r.stored(queuedID(t, s.expect("250 2.0.0")))
			if len(env.Recipients) != 500 {
				t.Errorf("%d recipients queued, want the first 500", len(env.Recipients))
			}
		}},
		{"CRLF injection in MAIL FROM and RCPT TO", func(t *testing.T, r *testRelay, s *rawSession) {
			s.login()
			s.write("MAIL FROM:<noreply@contoso.com\rRCPT TO:<evil@example.com>>\r\n")
			s.expect("501 5.5.2")
			s.write("MAIL FROM:<noreply@contoso.com>\r\nRCPT TO:<a@example.com\rDATA>\r\nRCPT TO:<a@example.com\r\n")
			s.expect("250 ")
			s.expect("501 5.1.3")
			s.expect("501 5.5.2")
			if n := len(r.queued()); n != 0 {
				t.Errorf("%d messages queued", n)
			}
		}},
		{"non-UTF-8 and SMTPUTF8 addresses", func(t *testing.T, r *testRelay, s *rawSession) {
			s.login()
			s.write("MAIL FROM:<\xffnoreply@contoso.com>\r\n")
			s.expect("550 5.7.1")
			s.write("MAIL FROM:<noreply@contoso.com>\r\nRCPT TO:<\xff\xfe@example.com>\r\nRCPT TO:<jürgen@example.com>\r\n")
			s.expect("250 ")
			s.expect("501 5.1.3")
			s.expect("553 5.6.7")
			s.write("MAIL FROM:<noreply@contoso.com> SMTPUTF8\r\nRCPT TO:<\xff@example.com>\r\nRCPT TO:<jürgen@例え.jp>\r\nDATA\r\n")
			s.expect("250 ")
			s.expect("501 5.1.3")
			s.expect("250 ")
			s.expect("354 ")
			s.write(msg + ".\r\n")
			_, env := r.stored(queuedID(t, s.expect("250 2.0.0")))
			if !env.SMTPUTF8 || len(env.Recipients) != 1 || env.Recipients[0].Address != "jürgen@例え.jp" {
				t.Errorf("envelope %+v", env)
			}
		}},
		{"client stalls mid-DATA", func(t *testing.T, r *testRelay, s *rawSession) {
			s.login()
			s.write("MAIL FROM:<noreply@contoso.com>\r\nRCPT TO:<a@example.com>\r\nDATA\r\n")
			s.expect("250 ")
			s.expect("250 ")
			s.expect("354 ")
			s.write("From: noreply@contoso.com\r\n\r\nhalf a mess")
			s.expect("421 4.4.2 Timeout waiting for message data; nothing was accepted")
			if n := len(r.queued()); n != 0 {
				t.Errorf("%d messages queued", n)
			}
			if !strings.Contains(r.logs.String(), "client stalled during DATA") {
				t.Errorf("no log line for the stalled client")
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := startRelay(t, "idle_timeout = \"2s\"\ndata_timeout = \"1s\"", nil)
			s := r.raw()
			tc.run(t, r, s)
			s.Conn().Close()
			// The session ends before the spool is inspected.
			testkit.Eventually(t, "the session to end", func() bool { return r.srv.conns.Load() == 0 })
			r.intact()
			for _, e := range r.queued() {
				b, err := spooledBody(r.spool, e.ID)
				if err != nil || bytes.Contains(b[:min(len(b), 200)], []byte("\x00")) && !strings.Contains(tc.name, "NUL") {
					t.Errorf("body of %s: %v", e.ID, err)
				}
			}
		})
	}
}
