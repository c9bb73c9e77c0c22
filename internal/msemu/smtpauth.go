package msemu

import (
	"encoding/base64"
	"errors"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// auth handles AUTH: XOAUTH2 is decided by checkAuth, LOGIN is walked
// through and refused as Exchange refuses Basic authentication.
func (s *smtpSession) auth(arg string) {
	if s.helo == "" {
		s.reply("503 5.5.2 Send hello first")
		return
	}
	if s.mailbox != "" {
		s.reply("503 5.5.2 Already Authenticated")
		return
	}
	mech, ir, _ := strings.Cut(arg, " ")
	mech = strings.ToUpper(mech)
	if !s.isTLS || (mech != "XOAUTH2" && mech != "LOGIN") {
		// Before STARTTLS no mechanism is offered at all.
		s.reply("504 5.7.4 Unrecognized authentication type")
		return
	}
	if mech == "LOGIN" {
		// Go through the exchange so clients see the real refusal.
		if ir == "" {
			s.reply("334 VXNlcm5hbWU6")
			if l, err := s.readLine(); err != nil || l == "*" {
				s.reply("501 5.0.0 Authentication cancelled")
				return
			}
		}
		s.reply("334 UGFzc3dvcmQ6")
		if l, err := s.readLine(); err != nil || l == "*" {
			s.reply("501 5.0.0 Authentication cancelled")
			return
		}
		s.e.mu.Lock()
		s.e.stats.AuthFailures++
		s.e.mu.Unlock()
		s.reply(ReplyBasicAuth)
		return
	}
	if ir == "" {
		s.reply("334 ")
		l, err := s.readLine()
		if err != nil {
			return
		}
		if l == "*" {
			s.reply("501 5.0.0 Authentication cancelled")
			return
		}
		ir = l
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(ir))
	if err != nil {
		s.reply("501 5.5.2 Cannot Decode response")
		return
	}
	user, token := parseXOAUTH2(raw)
	reply := s.e.checkAuth(s, user, token)
	s.reply(reply)
	if strings.HasPrefix(reply, "432") {
		// The connection limit reply ends the session.
		s.close()
	}
}

// parseXOAUTH2 splits "user=<mbx>\x01auth=Bearer <jwt>\x01\x01".
func parseXOAUTH2(b []byte) (user, token string) {
	for _, f := range strings.Split(string(b), "\x01") {
		if v, ok := strings.CutPrefix(f, "user="); ok {
			user = v
		} else if v, ok := strings.CutPrefix(f, "auth="); ok {
			if t, ok := cutPrefixFold(v, "Bearer "); ok {
				token = strings.TrimSpace(t)
			}
		}
	}
	return user, token
}

func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix) {
		return s[len(prefix):], true
	}
	return s, false
}

// checkAuth decides an AUTH XOAUTH2 the way Exchange Online does and
// returns the reply line. On success the session holds a connection slot.
func (e *Emulator) checkAuth(s *smtpSession, user, token string) string {
	rec, claims, perr := e.presented(user, token)
	rec.ConnID = s.id

	e.mu.Lock()
	defer e.mu.Unlock()
	reply := func() string {
		if r, ok := e.failAuthNext.take(); ok {
			return r
		}
		if r, ok := e.failAuth[strings.ToLower(user)]; ok {
			return r
		}
		// Expired, foreign or tampered tokens all look alike to the client.
		if perr != nil || !exchangeAudiences[claims.Aud] {
			return ReplyAuthFailed
		}
		app, ok := e.tokenAppLocked(claims)
		if !ok {
			return ReplyAuthFailed
		}
		if claims.Upn != "" {
			return e.delegatedAuthLocked(s, app, claims, user)
		}
		if s.hve {
			return e.hveAuthLocked(s, app, claims, user)
		}
		if e.tenantOff {
			return ReplyAuthDisabledTenant
		}
		mb, ok := e.mailboxes[strings.ToLower(user)]
		if !ok {
			return ReplyAuthFailed
		}
		if mb.SMTPAuthDisabled {
			return ReplyAuthDisabledMbx
		}
		if !app.ServicePrincipal || !contains(claims.Roles, RoleSendAsApp) || !contains(mb.FullAccess, app.ClientID) {
			return ReplyAuthFailed
		}
		return e.countConnLocked(s, mb, app)
	}()
	rec.OK = reply == ReplyAuthOK
	rec.Reply = reply
	if !rec.OK {
		e.stats.AuthFailures++
	}
	e.stats.AuthTokens = append(e.stats.AuthTokens, rec)
	e.log.Info("msemu smtp auth", "conn", s.id, "mailbox", user, "app", rec.AppID, "remaining", rec.Remaining.Round(time.Second), "reply", reply)
	return reply
}

// presented parses a bearer token presented as mailbox and describes it
// for the stats; the record's AppID and Expires are filled in when the
// token is ours, even if it is expired.
func (e *Emulator) presented(mailbox, token string) (AuthRecord, accessClaims, error) {
	rec := AuthRecord{Mailbox: mailbox, At: e.now()}
	claims, perr := e.parseAccessToken(token)
	if perr == nil || errors.Is(perr, jwt.ErrTokenExpired) || errors.Is(perr, jwt.ErrTokenNotValidYet) || errors.Is(perr, jwt.ErrTokenUsedBeforeIssued) {
		rec.AppID = claims.AppID
		if claims.Exp != 0 {
			rec.Expires = time.Unix(claims.Exp, 0)
			rec.Remaining = rec.Expires.Sub(rec.At)
		}
	}
	return rec, claims, perr
}

// tokenAppLocked returns the app a verified token was issued to, if its
// tenant and issuer match the app's; e.mu is held.
func (e *Emulator) tokenAppLocked(c accessClaims) (*App, bool) {
	app, ok := e.apps[strings.ToLower(c.AppID)]
	if !ok || !strings.EqualFold(app.TenantID, c.Tid) || c.Iss != "https://sts.windows.net/"+app.TenantID+"/" {
		return nil, false
	}
	return app, true
}
