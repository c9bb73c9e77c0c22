package oauth

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"

	msalerrors "github.com/AzureAD/microsoft-authentication-library-for-go/apps/errors"

	"github.com/oauthrelay/oauthrelay/internal/egress"
)

// Error is a failed token request, decoded into what went wrong and what an
// administrator should do about it. Its message is built only from decoded
// fields, never from raw library or request text, so it cannot carry a
// secret, an assertion or a token.
type Error struct {
	App        string // config name of the app registration
	HTTPStatus int    // 0 when no HTTP response was received
	ErrorCode  string // OAuth2 "error", e.g. "invalid_client"
	AADSTS     int    // first AADSTS code, 0 if none
	// Description is the first line of error_description, without the
	// Trace ID / Correlation ID / Timestamp lines Entra appends.
	Description string
	Cause       string // what is wrong, in words
	Fix         string // what the administrator does
	// Permanent is true for configuration faults that retrying will not
	// fix; false for transient trouble (5xx, 429, network, throttling).
	Permanent bool
	Err       error // underlying network or TLS error, if any
	// fileFault: the credential's own file is missing or unusable.
	fileFault bool
}

// Error renders `app "NAME": AADSTSnnn: cause — fix: what to do`.
func (e *Error) Error() string {
	s := fmt.Sprintf("app %q: %s", e.App, e.Summary())
	if e.Fix != "" {
		s += " — fix: " + e.Fix
	}
	return s
}

// Summary is the code and the cause, without the app and the fix, for
// places that show those on their own (a log line's attributes, doctor's
// per-app section).
func (e *Error) Summary() string {
	var b strings.Builder
	switch {
	case e.AADSTS != 0:
		fmt.Fprintf(&b, "AADSTS%d: ", e.AADSTS)
	case e.ErrorCode != "":
		b.WriteString(e.ErrorCode + ": ")
	case e.HTTPStatus != 0:
		fmt.Fprintf(&b, "HTTP %d: ", e.HTTPStatus)
	}
	b.WriteString(e.Cause)
	if d := e.EntraSays(); d != "" {
		fmt.Fprintf(&b, " (Entra ID says: %s)", d)
	}
	return b.String()
}

// EntraSays is Microsoft's own description of the error when the code is
// not one we explain: then it is the best clue an admin has. Empty for
// explained codes.
func (e *Error) EntraSays() string {
	if _, _, _, known := Explain(e.AADSTS); known {
		return ""
	}
	return e.Description
}

// Unwrap returns the underlying network error, if any.
func (e *Error) Unwrap() error { return e.Err }

// IsPermanent reports whether err is (or wraps) an *Error that retrying
// will not fix.
func IsPermanent(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Permanent
}

type explanation struct {
	cause, fix string
	permanent  bool
}

// explanations covers the AADSTS codes a failed client-credentials token
// request commonly returns, with the administrator's fix for each.
var explanations = map[int]explanation{
	7000215: {"the client secret is wrong",
		"copy the secret's Value, not its Secret ID (create a new client secret in the app registration if needed)", true},
	7000222: {"the client secret has expired",
		"create a new client secret in the app registration (Certificates & secrets) and update client_secret, or switch to a certificate", true},
	700016: {"the application (client) ID was not found in this tenant",
		"check client_id and tenant_id against the app registration's Overview page; a multi-tenant app needs admin consent in this tenant", true},
	90002: {"the tenant was not found",
		"set tenant_id to the Directory (tenant) ID from the app registration's Overview page", true},
	900023: {"the tenant ID is not a valid tenant name or GUID",
		"set tenant_id to the Directory (tenant) ID (a GUID) from the app registration's Overview page", true},
	700027: {"the client assertion signature is invalid: the certificate is not uploaded to the app, the key does not match, or the certificate expired",
		"upload the public certificate (.cer) under Certificates & secrets and compare its thumbprint with 'oauthrelay cert show'", true},
	700024: {"the client assertion is outside its valid time range",
		"fix this host's clock (enable NTP)", true},
	700023: {"the client assertion audience does not match the token endpoint",
		"check authority and tenant_id; if they are right this is a client bug, please report it", true},
	700021: {"the client assertion issuer/subject does not match the client ID",
		"check client_id; if it is right this is a client bug, please report it", true},
	1002012: {"the requested scope is invalid",
		"set scope to https://outlook.office365.com/.default", true},
	70011: {"the requested scope is invalid",
		"set scope to https://outlook.office365.com/.default", true},
	53003: {"access is blocked by a Conditional Access policy",
		"exclude this service principal from the Conditional Access policy or allow this host's location", true},
	530035: {"access is blocked by security defaults",
		"review security defaults / Conditional Access for this app in Entra ID", true},
	7000218: {"the request carried neither a client secret nor a client assertion",
		"configure client_secret or certificate_file for this app", true},
	90024: {"Entra ID is temporarily unavailable",
		"none needed; the relay retries with backoff", false},
}

func init() {
	for code, x := range federationAndPasswordExplanations {
		explanations[code] = x
	}
}

