package msemu

import (
	"bytes"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Resources (the part of a scope before "/.default") the token endpoint
// issues tokens for, mapped to the tokens' aud claim.
var resources = map[string]string{
	"https://outlook.office365.com":        "https://outlook.office365.com",
	"https://outlook.office.com":           "https://outlook.office.com",
	"00000002-0000-0ff1-ce00-000000000000": "https://outlook.office365.com",
	"https://graph.microsoft.com":          "https://graph.microsoft.com",
	"00000003-0000-0000-c000-000000000000": "https://graph.microsoft.com",
}

// graphAudiences are the aud values of Graph tokens; the emulator's own
// GraphURL() is accepted too.
var graphAudiences = map[string]bool{
	"https://graph.microsoft.com":          true,
	"00000003-0000-0000-c000-000000000000": true,
}

// exchangeAudiences are the aud values Exchange Online accepts at AUTH.
var exchangeAudiences = map[string]bool{
	"https://outlook.office365.com": true,
	"https://outlook.office.com":    true,
}

// RoleSendAsApp is the app role Exchange requires in the token.
const RoleSendAsApp = "SMTP.SendAsApp"

var (
	guidRE   = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
	domainRE = regexp.MustCompile(`^([a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?\.)+[a-zA-Z]{2,}$`)
)

// aadError is an Entra ID error answer, shaped like the real token endpoint's.
type aadError struct {
	status int
	err    string
	code   int
	desc   string
}

// aadBody is the JSON error body, fields in Entra's order.
type aadBody struct {
	Error            string `json:"error"`
	ErrorDescription string `json:"error_description"`
	ErrorCodes       []int  `json:"error_codes"`
	Timestamp        string `json:"timestamp"`
	TraceID          string `json:"trace_id"`
	CorrelationID    string `json:"correlation_id"`
	ErrorURI         string `json:"error_uri"`
}

func invalidRequest(code int, format string, a ...any) *aadError {
	return &aadError{http.StatusBadRequest, "invalid_request", code, fmt.Sprintf(format, a...)}
}

func invalidClient(code int, format string, a ...any) *aadError {
	return &aadError{http.StatusUnauthorized, "invalid_client", code, fmt.Sprintf(format, a...)}
}

func (e *Emulator) tokenHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /{tenant}/oauth2/v2.0/token", e.handleToken)
	mux.HandleFunc("GET /{tenant}/v2.0/.well-known/openid-configuration", e.handleOpenIDConfig)
	mux.HandleFunc("GET /common/discovery/instance", e.handleInstanceDiscovery)
	mux.HandleFunc("GET /{tenant}/discovery/v2.0/keys", e.handleKeys)
	mux.HandleFunc("GET /common/discovery/v2.0/keys", e.handleKeys)
	mux.HandleFunc("GET /msi/token", e.handleManagedIdentity)
	return mux
}

func (e *Emulator) writeAADError(w http.ResponseWriter, r *http.Request, ae *aadError) {
	ts := e.now().UTC().Format("2006-01-02 15:04:05Z")
	trace := newGUID()
	corr := r.Header.Get("client-request-id")
	if corr == "" {
		corr = newGUID()
	}
	body := aadBody{
		Error: ae.err,
		ErrorDescription: fmt.Sprintf("AADSTS%d: %s\r\nTrace ID: %s\r\nCorrelation ID: %s\r\nTimestamp: %s",
			ae.code, ae.desc, trace, corr, ts),
		ErrorCodes:    []int{ae.code},
		Timestamp:     ts,
		TraceID:       trace,
		CorrelationID: corr,
		ErrorURI:      fmt.Sprintf("https://login.microsoftonline.com/error?code=%d", ae.code),
	}
	w.Header().Set("x-ms-request-id", trace)
	e.writeJSON(w, r, ae.status, body)
}

