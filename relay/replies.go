package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/emersion/go-smtp"

	"github.com/oauthrelay/oauthrelay/queue"
)

// This file is where every SMTP reply the relay itself writes comes from:
// the refusals (with their metric label and log line), the 250 after
// DATA, and the texts that replace go-smtp's own. Replies not listed here
// are go-smtp's protocol errors (bad syntax, commands out of sequence).

// Refusal reasons, used in logs and the refused-messages metric.
const (
	ReasonAuthFailed      = "auth_failed"
	ReasonAuthLocked      = "auth_locked"
	ReasonAuthRequired    = "auth_required"
	ReasonTLSRequired     = "tls_required"
	ReasonTLSUnavailable  = "tls_unavailable"
	ReasonSenderDenied    = "sender_denied"
	ReasonFromDenied      = "from_denied"
	ReasonBadHeader       = "bad_header"
	ReasonTooLarge        = "too_large"
	ReasonTooManyRcpts    = "too_many_recipients"
	ReasonSpoolError      = "spool_error"
	ReasonBadRecipient    = "bad_recipient"
	ReasonConnLimit       = "connection_limit"
	ReasonClientTimeout   = "timeout"
	ReasonConnLimitIP     = "connection_limit_per_ip"
	ReasonLoginTimeout    = "login_timeout"
	ReasonTooManyRefusals = "too_many_refusals"
	// ReasonProxyProtocol: a PROXY header where none may come, or none
	// where one must (listen.proxy_protocol_from).
	ReasonProxyProtocol = "proxy_protocol"
	// ReasonClientRate: a client over its max_per_minute or max_per_day.
	ReasonClientRate = "client_rate_limit"
)

// kind names one row of the refusals table.
type kind int

// The relay's refusals. Their replies, metric labels and log lines are in
// refusals below.
const (
	authInClear kind = iota
	authInClearNoCert
	startTLSNoCert
	authLocked
	authMechanism
	authFailed
	authFailedLockout
	authOtherIdentity
	authLoginSequence
	authMalformed
	mailNeedsTLS
	clientRemoved
	authRequired
	nullSender
	senderDenied
	rcptBeforeMail
	tooManyRcpts
	badRecipient
	rcptNotASCII
	dataBeforeMail
	diskFull
	spoolWrite
	dataTimeout
	dataConnError
	lineTooLong
	headerTooBig
	senderFieldsTooBig
	tooBig
	headerNotAddress
	fromDenied
	duplicateField
	fromOtherMailbox
	connLimit
	connLimitIP
	loginTimeout
	tooManyRefusals
	proxyHeaderMissing
	proxyHeaderRefused
	clientRate
	clientRateFallback
)

// refusalSpec is one row of the table: the reply (code, enhanced code and
// a sentence template filled in with the refusal's arguments), the metric
// label ("" for protocol errors, which are not counted) and the log line.
type refusalSpec struct {
	code   int
	ec     smtp.EnhancedCode
	text   string
	reason string
	level  slog.Level
	log    string // "" logs nothing
	fix    string // what an admin can do, logged as "fix"
}

const lockedOut = "Too many failed logins from %s; try again in %s"

const noCertFix = "set listen.tls_cert_file and listen.tls_key_file (then restart) so that the application can use STARTTLS; " +
	"or add its address to a client's networks, which needs no login; or set listen.allow_insecure_auth if its network is trusted"

