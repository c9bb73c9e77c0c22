package transport

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/oauthrelay/oauthrelay/internal/egress"
	"github.com/oauthrelay/oauthrelay/oauth"
)

// ProxyError is a proxy's refusal (407, 403, ...) or failure on the way to
// Microsoft, with the proxy (its password hidden), its answer and the fix.
// The proxy dialer (internal/egress) returns it; Classify makes it
// Transient.
type ProxyError = egress.Error

// Kind is what a result means for the message and the mailbox.
type Kind int

// The kinds of result, one for each way Exchange Online's replies are acted on.
const (
	// Delivered: the upstream took the message (or recipient).
	Delivered Kind = iota
	// Transient: try this message again later.
	Transient
	// Permanent: this message (or recipient) cannot be delivered.
	Permanent
	// ConfigFault: our own credentials or setup were refused. Never a
	// bounce: the mailbox pauses and an admin is told what to fix.
	ConfigFault
	// Throttled: Exchange asks the whole mailbox to slow down.
	Throttled
	// Quota: the mailbox's 10,000 recipients a day are used up; the window
	// rolls, so wait about a day instead of bouncing.
	Quota
	// SenderFault: the mailbox may not send as this message's sender (a
	// missing SendAs grant). Our configuration, not the sender's mistake:
	// never a bounce, the message waits for the grant (until max_age),
	// and the mailbox's other senders go on.
	SenderFault
)

func (k Kind) String() string {
	return [...]string{"delivered", "deferred", "failed", "config_fault", "throttled", "quota", "sender_fault"}[k]
}

// Verdict is the classification of one upstream result.
type Verdict struct {
	Kind Kind
	// Reply is the upstream's reply line, or a description of what failed
	// before it answered.
	Reply string
	// Fix tells an admin what to do, with the mailbox filled in; empty when
	// there is nothing to fix.
	Fix string
	// RetryToken says the token should be dropped and AUTH tried once more
	// with a fresh one.
	RetryToken bool
	// Wait is the least time to wait before the next attempt, when the
	// upstream said (Graph's Retry-After).
	Wait time.Duration
	// AppWide says a throttle concerns the whole app, not one mailbox.
	AppWide bool
}

// ReplyClass is "2xx", "4xx", "5xx" or "none" for the attempts metric.
func (v Verdict) ReplyClass() string {
	if len(v.Reply) >= 3 && v.Reply[1] >= '0' && v.Reply[1] <= '9' && v.Reply[0] >= '2' && v.Reply[0] <= '5' {
		return v.Reply[:1] + "xx"
	}
	return "none"
}

// Stage is where in the conversation a result came.
type Stage string

// The stages of an upstream conversation.
const (
	StageConnect Stage = "connect"
	StageToken   Stage = "token"
	StageAuth    Stage = "auth"
	StageMail    Stage = "mail"
	StageRcpt    Stage = "rcpt"
	StageData    Stage = "data"
)

// Classify turns an upstream result into a Verdict. It is the one place
// that knows Microsoft's replies; everything else acts on the Kind.
func Classify(stage Stage, err error, mailbox string) Verdict {
	if err == nil {
		return Verdict{Kind: Delivered}
	}
	var te *oauth.Error
	if errors.As(err, &te) {
		// The fix goes in Fix, not twice into the reply kept in the
		// envelope's history.
		v := Verdict{Kind: Transient, Reply: "token: " + te.Summary(), Fix: te.Fix}
		if te.Permanent {
			v.Kind = ConfigFault
		}
		return v
	}
	var pe *ProxyError
	if errors.As(err, &pe) {
		// The proxy is between us and Microsoft: whatever it says (407,
		// 403, unreachable) is not Microsoft's verdict on the message,
		// so it waits in the queue for the proxy to let it through.
		return Verdict{Kind: Transient, Reply: fmt.Sprintf("%s: %s", stage, pe.Error()), Fix: pe.Fix()}
	}
	var ge *GraphError
	if errors.As(err, &ge) {
		return classifyGraph(ge, mailbox)
	}
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return classifyReply(stage, se, mailbox)
	}
	var uae x509.UnknownAuthorityError
	var hne x509.HostnameError
	var cie x509.CertificateInvalidError
	var tve *tls.CertificateVerificationError
	if errors.As(err, &uae) || errors.As(err, &hne) || errors.As(err, &cie) || errors.As(err, &tve) {
		return Verdict{Kind: ConfigFault, Reply: "TLS: the upstream's certificate does not verify: " + err.Error(),
			Fix: "the relay never sends without a verified certificate; if a proxy intercepts TLS, put its CA in [upstream] ca_file, otherwise check that [upstream] address really is Microsoft 365"}
	}
	if strings.Contains(err.Error(), "doesn't support STARTTLS") {
		return Verdict{Kind: ConfigFault, Reply: "the upstream does not offer STARTTLS",
			Fix: "the relay never sends mail or tokens in clear text; check [upstream] address (smtp.office365.com:587) and that nothing strips STARTTLS on the way"}
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return Verdict{Kind: Transient, Reply: fmt.Sprintf("connection closed by the upstream during %s", stage)}
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return Verdict{Kind: Transient, Reply: fmt.Sprintf("timeout during %s: %v", stage, err)}
	}
	return Verdict{Kind: Transient, Reply: fmt.Sprintf("%s: %v", stage, err)}
}

func replyLine(se *smtp.SMTPError) string {
	if se.EnhancedCode != (smtp.EnhancedCode{}) && se.EnhancedCode != smtp.NoEnhancedCode {
		return fmt.Sprintf("%d %d.%d.%d %s", se.Code, se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2], se.Message)
	}
	return fmt.Sprintf("%d %s", se.Code, se.Message)
}

