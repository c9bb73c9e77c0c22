package oauth

import (
	"fmt"
	"net/url"
	"regexp"
	"strings"
)

// tenantPlaceholderRE matches the tenant placeholders other products
// write in a token URL: enaio's #TenantID#, and {tenant}, {tenantId},
// <tenant-id> as Microsoft's documentation writes them.
var tenantPlaceholderRE = regexp.MustCompile(`(?i)#tenant_?id#|\{tenant(_?id)?\}|<tenant([-_ ]?id)?>`)

// TokenEndpoint is a token_endpoint split into what the relay needs.
type TokenEndpoint struct {
	Authority string // "https://host/" (with any path before the tenant)
	Tenant    string // the tenant in the URL, the placeholder filled in
}

// ParseTokenEndpoint reads a full token URL as other products configure
// it: "https://login.microsoftonline.com/#TenantID#/oauth2/v2.0/token"
// (the placeholder filled from tenantID) or the URL with the tenant
// written out. A v1 URL (/oauth2/token), a tenant that contradicts
// tenantID, "common" or "organizations", and anything that is not a v2
// token URL are refused with the corrected value in the fix.
func ParseTokenEndpoint(raw, tenantID string) (TokenEndpoint, *AppProblem) {
	const key = "token_endpoint"
	filled := raw
	if tenantPlaceholderRE.MatchString(raw) {
		if tenantID == "" {
			return TokenEndpoint{}, &AppProblem{key, fmt.Sprintf("%q holds a tenant placeholder but tenant_id is not set", raw),
				"set tenant_id to the Directory (tenant) ID; the relay fills it into the URL"}
		}
		filled = tenantPlaceholderRE.ReplaceAllLiteralString(raw, tenantID)
	}
	u, err := url.Parse(filled)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return TokenEndpoint{}, &AppProblem{key, fmt.Sprintf("%q is not an https URL", RedactURL(raw)),
			`write it like "https://login.microsoftonline.com/#TenantID#/oauth2/v2.0/token"`}
	}
	host := "https://" + u.Host + "/"
	suggest := func(tenant string) string {
		if tenantPlaceholderRE.MatchString(raw) {
			tenant = tenantPlaceholderRE.FindString(raw)
		}
		return host + tenant + "/oauth2/v2.0/token"
	}
	parts := strings.Split(strings.Trim(u.Path, "/"), "/")
	n := len(parts)
	tenant := ""
	switch {
	case u.RawQuery != "" || u.Fragment != "" || u.User != nil:
		return TokenEndpoint{}, &AppProblem{key, fmt.Sprintf("%q has a query, fragment or user name", RedactURL(raw)),
			fmt.Sprintf("use %q", suggest(orPlaceholder(tenantID)))}
	case n >= 3 && strings.EqualFold(parts[n-2], "oauth2") && strings.EqualFold(parts[n-1], "token"):
		return TokenEndpoint{}, &AppProblem{key, fmt.Sprintf("%q is Entra ID's v1 token endpoint; the relay asks for tokens by scope, which only the v2 endpoint takes", raw),
			fmt.Sprintf("use the v2 endpoint: token_endpoint = %q", suggest(orTenant(tenantID, parts[n-3])))}
	case n >= 4 && strings.EqualFold(parts[n-3], "oauth2") && strings.EqualFold(parts[n-2], "v2.0") && strings.EqualFold(parts[n-1], "token"):
		tenant = parts[n-4]
	default:
		return TokenEndpoint{}, &AppProblem{key, fmt.Sprintf("%q is not a token endpoint (it should end in /TENANT/oauth2/v2.0/token)", RedactURL(raw)),
			fmt.Sprintf("use %q", suggest(orPlaceholder(tenantID)))}
	}
	switch strings.ToLower(tenant) {
	case "common", "organizations", "consumers":
		return TokenEndpoint{}, &AppProblem{key, fmt.Sprintf("%q names no tenant (%s); app tokens need the tenant itself", raw, tenant),
			fmt.Sprintf("use %q", host+orPlaceholder(tenantID)+"/oauth2/v2.0/token")}
	}
	if tenantID != "" && !strings.EqualFold(tenant, tenantID) {
		return TokenEndpoint{}, &AppProblem{key, fmt.Sprintf("the tenant in %q is %s, but tenant_id is %s", raw, tenant, tenantID),
			fmt.Sprintf("use %q, or correct tenant_id if the URL is right", host+tenantID+"/oauth2/v2.0/token")}
	}
	prefix := strings.Join(parts[:n-4], "/")
	if prefix != "" {
		host += prefix + "/"
	}
	return TokenEndpoint{Authority: host, Tenant: tenant}, nil
}

func orPlaceholder(tenantID string) string {
	if tenantID == "" {
		return "#TenantID#"
	}
	return tenantID
}

func orTenant(tenantID, fallback string) string {
	if tenantID != "" {
		return tenantID
	}
	return fallback
}

// checkAuthorityPath refuses an authority that holds a token URL, as
// pasted from a product that wants the full endpoint: the relay would
// append the tenant and the token path again.
func checkAuthorityPath(authority, tenantID string) *AppProblem {
	u, err := url.Parse(authority)
	if err != nil {
		return nil
	}
	base := "https://" + u.Host + "/"
	segs := strings.Split(strings.Trim(u.Path, "/"), "/")
	if tenantID != "" && strings.EqualFold(segs[len(segs)-1], tenantID) {
		return &AppProblem{"authority", fmt.Sprintf("%q holds the tenant, which the relay adds from tenant_id", authority),
			fmt.Sprintf("set authority = %q", strings.TrimSuffix(strings.TrimSuffix(authority, "/"), segs[len(segs)-1]))}
	}
	if !strings.Contains(strings.ToLower(u.Path), "/oauth2") {
		return nil
	}
	return &AppProblem{"authority", fmt.Sprintf("%q holds a token path; authority is only the sign-in host", authority),
		fmt.Sprintf("set authority = %q (tenant_id gives the tenant), or write the whole URL as token_endpoint = %q instead", base, base+orPlaceholder(tenantID)+"/oauth2/v2.0/token")}
}
