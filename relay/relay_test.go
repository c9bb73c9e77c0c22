package relay

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/oauthrelay/oauthrelay/config"
	"github.com/oauthrelay/oauthrelay/internal/testkit"
	"github.com/oauthrelay/oauthrelay/queue"
)

// A message with every header the relay would otherwise add, and a body
// that exercises dot-stuffing, blank lines, trailing spaces and 8-bit text.
const fullMessage = "From: Helpdesk <noreply@contoso.com>\r\n" +
	"To: customer@example.com\r\n" +
	"Subject: Invoice 42\r\n" +
	"Message-ID: <invoice-42@erp.contoso.com>\r\n" +
	"Date: Mon, 02 Jan 2006 15:04:05 +0000\r\n" +
	"X-Folded: first\r\n\tsecond\r\n" +
	"\r\n" +
	"Dear customer,\r\n" +
	".a line that starts with a dot\r\n" +
	"..and one with two\r\n" +
	"\r\n" +
	"trailing spaces   \r\n" +
	"Grüße\r\n" +
	"From: not a header, it is in the body\r\n"

func login(t *testing.T, r *testRelay) *client {
	t.Helper()
	c := r.dial()
	c.ehlo()
	c.authPlain("235 2.0.0", "app", appPassword)
	return c
}

// receivedRE matches the one Received: header the relay prepends.
var receivedRE = regexp.MustCompile(`^Received: from app\.test \(\[[0-9a-f.:]+\]\)\r\n\tby relay\.test \(oauthrelay\) with (ESMTP[SA]*) id (\S+)(\r\n\tfor <[^>]+>)?;\r\n\t[^\r\n]+\r\n`)

func TestAcceptStoresExactMessage(t *testing.T) {
	r := startRelay(t, "", nil)
	c := login(t, r)
	reply := c.send("noreply@contoso.com", []string{"customer@example.com"}, fullMessage)
	if !strings.HasPrefix(reply, "250 2.0.0") {
		t.Fatalf("reply %q", reply)
	}
	id := queuedID(t, reply)
	body, env := r.stored(id)
	m := receivedRE.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("stored message does not start with our Received: header:\n%s", body)
	}
	if m[1] != "ESMTPA" || m[2] != id {
		t.Errorf("Received: with %s id %s; want ESMTPA id %s", m[1], m[2], id)
	}
	if rest := body[len(m[0]):]; rest != fullMessage {
		t.Errorf("message changed in the spool:\n got %q\nwant %q", rest, fullMessage)
	}
	if env.Client != "app" || env.Mailbox != "helpdesk@contoso.com" || env.MailFrom != "noreply@contoso.com" ||
		len(env.Recipients) != 1 || env.Recipients[0].Address != "customer@example.com" || env.Recipients[0].State != queue.RcptPending ||
		env.State != queue.Incoming || env.Received.IsZero() || env.NextAttempt.IsZero() || env.RemoteAddr != "127.0.0.1" {
		t.Errorf("envelope %+v", env)
	}
	if !strings.Contains(r.logs.String(), "msg=accepted id="+id) {
		t.Errorf("no accepted log line for %s", id)
	}
	// The session goes on: a second message on the same connection.
	reply2 := c.send("helpdesk@contoso.com", []string{"a@example.com", "b@example.com"}, "Subject: two\r\n\r\nhi\r\n")
	if id2 := queuedID(t, reply2); id2 <= id {
		t.Errorf("second id %s does not sort after %s", id2, id)
	}
}

