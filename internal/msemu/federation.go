package msemu

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// TokenExchangeAudience is the audience Entra ID expects in a federated
// token: the default of a federated identity credential.
const TokenExchangeAudience = "api://AzureADTokenExchange"

// FederatedCredential is a federated identity credential on an app
// registration: tokens of Issuer about Subject, for one of Audiences
// (default TokenExchangeAudience), are accepted as the app's assertion.
type FederatedCredential struct {
	Issuer, Subject string
	Audiences       []string
}

// Issuer is an OIDC issuer whose signing key the emulator knows, as Entra
// knows it from the issuer's discovery document: tests sign federated
// tokens with it.
type Issuer struct {
	URL string
	key *rsa.PrivateKey
	kid string
	now func() time.Time
}

// ManagedIdentity is a managed identity assigned to the emulated machine,
// served at ManagedIdentityEnv's endpoint.
type ManagedIdentity struct {
	// ClientID and ObjectID identify the identity; the token's sub is
	// ObjectID, so a federated credential trusting it names ObjectID.
	ClientID, ObjectID, TenantID string
	// SystemAssigned makes it the identity asked for without a client_id.
	SystemAssigned bool
}

// GrantRecord is one token request as the token endpoint understood it.
type GrantRecord struct {
	ClientID  string
	GrantType string // client_credentials or password
	// Credential is how the app authenticated: "secret", "certificate"
	// or "federated" (Issuer and Subject are the assertion's).
	Credential      string
	Issuer, Subject string
	Username        string // the password grant's user
	// Code is the AADSTS code of the refusal, 0 when a token was issued.
	Code int
}

// credState is the emulator's state for the credentials beyond secrets
// and certificates; guarded by Emulator.mu.
type credState struct {
	issuers    map[string]*Issuer
	identities []ManagedIdentity
	miHeader   string
	grants     []GrantRecord
	users      map[string]*User
}

// NewIssuer registers an OIDC issuer with a fresh signing key.
func (e *Emulator) NewIssuer(url string) (*Issuer, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	iss := &Issuer{URL: url, key: key, kid: randB64(12), now: e.now}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.creds.issuers == nil {
		e.creds.issuers = map[string]*Issuer{}
	}
	e.creds.issuers[url] = iss
	return iss, nil
}

// Sign issues a token about subject for audience, valid for lifetime
// from the emulator's clock (negative: already expired).
func (i *Issuer) Sign(subject, audience string, lifetime time.Duration) (string, error) {
	now := i.now()
	t := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{
		"iss": i.URL, "sub": subject, "aud": audience,
		"iat": now.Unix(), "nbf": now.Add(-time.Minute).Unix(), "exp": now.Add(lifetime).Unix(),
		"jti": newGUID(),
	})
	t.Header["kid"] = i.kid
	return t.SignedString(i.key)
}

// AddManagedIdentity assigns a managed identity to the emulated machine.
// Its tokens are signed by the emulator's Entra ID, issuer
// ManagedIdentityIssuer(TenantID).
func (e *Emulator) AddManagedIdentity(m ManagedIdentity) {
	if m.ObjectID == "" {
		m.ObjectID = newGUID()
	}
	issuer := e.ManagedIdentityIssuer(m.TenantID)
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.creds.issuers == nil {
		e.creds.issuers = map[string]*Issuer{}
	}
	e.creds.issuers[issuer] = &Issuer{URL: issuer, key: e.signKey, kid: e.kid, now: e.now}
	e.creds.identities = append(e.creds.identities, m)
}

// ManagedIdentityIssuer is the iss of managed identity tokens of tenant,
// what a federated credential trusting a managed identity names.
func (e *Emulator) ManagedIdentityIssuer(tenant string) string {
	return e.Authority() + tenant + "/v2.0"
}