// federationAndPasswordExplanations cover the federated credentials
// (federated_token_file, managed_identity) and the password grant.
var federationAndPasswordExplanations = map[int]explanation{
	70021: {"no federated identity credential of the app registration matches the presented token (its issuer, subject and audience together)",
		"in the app registration, Certificates & secrets → Federated credentials, add one whose issuer, subject and audience are exactly the token's (for AKS: the cluster's OIDC issuer URL and system:serviceaccount:NAMESPACE:NAME; for a managed identity: the identity's object id)", true},
	700211: {"no federated identity credential of the app registration trusts the token's issuer",
		"add a federated credential whose Issuer is exactly the token's iss (for AKS: az aks show --query oidcIssuerProfile.issuerUrl; a trailing slash counts)", true},
	700212: {"no federated identity credential of the app registration accepts the token's audience",
		"set the federated credential's Audience to the token's aud, normally api://AzureADTokenExchange (the projected service account token's audience)", true},
	700213: {"no federated identity credential of the app registration matches the token's subject",
		"set the federated credential's Subject to the token's sub exactly (for Kubernetes: system:serviceaccount:NAMESPACE:SERVICEACCOUNT; for a managed identity: its object (principal) id)", true},
	70025: {"the app registration has no federated identity credentials",
		"add a federated credential to the app registration (Certificates & secrets → Federated credentials) for the token's issuer and subject", true},
	50126: {"the service account's username or password is wrong",
		"write the service account's current password into password_file (the relay re-reads it when Entra refuses it, and on reload), and check username", true},
	50076: {"the service account must use multi-factor authentication, which the password grant cannot do",
		"exclude the service account from MFA with a Conditional Access policy limited to this host's address, or better sign in as the app with a certificate (certificate_file, no username)", true},
	50079: {"the service account must register for multi-factor authentication, which the password grant cannot do",
		"exclude the service account from the MFA registration policy, or better sign in as the app with a certificate (certificate_file, no username)", true},
	50053: {"the service account is locked after too many failed sign-ins (or sign-in from this address is blocked)",
		"wait for the lockout to end (Smart Lockout: about a minute, growing), then fix password_file; check the sign-in logs for who else uses the account", true},
	50055: {"the service account's password has expired",
		"set a new password for the service account (and consider a password that does not expire for it), then write it into password_file", true},
	50057: {"the service account is disabled",
		"enable the service account in Entra ID (Users → the account → Account enabled)", true},
	50034: {"the service account does not exist in this tenant",
		"check username: it must be the account's user principal name in this tenant", true},
	65001: {"the service account has not consented to the app's delegated permission (SMTP.Send)",
		"grant admin consent for the app's delegated permission SMTP.Send (Office 365 Exchange Online) in the app registration's API permissions", true},
}

// Explain returns the cause and the administrator's fix for an AADSTS code,
// whether it is a configuration fault, and whether the code is known.
func Explain(aadsts int) (cause, fix string, permanent bool, ok bool) {
	x, ok := explanations[aadsts]
	return x.cause, x.fix, x.permanent, ok
}

// oauthErrorBody is the JSON error body of the token endpoint.
type oauthErrorBody struct {
	Error       string `json:"error"`
	Description string `json:"error_description"`
	ErrorCodes  []int  `json:"error_codes"`
}

var aadstsRE = regexp.MustCompile(`AADSTS(\d+)`)

// classify turns whatever MSAL returned into an *Error. secrets are values
// (client secret) that must be scrubbed from any text taken over.
func classify(app, authorityHost string, err error, secrets ...string) *Error {
	e := &Error{App: app}
	var ce msalerrors.CallErr
	if errors.As(err, &ce) && ce.Resp != nil {
		e.HTTPStatus = ce.Resp.StatusCode
		var body []byte
		if ce.Resp.Body != nil {
			body, _ = io.ReadAll(io.LimitReader(ce.Resp.Body, 64<<10))
		}
		fillFromBody(e, body, secrets)
		return e
	}
	var se *SignError
	if errors.As(err, &se) {
		// The assertion was never sent: the key could not sign.
		e.Err, e.Cause, e.Fix, e.Permanent = se, se.Cause, se.Fix, true
		return e
	}
	var pe *egress.Error
	if errors.As(err, &pe) {
		// The proxy refused or could not be reached: its own fix, and
		// transient (mail waits for the proxy).
		e.Err = pe
		e.Cause = pe.Error()
		e.Fix = pe.Fix()
		return e
	}
	if ne := networkError(err); ne != nil {
		hostPort := authorityHost
		if _, _, err := net.SplitHostPort(hostPort); err != nil {
			hostPort = net.JoinHostPort(authorityHost, "443")
		}
		e.Err = ne
		e.Permanent = false
		if tlsVerifyFailure(ne) {
			// A certificate that does not verify will not fix itself:
			// treat it as a configuration fault so health turns red,
			// like the same failure on the SMTP side.
			e.Permanent = true
			e.Cause = "the TLS certificate of " + authorityHost + " could not be verified"
			e.Fix = "if a proxy or firewall inspects TLS, add its CA certificate with [upstream] ca_file; otherwise check this host's CA bundle and clock"
		} else if errors.Is(ne, context.DeadlineExceeded) {
			e.Cause = "the token request to " + authorityHost + " timed out"
			e.Fix = "check that this host can reach " + hostPort + " (proxy? firewall?)"
		} else {
			e.Cause = "cannot reach " + authorityHost + ": " + netSummary(ne)
			e.Fix = "check that this host can reach " + hostPort + " (proxy? firewall? DNS?)"
		}
		return e
	}
	// Anything else: MSAL's own validation (bad discovery document, invalid
	// JSON, ...). Its text may quote response bodies, so scrub it.
	e.Permanent = true
	e.Cause = "unexpected response from the token service: " + scrub(firstLine(err.Error()), secrets)
	e.Fix = "check authority (it must point at Microsoft Entra ID, e.g. https://login.microsoftonline.com/) and tenant_id"
	return e
}