func (e *Emulator) writeJSON(w http.ResponseWriter, r *http.Request, status int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // Entra does not escape '&' in URLs
	enc.Encode(v)
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("Cache-Control", "no-store, no-cache")
	h.Set("Pragma", "no-cache")
	if id := r.Header.Get("client-request-id"); id != "" {
		h.Set("client-request-id", id)
	}
	w.WriteHeader(status)
	w.Write(bytes.TrimSuffix(buf.Bytes(), []byte("\n")))
}

// resolveTenant maps the tenant path segment to a registered tenant ID.
func (e *Emulator) resolveTenant(t string) (string, *aadError) {
	e.mu.Lock()
	for _, a := range e.apps {
		if strings.EqualFold(a.TenantID, t) {
			e.mu.Unlock()
			return a.TenantID, nil
		}
	}
	e.mu.Unlock()
	if guidRE.MatchString(t) || domainRE.MatchString(t) {
		return "", invalidRequest(90002, "Tenant '%s' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant.", t)
	}
	return "", invalidRequest(900023, "Specified tenant identifier '%s' is neither a valid DNS name, nor a valid external domain.", t)
}

func (e *Emulator) handleToken(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 1<<20)
	perr := r.ParseForm()
	clientID := r.PostForm.Get("client_id")
	basicID, basicSecret, hasBasic := r.BasicAuth()
	if hasBasic {
		// client_secret_basic: both parts are form-urlencoded (RFC 6749 §2.3.1).
		if id, err := url.QueryUnescape(basicID); err == nil {
			basicID = id
		}
		if s, err := url.QueryUnescape(basicSecret); err == nil {
			basicSecret = s
		}
		if clientID == "" {
			clientID = basicID
		}
	}

	e.mu.Lock()
	e.stats.TokenRequests++
	e.stats.TokenRequestsByClient[clientID]++
	delay, outage := e.tokenDelay, e.outage
	e.mu.Unlock()
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
			return
		}
	}
	if outage {
		e.log.Info("msemu token outage", "client_id", clientID)
		w.Header().Set("Retry-After", "5")
		e.writeAADError(w, r, &aadError{http.StatusServiceUnavailable, "temporarily_unavailable", 90024,
			"A transient error has occurred. Please try again."})
		return
	}
	if perr != nil {
		e.writeAADError(w, r, invalidRequest(900144, "The request body must contain the following parameter: 'grant_type'."))
		return
	}

	tenantPath := r.PathValue("tenant")
	tid, ae := e.resolveTenant(tenantPath)
	if ae == nil {
		ae = e.checkGrant(r, clientID)
	}
	var app App
	var acr string
	if ae == nil {
		app, acr, ae = e.authenticateClient(r, tid, tenantPath, clientID, basicSecret, hasBasic)
	}
	var user *User
	if ae == nil && r.PostForm.Get("grant_type") == "password" {
		u, uae := e.checkUser(tenantPath, r.PostForm.Get("username"), r.PostForm.Get("password"))
		user, ae = &u, uae
	}
	var aud string
	if ae == nil {
		aud, ae = checkScope(r.PostForm.Get("scope"), tenantPath, e.graphResourceOf(r.PostForm.Get("scope")))
	}
	e.recordGrant(r, clientID, ae)
	if ae != nil {
		e.log.Info("msemu token refused", "client_id", clientID, "tenant", tenantPath, "code", ae.code)
		e.writeAADError(w, r, ae)
		return
	}

	e.mu.Lock()
	lifetime := e.lifetime
	e.stats.TokensIssued++
	e.mu.Unlock()
	tok, err := e.issueToken(app, tid, aud, acr, lifetime)
	if user != nil {
		tok, err = e.issueUserToken(app, *user, tid, aud, acr, lifetime)
	}
	if err != nil {
		e.writeAADError(w, r, &aadError{http.StatusInternalServerError, "server_error", 90033, "A transient error has occurred. Please try again."})
		return
	}
	secs := int64(lifetime / time.Second)
	e.log.Info("msemu token issued", "client_id", app.ClientID, "tenant", tid, "expires_in", secs)
	e.writeJSON(w, r, http.StatusOK, struct {
		TokenType    string `json:"token_type"`
		ExpiresIn    int64  `json:"expires_in"`
		ExtExpiresIn int64  `json:"ext_expires_in"`
		AccessToken  string `json:"access_token"`
	}{"Bearer", secs, secs, tok})
}

