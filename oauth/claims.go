package oauth

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// RoleSendAsApp is the application permission SMTP AUTH needs.
const RoleSendAsApp = "SMTP.SendAsApp"

// Claims are the access-token claims an administrator checks.
type Claims struct {
	Aud, Iss, Tid, AppID, AppIDACR, Oid string
	Roles                               []string
	IssuedAt, NotBefore, Expires        time.Time
}

// HasRole reports whether the token carries role r.
func (c Claims) HasRole(r string) bool { return slices.Contains(c.Roles, r) }

// ParseClaims decodes the payload of a JWT access token WITHOUT verifying
// its signature: for diagnostics only, never for authorization.
func ParseClaims(accessToken string) (Claims, error) {
	parts := strings.Split(accessToken, ".")
	if len(parts) != 3 {
		return Claims{}, errors.New("the access token is not a JWT (expected three dot-separated parts)")
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return Claims{}, errors.New("the access token's payload is not base64url")
	}
	var raw struct {
		Aud      json.RawMessage `json:"aud"`
		Iss      string          `json:"iss"`
		Tid      string          `json:"tid"`
		AppID    string          `json:"appid"`
		AzP      string          `json:"azp"` // v2 tokens name the app azp
		AppIDACR string          `json:"appidacr"`
		AzPACR   string          `json:"azpacr"`
		Oid      string          `json:"oid"`
		Roles    []string        `json:"roles"`
		Iat      json.Number     `json:"iat"`
		Nbf      json.Number     `json:"nbf"`
		Exp      json.Number     `json:"exp"`
	}
	d := json.NewDecoder(strings.NewReader(string(payload)))
	d.UseNumber()
	if err := d.Decode(&raw); err != nil {
		return Claims{}, fmt.Errorf("the access token's payload is not JSON claims: %v", err)
	}
	c := Claims{Iss: raw.Iss, Tid: raw.Tid, AppID: raw.AppID, AppIDACR: raw.AppIDACR, Oid: raw.Oid, Roles: raw.Roles}
	if c.AppID == "" {
		c.AppID = raw.AzP
	}
	if c.AppIDACR == "" {
		c.AppIDACR = raw.AzPACR
	}
	// aud is a string or, rarely, an array of strings.
	var aud string
	var auds []string
	if json.Unmarshal(raw.Aud, &aud) == nil {
		c.Aud = aud
	} else if json.Unmarshal(raw.Aud, &auds) == nil {
		c.Aud = strings.Join(auds, " ")
	}
	for _, f := range []struct {
		n   json.Number
		dst *time.Time
	}{{raw.Iat, &c.IssuedAt}, {raw.Nbf, &c.NotBefore}, {raw.Exp, &c.Expires}} {
		if f.n == "" {
			continue
		}
		v, err := f.n.Float64()
		if err != nil || math.IsInf(v, 0) || math.IsNaN(v) {
			return Claims{}, fmt.Errorf("the access token has a malformed time claim %q", f.n)
		}
		sec, frac := math.Modf(v)
		*f.dst = time.Unix(int64(sec), int64(frac*1e9)).UTC()
	}
	return c, nil
}

// Expect is what a token must carry for one door into Microsoft 365.
type Expect struct {
	// Resource names the audience for messages ("Exchange Online").
	Resource string
	// AudienceOK judges the token's audience.
	AudienceOK func(Claims) bool
	// AudienceFix tells how to get the right audience.
	AudienceFix string
	// Role is the application permission the door needs.
	Role string
	// RoleFix tells how to grant it.
	RoleFix string
}

// ExpectSMTP is what SMTP AUTH needs: Exchange Online, SMTP.SendAsApp.
var ExpectSMTP = Expect{
	Resource: "Exchange Online", AudienceOK: Claims.ForExchange,
	AudienceFix: "leave scope out of the [[app]] (the cloud preset sets it) or set it to https://outlook.office365.com/.default",
	Role:        RoleSendAsApp,
	RoleFix: "grant admin consent for " + RoleSendAsApp + " (app registration → API permissions → Office 365 Exchange Online → Application permissions → " +
		RoleSendAsApp + ", then Grant admin consent); note under Exchange RBAC for Applications tokens carry no roles",
}