var refusals = [...]refusalSpec{
	authInClear: {538, ec(5, 7, 11), "Encryption required: issue STARTTLS before AUTH (passwords are not accepted in clear text from %s)",
		ReasonTLSRequired, slog.LevelInfo, "refused: AUTH in clear text from a non-loopback peer",
		"configure the application to use STARTTLS or implicit TLS, or set listen.allow_insecure_auth on a trusted network"},
	// Without a certificate the advice above cannot be followed: the
	// admin must add one or let the client in another way.
	authInClearNoCert: {538, ec(5, 7, 11), "Encryption required: AUTH in clear text is refused from %s and this relay has no TLS certificate, so STARTTLS is not available; its administrator must set [listen] tls_cert_file and tls_key_file, or trust the client's network",
		ReasonTLSRequired, slog.LevelWarn, "refused: AUTH in clear text from a non-loopback peer, and the listener has no TLS certificate for STARTTLS",
		noCertFix},
	// In place of go-smtp's "502 5.5.1 TLS not supported".
	startTLSNoCert: {502, ec(5, 5, 1), "STARTTLS is not available: this relay has no TLS certificate; its administrator must set [listen] tls_cert_file and tls_key_file",
		ReasonTLSUnavailable, slog.LevelWarn, "refused: STARTTLS, and the listener has no TLS certificate",
		noCertFix},
	authLocked: {454, ec(4, 7, 0), lockedOut,
		ReasonAuthLocked, slog.LevelWarn, "auth refused: address locked out after repeated failures", ""},
	authMechanism: {504, ec(5, 7, 4), "Unsupported authentication mechanism %s; use PLAIN or LOGIN",
		"", slog.LevelDebug, "refused: unsupported AUTH mechanism", ""},
	// The password is never logged; the username helps the admin and is
	// not a secret.
	authFailed: {535, ec(5, 7, 8), "Authentication credentials invalid: wrong username or password",
		ReasonAuthFailed, slog.LevelWarn, "auth failed", ""},
	authFailedLockout: {454, ec(4, 7, 0), lockedOut,
		ReasonAuthFailed, slog.LevelWarn, "auth failed", ""},
	authOtherIdentity: {535, ec(5, 7, 8), "Authentication failed: logging in as another user is not supported",
		"", slog.LevelDebug, "refused: AUTH PLAIN with an authorization identity other than the user", ""},
	authLoginSequence: {501, ec(5, 5, 2), "Unexpected AUTH LOGIN response",
		"", slog.LevelDebug, "refused: AUTH LOGIN response out of sequence", ""},
	authMalformed: {501, ec(5, 5, 2), "Malformed AUTH data: %s",
		"", slog.LevelDebug, "refused: malformed AUTH data", ""},
	mailNeedsTLS: {530, ec(5, 7, 0), "Must issue a STARTTLS command first: this relay requires TLS",
		ReasonTLSRequired, slog.LevelInfo, "refused: MAIL FROM before STARTTLS while listen.require_tls is set", ""},
	// go-smtp allows one AUTH per connection, so the client must reconnect
	// to log in again.
	clientRemoved: {421, ec(4, 7, 0), "Client %q was removed from the relay's configuration; reconnect and log in again",
		ReasonAuthRequired, slog.LevelWarn, "refused: the logged-in client was removed from the configuration", ""},
	authRequired: {530, ec(5, 7, 0), "Authentication required: %s is not a trusted network; log in with AUTH",
		ReasonAuthRequired, slog.LevelInfo, "refused: unauthenticated peer outside every trusted network", ""},
	nullSender: {550, ec(5, 7, 1), "Sender <> (a bounce) is not allowed for client %q: Microsoft 365 needs a real mailbox as sender; use one of the client's senders",
		ReasonSenderDenied, slog.LevelWarn, "refused sender", "set rewrite_from for this client if the device sends with an empty sender"},
	senderDenied: {550, ec(5, 7, 1), "Sender <%s> is not allowed for client %q; the relay's administrator can add it to the client's senders",
		ReasonSenderDenied, slog.LevelWarn, "refused sender", "add the address to this client's senders (and to a mailbox's send_as) if it should be allowed"},
	rcptBeforeMail: {503, ec(5, 5, 1), "Send MAIL FROM first",
		"", slog.LevelDebug, "refused: RCPT TO before MAIL FROM", ""},
	tooManyRcpts: {452, ec(4, 5, 3), "Too many recipients: at most %d per message; send the rest in another message",
		ReasonTooManyRcpts, slog.LevelInfo, "refused recipient: too many recipients", ""},
	badRecipient: {501, ec(5, 1, 3), "Recipient <%s> is not a valid address",
		ReasonBadRecipient, slog.LevelInfo, "refused recipient: not a valid address", ""},
	// An internationalised address needs SMTPUTF8 on MAIL (RFC 6531);
	// without it Exchange would refuse it after our 250.
	rcptNotASCII: {553, ec(5, 6, 7), "Recipient <%s> is not ASCII: send MAIL FROM with the SMTPUTF8 parameter",
		ReasonBadRecipient, slog.LevelInfo, "refused recipient: non-ASCII address without SMTPUTF8", ""},
	dataBeforeMail: {503, ec(5, 5, 1), "Send MAIL FROM and RCPT TO first",
		"", slog.LevelDebug, "refused: DATA before MAIL FROM", ""},
	diskFull: {451, ec(4, 3, 0), "Message not queued (id %s): the relay's disk is full. Nothing was accepted; please try again later",
		ReasonSpoolError, slog.LevelError, "cannot queue message: the spool's disk is full",
		"free space on the spool's filesystem (df -h); the client was told to retry"},
	spoolWrite: {451, ec(4, 3, 0), "Message not queued (id %s): the relay could not write it to disk. Nothing was accepted; please try again later",
		ReasonSpoolError, slog.LevelError, "cannot queue message: spool write failed",
		"check the spool directory's permissions and filesystem; the client was told to retry"},
	dataTimeout: {421, ec(4, 4, 2), "Timeout waiting for message data; nothing was accepted",
		ReasonClientTimeout, slog.LevelWarn, "client stalled during DATA; message discarded", ""},
	// The client's connection failed: nobody is left to read the reply.
	dataConnError: {421, ec(4, 4, 0), "Connection error during DATA; nothing was accepted",
		ReasonClientTimeout, slog.LevelWarn, "connection failed during DATA; message discarded", ""},
	lineTooLong: {554, ec(5, 6, 0), "A line of the message is too long (RFC 5322 allows 998 characters); nothing was accepted",
		ReasonBadHeader, slog.LevelWarn, "refused message", ""},
	headerTooBig: {552, ec(5, 3, 4), "Message header too big (over %s); nothing was accepted",
		ReasonTooLarge, slog.LevelWarn, "refused message", ""},
	senderFieldsTooBig: {552, ec(5, 3, 4), "The message's From:, Sender: and Resent- fields are too long together (over %s); nothing was accepted",
		ReasonTooLarge, slog.LevelWarn, "refused message", ""},
	tooBig: {552, ec(5, 3, 4), "Message too big: this relay accepts at most %s (listen.max_message_size); nothing was accepted",
		ReasonTooLarge, slog.LevelWarn, "refused message", ""},
	headerNotAddress: {550, ec(5, 6, 0), "The %s: header %q is not a valid address; nothing was accepted",
		ReasonBadHeader, slog.LevelWarn, "refused message", ""},
	fromDenied: {550, ec(5, 7, 1), "%s: <%s> is not allowed for client %q; use one of its senders or ask the relay's administrator to add it",
		ReasonFromDenied, slog.LevelWarn, "refused message", ""},
	duplicateField: {550, ec(5, 6, 0), "The message has %d %s: fields and RFC 5322 allows %s; nothing was accepted",
		ReasonBadHeader, slog.LevelWarn, "refused message", ""},
	fromOtherMailbox: {550, ec(5, 7, 1), "%s: <%s> belongs to mailbox %s but the envelope sender <%s> is sent through %s; Microsoft 365 would refuse it. Use matching addresses",
		ReasonFromDenied, slog.LevelWarn, "refused message", ""},
	// Written by the listener before go-smtp sees the connection, with
	// the relay's name first as RFC 5321 has it for a 421. Not logged:
	// a line per connection would flood the log exactly when the relay
	// is overwhelmed; the metric counts them.
	connLimit: {421, ec(4, 7, 0), "%s Too many connections to the relay right now; try again shortly",
		ReasonConnLimit, slog.LevelWarn, "", ""},
	// Not logged either, for the same reason: one host opening
	// connections in a loop would write a line for each.
	connLimitIP: {421, ec(4, 7, 0), "%s Too many connections from %s; close some of them or try again shortly",
		ReasonConnLimitIP, slog.LevelWarn, "", ""},
	// Written in place of go-smtp's idle timeout when the peer used up
	// listen.login_timeout, which its commands do not extend.
	loginTimeout: {421, ec(4, 7, 0), "%s Not logged in within %s; closing the connection",
		ReasonLoginTimeout, slog.LevelInfo, "closed: no login or accepted sender within listen.login_timeout", ""},
	tooManyRefusals: {421, ec(4, 7, 0), "%s Too many refused commands (%d) on this connection; closing it",
		ReasonTooManyRefusals, slog.LevelWarn, "closed: too many refused commands (listen.max_refused_commands)",
		"check the application's configuration (sender, recipients, password) in the lines logged before for this address"},
	// Written in place of the greeting (proxyproto.go): the peer is a
	// listed load balancer, so whatever connected did not come through
	// its PROXY protocol.
	proxyHeaderMissing: {554, ec(5, 7, 0), "%s No service: connections from %s must start with a PROXY protocol header",
		ReasonProxyProtocol, slog.LevelWarn, "refused: connection from a load balancer in listen.proxy_protocol_from without a PROXY header",
		"make the balancer send one (HAProxy: send-proxy-v2 on the server line), or remove its address from listen.proxy_protocol_from (then restart)"},
	// A PROXY header from anyone else would let them choose the client
	// address the relay trusts.
	proxyHeaderRefused: {554, ec(5, 7, 0), "%s PROXY protocol header refused: %s is not a load balancer this relay accepts one from; closing the connection",
		ReasonProxyProtocol, slog.LevelWarn, "refused: PROXY header from an address not in listen.proxy_protocol_from",
		"if this is your load balancer, add its address to listen.proxy_protocol_from (then restart); otherwise the peer tried to choose the client address the relay sees"},
	// Refused at MAIL FROM, before anything is read or spooled; the
	// client's queue keeps the message and tries again (ratelimit.go).
	clientRate: {450, ec(4, 7, 0), "Client %q has handed in its limit of %d messages %s (%s); try again in %s",
		ReasonClientRate, slog.LevelWarn, "refused: the client is over its message rate limit",
		"raise the client's max_per_minute or max_per_day if the volume is expected, or find why the application sends so much"},
	// The same, while Redis is away: each relay keeps to its share of the
	// client's limits, after waiting out one window (internal/cluster).
	clientRateFallback: {450, ec(4, 7, 0), "Client %q is held to its share of its limits (%s) while the relays cannot reach their shared counts; try again in %s",
		ReasonClientRate, slog.LevelWarn, "refused: the client is at its share of its rate limit while Redis is unreachable (fallback)",
		"bring Redis back (oauthrelay doctor checks it); the relays share the full limits again on their own"},
}