func (e *Emulator) checkGrant(r *http.Request, clientID string) *aadError {
	switch gt := r.PostForm.Get("grant_type"); gt {
	case "client_credentials":
	case "password":
		for _, p := range []string{"username", "password"} {
			if r.PostForm.Get(p) == "" {
				return invalidRequest(900144, "The request body must contain the following parameter: '%s'.", p)
			}
		}
	case "":
		return invalidRequest(900144, "The request body must contain the following parameter: 'grant_type'.")
	default:
		return &aadError{http.StatusBadRequest, "unsupported_grant_type", 70003, fmt.Sprintf("The app requested an unsupported grant type '%s'.", gt)}
	}
	if clientID == "" {
		return invalidRequest(900144, "The request body must contain the following parameter: 'client_id'.")
	}
	return nil
}

// authenticateClient finds the app and checks its secret or assertion,
// returning the appidacr value for the token.
func (e *Emulator) authenticateClient(r *http.Request, tid, tenantPath, clientID, basicSecret string, hasBasic bool) (App, string, *aadError) {
	e.mu.Lock()
	a, ok := e.apps[strings.ToLower(clientID)]
	var app App
	if ok {
		app = *a
	}
	e.mu.Unlock()
	if !ok || !strings.EqualFold(app.TenantID, tid) {
		return app, "", &aadError{http.StatusBadRequest, "unauthorized_client", 700016,
			fmt.Sprintf("Application with identifier '%s' was not found in the directory '%s'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant.", clientID, tenantPath)}
	}

	if assertion := r.PostForm.Get("client_assertion"); assertion != "" {
		if r.PostForm.Get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" {
			return app, "", invalidRequest(900144, "The request body must contain the following parameter: 'client_assertion_type'.")
		}
		if e.isFederatedAssertion(app, assertion) {
			if ae := e.verifyFederated(app, assertion); ae != nil {
				return app, "", ae
			}
			return app, "2", nil
		}
		if ae := e.verifyAssertion(app, r.Host, tenantPath, assertion); ae != nil {
			return app, "", ae
		}
		return app, "2", nil
	}

	secret := r.PostForm.Get("client_secret")
	if secret == "" && hasBasic {
		secret = basicSecret
	}
	if secret == "" {
		return app, "", invalidClient(7000218, "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.")
	}
	for _, s := range app.Secrets {
		if subtle.ConstantTimeCompare([]byte(s), []byte(secret)) == 1 {
			return app, "1", nil
		}
	}
	for _, s := range app.ExpiredSecrets {
		if subtle.ConstantTimeCompare([]byte(s), []byte(secret)) == 1 {
			return app, "", invalidClient(7000222, "The provided client secret keys for app '%s' are expired. Visit the Azure portal to create new keys for your app: https://aka.ms/NewClientSecret, or consider using certificate credentials for added security: https://aka.ms/certCreds.", app.ClientID)
		}
	}
	return app, "", invalidClient(7000215, "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '%s'.", app.ClientID)
}

// checkScope accepts exactly one "<resource>/.default" scope, ignoring the
// OIDC scopes MSAL appends, and returns the token audience. graphURL, the
// emulated Graph, is a resource of its own with itself as audience.
func checkScope(scope, tenant, graphURL string) (string, *aadError) {
	if strings.TrimSpace(scope) == "" {
		return "", invalidRequest(900144, "The request body must contain the following parameter: 'scope'.")
	}
	var res []string
	for _, s := range strings.Fields(scope) {
		switch s {
		case "openid", "offline_access", "profile", "email":
			continue
		}
		res = append(res, s)
	}
	invalidScope := func(code int, format string, a ...any) *aadError {
		return &aadError{http.StatusBadRequest, "invalid_scope", code, fmt.Sprintf(format, a...)}
	}
	for _, s := range res {
		if !strings.HasSuffix(s, "/.default") {
			return "", invalidScope(1002012, "The provided value for scope %s is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).", s)
		}
	}
	if len(res) != 1 {
		return "", invalidScope(70011, "The provided request must include a 'scope' input parameter. The provided value for the input parameter 'scope' is not valid. The scope %s is not valid.", scope)
	}
	resource := strings.TrimSuffix(res[0], "/.default")
	aud, ok := resources[strings.ToLower(resource)]
	if graphURL != "" && strings.EqualFold(resource, graphURL) {
		aud, ok = graphURL, true
	}
	if !ok {
		return "", &aadError{http.StatusBadRequest, "invalid_resource", 500011,
			fmt.Sprintf("The resource principal named %s was not found in the tenant named %s. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant.", resource, tenant)}
	}
	return aud, nil
}