func TestAddsMessageIDAndDateOnlyWhenMissing(t *testing.T) {
	r := startRelay(t, "", nil)
	c := login(t, r)
	msg := "From: noreply@contoso.com\r\nSubject: no id\r\n\r\nbody\r\n"
	id := queuedID(t, c.send("noreply@contoso.com", []string{"x@example.com"}, msg))
	body, _ := r.stored(id)
	m := receivedRE.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no Received: %q", body)
	}
	rest := body[len(m[0]):]
	header, tail, _ := strings.Cut(rest, "\r\n\r\n")
	if tail != "body\r\n" {
		t.Errorf("body = %q", tail)
	}
	if !strings.HasPrefix(header, "From: noreply@contoso.com\r\nSubject: no id\r\n") {
		t.Errorf("original header not kept first: %q", header)
	}
	if !strings.Contains(header, "\r\nMessage-ID: <"+id+"@relay.test>") {
		t.Errorf("no Message-ID added: %q", header)
	}
	if !regexp.MustCompile(`\r\nDate: \w{3}, \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} [+-]\d{4}(\r\n|$)`).MatchString(header) {
		t.Errorf("no Date added: %q", header)
	}
	// With both present, neither is added (checked byte for byte in
	// TestAcceptStoresExactMessage); here also the lower-case spelling.
	msg2 := "from: noreply@contoso.com\r\nmessage-id: <x@y>\r\ndate: Mon, 02 Jan 2006 15:04:05 +0000\r\n\r\nbody\r\n"
	body2, _ := r.stored(queuedID(t, c.send("noreply@contoso.com", []string{"x@example.com"}, msg2)))
	if !strings.HasSuffix(body2, "\r\n"+msg2) || strings.Count(strings.ToLower(body2), "message-id:") != 1 || strings.Count(strings.ToLower(body2), "\ndate:") != 1 {
		t.Errorf("headers added although present: %q", body2)
	}
}

// TestHeaderShapes covers messages a careless application sends: no header
// at all, a header and no body, no From:.
func TestHeaderShapes(t *testing.T) {
	tests := []struct {
		name, msg string
		// wantAfter is what must follow the relay's own fields.
		wantAfter string
		wantFrom  bool // the relay adds From: <envelope sender>
	}{
		{"no header at all", "just a line of text\r\nand another\r\n", "\r\njust a line of text\r\nand another\r\n", true},
		{"body starts at a non-header line", "Subject: hi\r\nthis is text\r\nFrom: evil@example.com\r\n", "\r\nthis is text\r\nFrom: evil@example.com\r\n", true},
		{"header only, no blank line", "From: noreply@contoso.com\r\nSubject: header only\r\n", "", false},
		{"empty header", "\r\nbody only\r\n", "\r\nbody only\r\n", true},
		{"empty message", "", "", true},
		{"obsolete blank before colon", "Subject : old style\r\nFrom: noreply@contoso.com\r\n\r\nb\r\n", "\r\nb\r\n", false},
	}
	r := startRelay(t, "", nil)
	c := login(t, r)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body, _ := r.stored(queuedID(t, c.send("noreply@contoso.com", []string{"x@example.com"}, tt.msg)))
			if !strings.HasSuffix(body, tt.wantAfter) {
				t.Errorf("stored %q does not end with %q", body, tt.wantAfter)
			}
			if got := strings.Contains(body, "\r\nFrom: <noreply@contoso.com>\r\n"); got != tt.wantFrom {
				t.Errorf("From: added = %v, want %v: %q", got, tt.wantFrom, body)
			}
			if !strings.Contains(body, "\r\nMessage-ID: <") {
				t.Errorf("no Message-ID: %q", body)
			}
			// Every line the app sent is in the stored message, in order.
			stored := strings.Split(body, "\r\n")
			i := 0
			for _, l := range strings.Split(tt.msg, "\r\n") {
				for i < len(stored) && stored[i] != l {
					i++
				}
				if i == len(stored) {
					t.Fatalf("stored %q lost line %q of %q", body, l, tt.msg)
				}
				i++
			}
		})
	}
	// The From: hidden after the first non-header line is body, so it is
	// not checked: what Microsoft 365 sees as From: is what the relay
	// checked. A From: inside the header is checked.
	c.cmd("250", "MAIL FROM:<noreply@contoso.com>")
	c.cmd("250", "RCPT TO:<x@example.com>")
	c.data("550 5.7.1", "Subject: hi\r\nFrom: evil@example.com\r\n\r\n")
}