// fillFromBody decodes an Entra error body into e.
func fillFromBody(e *Error, body []byte, secrets []string) {
	var ob oauthErrorBody
	_ = json.Unmarshal(body, &ob)
	e.ErrorCode = ob.Error
	e.Description = scrub(firstLine(ob.Description), secrets)
	if len(ob.ErrorCodes) > 0 {
		e.AADSTS = ob.ErrorCodes[0]
	} else if m := aadstsRE.FindStringSubmatch(ob.Description); m != nil {
		e.AADSTS, _ = strconv.Atoi(m[1])
	}
	if c, f, p, ok := Explain(e.AADSTS); ok {
		e.Cause, e.Fix, e.Permanent = c, f, p
		return
	}
	switch {
	case e.HTTPStatus >= 500 || e.HTTPStatus == 429 || ob.Error == "temporarily_unavailable":
		e.Permanent = false
		e.Cause = fmt.Sprintf("the token service is temporarily unavailable (HTTP %d)", e.HTTPStatus)
		e.Fix = "none needed; the relay retries with backoff"
	case e.AADSTS != 0:
		e.Permanent = true
		e.Cause = "the token request was refused"
		e.Fix = fmt.Sprintf("look up AADSTS%d at https://login.microsoftonline.com/error?code=%d and correct the app registration or config", e.AADSTS, e.AADSTS)
	default:
		e.Permanent = e.HTTPStatus >= 400 && e.HTTPStatus < 500
		e.Cause = fmt.Sprintf("the token service answered HTTP %d", e.HTTPStatus)
		if ob.Error == "" && e.Description == "" {
			e.Cause += " without an OAuth2 error body"
		}
		e.Fix = "check authority and tenant_id (the authority must be Microsoft Entra ID, e.g. https://login.microsoftonline.com/)"
	}
}

// firstLine keeps the text before Entra's "\r\nTrace ID: ..." lines.
func firstLine(s string) string {
	if i := strings.IndexAny(s, "\r\n"); i >= 0 {
		s = s[:i]
	}
	s = strings.TrimSpace(s)
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}

var scrubREs = []*regexp.Regexp{
	regexp.MustCompile(`eyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*\.[A-Za-z0-9_\-]*`), // JWTs: assertions, tokens
	regexp.MustCompile(`(?i)(client_secret|client_assertion|access_token|refresh_token|id_token|password)("?\s*[=:]\s*"?)[^&"\s,}]*`),
}

// scrub removes known secrets and anything shaped like a token or a
// credential parameter from text that came from elsewhere.
func scrub(s string, secrets []string) string {
	for _, sec := range secrets {
		if sec != "" {
			s = strings.ReplaceAll(s, sec, "[redacted]")
		}
	}
	s = scrubREs[0].ReplaceAllString(s, "[redacted]")
	return scrubREs[1].ReplaceAllString(s, "$1$2[redacted]")
}

// networkError finds the transport-level error inside an MSAL error.
func networkError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return ne
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return context.DeadlineExceeded
	}
	return nil
}

func tlsVerifyFailure(err error) bool {
	var (
		ua  x509.UnknownAuthorityError
		ci  x509.CertificateInvalidError
		he  x509.HostnameError
		cve *tls.CertificateVerificationError
	)
	return errors.As(err, &ua) || errors.As(err, &ci) || errors.As(err, &he) || errors.As(err, &cve)
}

// netSummary names the kind of network failure without echoing anything
// beyond host names.
func netSummary(err error) string {
	var dnsErr *net.DNSError
	var opErr *net.OpError
	switch {
	case errors.As(err, &dnsErr):
		if dnsErr.IsNotFound {
			return "DNS name " + dnsErr.Name + " not found"
		}
		return "DNS lookup of " + dnsErr.Name + " failed"
	case errors.As(err, &opErr) && opErr.Op == "dial":
		return "connection failed (" + scrub(opErr.Err.Error(), nil) + ")"
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed unexpectedly"
	}
	return scrub(firstLine(err.Error()), nil)
}