// accessClaims are the v1 access token claims Exchange reads.
type accessClaims struct {
	Aud      string   `json:"aud"`
	Iss      string   `json:"iss"`
	Iat      int64    `json:"iat"`
	Nbf      int64    `json:"nbf"`
	Exp      int64    `json:"exp"`
	Aio      string   `json:"aio,omitempty"`
	AppID    string   `json:"appid"`
	AppIDAcr string   `json:"appidacr"`
	Idp      string   `json:"idp"`
	Oid      string   `json:"oid"`
	Roles    []string `json:"roles,omitempty"`
	Sub      string   `json:"sub"`
	Tid      string   `json:"tid"`
	Uti      string   `json:"uti,omitempty"`
	Ver      string   `json:"ver"`
	// Upn and Scp are set in a user's (delegated) token only.
	Upn string `json:"upn,omitempty"`
	Scp string `json:"scp,omitempty"`
}

// GetExpirationTime and the rest let accessClaims be a jwt.Claims.
func (c accessClaims) GetExpirationTime() (*jwt.NumericDate, error) {
	return jwt.NewNumericDate(time.Unix(c.Exp, 0)), nil
}

// GetIssuedAt implements jwt.Claims.
func (c accessClaims) GetIssuedAt() (*jwt.NumericDate, error) {
	return jwt.NewNumericDate(time.Unix(c.Iat, 0)), nil
}

// GetNotBefore implements jwt.Claims.
func (c accessClaims) GetNotBefore() (*jwt.NumericDate, error) {
	return jwt.NewNumericDate(time.Unix(c.Nbf, 0)), nil
}

// GetIssuer implements jwt.Claims.
func (c accessClaims) GetIssuer() (string, error) { return c.Iss, nil }

// GetSubject implements jwt.Claims.
func (c accessClaims) GetSubject() (string, error) { return c.Sub, nil }

// GetAudience implements jwt.Claims.
func (c accessClaims) GetAudience() (jwt.ClaimStrings, error) { return jwt.ClaimStrings{c.Aud}, nil }

func (e *Emulator) issueToken(app App, tid, aud, acr string, lifetime time.Duration) (string, error) {
	now := e.now()
	iss := "https://sts.windows.net/" + tid + "/"
	c := accessClaims{
		Aud: aud, Iss: iss, Idp: iss,
		Iat: now.Unix(), Nbf: now.Unix(), Exp: now.Add(lifetime).Unix(),
		Aio:   randB64(24),
		AppID: app.ClientID, AppIDAcr: acr,
		Oid: app.ObjectID, Sub: app.ObjectID, Tid: tid,
		Uti: randB64(16), Ver: "1.0",
	}
	// Missing admin consent does not fail here: the token just has no roles.
	switch {
	case exchangeAudiences[aud]:
		if app.Consent {
			c.Roles = []string{RoleSendAsApp}
		}
		c.Roles = append(c.Roles, app.ExchangeRoles...)
	case e.isGraphAudience(aud):
		c.Roles = append(c.Roles, app.GraphRoles...)
	}
	t := jwt.NewWithClaims(jwt.SigningMethodRS256, c)
	t.Header["kid"] = e.kid
	t.Header["x5t"] = e.kid
	return t.SignedString(e.signKey)
}