// ManagedIdentityEnv is the environment under which MSAL finds the
// emulator's managed identity endpoint (App Service style:
// IDENTITY_ENDPOINT and IDENTITY_HEADER), so no test needs IMDS's
// link-local address. Its CA is the emulator's.
func (e *Emulator) ManagedIdentityEnv() map[string]string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.creds.miHeader == "" {
		e.creds.miHeader = randB64(24)
	}
	return map[string]string{"IDENTITY_ENDPOINT": e.Authority() + "msi/token", "IDENTITY_HEADER": e.creds.miHeader}
}

// Grants returns every token request so far, oldest first.
func (e *Emulator) Grants() []GrantRecord {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]GrantRecord(nil), e.creds.grants...)
}

// handleManagedIdentity is the App Service managed identity endpoint
// (api-version 2019-08-01) as MSAL calls it.
func (e *Emulator) handleManagedIdentity(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	e.mu.Lock()
	header := e.creds.miHeader
	ids := append([]ManagedIdentity(nil), e.creds.identities...)
	e.mu.Unlock()
	fail := func(status int, msg string) {
		e.log.Info("msemu managed identity refused", "status", status, "msg", msg)
		e.writeJSON(w, r, status, map[string]any{"statusCode": status, "message": msg})
	}
	if header == "" || subtle.ConstantTimeCompare([]byte(r.Header.Get("X-IDENTITY-HEADER")), []byte(header)) != 1 {
		fail(http.StatusUnauthorized, "Unauthorized: X-IDENTITY-HEADER is missing or wrong.")
		return
	}
	resource := q.Get("resource")
	if q.Get("api-version") == "" || resource == "" {
		fail(http.StatusBadRequest, "Required query parameters api-version and resource are missing.")
		return
	}
	var id *ManagedIdentity
	for i := range ids {
		if c := q.Get("client_id"); c != "" && strings.EqualFold(ids[i].ClientID, c) || c == "" && ids[i].SystemAssigned {
			id = &ids[i]
		}
	}
	if id == nil {
		fail(http.StatusBadRequest, "No Managed Identity found for specified ClientId/ResourceId/PrincipalId.")
		return
	}
	now := e.now()
	exp := now.Add(24 * time.Hour)
	t := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{
		"iss": e.ManagedIdentityIssuer(id.TenantID), "sub": id.ObjectID, "oid": id.ObjectID, "tid": id.TenantID,
		"aud": resource, "azp": id.ClientID, "iat": now.Unix(), "nbf": now.Unix(), "exp": exp.Unix(),
	})
	t.Header["kid"] = e.kid
	tok, err := t.SignedString(e.signKey)
	if err != nil {
		fail(http.StatusInternalServerError, err.Error())
		return
	}
	e.log.Info("msemu managed identity token", "client_id", id.ClientID, "resource", resource)
	e.writeJSON(w, r, http.StatusOK, map[string]any{
		"access_token": tok, "expires_on": strconv.FormatInt(exp.Unix(), 10), "resource": resource,
		"token_type": "Bearer", "client_id": id.ClientID,
	})
}

// assertionIssuer reads an assertion's iss and sub without verifying it.
func assertionIssuer(assertion string) (iss, sub string) {
	parts := strings.Split(assertion, ".")
	if len(parts) != 3 {
		return "", ""
	}
	b, err := decodeB64(parts[1])
	if err != nil {
		return "", ""
	}
	var c struct {
		Iss string `json:"iss"`
		Sub string `json:"sub"`
	}
	json.Unmarshal(b, &c)
	return c.Iss, c.Sub
}