func ec(class, subject, detail int) smtp.EnhancedCode {
	return smtp.EnhancedCode{class, subject, detail}
}

// A refusal is decided but not yet reported: checks return one, and the
// session logs, counts and answers it with Server.refuse. It is an error
// so that it can come back through io code (message.copy).
type refusal struct {
	kind kind
	args []any // the reply template's arguments
}

func newRefusal(k kind, args ...any) *refusal { return &refusal{kind: k, args: args} }

// Error returns the reply text.
func (r *refusal) Error() string { return fmt.Sprintf(refusals[r.kind].text, r.args...) }

// reply builds the bare *smtp.SMTPError go-smtp needs: it type-asserts
// rather than using errors.As, so a wrapped error would lose its code and
// become a permanent 554 showing internal text.
func (r *refusal) reply() *smtp.SMTPError {
	sp := refusals[r.kind]
	return &smtp.SMTPError{Code: sp.code, EnhancedCode: sp.ec, Message: r.Error()}
}

// refuse reports a refusal: it counts it under its reason, logs its line
// with attrs (key-value pairs) and returns the reply to send.
func (s *Server) refuse(r *refusal, attrs ...any) *smtp.SMTPError {
	return s.report(r, true, attrs...)
}

// report is refuse, with the log line left out unless log is set (a
// session logs each reason once, session.refuse).
func (s *Server) report(r *refusal, log bool, attrs ...any) *smtp.SMTPError {
	sp := refusals[r.kind]
	se := r.reply()
	if sp.reason != "" && s.hooks.Refused != nil {
		s.hooks.Refused(sp.reason)
	}
	if log && sp.log != "" {
		if sp.reason != "" {
			attrs = append([]any{"reason", sp.reason}, attrs...)
		}
		attrs = append(attrs, "reply", wireText(se))
		if sp.fix != "" {
			attrs = append(attrs, "fix", sp.fix)
		}
		s.log.Log(context.Background(), sp.level, sp.log, attrs...)
	}
	return se
}