func TestWrongPassword(t *testing.T) {
	r := startRelay(t, "", func(r *testRelay) { r.srv.lim.sleep = func(time.Duration) {} })
	c := r.dial()
	c.ehlo()
	// A password that no log line can contain by chance (replies say
	// "wrong username or password").
	const wrong = "wr0ng-Pa55"
	reply := c.authPlain("535 5.7.8", "app", wrong)
	if !strings.Contains(reply, "Authentication credentials invalid") {
		t.Errorf("reply %q", reply)
	}
	c.authPlain("535 5.7.8", "nobody", appPassword)
	// Not logged in, so MAIL FROM needs AUTH.
	c.cmd("530 5.7.0", "MAIL FROM:<noreply@contoso.com>")
	if strings.Contains(r.logs.String(), wrong) {
		t.Errorf("the password appears in the log")
	}
	// An authorization identity other than the user is refused.
	c2 := r.dial()
	c2.ehlo()
	c2.cmd("535 5.7.8", "AUTH PLAIN %s", base64.StdEncoding.EncodeToString([]byte("erpnet\x00app\x00"+appPassword)))
}

func TestAuthLogin(t *testing.T) {
	r := startRelay(t, "", nil)
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

	// Classic three-step LOGIN.
	c := r.dial()
	c.ehlo()
	if got := c.cmd("334", "AUTH LOGIN"); got != "334 "+b64("Username:") {
		t.Errorf("challenge %q", got)
	}
	if got := c.cmd("334", "%s", b64("app")); got != "334 "+b64("Password:") {
		t.Errorf("challenge %q", got)
	}
	c.cmd("235 2.0.0", "%s", b64(appPassword))
	c.cmd("250", "MAIL FROM:<noreply@contoso.com>")

	// LOGIN with the username as initial response (Python smtplib, swaks).
	c = r.dial()
	c.ehlo()
	c.cmd("334 "+b64("Password:"), "AUTH LOGIN %s", b64("app"))
	c.cmd("235 2.0.0", "%s", b64(appPassword))

	// Cancelled with "*".
	c = r.dial()
	c.ehlo()
	c.cmd("334", "AUTH LOGIN")
	c.cmd("501 5.0.0", "*")

	// Unknown mechanism.
	c.cmd("504 5.7.4", "AUTH CRAM-MD5")
}

func TestAuthRefusedInClearFromNonLoopback(t *testing.T) {
	r := startRelay(t, "", nil)
	r.setPeer("198.51.100.7")
	c := r.dial()
	if ehlo := c.ehlo(); strings.Contains(ehlo, "AUTH") || !strings.Contains(ehlo, "STARTTLS") {
		t.Errorf("EHLO in clear from a remote peer: %q; want STARTTLS and no AUTH", ehlo)
	}
	reply := c.authPlain("538 5.7.11", "app", appPassword)
	if !strings.Contains(reply, "STARTTLS") {
		t.Errorf("reply %q does not say what to do", reply)
	}
	// After STARTTLS the same peer may log in and send.
	c.starttls(r.tlsConfig())
	if ehlo := c.ehlo(); !strings.Contains(ehlo, "AUTH PLAIN LOGIN") {
		t.Errorf("EHLO after STARTTLS: %q", ehlo)
	}
	c.authPlain("235", "app", appPassword)
	body, env := r.stored(queuedID(t, c.send("noreply@contoso.com", []string{"x@example.com"}, fullMessage)))
	if !strings.Contains(body, "with ESMTPSA id") || env.RemoteAddr != "198.51.100.7" {
		t.Errorf("Received: %q, remote %s", body[:200], env.RemoteAddr)
	}
}

func TestAllowInsecureAuth(t *testing.T) {
	r := startRelay(t, "allow_insecure_auth = true", nil)
	r.setPeer("198.51.100.7")
	c := r.dial()
	if ehlo := c.ehlo(); !strings.Contains(ehlo, "AUTH PLAIN LOGIN") {
		t.Errorf("EHLO: %q", ehlo)
	}
	c.authPlain("235", "app", appPassword)
}