// Fixes for Microsoft's replies, naming the Entra and Exchange setup step
// that each one points to. %s is the mailbox.
const (
	fixAuth = "the app may not sign in as %[1]s: grant admin consent for SMTP.SendAsApp (app registration → API permissions), register the service principal in Exchange " +
		"(New-ServicePrincipal -AppId <client id> -ObjectId <Enterprise application object id>) and give it the mailbox " +
		"(Add-MailboxPermission -Identity %[1]s -User <service principal id> -AccessRights FullAccess); grants can take up to an hour to apply"
	fixSMTPAuthMailbox = "SMTP AUTH is disabled for the mailbox: Set-CASMailbox -Identity %[1]s -SmtpClientAuthenticationDisabled $false"
	fixSMTPAuthTenant  = "SMTP AUTH is disabled for the whole tenant: Set-TransportConfig -SmtpClientAuthenticationDisabled $false (or enable it for just this mailbox: Set-CASMailbox -Identity %[1]s -SmtpClientAuthenticationDisabled $false)"
	fixSecDefaults     = "security defaults or a Conditional Access policy blocks SMTP AUTH for %[1]s: exclude the mailbox or the app from the policy in the Entra admin center"
	fixSendAs          = "grant the right to send as this address: Add-RecipientPermission -Identity <from address> -Trustee <service principal id> -AccessRights SendAs (and list it under send_as of mailbox %[1]s); grants can take up to an hour to apply, then reload the relay (SIGHUP) to retry at once"
	fixLogon           = "the app cannot open mailbox %[1]s: Add-MailboxPermission -Identity %[1]s -User <service principal id> -AccessRights FullAccess (a fresh grant can take up to an hour)"
	fixMailboxFull     = "mailbox %[1]s is full (Sent Items counts toward its quota): empty Sent Items or raise the quota"
	fixTLS             = "Microsoft 365 requires TLS 1.2 or newer; this should not happen with oauthrelay — check for a TLS-downgrading proxy between the relay and Microsoft"
	fixHVEExternal     = "the High Volume Email endpoint delivers only to recipients inside the organization (its accepted domains), so this recipient cannot be reached through mailbox %[1]s; " +
		"send mail for outside recipients through a mailbox with transport = \"smtp\" or \"graph\""
	fixBasicAuth = "the upstream wants OAuth: the relay always uses XOAUTH2, so check that [upstream] address is smtp.office365.com:587"
)

func classifyReply(stage Stage, se *smtp.SMTPError, mailbox string) Verdict {
	line := replyLine(se)
	msg := strings.ToLower(se.Message)
	enh := fmt.Sprintf("%d.%d.%d", se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2])
	fix := func(f string) string { return fmt.Sprintf(f, mailbox) }
	v := Verdict{Reply: line}
	switch {
	case se.Code == 535 && enh == "5.7.139" && strings.Contains(msg, "security defaults"):
		v.Kind, v.Fix = ConfigFault, fix(fixSecDefaults)
	case se.Code == 535 && enh == "5.7.139" && strings.Contains(msg, "for the tenant"):
		v.Kind, v.Fix = ConfigFault, fix(fixSMTPAuthTenant)
	case se.Code == 535 && enh == "5.7.139":
		v.Kind, v.Fix = ConfigFault, fix(fixSMTPAuthMailbox)
	case se.Code == 535:
		// 5.7.3 mostly; a stale or wrong-audience token also gives it,
		// so the first one earns a fresh token.
		v.Kind, v.Fix, v.RetryToken = ConfigFault, fix(fixAuth), true
	case se.Code == 530 && enh == "5.7.57":
		v.Kind, v.Fix, v.RetryToken = ConfigFault, fix(fixAuth), true
	case enh == "5.7.30":
		v.Kind, v.Fix = ConfigFault, fixBasicAuth
	case enh == "4.7.66" || strings.Contains(msg, "tls 1.0 and 1.1"):
		v.Kind, v.Fix = ConfigFault, fixTLS
	case enh == "5.5.127" || strings.Contains(msg, "token will expire soon"):
		v.Kind, v.RetryToken = Transient, true
	case strings.Contains(msg, "submissionquotaexceeded"):
		v.Kind = Quota
		v.Fix = fmt.Sprintf("mailbox %s reached Exchange Online's 10,000 recipients per day; mail waits for the 24-hour window to roll (spread the load over more mailboxes if this repeats)", mailbox)
	case enh == "5.5.105":
		// HVE: an external recipient. Permanent for that recipient.
		v.Kind, v.Fix = Permanent, fix(fixHVEExternal)
	case strings.Contains(msg, "sendasdenied") || enh == "5.7.60":
		v.Kind, v.Fix = SenderFault, fix(fixSendAs)
	case strings.Contains(msg, "quotaexceededexception") || strings.Contains(msg, "mailbox full"):
		v.Kind, v.Fix = ConfigFault, fix(fixMailboxFull)
	case se.Code == 432 || (se.Code == 421 && enh == "4.4.2"):
		v.Kind = Throttled
	case strings.Contains(msg, "mapiexceptionlogonfailed") || (se.Code == 430 && enh == "4.2.0"):
		v.Kind, v.Fix = Transient, fix(fixLogon)
	case stage == StageAuth && se.Code >= 500:
		v.Kind, v.Fix = ConfigFault, fix(fixAuth)
	case se.Code >= 400 && se.Code < 500:
		v.Kind = Transient
	case se.Code >= 500:
		v.Kind = Permanent
	default:
		v.Kind = Transient
	}
	return v
}
