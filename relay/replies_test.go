package relay

import (
	"bytes"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"log/slog"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"unicode"
)

// TestReplyWording checks every row of the refusals table: each refusal
// has a matching enhanced code (maddy once had a helper whose first digit
// was always 5) and a sentence a person can act on.
func TestReplyWording(t *testing.T) {
	n := 0
	for k, sp := range refusals {
		n++
		code, class := sp.code, sp.ec[0]
		if code < 400 || code > 599 || code/100 != class {
			t.Errorf("refusal %d: reply %d has enhanced class %d", k, code, class)
		}
		msg := sp.text
		if code == 421 || code == 554 {
			// RFC 5321 puts the server's name first in a 421 that closes
			// the connection, and in a 554 greeting (proxyproto.go).
			msg = strings.TrimPrefix(msg, "%s ")
		}
		if len(strings.Fields(msg)) < 4 || !(unicode.IsUpper([]rune(msg)[0]) || strings.HasPrefix(msg, "%s: ")) {
			t.Errorf("refusal %d: reply text %q is not a sentence", k, msg)
		}
		if sp.log == "" && k != int(connLimit) && k != int(connLimitIP) {
			t.Errorf("refusal %d (%q) is not logged", k, msg)
		}
	}
	if n < 15 {
		t.Errorf("found only %d replies; the table is not complete", n)
	}
}

// TestRepliesOnlyInTheTable reads the package's production source: no
// file but replies.go may build an SMTP reply, so that replies.go is the
// one place to look for where a reply comes from.
func TestRepliesOnlyInTheTable(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	replyLit := regexp.MustCompile(`^"[2-5][0-9][0-9][ -]`)
	fset := token.NewFileSet()
	read := 0
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") || f == "replies.go" {
			continue
		}
		af, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		read++
		ast.Inspect(af, func(node ast.Node) bool {
			switch n := node.(type) {
			case *ast.CompositeLit:
				if sel, ok := n.Type.(*ast.SelectorExpr); ok && sel.Sel.Name == "SMTPError" {
					t.Errorf("%s: builds an smtp.SMTPError; add a row to replies.go instead", fset.Position(n.Pos()))
				}
			case *ast.BasicLit:
				if n.Kind == token.STRING && replyLit.MatchString(n.Value) {
					t.Errorf("%s: %s looks like an SMTP reply; add it to replies.go instead", fset.Position(n.Pos()), n.Value)
				}
			}
			return true
		})
	}
	if read < 4 {
		t.Errorf("read only %d files; the test is not reading the source", read)
	}
}

// TestRefuseCountsAndLogs checks the one reporting function: the reason is
// counted, the log line carries the reason, the reply and the fix at the
// table's level, and protocol errors are not counted.
func TestRefuseCountsAndLogs(t *testing.T) {
	var logs bytes.Buffer
	var counted []string
	s := &Server{
		log:   slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		hooks: Hooks{Refused: func(reason string) { counted = append(counted, reason) }},
	}
	se := s.refuse(newRefusal(senderDenied, "ceo@contoso.com", "erp"), "client", "erp")
	want := `550 5.7.1 Sender <ceo@contoso.com> is not allowed for client "erp"; the relay's administrator can add it to the client's senders`
	if got := wireText(se); got != want {
		t.Errorf("reply %q, want %q", got, want)
	}
	line := logs.String()
	for _, part := range []string{"level=WARN", `msg="refused sender"`, "reason=sender_denied", "client=erp", `reply="550 5.7.1 Sender <ceo@contoso.com>`, `fix="add the address`} {
		if !strings.Contains(line, part) {
			t.Errorf("log line %q lacks %q", line, part)
		}
	}
	s.refuse(newRefusal(rcptBeforeMail))
	s.refuse(newRefusal(connLimit, "relay.test"))
	if fmt.Sprint(counted) != "[sender_denied connection_limit]" {
		t.Errorf("counted %v, want [sender_denied connection_limit]", counted)
	}
	if strings.Contains(logs.String(), "Too many connections") {
		t.Errorf("the connection limit was logged: %s", logs.String())
	}
}