// isFederatedAssertion tells a federated token from a certificate's
// assertion: the latter is the app's own (iss = client id) and names its
// certificate (x5t, x5t#S256 or x5c); a certificate assertion with a
// wrong iss stays one (AADSTS700021) unless a federated credential or a
// known issuer claims that iss.
func (e *Emulator) isFederatedAssertion(app App, assertion string) bool {
	iss, _ := assertionIssuer(assertion)
	if iss == "" || strings.EqualFold(iss, app.ClientID) {
		return false
	}
	var hdr map[string]any
	if b, err := decodeB64(strings.SplitN(assertion, ".", 2)[0]); err == nil {
		json.Unmarshal(b, &hdr)
	}
	if hdr["x5t"] == nil && hdr["x5t#S256"] == nil && hdr["x5c"] == nil {
		return true
	}
	for _, f := range app.Federated {
		if f.Issuer == iss {
			return true
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.creds.issuers[iss] != nil
}

// verifyFederated checks a federated assertion as Entra ID does: a
// federated identity credential of the app must match its issuer,
// subject and audience, and the issuer's key must have signed it.
func (e *Emulator) verifyFederated(app App, assertion string) *aadError {
	iss, sub := assertionIssuer(assertion)
	const check = "Please check your federated identity credential Subject, Audience and Issuer against the presented assertion. https://learn.microsoft.com/entra/workload-id/workload-identity-federation"
	if len(app.Federated) == 0 {
		return invalidRequest(70025, "The client '%s'(app) has no configured federated identity credentials.", app.ClientID)
	}
	var byIssuer, bySubject []FederatedCredential
	for _, f := range app.Federated {
		if f.Issuer == iss {
			byIssuer = append(byIssuer, f)
			if f.Subject == sub {
				bySubject = append(bySubject, f)
			}
		}
	}
	if len(byIssuer) == 0 {
		return invalidRequest(700211, "No matching federated identity record found for presented assertion issuer '%s'. %s", iss, check)
	}
	if len(bySubject) == 0 {
		return invalidRequest(700213, "No matching federated identity record found for presented assertion subject '%s'. %s", sub, check)
	}
	e.mu.Lock()
	issuer := e.creds.issuers[iss]
	e.mu.Unlock()
	if issuer == nil {
		return invalidRequest(50166, "Request to External OIDC endpoint failed: the signing keys of issuer '%s' could not be retrieved.", iss)
	}
	var claims jwt.MapClaims
	_, err := jwt.ParseWithClaims(assertion, &claims, func(*jwt.Token) (any, error) { return &issuer.key.PublicKey, nil },
		jwt.WithValidMethods([]string{"RS256"}), jwt.WithTimeFunc(e.now), jwt.WithLeeway(assertionSkew))
	switch {
	case err != nil && (strings.Contains(err.Error(), "expired") || strings.Contains(err.Error(), "not valid yet")):
		return &aadError{400, "invalid_client", 700024, fmt.Sprintf("Client assertion is not within its valid time range. Current time: %s. %s", e.now().UTC().Format(time.RFC3339), check)}
	case err != nil:
		return invalidClient(700027, "Client assertion failed signature validation. Issuer: '%s'.", iss)
	}
	auds, _ := claims.GetAudience()
	for _, f := range bySubject {
		want := f.Audiences
		if len(want) == 0 {
			want = []string{TokenExchangeAudience}
		}
		for _, a := range auds {
			for _, w := range want {
				if a == w {
					return nil
				}
			}
		}
	}
	return invalidRequest(700212, "No matching federated identity record found for presented assertion audience '%s'. %s", strings.Join(auds, ","), check)
}

// recordGrant notes a token request for Grants.
func (e *Emulator) recordGrant(r *http.Request, clientID string, ae *aadError) {
	g := GrantRecord{ClientID: clientID, GrantType: r.PostForm.Get("grant_type"), Username: r.PostForm.Get("username")}
	switch a := r.PostForm.Get("client_assertion"); {
	case a != "":
		iss, sub := assertionIssuer(a)
		g.Credential = "certificate"
		if !strings.EqualFold(iss, clientID) {
			g.Credential, g.Issuer, g.Subject = "federated", iss, sub
		}
	case r.PostForm.Get("client_secret") != "":
		g.Credential = "secret"
	}
	if ae != nil {
		g.Code = ae.code
	}
	e.mu.Lock()
	e.creds.grants = append(e.creds.grants, g)
	e.mu.Unlock()
}

// AddFederatedCredential adds a federated identity credential to the app
// registration clientID; it reports false when there is no such app.
func (e *Emulator) AddFederatedCredential(clientID string, f FederatedCredential) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	a, ok := e.apps[strings.ToLower(clientID)]
	if ok {
		a.Federated = append(a.Federated, f)
	}
	return ok
}
