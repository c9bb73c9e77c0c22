package transport

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/oauthrelay/oauthrelay/internal/msemu"
	"github.com/oauthrelay/oauthrelay/oauth"
)

// parseReply turns a reply line into the error go-smtp's client returns
// for it.
func parseReply(t *testing.T, line string) *smtp.SMTPError {
	t.Helper()
	code, err := strconv.Atoi(line[:3])
	if err != nil {
		t.Fatalf("bad reply %q", line)
	}
	se := &smtp.SMTPError{Code: code, Message: line[4:]}
	if enh, rest, ok := strings.Cut(line[4:], " "); ok {
		var a, b, c int
		if n, _ := fmt.Sscanf(enh, "%d.%d.%d", &a, &b, &c); n == 3 {
			se.EnhancedCode = smtp.EnhancedCode{a, b, c}
			se.Message = rest
		}
	}
	return se
}

// Every reply of the reference's §3 table, as Exchange Online sends it.
func TestClassifyReference(t *testing.T) {
	const mbx = "helpdesk@contoso.com"
	for _, tc := range []struct {
		stage Stage
		reply string
		kind  Kind
		retry bool   // RetryToken
		fix   string // substring of Fix; "" means Fix must be empty
	}{
		{StageAuth, msemu.ReplyAuthFailed, ConfigFault, true, "Add-MailboxPermission -Identity " + mbx},
		{StageAuth, msemu.ReplyAuthDisabledMbx, ConfigFault, false, "Set-CASMailbox -Identity " + mbx + " -SmtpClientAuthenticationDisabled $false"},
		{StageAuth, msemu.ReplyAuthDisabledTenant, ConfigFault, false, "Set-TransportConfig -SmtpClientAuthenticationDisabled $false"},
		{StageAuth, "535 5.7.139 Authentication unsuccessful, user is locked by your organization's security defaults policy. Contact your administrator.", ConfigFault, false, "security defaults"},
		{StageMail, msemu.ReplyNotAuthenticated, ConfigFault, true, "SMTP.SendAsApp"},
		{StageMail, msemu.ReplySendAsDenied, Permanent, false, "Add-RecipientPermission"},
		{StageData, "554 5.2.252 SendAsDenied; helpdesk@contoso.com not allowed to send as other@contoso.com; STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied; Failed to process message", Permanent, false, "Add-RecipientPermission"},
		{StageData, "554 5.2.0 STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied;", Permanent, false, "SendAs"},
		{StageData, "430 4.2.0 STOREDRV; mailbox logon failure; STOREDRV.Submission.Exception:ConnectionFailedTransientException.MapiExceptionLogonFailed;", Transient, false, "Add-MailboxPermission -Identity " + mbx},
		{StageAuth, msemu.ReplyTooManyConns, Throttled, false, ""},
		{StageConnect, msemu.ReplyTooManyConns, Throttled, false, ""},
		{StageData, "432 4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded", Throttled, false, ""},
		{StageData, msemu.ReplyRateLimited, Throttled, false, ""},
		{StageData, msemu.ReplyQuotaExceeded, Quota, false, "10,000 recipients"},
		{StageData, "554 5.2.2 mailbox full; STOREDRV.Submission.Exception:QuotaExceededException.MapiExceptionShutoffQuotaExceeded", ConfigFault, false, "Sent Items"},
		{StageConnect, msemu.ReplyOldTLS, ConfigFault, false, "TLS 1.2"},
		{StageData, msemu.ReplyTempError, Transient, false, ""},
		{StageAuth, msemu.ReplyBasicAuth, ConfigFault, false, "XOAUTH2"},
		{StageRcpt, msemu.ReplyTooManyRcpts, Transient, false, ""},
		{StageAuth, "501 5.5.127 Invalid XOAUTH2 auth data - Token will expire soon", Transient, true, ""},
		{StageMail, msemu.ReplyTooBig, Permanent, false, ""},
		{StageRcpt, "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup", Permanent, false, ""},
		{StageConnect, "421 4.3.2 Service not available", Transient, false, ""},
		{StageAuth, "504 5.7.4 Unrecognized authentication type", ConfigFault, false, "SMTP.SendAsApp"},
	} {
		t.Run(tc.reply, func(t *testing.T) {
			v := Classify(tc.stage, parseReply(t, tc.reply), mbx)
			if v.Kind != tc.kind || v.RetryToken != tc.retry {
				t.Errorf("kind %s retry %v, want %s retry %v", v.Kind, v.RetryToken, tc.kind, tc.retry)
			}
			if tc.fix == "" && v.Kind != Quota && v.Fix != "" && v.Kind != Transient {
				t.Errorf("unexpected fix %q", v.Fix)
			}
			if tc.fix != "" && !strings.Contains(v.Fix, tc.fix) {
				t.Errorf("fix %q does not contain %q", v.Fix, tc.fix)
			}
			// The reply line is kept as the server sent it.
			if v.Reply != tc.reply {
				t.Errorf("reply %q, want %q", v.Reply, tc.reply)
			}
			if want := tc.reply[:1] + "xx"; v.ReplyClass() != want {
				t.Errorf("reply class %s, want %s", v.ReplyClass(), want)
			}
		})
	}
}

