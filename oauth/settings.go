package oauth

import (
	"crypto/x509"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/egress"
	"github.com/oauthrelay/oauthrelay/internal/guid"
)

// Defaults applied by NewSource (and shown by the config loader).
const (
	DefaultAuthority        = "https://login.microsoftonline.com/"
	DefaultScope            = "https://outlook.office365.com/.default"
	DefaultMinTokenLifetime = 10 * time.Minute
)

// maxMinTokenLifetime is the longest min_token_lifetime that can work:
// Microsoft's app-only tokens live about an hour, so a token must be
// usable for a while after the relay stops handing it out.
const maxMinTokenLifetime = 55 * time.Minute

// ProxySchemes are the proxy_url schemes the token client accepts: the
// same as [upstream] proxy's (egress.Schemes).
var ProxySchemes = egress.Schemes

// AppSettings is one [[app]] with secrets already resolved by the config loader.
type AppSettings struct {
	Name                 string         // config name, used in logs/errors
	TenantID             string         // Directory (tenant) ID
	ClientID             string         // Application (client) ID
	Authority            string         // base like "https://login.microsoftonline.com/"; token URL = Authority + TenantID + "/oauth2/v2.0/token"
	Scope                string         // default DefaultScope
	ClientSecret         string         // set for a secret credential
	CertificateFile      string         // PEM (cert+key) or .pfx/.p12
	CertificatePassword  string         // for encrypted PEM / PFX
	SendCertificateChain bool           // send x5c
	MinTokenLifetime     time.Duration  // default DefaultMinTokenLifetime when 0
	ProxyURL             string         // optional explicit proxy; otherwise HTTPS_PROXY/NO_PROXY
	RootCAs              *x509.CertPool // nil = system roots

	// FederatedTokenFile holds a token of an issuer the app registration
	// trusts (workload identity federation); it is read at every token
	// request and sent as the client assertion.
	FederatedTokenFile string
	// ManagedIdentity makes the assertion a token for
	// api://AzureADTokenExchange from this machine's managed identity
	// (ManagedIdentityClientID names a user-assigned one).
	ManagedIdentity         bool
	ManagedIdentityClientID string
	// Username and Password sign in as a service account with the
	// password grant, the app's secret or certificate alongside.
	Username string
	Password string
	// ClientSecretFile and PasswordFile are where ClientSecret and
	// Password came from: re-read when Entra says they are wrong.
	ClientSecretFile string
	PasswordFile     string
	// CertificateStore names a certificate in the Windows certificate
	// store (certificate_store with certificate_thumbprint or
	// certificate_subject); Store is "" otherwise.
	CertificateStore StoreRef
	// Signer is a certificate credential held elsewhere (tests, or a key
	// that never leaves its device), instead of a secret, file or store.
	Signer Signer
}

// AppProblem is one [[app]] setting that cannot work: the key an admin
// edits, what is wrong with its value (any password hidden) and the fix.
type AppProblem struct {
	Key string // e.g. "client_id"
	Msg string
	Fix string
}

// String renders the problem as "key: message — fix: …", the way the
// config loader renders its problems.
func (p AppProblem) String() string { return p.Key + ": " + p.Msg + " — fix: " + p.Fix }

// CheckApp applies the rules every app must follow, for the config loader
// and NewSource alike: tenant_id, client_id, authority, scope,
// min_token_lifetime and proxy_url. Empty authority, scope and
// min_token_lifetime mean the defaults. It reads no files and does not look
// at the credential. The problems come in that key order; nil means none.
func CheckApp(s AppSettings) []AppProblem {
	var ps []AppProblem
	add := func(p *AppProblem) {
		if p != nil {
			ps = append(ps, *p)
		}
	}
	add(checkTenant(s.TenantID))
	add(checkClientID(s.ClientID))
	if s.Authority != "" && !IsHTTPSURL(s.Authority) {
		add(&AppProblem{"authority", fmt.Sprintf("%q is not an https URL", RedactURL(s.Authority)),
			`use "` + DefaultAuthority + `" or leave it out so the cloud sets it (Microsoft's identity library requires https)`})
	}
	add(checkAuthorityPath(s.Authority, s.TenantID))
	if s.Scope != "" {
		add(CheckScope("scope", s.Scope, DefaultScope))
	}
	if s.MinTokenLifetime >= maxMinTokenLifetime {
		add(&AppProblem{"min_token_lifetime", fmt.Sprintf("%s is longer than Microsoft's app-only tokens live (about an hour)", s.MinTokenLifetime), `use "10m"`})
	}
	add(CheckProxyURL(s.ProxyURL))
	return ps
}

// tenantRE is a tenant as Entra accepts it in the token URL: a GUID or a
// domain name such as contoso.onmicrosoft.com.
var tenantRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9.-]*$`)

func checkTenant(t string) *AppProblem {
	switch {
	case t == "":
		return &AppProblem{"tenant_id", "is missing", "copy the Directory (tenant) ID from the app registration's Overview page in the Entra admin center"}
	case !tenantRE.MatchString(t):
		return &AppProblem{"tenant_id", fmt.Sprintf("%q is not a tenant ID", t),
			"copy the Directory (tenant) ID (a GUID) from the app registration's Overview page, or write the tenant's domain such as contoso.onmicrosoft.com"}
	}
	return nil
}

func checkClientID(c string) *AppProblem {
	switch {
	case c == "":
		return &AppProblem{"client_id", "is missing", "copy the Application (client) ID from the app registration's Overview page"}
	case !guid.Valid(c):
		// The value is not shown: what lands here by mistake is often
		// the client secret.
		return &AppProblem{"client_id", "is not a GUID",
			"copy the Application (client) ID (a GUID like 1b2c3d4e-…) from the app registration's Overview page, not the app's name or the secret's ID or value"}
	}
	return nil
}

// CheckScope returns the problem with a token scope, or nil: the
// client-credentials grant needs a resource's ".default" scope. key names
// the setting ("scope", "graph_scope") and example is the right value.
func CheckScope(key, scope, example string) *AppProblem {
	if strings.HasSuffix(scope, "/.default") {
		return nil
	}
	return &AppProblem{key, fmt.Sprintf("%q does not end in /.default", scope),
		`use "` + example + `" (or leave it out so the cloud sets it): the client-credentials grant needs a .default scope`}
}

// CheckProxyURL returns the problem with an explicit proxy, or nil when it
// is empty or a URL with a host and one of ProxySchemes.
func CheckProxyURL(proxy string) *AppProblem {
	if proxy == "" {
		return nil
	}
	if _, err := egress.ParseProxy(proxy); err != nil {
		return &AppProblem{"proxy_url", err.Error(),
			`write it like "http://proxy.example.com:3128"; the scheme is one of ` + strings.Join(ProxySchemes, ", ")}
	}
	return nil
}

// IsHTTPSURL reports whether s is an absolute https URL with a host, as
// the identity library and Microsoft Graph require.
func IsHTTPSURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && u.Scheme == "https" && u.Host != ""
}

// RedactURL hides the password in a URL (a proxy's, typically) so that it
// can be shown in errors and logs. When the URL cannot be parsed,
// everything before the last "@" is hidden.
func RedactURL(s string) string {
	if u, err := url.Parse(s); err == nil && u.User != nil {
		return u.Redacted()
	}
	if i := strings.LastIndex(s, "@"); i >= 0 {
		return "[redacted]" + s[i:]
	}
	return s
}