// wireText is a reply as the client reads it, without the line end.
func wireText(se *smtp.SMTPError) string {
	return fmt.Sprintf("%d %d.%d.%d %s", se.Code, se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2], se.Message)
}

// spoolRefusal turns a failure to queue a message into the refusal a
// client should see: temporary, with the queue id so an admin can find
// the log line, and without internal error text. A refusal that failed
// the message (size limit, policy) is kept as it is.
func spoolRefusal(id string, err error) *refusal {
	var r *refusal
	if errors.As(err, &r) {
		return r
	}
	if queue.IsFull(err) {
		return newRefusal(diskFull, id)
	}
	return newRefusal(spoolWrite, id)
}

// queuedReply is the 250 after DATA, with the queue id so that the
// application's log can be matched with ours.
func queuedReply(id string) *smtp.SMTPError {
	return &smtp.SMTPError{Code: 250, EnhancedCode: ec(2, 0, 0), Message: "OK: queued as " + id}
}

// ownTexts replaces the chatty reply lines go-smtp (v0.25.1) hard-codes
// with plain ones in the relay's voice, and for MAIL and RCPT with the
// enhanced codes RFC 3463 gives a valid sender (2.1.0) and recipient
// (2.1.5). A %s stands for the address go-smtp echoes; replyWriter does
// the replacing. One row changes the class of go-smtp's reply, on purpose
// (reclass): undecodable AUTH data is the client's syntax error, 501
// 5.5.2 as RFC 4954 has it, not go-smtp's 454 4.7.0, which tells the
// client to try the same bytes again.
var ownTexts = []struct {
	goSMTP, ours string
	reclass      bool
}{
	{"250 2.0.0 Roger, accepting mail from <%s>", "250 2.1.0 Sender <%s> OK", false},
	{"250 2.0.0 I'll make sure <%s> gets this", "250 2.1.5 Recipient <%s> OK", false},
	{"250 2.0.0 I have successfully done nothing", "250 2.0.0 OK", false},
	{"354 Go ahead. End your data with <CR><LF>.<CR><LF>", "354 End data with <CR><LF>.<CR><LF>", false},
	{goSMTPIdleTimeout, "421 4.4.2 Idle timeout: no command received in time; closing the connection", false},
	{"421 4.4.0 Connection error, sorry", "421 4.4.0 Connection error; closing the connection", false},
	{"500 5.5.1 Too many errors. Quiting now", "500 5.5.1 Too many errors; closing the connection", false},
	{"454 4.7.0 Invalid base64 data", "501 5.5.2 Invalid base64 data in AUTH: nothing was checked; send the credentials base64-encoded", true},
}

