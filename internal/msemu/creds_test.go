package msemu

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"testing"
	"time"
)

// TestFederatedAssertions: a token of a trusted issuer about the trusted
// subject for api://AzureADTokenExchange gets an app token; a wrong
// issuer, subject, audience, an expired token, an unknown key and an app
// without federated credentials get Entra's codes.
func TestFederatedAssertions(t *testing.T) {
	e := startEmu(t, Options{})
	iss, err := e.NewIssuer("https://oidc.test/cluster/")
	if err != nil {
		t.Fatal(err)
	}
	rogue, err := e.NewIssuer("https://oidc.test/rogue/")
	if err != nil {
		t.Fatal(err)
	}
	const sub = "system:serviceaccount:mail:relay"
	e.AddApp(App{TenantID: testTenant, ClientID: testClient, Consent: true, ServicePrincipal: true,
		Federated: []FederatedCredential{{Issuer: iss.URL, Subject: sub}}})
	sign := func(i *Issuer, s, aud string, life time.Duration) string {
		tok, err := i.Sign(s, aud, life)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	status, body := postToken(t, e, testTenant, assertionForm(sign(iss, sub, TokenExchangeAudience, time.Hour)))
	if status != 200 || body["access_token"] == "" {
		t.Fatalf("trusted token: %d %v", status, body)
	}
	if g := e.Grants()[0]; g.Credential != "federated" || g.Issuer != iss.URL || g.Subject != sub || g.Code != 0 {
		t.Errorf("grant %+v", g)
	}
	// A token signed by another key but claiming the trusted issuer.
	forged := sign(rogue, sub, TokenExchangeAudience, time.Hour)
	forgedClaims := sign(iss, sub, TokenExchangeAudience, time.Hour)
	forged = forgedClaims[:len(forgedClaims)-len(forgedClaims[lastDot(forgedClaims):])] + forged[lastDot(forged):]
	for _, tc := range []struct {
		name string
		tok  string
		code int
	}{
		{"issuer", sign(rogue, sub, TokenExchangeAudience, time.Hour), 700211},
		{"subject", sign(iss, "system:serviceaccount:other:x", TokenExchangeAudience, time.Hour), 700213},
		{"audience", sign(iss, sub, "api://something-else", time.Hour), 700212},
		{"expired", sign(iss, sub, TokenExchangeAudience, -time.Hour), 700024},
		{"signature", forged, 700027},
	} {
		status, body := postToken(t, e, testTenant, assertionForm(tc.tok))
		codes, _ := body["error_codes"].([]any)
		if status < 400 || len(codes) != 1 || codes[0] != float64(tc.code) {
			t.Errorf("%s: %d %v, want AADSTS%d", tc.name, status, body["error_description"], tc.code)
		}
	}
	e.AddApp(App{TenantID: testTenant, ClientID: testClient, Consent: true, ServicePrincipal: true})
	status, body = postToken(t, e, testTenant, assertionForm(sign(iss, sub, TokenExchangeAudience, time.Hour)))
	if codes, _ := body["error_codes"].([]any); status != 400 || len(codes) != 1 || codes[0] != float64(70025) {
		t.Errorf("no federated credentials: %d %v", status, body)
	}
}

func lastDot(s string) int {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == '.' {
			return i
		}
	}
	return 0
}

