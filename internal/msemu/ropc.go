package msemu

import (
	"crypto/subtle"
	"net/http"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// User is a user account of the tenant, for the password grant: a
// service account whose mailbox the relay signs in to as itself.
type User struct {
	UPN, Password string
	// ObjectID is the user's oid; generated when empty.
	ObjectID string
	// What stops a password sign-in, each with its AADSTS code:
	// MFARequired 50076, MFARegistration 50079, Locked 50053,
	// PasswordExpired 50055, Disabled 50057, BlockedByCA 53003.
	MFARequired, MFARegistration, Locked, PasswordExpired, Disabled, BlockedByCA bool
}

// ScopeSMTPSend is the delegated permission SMTP AUTH requires of a
// user's token.
const ScopeSMTPSend = "SMTP.Send"

// AddUser creates or replaces a user account.
func (e *Emulator) AddUser(u User) {
	if u.ObjectID == "" {
		u.ObjectID = newGUID()
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.creds.users == nil {
		e.creds.users = map[string]*User{}
	}
	e.creds.users[strings.ToLower(u.UPN)] = &u
}

// checkUser signs a user in with a password, refusing as Entra does.
func (e *Emulator) checkUser(tenant, upn, password string) (User, *aadError) {
	e.mu.Lock()
	u, ok := e.creds.users[strings.ToLower(upn)]
	var user User
	if ok {
		user = *u
	}
	e.mu.Unlock()
	switch {
	case !ok:
		return user, invalidRequest(50034, "The user account {EUII Hidden} does not exist in the %s directory. To sign into this application, the account must be added to the directory.", tenant)
	case user.Locked:
		return user, invalidRequest(50053, "Your account is locked because you've tried to sign in too many times with an incorrect user ID or password.")
	case user.Disabled:
		return user, invalidRequest(50057, "The user account is disabled.")
	case subtle.ConstantTimeCompare([]byte(user.Password), []byte(password)) != 1:
		return user, &aadError{http.StatusBadRequest, "invalid_grant", 50126, "Error validating credentials due to invalid username or password."}
	case user.PasswordExpired:
		return user, &aadError{http.StatusBadRequest, "invalid_grant", 50055, "The password is expired."}
	case user.BlockedByCA:
		return user, &aadError{http.StatusBadRequest, "invalid_grant", 53003, "Access has been blocked by Conditional Access policies. The access policy does not allow token issuance."}
	case user.MFARegistration:
		return user, &aadError{http.StatusBadRequest, "invalid_grant", 50079, "Due to a configuration change made by your administrator, or because you moved to a new location, you must enroll in multi-factor authentication to access '00000002-0000-0ff1-ce00-000000000000'."}
	case user.MFARequired:
		return user, &aadError{http.StatusBadRequest, "invalid_grant", 50076, "Due to a configuration change made by your administrator, or because you moved to a new location, you must use multi-factor authentication to access '00000002-0000-0ff1-ce00-000000000000'."}
	}
	return user, nil
}

// issueUserToken issues the delegated token of the password grant: the
// user's upn and oid, scp instead of roles.
func (e *Emulator) issueUserToken(app App, u User, tid, aud, acr string, lifetime time.Duration) (string, error) {
	now := e.now()
	iss := "https://sts.windows.net/" + tid + "/"
	scp := "Mail.Send"
	if exchangeAudiences[aud] {
		scp = ScopeSMTPSend
	}
	c := accessClaims{
		Aud: aud, Iss: iss, Idp: iss,
		Iat: now.Unix(), Nbf: now.Unix(), Exp: now.Add(lifetime).Unix(),
		AppID: app.ClientID, AppIDAcr: acr,
		Oid: u.ObjectID, Sub: u.ObjectID, Tid: tid,
		Uti: randB64(16), Ver: "1.0", Upn: u.UPN, Scp: scp,
	}
	t := jwt.NewWithClaims(jwt.SigningMethodRS256, c)
	t.Header["kid"] = e.kid
	t.Header["x5t"] = e.kid
	return t.SignedString(e.signKey)
}

// delegatedAuthLocked decides AUTH with a user's token: Exchange lets a
// user sign in to the user's own mailbox only; e.mu is held.
func (e *Emulator) delegatedAuthLocked(s *smtpSession, app *App, c accessClaims, user string) string {
	if e.tenantOff {
		return ReplyAuthDisabledTenant
	}
	mb, ok := e.mailboxes[strings.ToLower(user)]
	if !ok || !strings.EqualFold(user, c.Upn) || !contains(strings.Fields(c.Scp), ScopeSMTPSend) {
		return ReplyAuthFailed
	}
	if mb.SMTPAuthDisabled {
		return ReplyAuthDisabledMbx
	}
	return e.countConnLocked(s, mb, app)
}

// countConnLocked counts an authenticated connection against the mailbox's
// limit of concurrent connections (Exchange's, app or user token alike)
// and binds the session to it; e.mu is held.
func (e *Emulator) countConnLocked(s *smtpSession, mb *Mailbox, app *App) string {
	key := strings.ToLower(mb.Address)
	if max := e.opts.MaxConnsPerMailbox; max >= 0 && e.active[key] >= max {
		return ReplyTooManyConns
	}
	e.active[key]++
	if e.active[key] > e.stats.MaxConcurrentByMailbox[key] {
		e.stats.MaxConcurrentByMailbox[key] = e.active[key]
	}
	s.mailbox, s.appID, s.counted = mb.Address, app.ClientID, true
	return ReplyAuthOK
}
