package oauth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	msalerrors "github.com/AzureAD/microsoft-authentication-library-for-go/apps/errors"
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
	signer    Signer // when the app's credential is a certificate
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

// assertion signs the client assertion as for the client credentials
// grant (BuildAssertion), so both grants send Entra the same one.
func (g *passwordGrant) assertion() (string, error) {
	return BuildAssertion(g.signer, g.clientID, g.tokenURL, g.withChain, g.now())
}