func TestLoginFromOutsideClientNetworks(t *testing.T) {
	r := startRelay(t, "allow_insecure_auth = true", func(r *testRelay) { r.srv.lim.sleep = func(time.Duration) {} })
	r.setPeer("10.0.1.9")
	c := r.dial()
	c.ehlo()
	c.authPlain("535 5.7.8", "erpnet", netPassword)
	r.setPeer("10.0.0.9")
	c = r.dial()
	c.ehlo()
	c.authPlain("235", "erpnet", netPassword)
	c.cmd("250", "MAIL FROM:<noreply@contoso.com>")
}

func TestRequireTLS(t *testing.T) {
	r := startRelay(t, "require_tls = true", nil)
	c := login(t, r)
	c.cmd("530 5.7.0", "MAIL FROM:<noreply@contoso.com>")
	c.starttls(r.tlsConfig())
	c.ehlo()
	c.authPlain("235", "app", appPassword)
	c.cmd("250", "MAIL FROM:<noreply@contoso.com>")
}

func TestUntrustedPeerWithoutAuth(t *testing.T) {
	r := startRelay(t, "", nil)
	for _, peer := range []string{"", "198.51.100.7"} {
		if peer != "" {
			r.setPeer(peer)
		}
		c := r.dial()
		c.ehlo()
		reply := c.cmd("530 5.7.0", "MAIL FROM:<noreply@contoso.com>")
		if !strings.Contains(reply, "AUTH") {
			t.Errorf("reply %q does not say to log in", reply)
		}
	}
	r.assertEmpty()
}

func TestTrustedNetworkWithoutAuth(t *testing.T) {
	r := startRelay(t, "", nil)
	r.setPeer("192.0.2.60")
	c := r.dial()
	c.ehlo()
	_, env := r.stored(queuedID(t, c.send("noreply@contoso.com", []string{"x@example.com"}, fullMessage)))
	if env.Client != "monitor" {
		t.Errorf("client %q, want monitor", env.Client)
	}
	c.cmd("550 5.7.1", "MAIL FROM:<sales@contoso.com>")
	// A successful AUTH makes the connection that client, even from a
	// trusted network.
	c.starttls(r.tlsConfig())
	c.ehlo()
	c.authPlain("235", "app", appPassword)
	_, env = r.stored(queuedID(t, c.send("sales@contoso.com", []string{"x@example.com"}, "From: sales@contoso.com\r\n\r\nx\r\n")))
	if env.Client != "app" || env.Mailbox != "sales@contoso.com" {
		t.Errorf("client %q mailbox %q, want app via sales@", env.Client, env.Mailbox)
	}
}

func TestDisallowedSender(t *testing.T) {
	r := startRelay(t, "", nil)
	c := login(t, r)
	for _, from := range []string{"ceo@contoso.com", "someone@example.com", ""} {
		reply := c.cmd("550 5.7.1", "MAIL FROM:<%s>", from)
		if !strings.Contains(reply, `"app"`) || !strings.Contains(reply, "<"+from+">") {
			t.Errorf("reply %q does not name the address and the client", reply)
		}
	}
	// RCPT without an accepted MAIL is refused by the protocol.
	c.cmd("502 5.5.1", "DATA")
	r.assertEmpty()
	if !strings.Contains(r.logs.String(), "refused sender") {
		t.Errorf("no log line for the refusal")
	}
}

func TestDisallowedFromHeader(t *testing.T) {
	tests := []struct{ name, header string }{
		{"From not allowed", "From: ceo@contoso.com\r\n"},
		{"From of another client's mailbox", "From: Sales <sales@example.org>\r\n"},
		{"one of two From addresses", "From: noreply@contoso.com, ceo@contoso.com\r\nSender: noreply@contoso.com\r\n"},
		{"Sender not allowed", "From: noreply@contoso.com\r\nSender: ceo@contoso.com\r\n"},
		{"From through another mailbox", "From: sales@contoso.com\r\n"},
	}
	r := startRelay(t, "", nil)
	c := login(t, r)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c.cmd("250", "MAIL FROM:<noreply@contoso.com>")
			c.cmd("250", "RCPT TO:<x@example.com>")
			reply := c.data("550 5.7.1", tt.header+"Subject: x\r\n\r\nbody\r\n")
			if !strings.Contains(reply, "nothing was accepted") && !strings.Contains(reply, "not allowed") && !strings.Contains(reply, "refuse") {
				t.Errorf("reply %q gives no reason", reply)
			}
			r.assertEmpty()
		})
	}
	c.cmd("250", "MAIL FROM:<noreply@contoso.com>")
	c.cmd("250", "RCPT TO:<x@example.com>")
	c.data("550 5.6.0", "From: not an address at all\r\n\r\nbody\r\n")
	r.assertEmpty()
	// The session is still usable after a refusal.
	c.send("noreply@contoso.com", []string{"x@example.com"}, fullMessage)
}

