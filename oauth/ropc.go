package oauth

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	msalerrors "github.com/AzureAD/microsoft-authentication-library-for-go/apps/errors"
	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
)

// passwordGrant is the resource-owner password grant of a confidential
// client: the service account's name and password plus the app's own
// secret or certificate assertion.
//
// It is a form post of our own because MSAL Go (v1.10.1) sends no client
// credential with confidential.Client.AcquireTokenByUsernamePassword
// (accesstokens.FromUsernamePassword builds the form without it), which
// Entra answers with AADSTS7000218 for every confidential app.
type passwordGrant struct {
	hc        *http.Client
	tokenURL  string
	clientID  string
	scope     string
	username  string
	password  string
	secret    string
	certs     []*x509.Certificate // with key, when the app's credential is a certificate
	key       crypto.Signer
	now       func() time.Time
	withChain bool
}

// acquire asks the token endpoint once and returns the access token and
// its lifetime.
func (g *passwordGrant) acquire(ctx context.Context) (string, time.Duration, error) {
	form := url.Values{
		"grant_type": {"password"},
		"client_id":  {g.clientID},
		"scope":      {g.scope},
		"username":   {g.username},
		"password":   {g.password},
	}
	if g.secret != "" {
		form.Set("client_secret", g.secret)
	} else {
		a, err := g.assertion()
		if err != nil {
			return "", 0, err
		}
		form.Set("client_assertion_type", ClientAssertionType)
		form.Set("client_assertion", a)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, g.tokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		return "", 0, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
	req.Header.Set("client-request-id", uuid.NewString())
	resp, err := g.hc.Do(req)
	if err != nil {
		return "", 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", 0, err
	}
	if resp.StatusCode != http.StatusOK {
		// The same shape MSAL returns, so that one classifier reads it.
		resp.Body = io.NopCloser(bytes.NewReader(body))
		req.Body, req.GetBody = nil, nil // the form holds the password
		return "", 0, msalerrors.CallErr{Req: req, Resp: resp, Err: fmt.Errorf("token endpoint answered HTTP %d", resp.StatusCode)}
	}
	var tr struct {
		AccessToken string          `json:"access_token"`
		ExpiresIn   json.RawMessage `json:"expires_in"`
	}
	if err := json.Unmarshal(body, &tr); err != nil || tr.AccessToken == "" {
		return "", 0, errors.New("the token endpoint's answer holds no access_token")
	}
	var secs int64
	if err := json.Unmarshal(bytes.Trim(tr.ExpiresIn, `"`), &secs); err != nil || secs <= 0 {
		return "", 0, errors.New("the token endpoint's answer holds no valid expires_in")
	}
	return tr.AccessToken, time.Duration(secs) * time.Second, nil
}

// assertion signs a client assertion the way MSAL does for Entra: PS256
// with the certificate's SHA-256 thumbprint (x5t#S256), aud = the token
// endpoint, iss = sub = the client id, valid for 10 minutes.
func (g *passwordGrant) assertion() (string, error) {
	now := g.now()
	claims := jwt.MapClaims{
		"aud": g.tokenURL, "iss": g.clientID, "sub": g.clientID,
		"jti": uuid.NewString(), "nbf": now.Unix(), "exp": now.Add(10 * time.Minute).Unix(),
	}
	t := jwt.NewWithClaims(jwt.SigningMethodPS256, claims)
	sum := sha256.Sum256(g.certs[0].Raw)
	t.Header["x5t#S256"] = base64.RawURLEncoding.EncodeToString(sum[:])
	if g.withChain {
		var x5c []string
		for _, c := range g.certs {
			x5c = append(x5c, base64.StdEncoding.EncodeToString(c.Raw))
		}
		t.Header["x5c"] = x5c
	}
	s, err := t.SignedString(g.key)
	if err != nil {
		return "", &credentialError{cause: "cannot sign the client assertion with the certificate's key", fix: "check certificate_file", permanent: true, err: err}
	}
	return s, nil
}
