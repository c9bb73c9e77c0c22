package msemu

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/oauthrelay/oauthrelay/internal/testkit"
)

// xoauth2Client is the XOAUTH2 SASL client go-sasl no longer has.
type xoauth2Client struct{ user, token string }

func (c xoauth2Client) Start() (string, []byte, error) {
	return "XOAUTH2", testkit.XOAUTH2(c.user, c.token), nil
}

func (c xoauth2Client) Next([]byte) ([]byte, error) { return nil, errors.New("unexpected challenge") }

var _ sasl.Client = xoauth2Client{}

func TestSMTPHappyPathGoSMTP(t *testing.T) {
	dir := t.TempDir()
	e := provisioned(t, Options{Dir: dir})
	tok := msalSecretToken(t, e)

	// Before STARTTLS: no AUTH, SIZE as Exchange advertises.
	plain, err := smtp.Dial(e.SMTPAddr())
	if err != nil {
		t.Fatal(err)
	}
	if err := plain.Hello("relay.example"); err != nil {
		t.Fatal(err)
	}
	if ok, _ := plain.Extension("AUTH"); ok {
		t.Error("AUTH offered before STARTTLS")
	}
	if ok, size := plain.Extension("SIZE"); !ok || size != "157286400" {
		t.Errorf("SIZE %q", size)
	}
	plain.Close()

	c, err := smtp.DialStartTLS(e.SMTPAddr(), &tls.Config{RootCAs: e.CertPool()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if ok, mechs := c.Extension("AUTH"); !ok || mechs != "LOGIN XOAUTH2" {
		t.Errorf("AUTH %q", mechs)
	}
	if err := c.Auth(xoauth2Client{testMbx, tok}); err != nil {
		t.Fatal(err)
	}
	msg := message(testMbx, "first")
	if err := c.SendMail(testMbx, []string{"someone@example.org", "other@example.net"}, strings.NewReader(msg)); err != nil {
		t.Fatal(err)
	}
	if err := c.Quit(); err != nil {
		t.Fatal(err)
	}

	got, err := e.WaitDelivered(context.Background(), 1)
	if err != nil {
		t.Fatal(err)
	}
	m := got[0]
	if !bytes.Equal(m.Data, []byte(msg)) {
		t.Errorf("data not byte-exact:\n%q\n%q", m.Data, msg)
	}
	if m.Mailbox != testMbx || m.AppID != testClient || m.MailFrom != testMbx || len(m.Rcpts) != 2 || m.QueueID != "<first@app.example>" {
		t.Errorf("message %+v", m)
	}
	f := filepath.Join(dir, "1-"+testMbx+".eml")
	b, err := os.ReadFile(f)
	if err != nil || !bytes.Equal(b, []byte(msg)) {
		t.Errorf("mail file: %v", err)
	}
	if fi, err := os.Stat(f); err == nil && fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", fi.Mode())
	}
	st := e.Stats()
	if len(st.AuthTokens) != 1 || !st.AuthTokens[0].OK || st.AuthTokens[0].Remaining < 59*time.Minute {
		t.Errorf("auth records %+v", st.AuthTokens)
	}
	if st.Connections != 2 || st.MaxConcurrentByMailbox[testMbx] != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestSMTPExactTranscript(t *testing.T) {
	e := provisioned(t, Options{})
	tok := msalSecretToken(t, e)
	r := dialRaw(t, e)
	if !regexp.MustCompile(`^220 \S+\.outlook\.office365\.com Microsoft ESMTP MAIL Service ready at \w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d \+0000 \[[0-9A-F]{16}\]$`).MatchString(r.Greeting) {
		t.Errorf("greeting %q", r.Greeting)
	}
	ehlo := r.Cmd("EHLO relay.example")
	want := "Hello [127.0.0.1]\n250-SIZE 157286400\n250-PIPELINING\n250-DSN\n250-ENHANCEDSTATUSCODES\n250-STARTTLS\n250-8BITMIME\n250-BINARYMIME\n250-CHUNKING\n250 SMTPUTF8"
	if !strings.HasSuffix(ehlo, want) {
		t.Errorf("EHLO:\n%s", ehlo)
	}
	r.Expect("MAIL FROM:<"+testMbx+">", ReplyNotAuthenticated)
	if got := r.AuthXOAUTH2(testMbx, tok); !strings.HasPrefix(got, "504 5.7.4") {
		t.Fatalf("AUTH XOAUTH2 before STARTTLS: %q", got)
	}
	if got := r.login(testMbx, tok); got != ReplyAuthOK {
		t.Fatalf("auth %q", got)
	}
	got := r.send(testMbx, []string{"a@example.org"}, message(testMbx, "x1"))
	if got != "250 2.0.0 OK <x1@app.example> [Hostname=SYBP282MB2635.AUSP282.PROD.OUTLOOK.COM]" {
		t.Errorf("after DATA %q", got)
	}
	r.Expect("QUIT", "221 2.0.0")
}

func TestSMTPAuthFailures(t *testing.T) {
	var skew atomic.Int64 // lets the test move the emulator's clock
	e := startEmu(t, Options{Now: func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }})
	e.Provision(testTenant, testClient, testSecret, testMbx)
	tok := msalSecretToken(t, e)
	const noConsent = "11111111-2222-4333-8444-555555555555"
	e.AddApp(App{TenantID: testTenant, ClientID: noConsent, Secrets: []string{"s"}, ServicePrincipal: true})
	e.AddMailbox(Mailbox{Address: "noconsent@contoso.com", FullAccess: []string{noConsent}})

	cases := []struct {
		name  string
		setup func()
		user  string
		token func() string
		want  string
	}{
		{"ok", nil, testMbx, func() string { return tok }, ReplyAuthOK},
		{"garbage token", nil, testMbx, func() string { return "eyJhbGciOiJub25lIn0.e30." }, ReplyAuthFailed},
		{"no full access", func() { e.AddMailbox(Mailbox{Address: "other@contoso.com"}) }, "other@contoso.com", func() string { return tok }, ReplyAuthFailed},
		{"unknown mailbox", nil, "ghost@contoso.com", func() string { return tok }, ReplyAuthFailed},
		{"no consent", nil, "noconsent@contoso.com", func() string {
			e.mu.Lock()
			app := *e.apps[noConsent]
			e.mu.Unlock()
			s, _ := e.issueToken(app, testTenant, "https://outlook.office365.com", "1", time.Hour)
			return s
		}, ReplyAuthFailed},
		{"no service principal", func() {
			e.AddApp(App{TenantID: testTenant, ClientID: testClient, Secrets: []string{testSecret}, Consent: true})
		}, testMbx, func() string { return tok }, ReplyAuthFailed},
		{"mailbox disabled", func() {
			e.Provision(testTenant, testClient, testSecret)
			e.AddMailbox(Mailbox{Address: testMbx, FullAccess: []string{testClient}, SMTPAuthDisabled: true})
		}, testMbx, func() string { return tok }, ReplyAuthDisabledMbx},
		{"tenant disabled", func() {
			e.AddMailbox(Mailbox{Address: testMbx, FullAccess: []string{testClient}})
			e.SetTenantSMTPAuthDisabled(true)
		}, testMbx, func() string { return tok }, ReplyAuthDisabledTenant},
		{"scripted", func() {
			e.SetTenantSMTPAuthDisabled(false)
			e.FailAuth(testMbx, "535 5.7.139 Authentication unsuccessful, user is locked by your organization's security defaults policy. Contact your administrator.")
		}, testMbx, func() string { return tok }, "535 5.7.139 Authentication unsuccessful, user is locked"},
		{"expired token", func() {
			e.FailAuth(testMbx, "")
			skew.Store(int64(2 * time.Hour))
		}, testMbx, func() string { return tok }, ReplyAuthFailed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.setup != nil {
				tc.setup()
			}
			r := dialRaw(t, e)
			if got := r.login(tc.user, tc.token()); !strings.HasPrefix(got, tc.want) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
	st := e.Stats()
	if st.AuthFailures != int64(len(cases)-1) {
		t.Errorf("auth failures %d", st.AuthFailures)
	}
	if last := st.AuthTokens[len(st.AuthTokens)-1]; last.Remaining > -time.Hour+time.Minute || last.OK {
		t.Errorf("expired token record %+v", last)
	}
}

func TestSMTPSendAs(t *testing.T) {
	e := provisioned(t, Options{})
	e.AddMailbox(Mailbox{Address: testMbx, FullAccess: []string{testClient}, SendAs: []string{"alerts@contoso.com"}})
	r := dialRaw(t, e)
	r.login(testMbx, msalSecretToken(t, e))
	r.Expect("MAIL FROM:<ceo@contoso.com>", ReplySendAsDenied)
	if got := r.send("alerts@contoso.com", []string{"a@example.org"}, message("alerts@contoso.com", "ok")); !strings.HasPrefix(got, "250 2.0.0 OK") {
		t.Errorf("SendAs address: %q", got)
	}
	got := r.send(testMbx, []string{"a@example.org"}, message("ceo@contoso.com", "spoof"))
	if !strings.HasPrefix(got, "554 5.2.252 SendAsDenied; "+testMbx+" not allowed to send as ceo@contoso.com; STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied;") {
		t.Errorf("header From: %q", got)
	}
	if n := len(e.Delivered()); n != 1 {
		t.Errorf("delivered %d", n)
	}
}

func TestSMTPConnectionLimit(t *testing.T) {
	e := provisioned(t, Options{})
	tok := msalSecretToken(t, e)
	var open []*rawClient
	for i := 0; i < 3; i++ {
		r := dialRaw(t, e)
		if got := r.login(testMbx, tok); got != ReplyAuthOK {
			t.Fatalf("conn %d: %q", i, got)
		}
		open = append(open, r)
	}
	r := dialRaw(t, e)
	if got := r.login(testMbx, tok); got != ReplyTooManyConns {
		t.Fatalf("4th: %q", got)
	}
	if got := r.Read(); got != "" {
		t.Errorf("4th connection not closed: %q", got)
	}
	// Closing one frees a slot.
	open[0].Expect("QUIT", "221")
	open[0].Read()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := dialRaw(t, e)
		got := r.login(testMbx, tok)
		if got == ReplyAuthOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("slot not freed: %q", got)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if m := e.Stats().MaxConcurrentByMailbox[testMbx]; m != 3 {
		t.Errorf("max concurrent %d", m)
	}
}

func TestSMTPFaults(t *testing.T) {
	e := provisioned(t, Options{})
	tok := msalSecretToken(t, e)
	r := dialRaw(t, e)
	r.login(testMbx, tok)

	e.FailNextData(1, ReplyTempError)
	if got := r.send(testMbx, []string{"a@example.org"}, message(testMbx, "m1")); got != ReplyTempError {
		t.Errorf("FailNextData: %q", got)
	}
	if got := r.send(testMbx, []string{"a@example.org"}, message(testMbx, "m2")); !strings.HasPrefix(got, "250 2.0.0 OK <m2@") {
		t.Errorf("after fault: %q", got)
	}

	e.FailRcptAddress("nobody@example.org", "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup")
	e.FailNextRcpt(1, "452 4.5.3 Too many recipients")
	r.Expect("MAIL FROM:<"+testMbx+">", ReplySenderOK)
	r.Expect("RCPT TO:<a@example.org>", "452 4.5.3")
	r.Expect("RCPT TO:<nobody@example.org>", "550 5.1.10 RESOLVER.ADR.RecipientNotFound")
	r.Expect("RCPT TO:<a@example.org>", ReplyRcptOK)
	r.Expect("RSET", "250 2.0.0")

	e.DropAfterData(1)
	if got := r.send(testMbx, []string{"a@example.org"}, message(testMbx, "m3")); got != "" {
		t.Errorf("DropAfterData replied %q", got)
	}
	if n := len(e.Delivered()); n != 1 {
		t.Errorf("delivered %d, want 1", n)
	}

	e.FailNextConnect(1, "421 4.3.2 Service not available, closing transmission channel")
	r2 := dialRaw(t, e)
	if !strings.HasPrefix(r2.Greeting, "421 4.3.2") || r2.Read() != "" {
		t.Errorf("FailNextConnect: %q", r2.Greeting)
	}
}

func TestSMTPReuseConnectionWithRSET(t *testing.T) {
	e := provisioned(t, Options{})
	r := dialRaw(t, e)
	r.login(testMbx, msalSecretToken(t, e))
	for _, s := range []string{"one", "two"} {
		if got := r.send(testMbx, []string{"a@example.org"}, message(testMbx, s)); !strings.HasPrefix(got, "250 2.0.0 OK") {
			t.Fatalf("%s: %q", s, got)
		}
		r.Expect("RSET", "250 2.0.0")
	}
	got := e.Delivered()
	if len(got) != 2 || got[0].ConnID != got[1].ConnID || string(got[1].Data) != message(testMbx, "two") {
		t.Errorf("delivered %+v", got)
	}
}

func TestSMTPLimits(t *testing.T) {
	e := provisioned(t, Options{MaxPerMinute: 2, MaxRecipientsPerDay: 3, MaxMessageSize: 200})
	tok := msalSecretToken(t, e)
	r := dialRaw(t, e)
	r.login(testMbx, tok)
	r.Expect("MAIL FROM:<"+testMbx+"> SIZE=1000", ReplyTooBig)
	big := message(testMbx, "big") + strings.Repeat("x", 300) + "\r\n"
	if got := r.send(testMbx, []string{"a@example.org"}, big); got != ReplyTooBig {
		t.Errorf("size: %q", got)
	}
	if got := r.send(testMbx, []string{"a@example.org", "b@example.org"}, message(testMbx, "q1")); !strings.HasPrefix(got, "250") {
		t.Fatalf("q1 %q", got)
	}
	if got := r.send(testMbx, []string{"a@example.org", "b@example.org"}, message(testMbx, "q2")); got != ReplyQuotaExceeded {
		t.Errorf("quota: %q", got)
	}
	if got := r.send(testMbx, []string{"a@example.org"}, message(testMbx, "q3")); !strings.HasPrefix(got, "250") {
		t.Fatalf("q3 %q", got)
	}
	if got := r.send(testMbx, []string{"c@example.org"}, message(testMbx, "q4")); got != ReplyRateLimited {
		t.Errorf("rate: %q", got)
	}
	if got := r.Read(); got != "" {
		t.Errorf("not closed after 421: %q", got)
	}
}

func TestSMTPTooManyRecipients(t *testing.T) {
	e := provisioned(t, Options{})
	r := dialRaw(t, e)
	r.login(testMbx, msalSecretToken(t, e))
	r.Expect("MAIL FROM:<"+testMbx+">", ReplySenderOK)
	for i := 0; i < MaxRecipientsPerMessage; i++ {
		r.Expect("RCPT TO:<r"+strings.Repeat("x", i%5)+"@example.org>", ReplyRcptOK)
	}
	r.Expect("RCPT TO:<one-too-many@example.org>", ReplyTooManyRcpts)
}

func TestSMTPOldTLS(t *testing.T) {
	e := provisioned(t, Options{})
	// Pretend TLS 1.2 is too old: the handshake completes and the server
	// then refuses, as Exchange does with TLS 1.0/1.1.
	e.SetAcceptedTLSMin(tls.VersionTLS13)
	r2 := dialRaw(t, e)
	r2.startTLS(&tls.Config{RootCAs: e.CertPool(), ServerName: "127.0.0.1", MaxVersion: tls.VersionTLS12})
	r2.Expect("EHLO relay.example", ReplyOldTLS)
}

func TestAuthLoginRefused(t *testing.T) {
	e := provisioned(t, Options{})
	r := dialRaw(t, e)
	r.startTLS(nil)
	r.Expect("EHLO relay.example", "250")
	r.Expect("AUTH LOGIN", "334 VXNlcm5hbWU6")
	r.Expect("dXNlcg==", "334 UGFzc3dvcmQ6")
	r.Expect("cGFzcw==", ReplyBasicAuth)
	r.Expect("AUTH PLAIN AHUAcA==", "504 5.7.4")
}

func TestSMTPTLS11Refused(t *testing.T) {
	e := provisioned(t, Options{})
	r := dialRaw(t, e)
	r.startTLS(&tls.Config{RootCAs: e.CertPool(), ServerName: "127.0.0.1", MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11})
	r.Expect("EHLO relay.example", ReplyOldTLS)
	if got := r.Read(); got != "" {
		t.Errorf("not closed: %q", got)
	}
}