func TestOversize(t *testing.T) {
	r := startRelay(t, `max_message_size = "2KB"`, nil)
	c := login(t, r)
	if ehlo := c.ehlo(); !strings.Contains(ehlo, "SIZE 2000") {
		t.Errorf("EHLO does not advertise SIZE 2000: %q", ehlo)
	}
	c.authPlain("503", "app", appPassword) // already logged in
	c.cmd("552 5.3.4", "MAIL FROM:<noreply@contoso.com> SIZE=5000")
	c.cmd("250", "MAIL FROM:<noreply@contoso.com> SIZE=1000")
	c.cmd("250", "RCPT TO:<x@example.com>")
	big := "From: noreply@contoso.com\r\n\r\n" + strings.Repeat("0123456789012345678901234567890123456789\r\n", 100)
	reply := c.data("552 5.3.4", big)
	if !strings.Contains(reply, "2 KB") {
		t.Errorf("reply %q does not state the limit", reply)
	}
	r.assertEmpty()
	// Big header alone, without a blank line, is refused the same way.
	c.cmd("250", "MAIL FROM:<noreply@contoso.com>")
	c.cmd("250", "RCPT TO:<x@example.com>")
	c.data("552 5.3.4", "X-Long: a"+strings.Repeat("\r\n "+strings.Repeat("a", 70), 40)+"\r\n")
	r.assertEmpty()
	c.send("noreply@contoso.com", []string{"x@example.com"}, fullMessage)
}

func TestTooManyRecipients(t *testing.T) {
	r := startRelay(t, "max_recipients = 3", nil)
	c := login(t, r)
	c.cmd("250", "MAIL FROM:<noreply@contoso.com>")
	for i := range 3 {
		c.cmd("250", "RCPT TO:<r%d@example.com>", i)
	}
	reply := c.cmd("452 4.5.3", "RCPT TO:<r3@example.com>")
	if !strings.Contains(reply, "at most 3") {
		t.Errorf("reply %q", reply)
	}
	// go-smtp's parser refuses it; the relay says what is wrong.
	c.cmd("501 5.1.3 Recipient <no-at-sign> is not a valid address", "RCPT TO:<no-at-sign>")
	_, env := r.stored(queuedID(t, c.data("250", fullMessage)))
	if len(env.Recipients) != 3 {
		t.Errorf("recipients %d, want 3", len(env.Recipients))
	}
}

func TestRewriteFrom(t *testing.T) {
	r := startRelay(t, "", nil)
	r.setPeer("192.0.2.50")
	c := r.dial()
	c.ehlo()
	// Whatever the device says, it is sent as scanner@contoso.com.
	msg := "From: \"Scanner 3rd floor\" <scan@printer.local>\r\nSender: root@printer.local\r\nSubject: Scan\r\n\r\nattached\r\n"
	body, env := r.stored(queuedID(t, c.send("scan@printer.local", []string{"x@example.com"}, msg)))
	if env.MailFrom != "scanner@contoso.com" || env.Client != "scanner" || env.Mailbox != "helpdesk@contoso.com" {
		t.Errorf("envelope %+v", env)
	}
	header, rest, _ := strings.Cut(body, "\r\n\r\n")
	if rest != "attached\r\n" {
		t.Errorf("body %q", rest)
	}
	if !strings.Contains(header, "\r\nFrom: \"Scanner 3rd floor\" <scanner@contoso.com>\r\n") {
		t.Errorf("From: not rewritten: %q", header)
	}
	if !strings.Contains(header, "\r\nReply-To: \"Scanner 3rd floor\" <scan@printer.local>\r\n") {
		t.Errorf("original From: not kept in Reply-To: %q", header)
	}
	if strings.Contains(header, "Sender:") || !strings.Contains(header, "Subject: Scan") {
		t.Errorf("header %q", header)
	}
	// An existing Reply-To: is kept, and a bounce sender is fine.
	msg = "From: scan@printer.local\r\nReply-To: it@contoso.com\r\n\r\nx\r\n"
	body, env = r.stored(queuedID(t, c.send("", []string{"x@example.com"}, msg)))
	if env.MailFrom != "scanner@contoso.com" || !strings.Contains(body, "Reply-To: it@contoso.com\r\n") || strings.Count(body, "Reply-To:") != 1 {
		t.Errorf("envelope from %q, body %q", env.MailFrom, body)
	}
	// No From: at all.
	body, _ = r.stored(queuedID(t, c.send("scan@printer.local", []string{"x@example.com"}, "Subject: bare\r\n\r\nx\r\n")))
	if !strings.Contains(body, "From: <scanner@contoso.com>\r\n") || strings.Contains(body, "Reply-To") {
		t.Errorf("body %q", body)
	}
}

