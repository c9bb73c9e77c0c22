package relay

import (
	"fmt"
	"strings"
	"testing"

	"github.com/oauthrelay/oauthrelay/internal/testkit"
)

// TestDuplicateSenderFields sends, as a trusted client allowed only
// noreply@contoso.com, headers that show an allowed From: first and
// another address after it. Each must be refused with 550 5.6.0 and
// nothing queued: RFC 5322 allows one From: and at most one Sender:, and
// the policy cannot know which one Microsoft 365 or the reader will use.
func TestDuplicateSenderFields(t *testing.T) {
	const from = "From: <noreply@contoso.com>\r\n"
	for _, tc := range []struct {
		name, header, want string
	}{
		{"two From", from + "From: <ceo@contoso.com>\r\n", "550 5.6.0 The message has 2 From: fields and RFC 5322 allows exactly one"},
		{"two From, other case and blank before the colon", from + "FROM : <ceo@contoso.com>\r\n", "550 5.6.0 The message has 2 From: fields"},
		{"two Sender", from + "Sender: <noreply@contoso.com>\r\nSender: <ceo@contoso.com>\r\n", "550 5.6.0 The message has 2 Sender: fields and RFC 5322 allows at most one"},
		{"second From after a bare LF", "From: <noreply@contoso.com>\nFrom: <ceo@contoso.com>\r\n", "550 5.6.0 The message has 2 From: fields"},
		{"Resent-From", from + "Resent-From: <ceo@contoso.com>\r\n", "550 5.7.1 Resent-From: <ceo@contoso.com> is not allowed for client \"monitor\""},
		{"Resent-Sender", from + "Resent-Sender: <ceo@contoso.com>\r\n", "550 5.7.1 Resent-Sender: <ceo@contoso.com> is not allowed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := startRelay(t, "", nil)
			r.setPeer("192.0.2.60") // "monitor": noreply@contoso.com only
			c := r.dial()
			c.ehlo()
			c.cmd("250", "MAIL FROM:<noreply@contoso.com>")
			c.cmd("250", "RCPT TO:<a@example.com>")
			c.check("end of data", c.Data(tc.header+"Subject: x\r\n\r\nbody\r\n"), tc.want)
			r.assertEmpty()
		})
	}
}

// TestDuplicateFromAcrossBDATChunks splits "From:" of a second From: field
// between two BDAT chunks: the header is judged as a whole, not per chunk.
func TestDuplicateFromAcrossBDATChunks(t *testing.T) {
	r := startRelay(t, "", nil)
	r.setPeer("192.0.2.60")
	s := r.raw()
	s.write("EHLO hostile.test\r\n")
	s.expect("250 ")
	first := "From: <noreply@contoso.com>\r\nFr"
	last := "om: <ceo@contoso.com>\r\nSubject: x\r\n\r\nbody\r\n"
	s.write(fmt.Sprintf("MAIL FROM:<noreply@contoso.com>\r\nRCPT TO:<a@example.com>\r\nBDAT %d\r\n%s", len(first), first))
	s.expect("250 ")
	s.expect("250 ")
	s.expect("250 ")
	s.write(fmt.Sprintf("BDAT %d LAST\r\n%s", len(last), last))
	if got := s.expect("550 5.6.0"); !strings.Contains(got, "2 From: fields") {
		t.Errorf("reply %q", got)
	}
	s.Conn().Close()
	testkit.Eventually(t, "the session to end", func() bool { return r.srv.conns.Load() == 0 })
	r.assertEmpty()
}

// TestLoneCRAndLF sends what go-smtp forwarded byte for byte: a lone CR
// that hides a From: inside the Subject: line, a lone CR before a "."
// line, and a line-initial ".\r" that go-smtp dropped before losing
// track of line starts. What is spooled has CRLF line ends only, the
// sender check sees the hidden From:, and the data ends where RFC 5321
// says it does.
func TestLoneCRAndLF(t *testing.T) {
	r := startRelay(t, "", nil)
	r.setPeer("192.0.2.60")
	c := r.dial()
	c.ehlo()
	c.cmd("250", "MAIL FROM:<noreply@contoso.com>")
	c.cmd("250", "RCPT TO:<a@example.com>")
	c.cmd("354", "DATA")
	c.write("From: <noreply@contoso.com>\r\nSubject: x\rFrom: <ceo@contoso.com>\r\n\r\nbody\r\n.\r\n")
	c.read("550 5.6.0 The message has 2 From: fields")

	c.cmd("250", "MAIL FROM:<noreply@contoso.com>")
	c.cmd("250", "RCPT TO:<a@example.com>")
	c.cmd("354", "DATA")
	c.write("From: <noreply@contoso.com>\r\nSubject: y\n\nline\r.\r\n.\rnext\r\n.\r\r\n.\r\n")
	body, _ := r.stored(queuedID(t, c.read("250 2.0.0")))
	_, got, _ := strings.Cut(body, "From: <noreply@contoso.com>\r\n")
	if want := "Subject: y\r\nMessage-ID: <"; !strings.HasPrefix(got, want) {
		t.Errorf("header after From: %q", got)
	}
	if _, b, _ := strings.Cut(got, "\r\n\r\n"); b != "line\r\n.\r\n\r\nnext\r\n\r\n\r\n" {
		t.Errorf("body %q", b)
	}
	if strings.Contains(strings.ReplaceAll(body, "\r\n", ""), "\r") || strings.Contains(strings.ReplaceAll(body, "\r\n", ""), "\n") {
		t.Errorf("a lone CR or LF was spooled: %q", body)
	}
	// The connection is in step: the next command is a command.
	c.cmd("250", "NOOP")
	if strings.Contains(r.logs.String(), "cannot be replaced") {
		t.Errorf("the relay could not read DATA itself:\n%s", r.logs.String())
	}
}

// write sends raw bytes, for input no client library would send.
func (c *client) write(s string) {
	c.t.Helper()
	if _, err := c.Conn().Write([]byte(s)); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}
