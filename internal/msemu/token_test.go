package msemu

import (
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/AzureAD/microsoft-authentication-library-for-go/apps/confidential"
	"github.com/golang-jwt/jwt/v5"

	"github.com/oauthrelay/oauthrelay/internal/testkit"
)

func TestMSALSecret(t *testing.T) {
	e := provisioned(t, Options{})
	tok := msalSecretToken(t, e)
	c, err := e.parseAccessToken(tok)
	if err != nil {
		t.Fatal(err)
	}
	if c.Aud != "https://outlook.office365.com" || c.Iss != "https://sts.windows.net/"+testTenant+"/" ||
		c.Tid != testTenant || c.AppID != testClient || c.AppIDAcr != "1" || c.Oid == "" ||
		len(c.Roles) != 1 || c.Roles[0] != RoleSendAsApp {
		t.Errorf("claims: %+v", c)
	}
	if c.Exp-c.Iat != 3599 {
		t.Errorf("lifetime %d", c.Exp-c.Iat)
	}
	if st := e.Stats(); st.TokenRequests != 1 || st.TokenRequestsByClient[testClient] != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestMSALCert(t *testing.T) {
	e := startEmu(t, Options{})
	cert, key := testkit.ClientCert(t, "oauthrelay test")
	e.AddApp(App{TenantID: testTenant, ClientID: testClient, Certificates: []*x509.Certificate{cert}, Consent: true, ServicePrincipal: true})
	cred, err := confidential.NewCredFromCert([]*x509.Certificate{cert}, key)
	if err != nil {
		t.Fatal(err)
	}
	for _, x5c := range []bool{false, true} {
		opts := []confidential.Option{confidential.WithHTTPClient(e.HTTPClient()), confidential.WithInstanceDiscovery(false)}
		if x5c {
			opts = append(opts, confidential.WithX5C())
		}
		c, err := confidential.New(e.Authority()+testTenant, testClient, cred, opts...)
		if err != nil {
			t.Fatal(err)
		}
		res, err := c.AcquireTokenByCredential(context.Background(), []string{exoScope})
		if err != nil {
			t.Fatalf("x5c=%v: %v", x5c, err)
		}
		claims, err := e.parseAccessToken(res.AccessToken)
		if err != nil || claims.AppIDAcr != "2" {
			t.Errorf("claims %+v, %v", claims, err)
		}
	}
}

// postToken sends a raw token request and decodes the JSON answer.
func postToken(t *testing.T, e *Emulator, tenant string, form url.Values) (int, map[string]any) {
	t.Helper()
	resp, err := e.HTTPClient().PostForm(e.TokenURL(tenant), form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("body %q: %v", body, err)
	}
	return resp.StatusCode, m
}

// assertion builds a client assertion by hand; mutate edits header and claims.
func assertion(t *testing.T, e *Emulator, cert *x509.Certificate, key any, method jwt.SigningMethod, mutate func(h, c map[string]any)) string {
	t.Helper()
	now := time.Now()
	claims := jwt.MapClaims{
		"aud": e.TokenURL(testTenant),
		"iss": testClient,
		"sub": testClient,
		"jti": "5b1c3d4e-0000-4000-8000-000000000001",
		"nbf": strconv.FormatInt(now.Unix(), 10), // MSAL.NET sends strings
		"exp": strconv.FormatInt(now.Add(10*time.Minute).Unix(), 10),
	}
	tok := jwt.NewWithClaims(method, claims)
	s1 := sha1.Sum(cert.Raw)
	tok.Header["x5t"] = base64.RawURLEncoding.EncodeToString(s1[:])
	if mutate != nil {
		mutate(tok.Header, claims)
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func assertionForm(a string) url.Values {
	return url.Values{
		"grant_type":            {"client_credentials"},
		"client_id":             {testClient},
		"scope":                 {exoScope + " openid offline_access profile"},
		"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"},
		"client_assertion":      {a},
	}
}

func TestHandBuiltAssertions(t *testing.T) {
	e := startEmu(t, Options{})
	cert, key := testkit.ClientCert(t, "oauthrelay test")
	e.AddApp(App{TenantID: testTenant, ClientID: testClient, Certificates: []*x509.Certificate{cert}, Consent: true, ServicePrincipal: true})
	s256 := sha256.Sum256(cert.Raw)
	cases := map[string]struct {
		method jwt.SigningMethod
		mutate func(h, c map[string]any)
	}{
		"RS256 x5t base64url string times": {jwt.SigningMethodRS256, nil},
		"PS256 x5t#S256 std base64 numbers": {jwt.SigningMethodPS256, func(h, c map[string]any) {
			delete(h, "x5t")
			h["x5t#S256"] = base64.StdEncoding.EncodeToString(s256[:])
			c["nbf"], c["exp"] = time.Now().Unix(), time.Now().Add(5*time.Minute).Unix()
		}},
		"PS256 x5t#S256 base64url no nbf": {jwt.SigningMethodPS256, func(h, c map[string]any) {
			delete(h, "x5t")
			h["x5t#S256"] = base64.RawURLEncoding.EncodeToString(s256[:])
			delete(c, "nbf")
		}},
		"x5c only, aud array": {jwt.SigningMethodRS256, func(h, c map[string]any) {
			delete(h, "x5t")
			h["x5c"] = []string{base64.StdEncoding.EncodeToString(cert.Raw)}
			c["aud"] = []string{e.TokenURL(testTenant)}
		}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			a := assertion(t, e, cert, key, tc.method, tc.mutate)
			// The same assertion (and jti) twice: Entra accepts reuse.
			for i := 0; i < 2; i++ {
				status, body := postToken(t, e, testTenant, assertionForm(a))
				if status != 200 || body["token_type"] != "Bearer" || body["expires_in"] != float64(3599) || body["access_token"] == "" {
					t.Fatalf("attempt %d: %d %v", i, status, body)
				}
			}
		})
	}
}

var descRE = regexp.MustCompile(`^AADSTS(\d+): .+\r\nTrace ID: [0-9a-f-]{36}\r\nCorrelation ID: [0-9a-f-]{36}\r\nTimestamp: \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ$`)

func TestTokenErrors(t *testing.T) {
	e := startEmu(t, Options{})
	cert, key := testkit.ClientCert(t, "oauthrelay test")
	other, otherKey := testkit.ClientCert(t, "oauthrelay test")
	e.AddApp(App{TenantID: testTenant, ClientID: testClient, Secrets: []string{testSecret}, ExpiredSecrets: []string{"old-secret"},
		Certificates: []*x509.Certificate{cert}, Consent: true, ServicePrincipal: true})
	secretForm := func(mod func(url.Values)) url.Values {
		v := url.Values{"grant_type": {"client_credentials"}, "client_id": {testClient}, "scope": {exoScope}, "client_secret": {testSecret}}
		if mod != nil {
			mod(v)
		}
		return v
	}
	past := time.Now().Add(-time.Hour)
	cases := []struct {
		name   string
		tenant string
		form   url.Values
		status int
		err    string
		code   int
	}{
		{"unknown tenant guid", "00000000-1111-2222-3333-444444444444", secretForm(nil), 400, "invalid_request", 90002},
		{"unknown tenant domain", "fabrikam.onmicrosoft.com", secretForm(nil), 400, "invalid_request", 90002},
		{"invalid tenant name", "not_a_tenant", secretForm(nil), 400, "invalid_request", 900023},
		{"unknown client", testTenant, secretForm(func(v url.Values) { v.Set("client_id", "99999999-0000-0000-0000-000000000000") }), 400, "unauthorized_client", 700016},
		{"wrong secret", testTenant, secretForm(func(v url.Values) { v.Set("client_secret", "secret-id-not-value") }), 401, "invalid_client", 7000215},
		{"expired secret", testTenant, secretForm(func(v url.Values) { v.Set("client_secret", "old-secret") }), 401, "invalid_client", 7000222},
		{"no credential", testTenant, secretForm(func(v url.Values) { v.Del("client_secret") }), 401, "invalid_client", 7000218},
		{"scope without .default", testTenant, secretForm(func(v url.Values) { v.Set("scope", "https://outlook.office365.com/SMTP.Send") }), 400, "invalid_scope", 1002012},
		{"two resources", testTenant, secretForm(func(v url.Values) { v.Set("scope", exoScope+" https://graph.microsoft.com/.default") }), 400, "invalid_scope", 70011},
		{"wrong grant", testTenant, secretForm(func(v url.Values) { v.Set("grant_type", "authorization_code") }), 400, "unsupported_grant_type", 70003},
		{"cert not uploaded", testTenant, assertionForm(assertion(t, e, other, otherKey, jwt.SigningMethodRS256, nil)), 401, "invalid_client", 700027},
		{"bad signature", testTenant, assertionForm(assertion(t, e, cert, otherKey, jwt.SigningMethodRS256, nil)), 401, "invalid_client", 700027},
		{"assertion expired", testTenant, assertionForm(assertion(t, e, cert, key, jwt.SigningMethodRS256, func(h, c map[string]any) {
			c["nbf"], c["exp"] = past.Add(-10*time.Minute).Unix(), past.Unix()
		})), 400, "invalid_client", 700024},
		{"assertion aud", testTenant, assertionForm(assertion(t, e, cert, key, jwt.SigningMethodRS256, func(h, c map[string]any) {
			c["aud"] = "https://login.microsoftonline.com/" + testTenant + "/oauth2/v2.0/token"
		})), 401, "invalid_client", 700023},
		{"assertion iss", testTenant, assertionForm(assertion(t, e, cert, key, jwt.SigningMethodRS256, func(h, c map[string]any) {
			c["iss"] = "someone-else"
		})), 401, "invalid_client", 700021},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, body := postToken(t, e, tc.tenant, tc.form)
			if status != tc.status || body["error"] != tc.err {
				t.Fatalf("got %d %v, want %d %s", status, body["error"], tc.status, tc.err)
			}
			codes, _ := body["error_codes"].([]any)
			if len(codes) != 1 || codes[0] != float64(tc.code) {
				t.Errorf("error_codes %v, want [%d]", body["error_codes"], tc.code)
			}
			desc, _ := body["error_description"].(string)
			if m := descRE.FindStringSubmatch(desc); m == nil || m[1] != strconv.Itoa(tc.code) {
				t.Errorf("error_description %q", desc)
			}
			for _, f := range []string{"timestamp", "trace_id", "correlation_id"} {
				if s, _ := body[f].(string); s == "" {
					t.Errorf("missing %s", f)
				}
			}
			if body["error_uri"] != fmt.Sprintf("https://login.microsoftonline.com/error?code=%d", tc.code) {
				t.Errorf("error_uri %v", body["error_uri"])
			}
		})
	}
	if st := e.Stats(); st.TokensIssued != 0 || st.TokenRequests != int64(len(cases)) {
		t.Errorf("stats: %+v", st)
	}
}