func TestImplicitTLSAndStartTLS(t *testing.T) {
	r := startRelay(t, "", nil)
	c := r.dialTLS()
	if ehlo := c.ehlo(); strings.Contains(ehlo, "STARTTLS") || !strings.Contains(ehlo, "AUTH PLAIN LOGIN") {
		t.Errorf("EHLO over implicit TLS: %q", ehlo)
	}
	c.authPlain("235", "app", appPassword)
	body, _ := r.stored(queuedID(t, c.send("noreply@contoso.com", []string{"x@example.com"}, fullMessage)))
	if !strings.Contains(body, "with ESMTPSA id") {
		t.Errorf("Received: does not record TLS: %q", body[:200])
	}

	c = r.dial()
	c.ehlo()
	c.starttls(r.tlsConfig())
	c.ehlo()
	c.cmd("502 5.5.1", "STARTTLS")
	c.authPlain("235", "app", appPassword)
	body, _ = r.stored(queuedID(t, c.send("noreply@contoso.com", []string{"x@example.com"}, fullMessage)))
	if !strings.Contains(body, "with ESMTPSA id") {
		t.Errorf("Received: does not record STARTTLS: %q", body[:200])
	}
}

// TestBruteForce checks that failures are answered ever more slowly and
// then lock the address out, without sleeping: the limiter's clock and
// sleep are replaced.
func TestBruteForce(t *testing.T) {
	var mu sync.Mutex
	clock := testkit.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	var slept []time.Duration
	r := startRelay(t, "auth_max_failures = 3\nauth_lockout = \"10m\"", func(r *testRelay) {
		r.srv.lim.now = clock.Now
		r.srv.lim.sleep = func(d time.Duration) { mu.Lock(); slept = append(slept, d); mu.Unlock() }
	})
	advance := clock.Advance

	for range 2 {
		c := r.dial()
		c.ehlo()
		c.authPlain("535 5.7.8", "app", "guess")
		advance(time.Second)
	}
	c := r.dial()
	c.ehlo()
	c.authPlain("454 4.7.0", "app", "guess") // the third failure locks out
	// Locked: even the right password is not tried.
	c = r.dial()
	c.ehlo()
	reply := c.authPlain("454 4.7.0", "app", appPassword)
	if !strings.Contains(reply, "Too many failed logins") || !strings.Contains(reply, "10 minutes") {
		t.Errorf("reply %q", reply)
	}
	mu.Lock()
	if fmt.Sprint(slept) != "[1s 2s 0s]" {
		t.Errorf("delays %v, want [1s 2s 0s]: slower with each failure", slept)
	}
	mu.Unlock()
	// Other addresses are not affected.
	r.setPeer("127.0.0.2")
	c = r.dial()
	c.ehlo()
	c.authPlain("235", "app", appPassword)
	r.setPeer("127.0.0.1")
	// After the lockout the right password works, and resets the count.
	advance(10*time.Minute + time.Second)
	c = r.dial()
	c.ehlo()
	c.authPlain("235", "app", appPassword)
	c = r.dial()
	c.ehlo()
	c.authPlain("535 5.7.8", "app", "guess")
	mu.Lock()
	if last := slept[len(slept)-1]; last != time.Second {
		t.Errorf("after a success the delay restarts at 1s, got %v", last)
	}
	mu.Unlock()
}

