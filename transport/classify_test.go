package transport

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"testing"

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
		{StageMail, msemu.ReplySendAsDenied, SenderFault, false, "Add-RecipientPermission"},
		{StageRcpt, "550 5.5.105 Recipient <x@fabrikam.com> is external; High Volume Email delivers only to recipients in the organization's accepted domains", Permanent, false, "delivers only to recipients inside the organization"},
		{StageData, "554 5.2.252 SendAsDenied; helpdesk@contoso.com not allowed to send as other@contoso.com; STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied; Failed to process message", SenderFault, false, "Add-RecipientPermission"},
		{StageData, "554 5.2.0 STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied;", SenderFault, false, "SendAs"},
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