// Results that are not SMTP replies.
func TestClassifyNonReplies(t *testing.T) {
	const mbx = "helpdesk@contoso.com"
	for _, tc := range []struct {
		name string
		err  error
		kind Kind
		fix  string
	}{
		{"success", nil, Delivered, ""},
		{"connection closed", fmt.Errorf("read: %w", io.EOF), Transient, ""},
		{"unexpected EOF", io.ErrUnexpectedEOF, Transient, ""},
		{"unknown CA", fmt.Errorf("tls: %w", x509.UnknownAuthorityError{}), ConfigFault, "ca_file"},
		{"wrong host", x509.HostnameError{Certificate: &x509.Certificate{}, Host: "smtp.office365.com"}, ConfigFault, "ca_file"},
		{"no STARTTLS", errors.New("smtp: server doesn't support STARTTLS"), ConfigFault, "clear text"},
		{"bad secret", &oauth.Error{App: "contoso", AADSTS: 7000215, Permanent: true, Cause: "the client secret is wrong", Fix: "copy the secret's Value"}, ConfigFault, "Value"},
		{"token endpoint down", &oauth.Error{App: "contoso", HTTPStatus: 503, Cause: "Entra ID is unavailable"}, Transient, ""},
		{"timeout", timeoutErr{}, Transient, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := Classify(StageData, tc.err, mbx)
			if v.Kind != tc.kind {
				t.Errorf("kind %s, want %s (%+v)", v.Kind, tc.kind, v)
			}
			if !strings.Contains(v.Fix, tc.fix) {
				t.Errorf("fix %q does not contain %q", v.Fix, tc.fix)
			}
			if tc.err != nil && v.ReplyClass() != "none" {
				t.Errorf("reply class %s for a non-reply", v.ReplyClass())
			}
		})
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

// The sliding window counts exactly: a token bucket (or a fixed window)
// would let 2×limit through across a boundary; this one never lets more
// than limit into any span.
func TestWindow(t *testing.T) {
	t0 := time.Date(2025, 11, 24, 10, 0, 0, 0, time.UTC)
	s := func(n float64) time.Time { return t0.Add(time.Duration(n * float64(time.Second))) }
	w := &window{span: time.Minute}
	if got := w.freeAt(t0, 20, 0); !got.Equal(t0) {
		t.Fatalf("empty window: freeAt %v", got)
	}
	// 20 sends at the end of one minute...
	for i := 0; i < 20; i++ {
		w.add(s(59), 1)
	}
	if c := w.count(s(59)); c != 20 {
		t.Fatalf("count %d", c)
	}
	// ...so at the start of the next minute nothing more may go: a
	// per-minute bucket refilled at 60 s would allow 20 more here.
	if c := w.count(s(60)); c != 20 {
		t.Errorf("count at the boundary %d, want 20", c)
	}
	if got := w.freeAt(s(60), 19, 0); !got.Equal(s(119)) {
		t.Errorf("freeAt %v, want %v (when the first of the 20 leaves the window)", got, s(119))
	}
	// The window is (now-span, now]: an event exactly span old is out.
	if c := w.count(s(119)); c != 0 {
		t.Errorf("count at 119 s = %d, want 0", c)
	}

	// Spread events: freeAt finds the earliest time the count drops.
	w = &window{span: time.Minute}
	for i := 0; i < 10; i++ {
		w.add(s(float64(i*5)), 1) // 0, 5, ..., 45 s
	}
	if got := w.freeAt(s(50), 10, 0); !got.Equal(s(50)) {
		t.Errorf("with room: freeAt %v, want now", got)
	}
	if got := w.freeAt(s(50), 9, 0); !got.Equal(s(60)) {
		t.Errorf("freeAt %v, want 60 s", got)
	}
	if got := w.freeAt(s(50), 7, 0); !got.Equal(s(70)) {
		t.Errorf("freeAt %v, want 70 s", got)
	}
	// Weighted events (recipients): 10 + 3 extra must fit in 10.
	if got := w.freeAt(s(50), 10, 3); !got.Equal(s(70)) {
		t.Errorf("extra 3: freeAt %v, want 70 s", got)
	}
	// More than the limit on its own: let it through once the window is
	// empty, never hold it forever.
	if got := w.freeAt(s(50), 10, 11); !got.Equal(s(105)) {
		t.Errorf("oversized: freeAt %v, want 105 s (when the window empties)", got)
	}

	// Simulate a sender obeying freeAt at a rate limit of 20/min for 10
	// minutes, then check every 60 s window.
	w = &window{span: time.Minute}
	var sent []time.Time
	now := t0
	for now.Before(t0.Add(10 * time.Minute)) {
		at := w.freeAt(now, 20-1, 0) // room for this one
		if at.After(now) {
			now = at
			continue
		}
		w.add(now, 1)
		sent = append(sent, now)
		now = now.Add(137 * time.Millisecond)
	}
	for i := range sent {
		n := 0
		for j := i; j < len(sent) && sent[j].Sub(sent[i]) < time.Minute; j++ {
			n++
		}
		if n > 20 {
			t.Fatalf("window from %v holds %d sends", sent[i].Sub(t0), n)
		}
	}
	if len(sent) < 190 {
		t.Errorf("only %d sends in 10 minutes at 20/min: the window is too strict", len(sent))
	}
}
