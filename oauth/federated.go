package oauth

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/AzureAD/microsoft-authentication-library-for-go/apps/confidential"
	msalerrors "github.com/AzureAD/microsoft-authentication-library-for-go/apps/errors"
	"github.com/AzureAD/microsoft-authentication-library-for-go/apps/managedidentity"
)

// ClientAssertionType is the client_assertion_type of a JWT assertion,
// a certificate's or a federated token alike.
const ClientAssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// Token exchange audiences: what a managed identity's token must be for
// to be accepted as an app's federated credential, per cloud.
const (
	TokenExchangeAudience      = "api://AzureADTokenExchange"
	TokenExchangeAudienceUSGov = "api://AzureADTokenExchangeUSGov"
	TokenExchangeAudienceChina = "api://AzureADTokenExchangeChina"
)

// exchangeAudience is the token exchange audience of the cloud whose
// login host is authorityHost (a test authority is treated as global).
func exchangeAudience(authorityHost string) string {
	h := strings.ToLower(authorityHost)
	switch {
	case strings.HasSuffix(h, ".us"):
		return TokenExchangeAudienceUSGov
	case strings.HasSuffix(h, ".cn"):
		return TokenExchangeAudienceChina
	}
	return TokenExchangeAudience
}

// credentialError is a failure to produce the client assertion, before
// anything was sent to Entra: it carries its own cause and fix.
type credentialError struct {
	cause, fix string
	permanent  bool
	// file: the credential's file is missing or unusable, so a new
	// file fixes it (watched like a refused credential).
	file bool
	err  error
}

func (e *credentialError) Error() string { return e.cause }
func (e *credentialError) Unwrap() error { return e.err }

// asOAuthError turns a credentialError inside err into an *Error.
func asOAuthError(app string, err error) *Error {
	var ce *credentialError
	if !errors.As(err, &ce) {
		return nil
	}
	return &Error{App: app, Cause: ce.cause, Fix: ce.fix, Permanent: ce.permanent, Err: ce.err, fileFault: ce.file}
}

// readFederatedToken reads the token file afresh: Kubernetes and other
// issuers rotate it in place, long before the relay's own token expires.
func readFederatedToken(file string) (string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return "", &credentialError{
			cause:     "cannot read federated_token_file " + file + ": " + errText(err),
			fix:       "point federated_token_file (or AZURE_FEDERATED_TOKEN_FILE) at the token your platform projects into the pod or machine, readable by the relay's user",
			permanent: true, file: true, err: err,
		}
	}
	tok := strings.TrimSpace(string(b))
	if strings.Count(tok, ".") != 2 {
		return "", &credentialError{
			cause:     "federated_token_file " + file + " does not hold a JWT",
			fix:       "the file must hold the token itself (three dot-separated parts), as Kubernetes projects it; check the path",
			permanent: true, file: true,
		}
	}
	return tok, nil
}

// errText is an OS error without the path it repeats.
func errText(err error) string {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// federatedCredential is the MSAL credential of a federated token file
// or a managed identity: an assertion callback, so every token request
// sends a fresh assertion.
func federatedCredential(s AppSettings, authorityHost string) (confidential.Credential, error) {
	if s.FederatedTokenFile != "" {
		file := s.FederatedTokenFile
		return confidential.NewCredFromAssertionCallback(func(context.Context, confidential.AssertionRequestOptions) (string, error) {
			return readFederatedToken(file)
		}), nil
	}
	id := managedidentity.SystemAssigned()
	if s.ManagedIdentityClientID != "" {
		id = managedidentity.UserAssignedClientID(s.ManagedIdentityClientID)
	}
	// The identity endpoint is on this machine (IMDS, App Service, Arc):
	// never through the proxy to Microsoft. The emulator's is https.
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: s.RootCAs},
	}}
	mi, err := managedidentity.New(id, managedidentity.WithHTTPClient(hc))
	if err != nil {
		return confidential.Credential{}, fmt.Errorf("managed identity: %v", err)
	}
	audience := exchangeAudience(authorityHost)
	return confidential.NewCredFromAssertionCallback(func(ctx context.Context, _ confidential.AssertionRequestOptions) (string, error) {
		res, err := mi.AcquireToken(ctx, audience)
		if err != nil {
			return "", managedIdentityError(err, s.ManagedIdentityClientID)
		}
		return res.AccessToken, nil
	}), nil
}

// managedIdentityError explains why this machine's managed identity gave
// no token, from the identity endpoint's answer (never its token).
func managedIdentityError(err error, clientID string) error {
	which := "this machine's system-assigned managed identity"
	fix := "turn on the system-assigned identity of the VM, App Service or Arc server (Identity blade), or name a user-assigned one with managed_identity_client_id"
	if clientID != "" {
		which = "the user-assigned managed identity " + clientID
		fix = "attach that user-assigned identity to this VM, App Service or Arc server, or correct managed_identity_client_id (the identity's Client ID)"
	}
	ce := &credentialError{permanent: true, err: err}
	var call msalerrors.CallErr
	switch {
	case errors.As(err, &call) && call.Resp != nil:
		body := ""
		if call.Resp.Body != nil {
			b, _ := io.ReadAll(io.LimitReader(call.Resp.Body, 4<<10))
			body = scrub(firstLine(string(b)), nil)
		}
		ce.cause = fmt.Sprintf("the managed identity endpoint refused a token for %s (HTTP %d: %s)", which, call.Resp.StatusCode, body)
		ce.fix = fix
		if call.Resp.StatusCode >= 500 || call.Resp.StatusCode == 429 {
			ce.permanent = false
			ce.fix = "none needed; the relay retries with backoff"
		}
	case networkError(err) != nil:
		var ue *url.Error
		host := "the managed identity endpoint"
		if errors.As(err, &ue) {
			if u, perr := url.Parse(ue.URL); perr == nil {
				host = u.Host
			}
		}
		ce.cause = "no managed identity endpoint answered at " + host + ": this machine has no managed identity, or it is not an Azure VM, App Service or Arc server"
		ce.fix = "run the relay where a managed identity is assigned, or use federated_token_file, certificate_file or client_secret instead of managed_identity"
	default:
		ce.cause = "managed identity: " + scrub(firstLine(err.Error()), nil)
		ce.fix = fix
	}
	return ce
}
