package config

import (
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/guid"
	"github.com/oauthrelay/oauthrelay/oauth"
)

// upstream checks the [upstream] table: one destination per transport.
func (v *validator) upstream() {
	u := &v.c.Upstream
	line := func(k string) int { return v.lineOf("upstream", -1, k) }
	if u.Address != "" {
		if _, _, err := net.SplitHostPort(u.Address); err != nil {
			v.add(line("address"), "upstream.address", fmt.Sprintf("%q is not host:port", u.Address), `write it like "smtp.office365.com:587"`)
		}
	}
	if _, _, err := net.SplitHostPort(u.HVEAddress); err != nil {
		v.add(line("hve_address"), "upstream.hve_address", fmt.Sprintf("%q is not host:port", u.HVEAddress), `write it like "`+DefaultHVEAddress+`", or leave the key out`)
	}
	if msg := checkGraphURL(u.GraphURL); msg != "" {
		v.add(line("graph_url"), "upstream.graph_url", msg, `write it like "https://graph.microsoft.com" (https, no path: the relay adds /v1.0/…), or leave the key out so each app's cloud sets it`)
	}
	u.GraphURL = strings.TrimSuffix(u.GraphURL, "/")
	if u.CAFile != "" {
		v.readable("upstream", -1, "upstream.ca_file", u.CAFile, false)
	}
}

// checkGraphURL says what is wrong with a Microsoft Graph base URL, or "".
// Graph is reached with bearer tokens over https; user info, a query or a
// path (an API version) would end up in every request's URL.
func checkGraphURL(s string) string {
	u, err := url.Parse(s)
	switch {
	case err != nil || !oauth.IsHTTPSURL(s):
		return fmt.Sprintf("%q is not an https URL", oauth.RedactURL(s))
	case u.User != nil:
		return fmt.Sprintf("%q holds a user name; Graph takes the app's token, not a password", oauth.RedactURL(s))
	case u.RawQuery != "" || u.Fragment != "" || strings.Trim(u.Path, "/") != "":
		return fmt.Sprintf("%q has a path or query; only the scheme and host belong here", s)
	}
	return ""
}

// graphScope is the default token scope for a Graph base URL: its
// resource's .default scope.
func graphScope(graphURL string) string {
	u, err := url.Parse(graphURL)
	if err != nil || u.Host == "" {
		return ""
	}
	return "https://" + u.Host + "/.default"
}

func (v *validator) apps(getenv func(string) string) map[string]*App {
	apps := map[string]*App{}
	for i, a := range v.c.Apps {
		key, line := v.entry("app", i, a.Name)
		switch {
		case a.Name == "":
			v.add(line("name"), key("name"), "is missing", `give the app a name that [[mailbox]] entries refer to, e.g. name = "contoso"`)
		case apps[a.Name] != nil:
			v.add(line("name"), key("name"), fmt.Sprintf("app %q is defined twice", a.Name), "give each [[app]] a unique name")
		default:
			apps[a.Name] = a
		}
		v.appEnvironment(a)
		v.tokenEndpoint(a, key, line)
		cloud := a.Cloud
		if cloud == "" {
			cloud = "global"
		}
		preset, ok := Clouds[cloud]
		a.cloud = cloud
		if !ok {
			v.add(line("cloud"), key("cloud"), fmt.Sprintf("%q is not a Microsoft cloud", a.Cloud), `use "global", "usgov" or "china"`)
			preset, a.cloud = Clouds["global"], ""
		} else {
			v.appCloud(a, cloud, "authority", a.Authority, preset.Authority, key, line)
			v.appCloud(a, cloud, "scope", a.Scope, preset.Scope, key, line)
			v.appCloud(a, cloud, "graph_scope", a.GraphScope, graphScope(preset.Graph), key, line)
		}
		if a.Authority == "" {
			a.Authority = preset.Authority
		}
		if a.Scope == "" {
			a.Scope = preset.Scope
		}
		if a.MinTokenLifetime.Duration == 0 {
			a.MinTokenLifetime.Duration = oauth.DefaultMinTokenLifetime
		}
		// The token source applies the same rules when the relay starts.
		for _, p := range oauth.CheckApp(oauth.AppSettings{
			TenantID: a.TenantID, ClientID: a.ClientID, Authority: a.Authority, Scope: a.Scope,
			MinTokenLifetime: a.MinTokenLifetime.Duration, ProxyURL: a.ProxyURL,
		}) {
			v.add(line(p.Key), key(p.Key), p.Msg, p.Fix)
		}
		a.UpstreamAddress = preset.Upstream
		if v.c.Upstream.explicit || cloud == "global" {
			a.UpstreamAddress = v.c.Upstream.Address
		}
		a.GraphURL = preset.Graph
		if v.c.Upstream.explicitGraph || cloud == "global" {
			a.GraphURL = v.c.Upstream.GraphURL
		}
		a.HVEAddress = v.c.Upstream.HVEAddress
		if a.GraphScope == "" {
			a.GraphScope = graphScope(a.GraphURL)
		} else if p := oauth.CheckScope("graph_scope", a.GraphScope, graphScope(a.GraphURL)); p != nil {
			v.add(line(p.Key), key(p.Key), p.Msg, p.Fix)
		}
		v.credential(i, a, key, line, getenv)
		v.secretExpiry(a, key, line, time.Now())
	}
	return apps
}

