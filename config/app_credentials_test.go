package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// federatedApp replaces base's client secret with lines.
func withCredential(src, lines string) string {
	return strings.Replace(src, `client_secret = "literal-secret"`, lines, 1)
}

// findProblem returns the problem (or warning) at key, failing when none.
func findProblem(t *testing.T, ps []Problem, key string) Problem {
	t.Helper()
	for _, p := range ps {
		if strings.HasPrefix(p.Key, key) || strings.HasSuffix(p.Key, key) {
			return p
		}
	}
	t.Fatalf("no problem at %s in %v", key, ps)
	return Problem{}
}

// TestTokenEndpoint: the enaio form and a full v2 URL set the authority;
// a pasted v1 URL, a contradicting tenant, "common" and an authority that
// holds a token path are refused with the corrected value in the fix.
func TestTokenEndpoint(t *testing.T) {
	const tid = "00000000-0000-0000-0000-000000000000"
	for _, tt := range []struct {
		name, lines string
		key         string // "" = valid
		fix         string
	}{
		{"enaio form", `token_endpoint = "https://login.microsoftonline.com/#TenantID#/oauth2/v2.0/token"`, "", ""},
		{"full v2 URL", `token_endpoint = "https://login.microsoftonline.com/` + tid + `/oauth2/v2.0/token"`, "", ""},
		{"v1 URL", `token_endpoint = "https://login.microsoftonline.com/` + tid + `/oauth2/token"`, "token_endpoint",
			`token_endpoint = "https://login.microsoftonline.com/` + tid + `/oauth2/v2.0/token"`},
		{"v1 URL with the placeholder", `token_endpoint = "https://login.microsoftonline.com/#TenantID#/oauth2/token"`, "token_endpoint",
			`token_endpoint = "https://login.microsoftonline.com/#TenantID#/oauth2/v2.0/token"`},
		{"another tenant", `token_endpoint = "https://login.microsoftonline.com/fabrikam.onmicrosoft.com/oauth2/v2.0/token"`, "token_endpoint",
			`use "https://login.microsoftonline.com/` + tid + `/oauth2/v2.0/token", or correct tenant_id`},
		{"common", `token_endpoint = "https://login.microsoftonline.com/common/oauth2/v2.0/token"`, "token_endpoint",
			`https://login.microsoftonline.com/` + tid + `/oauth2/v2.0/token`},
		{"authority with the tenant", `authority = "https://login.microsoftonline.com/` + tid + `"`, "authority",
			`set authority = "https://login.microsoftonline.com/"`},
		{"authority with a token path", `authority = "https://login.microsoftonline.com/` + tid + `/oauth2/v2.0/token"`, "authority",
			`set authority = "https://login.microsoftonline.com/"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, ps := parse(t, inApp(base, tt.lines), noEnv)
			if tt.key == "" {
				if ps != nil {
					t.Fatalf("refused: %v", ps)
				}
				if a := c.Apps[0]; a.Authority != "https://login.microsoftonline.com/" || a.TenantID != tid {
					t.Errorf("authority %q tenant %q", a.Authority, a.TenantID)
				}
				return
			}
			p := findProblem(t, ps, tt.key)
			if !strings.Contains(p.Fix, tt.fix) {
				t.Errorf("%s: fix %q does not print %q", p.Key, p.Fix, tt.fix)
			}
		})
	}
	// A full URL gives the tenant when tenant_id is left out.
	src := strings.Replace(inApp(base, `token_endpoint = "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"`),
		`tenant_id = "`+tid+`"`, "", 1)
	if c, ps := parse(t, src, noEnv); ps != nil || c.Apps[0].TenantID != "contoso.onmicrosoft.com" {
		t.Errorf("tenant from the URL: %v", ps)
	}
}

// TestFederatedFromEnvironment: an app without a credential takes
// AZURE_FEDERATED_TOKEN_FILE, and AZURE_CLIENT_ID and AZURE_TENANT_ID fill
// in its missing ids, as AKS workload identity injects them; a fix there
// needs a restart.
func TestFederatedFromEnvironment(t *testing.T) {
	file := filepath.Join(t.TempDir(), "azure-identity-token")
	if err := os.WriteFile(file, []byte("a.b.c"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"AZURE_FEDERATED_TOKEN_FILE": file, "AZURE_CLIENT_ID": "22222222-2222-4222-8222-222222222222",
		"AZURE_TENANT_ID": "33333333-3333-4333-8333-333333333333"}
	defer func(old func(string) string) { lookupEnv = old }(lookupEnv)
	lookupEnv = func(k string) string { return env[k] }
	src := withCredential(base, "")
	src = strings.Replace(src, `tenant_id = "00000000-0000-0000-0000-000000000000"`, "", 1)
	src = strings.Replace(src, `client_id = "11111111-2222-3333-4444-555555555555"`, "", 1)
	c, ps := parse(t, src, noEnv)
	if ps != nil {
		t.Fatal(ps)
	}
	a := c.Apps[0]
	if a.FederatedTokenFile != file || a.ClientID != env["AZURE_CLIENT_ID"] || a.TenantID != env["AZURE_TENANT_ID"] {
		t.Errorf("app %+v not filled from the environment", a)
	}
	if !a.SecretFromEnvironment() || !strings.Contains(a.CredentialKind(), "federated token") {
		t.Errorf("SecretFromEnvironment %v, kind %q", a.SecretFromEnvironment(), a.CredentialKind())
	}
	// An app with its own secret is left alone.
	if c, ps := parse(t, base, noEnv); ps != nil || c.Apps[0].FederatedTokenFile != "" {
		t.Errorf("a secret app took the federated token: %v", ps)
	}
}

// TestFederatedAndManagedIdentityKeys: each is one credential, exclusive
// with the others; managed_identity_client_id needs managed_identity.
func TestFederatedAndManagedIdentityKeys(t *testing.T) {
	if _, ps := parse(t, withCredential(base, "managed_identity = true"), noEnv); ps != nil {
		t.Errorf("managed_identity alone: %v", ps)
	}
	_, ps := parse(t, inApp(base, "managed_identity = true"), noEnv)
	if p := findProblem(t, ps, "client_secret"); !strings.Contains(p.Msg, "more than one credential") {
		t.Errorf("secret and managed identity: %v", p)
	}
	_, ps = parse(t, withCredential(base, `managed_identity_client_id = "44444444-4444-4444-8444-444444444444"`), noEnv)
	findProblem(t, ps, "managed_identity_client_id")
	_, ps = parse(t, withCredential(base, `federated_token_file = "/nonexistent/token"`), noEnv)
	findProblem(t, ps, "federated_token_file")
}

// TestPasswordGrantChecks: username and password_file go together, next
// to the app's secret; the mailbox is the service account's, another
// address belongs in its send_as; check warns that Microsoft discourages
// the flow and names the certificate; the password is never shown.
func TestPasswordGrantChecks(t *testing.T) {
	pw := filepath.Join(t.TempDir(), "svc.password")
	if err := os.WriteFile(pw, []byte("s3cret pass\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	svc := strings.Replace(base, `address = "helpdesk@contoso.com"`, `address = "svc-mail@contoso.com"`, 1)
	lines := `username = "svc-mail@contoso.com"` + "\n" + `password_file = "` + pw + `"`
	c, ps := parse(t, inApp(svc, lines), noEnv)
	if ps != nil {
		t.Fatal(ps)
	}
	if c.Apps[0].Password.Reveal() != "s3cret pass" {
		t.Errorf("password not read (trailing newline only trimmed)")
	}
	w := findProblem(t, c.Warnings, "username")
	if !strings.Contains(w.Msg, "Microsoft discourages") || !strings.Contains(w.Fix, "certificate_file") {
		t.Errorf("warning %v", w)
	}
	_, ps = parse(t, inApp(base, lines), noEnv)
	p := findProblem(t, ps, "mailbox[0] (helpdesk@contoso.com).address")
	if !strings.Contains(p.Fix, `address = "svc-mail@contoso.com" with "helpdesk@contoso.com" in its send_as`) {
		t.Errorf("mailbox of another address: %v", p)
	}
	_, ps = parse(t, inApp(svc, `username = "svc-mail@contoso.com"`), noEnv)
	findProblem(t, ps, "password_file")
	_, ps = parse(t, withCredential(svc, "managed_identity = true\n"+lines), noEnv)
	findProblem(t, ps, "username")
	for _, p := range append(ps, c.Warnings...) {
		if strings.Contains(p.String(), "s3cret") {
			t.Errorf("the password shows in %v", p)
		}
	}
}