// go-smtp's replies that the relay may answer with a row of refusals
// instead (ownRefusal), so that they are counted, logged and say what to
// do.
const (
	// A read deadline passed: loginTimeout when login_timeout is what
	// passed.
	goSMTPIdleTimeout = "421 4.4.2 Idle timeout, bye bye"
	// STARTTLS on a listener without a certificate: startTLSNoCert.
	goSMTPNoTLS = "502 5.5.1 TLS not supported"
	// go-smtp's parser refused a RCPT: badRecipient when the path is
	// well bracketed and only the address is wrong ("RCPT TO:<nobody>").
	goSMTPRcptSyntax = "501 5.5.2 Was expecting RCPT arg syntax of TO:<address>"
)

// ownRefusal returns the refusal the session answers in place of
// go-smtp's reply line, with its log attributes, or nil when the line
// stands (or gets its ownText).
func (ss *session) ownRefusal(line string) (*refusal, []any) {
	switch line {
	case goSMTPIdleTimeout:
		if cc := connOf(ss.conn.Conn()); cc != nil && cc.loginExpired() {
			return newRefusal(loginTimeout, ss.s.listen.Hostname, ss.s.listen.LoginTimeout.Duration), nil
		}
	case goSMTPNoTLS:
		return newRefusal(startTLSNoCert), nil
	case goSMTPRcptSyntax:
		if to, ok := rcptAddress(ss.lastRcpt); ok {
			return newRefusal(badRecipient, sanitize(to)), []any{"to", sanitize(to)}
		}
	}
	return nil, nil
}

// rcptAddress returns the address of a RCPT command line, "nobody" for
// "RCPT TO:<nobody>", when the command's syntax is right: "TO:" and a
// path in angle brackets (or without any). Otherwise go-smtp's syntax
// error is the right reply.
func rcptAddress(line string) (string, bool) {
	if len(line) < 4 || !strings.EqualFold(line[:4], "RCPT") {
		return "", false
	}
	arg := strings.TrimLeft(line[4:], " ")
	if len(arg) < 3 || !strings.EqualFold(arg[:3], "TO:") {
		return "", false
	}
	arg = strings.TrimSpace(arg[3:])
	if rest, ok := strings.CutPrefix(arg, "<"); ok {
		to, _, ok := strings.Cut(rest, ">")
		return to, ok && !strings.Contains(to, "<")
	}
	if arg == "" || strings.ContainsAny(arg, "<>") {
		return "", false
	}
	to, _, _ := strings.Cut(arg, " ")
	return to, true
}

// ownText returns the relay's text for a reply line go-smtp wrote
// (without its line end), or false when the line is not one of go-smtp's
// chatty ones.
func ownText(line string) (string, bool) {
	for _, t := range ownTexts {
		pre, post, hasArg := strings.Cut(t.goSMTP, "%s")
		if !hasArg {
			if line == t.goSMTP {
				return t.ours, true
			}
			continue
		}
		if len(line) >= len(pre)+len(post) && strings.HasPrefix(line, pre) && strings.HasSuffix(line, post) {
			return fmt.Sprintf(t.ours, sanitize(line[len(pre):len(line)-len(post)])), true
		}
	}
	return "", false
}