// TestOwnText covers the replacement of go-smtp's chatty texts.
func TestOwnText(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"250 2.0.0 Roger, accepting mail from <noreply@contoso.com>", "250 2.1.0 Sender <noreply@contoso.com> OK"},
		{"250 2.0.0 Roger, accepting mail from <>", "250 2.1.0 Sender <> OK"},
		{"250 2.0.0 Roger, accepting mail from <a\x01b@x>", "250 2.1.0 Sender <a?b@x> OK"},
		{"250 2.0.0 I'll make sure <a@example.com> gets this", "250 2.1.5 Recipient <a@example.com> OK"},
		{"250 2.0.0 I have successfully done nothing", "250 2.0.0 OK"},
		{"354 Go ahead. End your data with <CR><LF>.<CR><LF>", "354 End data with <CR><LF>.<CR><LF>"},
		{"421 4.4.2 Idle timeout, bye bye", "421 4.4.2 Idle timeout: no command received in time; closing the connection"},
		{"500 5.5.1 Too many errors. Quiting now", "500 5.5.1 Too many errors; closing the connection"},
		{"454 4.7.0 Invalid base64 data", "501 5.5.2 Invalid base64 data in AUTH: nothing was checked; send the credentials base64-encoded"},
		{"250 2.0.0 OK: queued as x", ""},
		{"250 2.0.0 Roger, accepting mail from", ""},
		{"550 5.7.1 Sender <x> is not allowed", ""},
	} {
		got, ok := ownText(tt.in)
		if ok != (tt.want != "") || got != tt.want {
			t.Errorf("ownText(%q) = %q, %v; want %q", tt.in, got, ok, tt.want)
		}
	}
	for _, o := range ownTexts {
		code, _ := strconv.Atoi(o.ours[:3])
		if o.ours[:1] != o.goSMTP[:1] && !o.reclass || code < 200 || o.ours[3] != ' ' {
			t.Errorf("%q replaces %q with another class of reply", o.ours, o.goSMTP)
		}
	}
}

// TestNoCertificate: without a certificate the relay cannot offer
// STARTTLS, so a remote peer's AUTH was told "issue STARTTLS" and
// STARTTLS then answered go-smtp's "502 5.5.1 TLS not supported". Both
// replies, and the log's fix, now name the keys that would fix it.
func TestNoCertificate(t *testing.T) {
	r := startRelay(t, "", func(r *testRelay) { r.srv.listen.TLSCertFile = "" })
	r.setPeer("198.51.100.7")
	c := r.dial()
	if ehlo := c.ehlo(); strings.Contains(ehlo, "STARTTLS") || strings.Contains(ehlo, "AUTH") {
		t.Errorf("EHLO without a certificate: %q; want neither STARTTLS nor AUTH", ehlo)
	}
	c.authPlain("538 5.7.11 Encryption required: AUTH in clear text is refused from 198.51.100.7 and this relay has no TLS certificate, so STARTTLS is not available; "+
		"its administrator must set [listen] tls_cert_file and tls_key_file, or trust the client's network", "app", appPassword)
	c.cmd("502 5.5.1 STARTTLS is not available: this relay has no TLS certificate; its administrator must set [listen] tls_cert_file and tls_key_file", "STARTTLS")
	logs := r.logs.String()
	for _, want := range []string{"reason=tls_required", "reason=tls_unavailable", `fix="set listen.tls_cert_file and listen.tls_key_file`} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q", want)
		}
	}
	// With a certificate the advice stays STARTTLS.
	r = startRelay(t, "", nil)
	r.setPeer("198.51.100.7")
	c = r.dial()
	c.ehlo()
	c.authPlain("538 5.7.11 Encryption required: issue STARTTLS before AUTH", "app", appPassword)
}

// TestRcptNotAnAddress: "RCPT TO:<nobody>" fails go-smtp's parser, which
// answered "501 5.5.2 Was expecting RCPT arg syntax"; the README promises
// 501 5.1.3 naming the recipient. A command whose syntax is wrong keeps
// the syntax error.
func TestRcptNotAnAddress(t *testing.T) {
	r := startRelay(t, "", nil)
	c := login(t, r)
	c.cmd("250", "MAIL FROM:<noreply@contoso.com>")
	c.cmd("501 5.1.3 Recipient <nobody> is not a valid address", "RCPT TO:<nobody>")
	c.cmd("501 5.1.3 Recipient <> is not a valid address", "rcpt to: <>")
	c.cmd("501 5.1.3 Recipient <nobody> is not a valid address", "RCPT TO:nobody")
	c.cmd("501 5.5.2 Was expecting RCPT arg syntax", "RCPT <nobody@example.com>")
	c.cmd("501 5.5.2 Was expecting RCPT arg syntax", "RCPT TO:<nobody@example.com")
	c.cmd("250 2.1.5", "RCPT TO:<x@example.com>")
	if !strings.Contains(r.logs.String(), "reason=bad_recipient to=nobody") {
		t.Errorf("the refused recipient is not logged")
	}
}

func TestRcptAddress(t *testing.T) {
	for _, tt := range []struct{ line, want string }{
		{"RCPT TO:<nobody>", "nobody"},
		{"rcpt  to: <a b> NOTIFY=NEVER", "a b"},
		{"RCPT TO:nobody SIZE=1", "nobody"},
		{"RCPT TO:<>", ""},
		{"RCPT TO:", "-"},
		{"RCPT TO:<nobody", "-"},
		{"RCPT TO:nobody>", "-"},
		{"RCPT FROM:<nobody>", "-"},
		{"MAIL TO:<nobody>", "-"},
	} {
		got, ok := rcptAddress(tt.line)
		if !ok {
			got = "-"
		}
		if got != tt.want {
			t.Errorf("rcptAddress(%q) = %q, want %q", tt.line, got, tt.want)
		}
	}
}