// parseAccessToken verifies a token this emulator issued and returns its claims.
func (e *Emulator) parseAccessToken(tok string) (accessClaims, error) {
	var c accessClaims
	_, err := jwt.ParseWithClaims(tok, &c, func(*jwt.Token) (any, error) {
		return &e.signKey.PublicKey, nil
	}, jwt.WithValidMethods([]string{"RS256"}), jwt.WithTimeFunc(e.now))
	return c, err
}

func (e *Emulator) handleOpenIDConfig(w http.ResponseWriter, r *http.Request) {
	tenant := r.PathValue("tenant")
	if _, ae := e.resolveTenant(tenant); ae != nil {
		e.writeAADError(w, r, ae)
		return
	}
	base := "https://" + r.Host + "/" + tenant
	e.writeJSON(w, r, http.StatusOK, map[string]any{
		"token_endpoint":                        base + "/oauth2/v2.0/token",
		"token_endpoint_auth_methods_supported": []string{"client_secret_post", "private_key_jwt", "client_secret_basic"},
		"jwks_uri":                              base + "/discovery/v2.0/keys",
		"response_modes_supported":              []string{"query", "fragment", "form_post"},
		"subject_types_supported":               []string{"pairwise"},
		"id_token_signing_alg_values_supported": []string{"RS256"},
		"response_types_supported":              []string{"code", "id_token", "code id_token", "id_token token"},
		"scopes_supported":                      []string{"openid", "profile", "email", "offline_access"},
		"issuer":                                base + "/v2.0",
		"request_uri_parameter_supported":       false,
		"userinfo_endpoint":                     "https://graph.microsoft.com/oidc/userinfo",
		"authorization_endpoint":                base + "/oauth2/v2.0/authorize",
		"device_authorization_endpoint":         base + "/oauth2/v2.0/devicecode",
		"http_logout_supported":                 true,
		"frontchannel_logout_supported":         true,
		"end_session_endpoint":                  base + "/oauth2/v2.0/logout",
		"claims_supported":                      []string{"sub", "iss", "cloud_instance_name", "cloud_instance_host_name", "cloud_graph_host_name", "msgraph_host", "aud", "exp", "iat", "auth_time", "acr", "nonce", "preferred_username", "name", "tid", "ver", "at_hash", "c_hash", "email"},
		"kerberos_endpoint":                     base + "/kerberos",
		"tenant_region_scope":                   "EU",
		"cloud_instance_name":                   "microsoftonline.com",
		"cloud_graph_host_name":                 "graph.windows.net",
		"msgraph_host":                          "graph.microsoft.com",
		"rbac_url":                              "https://pas.windows.net",
	})
}

func (e *Emulator) handleInstanceDiscovery(w http.ResponseWriter, r *http.Request) {
	host, tenant := r.Host, "common"
	if ae := r.URL.Query().Get("authorization_endpoint"); ae != "" {
		if u, err := url.Parse(ae); err == nil && u.Host != "" {
			host = u.Host
			if parts := strings.Split(strings.Trim(u.Path, "/"), "/"); parts[0] != "" {
				tenant = parts[0]
			}
		}
	}
	e.writeJSON(w, r, http.StatusOK, map[string]any{
		"tenant_discovery_endpoint": "https://" + host + "/" + tenant + "/v2.0/.well-known/openid-configuration",
		"api-version":               "1.1",
		"metadata": []map[string]any{{
			"preferred_network": host,
			"preferred_cache":   host,
			"aliases":           []string{host},
		}},
	})
}

func (e *Emulator) handleKeys(w http.ResponseWriter, r *http.Request) {
	pub := e.signKey.PublicKey
	e.writeJSON(w, r, http.StatusOK, map[string]any{"keys": []map[string]any{{
		"kty": "RSA",
		"use": "sig",
		"kid": e.kid,
		"x5t": e.kid,
		"n":   base64.RawURLEncoding.EncodeToString(pub.N.Bytes()),
		"e":   base64.RawURLEncoding.EncodeToString(big.NewInt(int64(pub.E)).Bytes()),
	}}})
}