func TestSpoolWriteFailure(t *testing.T) {
	for _, tt := range []struct {
		name   string
		break_ string // a spool directory replaced by a file
	}{{"cannot create the body", "tmp"}, {"cannot rename into place", "incoming"}} {
		t.Run(tt.name, func(t *testing.T) {
			r := startRelay(t, "", nil)
			// Replacing a directory with a file fails even for root, which
			// ignores permissions.
			d := filepath.Join(r.spool.Dir(), tt.break_)
			// The spool fills tmp/ with files made ahead of need as it
			// opens: the removal succeeds once that is done. The pooled
			// files it unlinks are not handed out, so Create makes its
			// own file, and fails.
			testkit.Eventually(t, "removing "+tt.break_+"/", func() bool { return os.RemoveAll(d) == nil })
			if err := os.WriteFile(d, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			c := login(t, r)
			c.cmd("250", "MAIL FROM:<noreply@contoso.com>")
			c.cmd("250", "RCPT TO:<x@example.com>")
			reply := c.data("451 4.3.0", fullMessage)
			m := regexp.MustCompile(`\(id (\S+)\)`).FindStringSubmatch(reply)
			if m == nil || !queue.ValidID(m[1]) {
				t.Errorf("reply %q has no queue id", reply)
			}
			for _, leak := range []string{r.spool.Dir(), "not a directory", "spool:", "rename", "open"} {
				if strings.Contains(reply, leak) {
					t.Errorf("reply %q shows internal text %q", reply, leak)
				}
			}
			if m != nil && !strings.Contains(r.logs.String(), "id="+m[1]) {
				t.Errorf("the log does not name id %s", m[1])
			}
		})
	}
}

func TestSpoolFailureReplies(t *testing.T) {
	full := &queue.WriteError{ID: "20260101T000000.000000-abcdef", Op: "write body", Err: syscall.ENOSPC}
	other := &queue.WriteError{ID: "20260101T000000.000000-abcdef", Op: "fsync body", Err: errors.New("input/output error at /var/spool")}
	policy := fmt.Errorf("wrapped: %w", newRefusal(tooBig, "2 KB"))
	srv := &Server{log: r0log()}
	for _, tt := range []struct {
		err  error
		want string
	}{
		{full, "451 4.3.0 Message not queued (id 20260101T000000.000000-abcdef): the relay's disk is full"},
		{other, "451 4.3.0 Message not queued (id 20260101T000000.000000-abcdef): the relay could not write it to disk"},
		{policy, "552 5.3.4 Message too big"},
	} {
		se := srv.refuse(spoolRefusal("20260101T000000.000000-abcdef", tt.err))
		got := fmt.Sprintf("%d %d.%d.%d %s", se.Code, se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2], se.Message)
		if !strings.HasPrefix(got, tt.want) || strings.Contains(got, "/var/spool") {
			t.Errorf("spoolFailure(%v) = %q, want %q", tt.err, got, tt.want)
		}
		// go-smtp type-asserts: the reply must be a bare *smtp.SMTPError.
		var e error = se
		if _, ok := e.(*smtp.SMTPError); !ok {
			t.Errorf("not a bare *smtp.SMTPError")
		}
	}
}

func r0log() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestLineTooLong(t *testing.T) {
	r := startRelay(t, "", nil)
	c := login(t, r)
	c.cmd("250", "MAIL FROM:<noreply@contoso.com>")
	c.cmd("250", "RCPT TO:<x@example.com>")
	c.data("554 5.6.0", "From: noreply@contoso.com\r\n\r\n"+strings.Repeat("a", 3000)+"\r\n")
	r.assertEmpty()
}

