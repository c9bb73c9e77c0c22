package msemu

import (
	"strings"
	"time"
)

// High Volume Email (smtp-hve.office365.com:587) speaks the same SMTP as
// SMTP AUTH submission with three differences (Microsoft's High Volume Email documentation): the token
// must carry Exchange's Mail.Send role, it must have at least ten minutes
// left, and only internal recipients are accepted. The SMTP AUTH switches
// (Set-CASMailbox, Set-TransportConfig) do not apply to it.

// HVEMinTokenLifetime is the least lifetime a token presented to High
// Volume Email may have left.
const HVEMinTokenLifetime = 10 * time.Minute

// Replies particular to High Volume Email.
const (
	ReplyHVETokenExpiresSoon = "501 5.5.127 Invalid XOAUTH2 auth data - Token will expire soon"
	// replyHVEExternal is formatted with the refused recipient.
	replyHVEExternal = "550 5.5.105 Recipient <%s> is external; High Volume Email delivers only to recipients in the organization's accepted domains"
)

// hveAuthLocked decides AUTH on the High Volume Email listener for a
// verified Exchange token of app; e.mu is held. No connection limit is
// emulated: HVE's limits are preview figures.
func (e *Emulator) hveAuthLocked(s *smtpSession, app *App, c accessClaims, user string) string {
	if time.Unix(c.Exp, 0).Sub(e.now()) < HVEMinTokenLifetime {
		return ReplyHVETokenExpiresSoon
	}
	mb, ok := e.mailboxes[strings.ToLower(user)]
	// FullAccess stands for Add-HVEAppAccess here.
	if !ok || !app.ServicePrincipal || !contains(c.Roles, RoleMailSend) || !contains(mb.FullAccess, app.ClientID) {
		return ReplyAuthFailed
	}
	s.mailbox, s.appID = mb.Address, app.ClientID
	return ReplyAuthOK
}

// internalRecipient reports whether addr is in one of the tenant's
// accepted domains: Options.AcceptedDomains, or else the domains of the
// mailboxes.
func (e *Emulator) internalRecipient(addr string) bool {
	at := strings.LastIndexByte(addr, '@')
	if at < 0 {
		return false
	}
	domain := addr[at+1:]
	if len(e.opts.AcceptedDomains) > 0 {
		return contains(e.opts.AcceptedDomains, domain)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for key := range e.mailboxes {
		if strings.EqualFold(key[strings.LastIndexByte(key, '@')+1:], domain) {
			return true
		}
	}
	return false
}