func (v *validator) credential(i int, a *App, key func(string) string, line func(string) int, getenv func(string) string) {
	v.expandPaths(a, key, line, getenv)
	n := 0
	for _, s := range []string{a.ClientSecret, a.ClientSecretFile, a.CertificateFile, a.CertificateStore} {
		if s != "" {
			n++
		}
	}
	n += len(credentialKeys(a))
	v.managedIdentityClientID(a, key, line)
	switch {
	case n == 0:
		v.add(line("name"), key("client_secret"), "the app has no credential", "set one of client_secret, client_secret_file, certificate_file, certificate_store, federated_token_file or managed_identity = true")
		v.certStoreOrphans(a, key, line)
		return
	case n > 1:
		v.add(line("certificate_file"), key("client_secret"), "the app has more than one credential", "keep exactly one of client_secret, client_secret_file, certificate_file, certificate_store, federated_token_file and managed_identity")
		return
	}
	switch {
	case a.ClientSecret != "":
		if envRE.ReplaceAllString(a.ClientSecret, "") != "" {
			v.inline(line("client_secret"), key("client_secret"), "app "+a.Name+"'s client_secret", true)
		}
		var missing []string
		s := envRE.ReplaceAllStringFunc(a.ClientSecret, func(m string) string {
			name := envRE.FindStringSubmatch(m)[1]
			val := getenv(name)
			if val == "" {
				missing = append(missing, name)
			}
			return val
		})
		if len(missing) > 0 {
			v.add(line("client_secret"), key("client_secret"), "environment variable "+strings.Join(missing, ", ")+" is not set", "export it in the service's environment (for systemd: an EnvironmentFile), or use client_secret_file")
			return
		}
		if guid.Valid(s) {
			v.warn(line("client_secret"), key("client_secret"), "looks like a GUID, which is what a secret's ID looks like", "copy the secret's Value column in Certificates & secrets, not its Secret ID")
		}
		a.Secret = Secret(s)
	case a.ClientSecretFile != "":
		b, ok := v.readable("app", i, key("client_secret_file"), a.ClientSecretFile, true)
		if ok {
			s := strings.TrimSpace(string(b))
			if s == "" {
				v.add(line("client_secret_file"), key("client_secret_file"), a.ClientSecretFile+" is empty", "write the client secret's Value into the file")
			}
			a.Secret = Secret(s)
		}
	case a.FederatedTokenFile != "" || a.ManagedIdentity:
		v.federated(i, a, key, line)
	case a.CertificateStore != "":
		v.certStore(a, key, line)
	case a.CertificateFile != "":
		v.readable("app", i, key("certificate_file"), a.CertificateFile, true)
		if a.CertificatePasswordFile != "" {
			if b, ok := v.readable("app", i, key("certificate_password_file"), a.CertificatePasswordFile, true); ok {
				a.CertificatePassword = Secret(strings.TrimRight(string(b), "\r\n"))
			}
		}
	}
	v.password(i, a, key, line)
	if a.CertificateStore == "" {
		v.certStoreOrphans(a, key, line)
	}
	if a.CertificateFile == "" && a.CertificateStore == "" && (a.CertificatePasswordFile != "" || a.SendCertificateChain) {
		v.warn(line("certificate_password_file"), key("certificate_password_file"), "is set but the app uses a client secret", "remove certificate_password_file and send_certificate_chain, or switch to certificate_file")
	}
}