// TestReloadBetweenMailAndData: a reload that removes the envelope
// sender's mailbox while a transaction is open must not crash the session;
// the transaction is judged by the configuration MAIL was accepted under.
func TestReloadBetweenMailAndData(t *testing.T) {
	r := startRelay(t, "", nil)
	c := login(t, r)
	c.cmd("250", "MAIL FROM:<sales@contoso.com>")
	c.cmd("250", "RCPT TO:<x@example.com>")

	src := strings.Replace(r.src, "[[mailbox]]\naddress = \"sales@contoso.com\"\napp = \"contoso\"\n", "", 1)
	src = strings.Replace(src, `, "sales@contoso.com"]`, `]`, 1)
	cfg2, err := config.Parse("reloaded.toml", []byte(src), func(string) string { return "" })
	if err != nil {
		t.Fatalf("reloaded configuration: %v", err)
	}
	if cfg2.Mailbox("sales@contoso.com") != nil {
		t.Fatal("the test did not remove the mailbox")
	}
	r.srv.SetConfig(cfg2)

	// From: belongs to another mailbox than the envelope's: refused by the
	// rules in force at MAIL, with a reply, not a crash.
	c.data("550 5.7.1", "From: <noreply@contoso.com>\r\nSubject: x\r\n\r\nbody\r\n")
	c.cmd("250", "NOOP")
	if strings.Contains(r.logs.String(), "panic") {
		t.Fatalf("the session panicked:\n%s", r.logs.String())
	}
}

// TestOwnRepliesOnEveryTransport checks that go-smtp's chatty texts are
// replaced in clear text, after STARTTLS and over implicit TLS.
func TestOwnRepliesOnEveryTransport(t *testing.T) {
	r := startRelay(t, "", nil)
	for _, tt := range []struct {
		name string
		dial func() *client
	}{
		{"clear text", func() *client { c := r.dial(); c.ehlo(); return c }},
		{"STARTTLS", func() *client { c := r.dial(); c.ehlo(); c.starttls(r.tlsConfig()); c.ehlo(); return c }},
		{"implicit TLS", func() *client { c := r.dialTLS(); c.ehlo(); return c }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.dial()
			c.authPlain("235 2.0.0", "app", appPassword)
			for _, x := range []struct{ want, cmd string }{
				{"250 2.0.0 OK", "NOOP"},
				{"250 2.1.0 Sender <noreply@contoso.com> OK", "MAIL FROM:<noreply@contoso.com>"},
				{"250 2.1.5 Recipient <x@example.com> OK", "RCPT TO:<x@example.com>"},
				{"354 End data with <CR><LF>.<CR><LF>", "DATA"},
			} {
				if got := c.cmd(x.want, "%s", x.cmd); got != x.want {
					t.Errorf("%s: got %q, want %q", x.cmd, got, x.want)
				}
			}
			queuedID(t, c.check("end of data", c.SendData("From: noreply@contoso.com\r\n\r\nx\r\n"), "250 2.0.0 OK: queued as "))
		})
	}
	if strings.Contains(r.logs.String(), "cannot be replaced") {
		t.Errorf("the relay warned that it could not replace go-smtp's texts")
	}
}

// TestShutdownBeforeGoSMTPServes shuts the server down before Serve's
// goroutines reach go-smtp. go-smtp's Shutdown closes only the listeners
// its Serve has registered, so a late one used to accept for ever and Serve
// never returned (a test cleanup then hung for the package's whole timeout).
func TestShutdownBeforeGoSMTPServes(t *testing.T) {
	r := startRelay(t, "", nil)
	srv := NewServer(r.cfg, r.spool, ServerOptions{Logger: slog.New(slog.DiscardHandler)})
	shut := make(chan struct{})
	srv.beforeServe = func() { <-shut }
	plain, tl, err := srv.Listeners()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(plain, tl) }()
	// Wait until Serve has handed both listeners out, then shut down
	// while go-smtp has not seen them.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	testkit.WaitFor(ctx, t, "Serve to start its listeners", func() bool {
		srv.mu.Lock()
		defer srv.mu.Unlock()
		return len(srv.servers) == 2
	})
	if err := srv.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	close(shut)
	checkServeReturned(t, done)
}