func TestTokenOutageAndBasicAuth(t *testing.T) {
	e := provisioned(t, Options{})
	e.SetTokenOutage(true)
	status, body := postToken(t, e, testTenant, url.Values{"grant_type": {"client_credentials"}, "client_id": {testClient}, "client_secret": {testSecret}, "scope": {exoScope}})
	if status != 503 || body["error"] != "temporarily_unavailable" {
		t.Fatalf("outage: %d %v", status, body)
	}
	e.SetTokenOutage(false)
	e.SetTokenLifetime(15 * time.Minute)

	// client_secret_basic: both parts form-urlencoded.
	req, _ := http.NewRequest("POST", e.TokenURL(testTenant), strings.NewReader(url.Values{"grant_type": {"client_credentials"}, "scope": {exoScope}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(testClient), url.QueryEscape(testSecret))
	resp, err := e.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var ok struct {
		ExpiresIn int `json:"expires_in"`
	}
	json.NewDecoder(resp.Body).Decode(&ok)
	if resp.StatusCode != 200 || ok.ExpiresIn != 900 {
		t.Fatalf("basic: %d %+v", resp.StatusCode, ok)
	}
}

func TestNoConsentTokenHasNoRoles(t *testing.T) {
	e := startEmu(t, Options{})
	e.AddApp(App{TenantID: testTenant, ClientID: testClient, Secrets: []string{testSecret}, ServicePrincipal: true})
	c, err := e.parseAccessToken(msalSecretToken(t, e))
	if err != nil || len(c.Roles) != 0 {
		t.Fatalf("roles %v, %v", c.Roles, err)
	}
}

func TestDiscoveryDocuments(t *testing.T) {
	e := provisioned(t, Options{})
	get := func(path string) map[string]any {
		resp, err := e.HTTPClient().Get(e.Authority() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&m); err != nil || resp.StatusCode != 200 {
			t.Fatalf("%s: %d %v", path, resp.StatusCode, err)
		}
		return m
	}
	oc := get(testTenant + "/v2.0/.well-known/openid-configuration")
	if oc["token_endpoint"] != e.TokenURL(testTenant) || oc["issuer"] != e.Authority()+testTenant+"/v2.0" {
		t.Errorf("openid-configuration %v", oc)
	}
	inst := get("common/discovery/instance?api-version=1.1&authorization_endpoint=" + url.QueryEscape(e.Authority()+testTenant+"/oauth2/v2.0/authorize"))
	if inst["tenant_discovery_endpoint"] != e.Authority()+testTenant+"/v2.0/.well-known/openid-configuration" {
		t.Errorf("instance discovery %v", inst)
	}
	if keys, _ := get(testTenant + "/discovery/v2.0/keys")["keys"].([]any); len(keys) != 1 {
		t.Errorf("jwks %v", keys)
	}
}