// TestManagedIdentityEndpoint: the App Service style endpoint wants its
// header, serves the system-assigned identity or the one named by
// client_id, and its token is a federated credential the app can trust.
func TestManagedIdentityEndpoint(t *testing.T) {
	e := startEmu(t, Options{})
	sys := ManagedIdentity{ClientID: "10000000-0000-4000-8000-000000000001", TenantID: testTenant, SystemAssigned: true}
	user := ManagedIdentity{ClientID: "20000000-0000-4000-8000-000000000002", ObjectID: "30000000-0000-4000-8000-000000000003", TenantID: testTenant}
	e.AddManagedIdentity(sys)
	e.AddManagedIdentity(user)
	env := e.ManagedIdentityEnv()
	get := func(header, clientID string) (int, map[string]any) {
		q := url.Values{"api-version": {"2019-08-01"}, "resource": {TokenExchangeAudience}}
		if clientID != "" {
			q.Set("client_id", clientID)
		}
		req, _ := http.NewRequest(http.MethodGet, env["IDENTITY_ENDPOINT"]+"?"+q.Encode(), nil)
		req.Header.Set("X-IDENTITY-HEADER", header)
		resp, err := e.HTTPClient().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var m map[string]any
		json.Unmarshal(b, &m)
		return resp.StatusCode, m
	}
	if status, _ := get("wrong", ""); status != 401 {
		t.Errorf("wrong header: %d", status)
	}
	if status, _ := get(env["IDENTITY_HEADER"], "40000000-0000-4000-8000-000000000004"); status != 400 {
		t.Errorf("unknown identity: %d", status)
	}
	status, body := get(env["IDENTITY_HEADER"], user.ClientID)
	tok, _ := body["access_token"].(string)
	if status != 200 || tok == "" || body["client_id"] != user.ClientID || body["expires_on"] == "" {
		t.Fatalf("user-assigned: %d %v", status, body)
	}
	e.AddApp(App{TenantID: testTenant, ClientID: testClient, Consent: true, ServicePrincipal: true,
		Federated: []FederatedCredential{{Issuer: e.ManagedIdentityIssuer(testTenant), Subject: user.ObjectID}}})
	if status, body := postToken(t, e, testTenant, assertionForm(tok)); status != 200 {
		t.Errorf("the managed identity's token as the app's assertion: %d %v", status, body)
	}
	if status, body := get(env["IDENTITY_HEADER"], ""); status != 200 || body["client_id"] != sys.ClientID {
		t.Errorf("system-assigned: %d %v", status, body)
	}
}

// TestPasswordGrant: a confidential client's password grant gets a user
// token that signs in to the user's own mailbox only; each obstacle of
// the account gets its code, and the app's own credential is required.
func TestPasswordGrant(t *testing.T) {
	e := startEmu(t, Options{})
	e.AddApp(App{TenantID: testTenant, ClientID: testClient, Secrets: []string{testSecret}, Consent: true, ServicePrincipal: true})
	e.AddMailbox(Mailbox{Address: "svc@contoso.test", SendAs: []string{"noreply@contoso.test"}})
	e.AddMailbox(Mailbox{Address: "other@contoso.test"})
	e.AddUser(User{UPN: "svc@contoso.test", Password: "right"})
	form := func(user, pass string) url.Values {
		return url.Values{"grant_type": {"password"}, "client_id": {testClient}, "client_secret": {testSecret},
			"scope": {exoScope}, "username": {user}, "password": {pass}}
	}
	for _, tc := range []struct {
		name string
		u    User
		pass string
		code int
	}{
		{"wrong password", User{}, "wrong", 50126},
		{"mfa", User{MFARequired: true}, "right", 50076},
		{"mfa registration", User{MFARegistration: true}, "right", 50079},
		{"locked", User{Locked: true}, "right", 50053},
		{"expired", User{PasswordExpired: true}, "right", 50055},
		{"conditional access", User{BlockedByCA: true}, "right", 53003},
	} {
		u := tc.u
		u.UPN, u.Password = "svc@contoso.test", "right"
		e.AddUser(u)
		status, body := postToken(t, e, testTenant, form(u.UPN, tc.pass))
		if codes, _ := body["error_codes"].([]any); status != 400 || len(codes) != 1 || codes[0] != float64(tc.code) {
			t.Errorf("%s: %d %v, want AADSTS%d", tc.name, status, body["error_description"], tc.code)
		}
	}
	e.AddUser(User{UPN: "svc@contoso.test", Password: "right"})
	noSecret := form("svc@contoso.test", "right")
	noSecret.Del("client_secret")
	if status, body := postToken(t, e, testTenant, noSecret); status != 401 || body["error_codes"].([]any)[0] != float64(7000218) {
		t.Errorf("without the app's secret: %d %v", status, body)
	}
	status, body := postToken(t, e, testTenant, form("SVC@contoso.test", "right"))
	tok, _ := body["access_token"].(string)
	if status != 200 || tok == "" {
		t.Fatalf("right password: %d %v", status, body)
	}
	c := dialRaw(t, e)
	if got := c.login("other@contoso.test", tok); got != ReplyAuthFailed {
		t.Errorf("AUTH as another mailbox with the user's token: %q", got)
	}
	c = dialRaw(t, e)
	if got := c.login("svc@contoso.test", tok); got != ReplyAuthOK {
		t.Fatalf("AUTH as the user's own mailbox: %q", got)
	}
	if got := c.send("noreply@contoso.test", []string{"someone@example.org"}, message("noreply@contoso.test", "ropc")); got[:3] != "250" {
		t.Errorf("send as a SendAs address: %q", got)
	}
}