// ExpectHVE is what the High Volume Email endpoint needs: Exchange Online
// with Mail.Send.
var ExpectHVE = Expect{
	Resource: "Exchange Online", AudienceOK: Claims.ForExchange, AudienceFix: ExpectSMTP.AudienceFix,
	Role: RoleMailSend,
	RoleFix: "grant " + RoleMailSend + " (app registration → API permissions → Office 365 Exchange Online → Application permissions → Mail.Send, " +
		"then Grant admin consent) and add the app to the HVE account (Add-HVEAppAccess)",
}

// ExpectGraph is what Microsoft Graph at graphURL needs: its audience and
// Mail.Send.
func ExpectGraph(graphURL string) Expect {
	host := strings.TrimPrefix(strings.TrimPrefix(graphURL, "https://"), "http://")
	return Expect{
		Resource: "Microsoft Graph",
		AudienceOK: func(c Claims) bool {
			return c.Aud == "" || c.Aud == graphResource || strings.Contains(c.Aud, host)
		},
		AudienceFix: "leave graph_scope out of the [[app]] (it follows graph_url) or set it to " + strings.TrimSuffix(graphURL, "/") + "/.default",
		Role:        RoleMailSend,
		RoleFix: "grant " + RoleMailSend + " (app registration → API permissions → Microsoft Graph → Application permissions → Mail.Send, " +
			"then Grant admin consent); an app limited to chosen mailboxes with RBAC for Applications " +
			"(New-ManagementRoleAssignment -Role \"Application Mail.Send\") carries no role in its token, which is fine",
	}
}

// RoleMailSend is the application permission Graph sendMail and the High
// Volume Email endpoint need.
const RoleMailSend = "Mail.Send"

// graphResource is Microsoft Graph's application id.
const graphResource = "00000003-0000-0000-c000-000000000000"

// DescribeToken renders what an administrator needs to know about a token
// (audience, tenant, app, roles, expiry) for SMTP AUTH.
func DescribeToken(tok Token, claims Claims, now time.Time) string {
	return DescribeTokenFor(tok, claims, now, ExpectSMTP)
}

// DescribeTokenFor renders what an administrator needs to know about a
// token (audience, tenant, app, roles, expiry) and a warning for each thing
// the door want expects that it lacks. It never includes the token itself.
func DescribeTokenFor(tok Token, claims Claims, now time.Time, want Expect) string {
	var b strings.Builder
	line := func(k, v string) { fmt.Fprintf(&b, "%-11s %s\n", k+":", v) }
	dash := func(s string) string {
		if s == "" {
			return "-"
		}
		return s
	}
	line("audience", dash(claims.Aud))
	line("tenant", dash(claims.Tid))
	app := dash(claims.AppID)
	switch claims.AppIDACR {
	case "1":
		app += " (authenticated with a client secret)"
	case "2":
		app += " (authenticated with a certificate)"
	}
	line("app id", app)
	if claims.Oid != "" {
		line("object id", claims.Oid+" (service principal)")
	}
	roles := "(none)"
	if len(claims.Roles) > 0 {
		roles = strings.Join(claims.Roles, ", ")
	}
	line("roles", roles)
	exp := tok.ExpiresOn
	if exp.IsZero() {
		exp = claims.Expires
	}
	if !exp.IsZero() {
		left := exp.Sub(now).Round(time.Second)
		when := "in " + left.String()
		if left <= 0 {
			when = "EXPIRED " + (-left).String() + " ago"
		}
		line("expires", exp.UTC().Format(time.RFC3339)+" ("+when+")")
	}
	if !want.AudienceOK(claims) {
		b.WriteString("WARNING: the audience is not " + want.Resource + "; " + want.AudienceFix + "\n")
	}
	if !claims.HasRole(want.Role) {
		b.WriteString("WARNING: the token has no " + want.Role + " role: admin consent missing? " + want.RoleFix + "\n")
	}
	return b.String()
}

// exchangeResource is Office 365 Exchange Online's application id, which
// some tokens carry as their audience instead of its URL.
const exchangeResource = "00000002-0000-0ff1-ce00-000000000000"

// ForExchange reports whether the token is for Exchange Online in any
// cloud (global, US Government, China) — or carries no audience to judge.
func (c Claims) ForExchange() bool {
	if c.Aud == "" {
		return true
	}
	for _, s := range []string{"outlook.office365", "outlook.cn", exchangeResource} {
		if strings.Contains(c.Aud, s) {
			return true
		}
	}
	return false
}
