package oauth

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// TestManagedIdentityNowhere: on a machine whose managed identity
// endpoint does not answer, the token error says so and what to use
// instead, as a configuration fault; nothing reaches Entra.
func TestManagedIdentityNowhere(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // a port nobody listens on
	t.Setenv("IDENTITY_ENDPOINT", "http://"+addr+"/msi/token")
	t.Setenv("IDENTITY_HEADER", "h")
	f := newFakeEntra(t)
	s := secretSettings(f)
	s.ClientSecret, s.ManagedIdentity = "", true
	src := newTestSource(t, f, s, Options{})
	_, err = src.Token(context.Background())
	var e *Error
	if !errors.As(err, &e) || !e.Permanent || !strings.Contains(e.Cause, "no managed identity endpoint answered at "+addr) ||
		!strings.Contains(e.Fix, "federated_token_file, certificate_file or client_secret") {
		t.Fatalf("error %v", err)
	}
	if n := f.requests.Load(); n != 0 {
		t.Errorf("%d token requests without an assertion", n)
	}
}

// TestFederatedTokenFileProblems: a missing file and one without a JWT
// are explained before anything is sent; an expired federated token
// (AADSTS700024) is explained as the file's, not the clock's.
func TestFederatedTokenFileProblems(t *testing.T) {
	f := newFakeEntra(t)
	file := filepath.Join(t.TempDir(), "token")
	s := secretSettings(f)
	s.ClientSecret, s.FederatedTokenFile = "", file
	src := newTestSource(t, f, s, Options{})
	if _, err := src.Token(context.Background()); err == nil || !strings.Contains(err.Error(), "cannot read federated_token_file "+file) {
		t.Errorf("missing file: %v", err)
	}
	if err := os.WriteFile(file, []byte("not a token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	src = newTestSource(t, f, s, Options{})
	if _, err := src.Token(context.Background()); err == nil || !strings.Contains(err.Error(), "does not hold a JWT") {
		t.Errorf("no JWT: %v", err)
	}
	if err := os.WriteFile(file, []byte("eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJrIn0.c2ln\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f.respond = func(int64, url.Values) (int, string) {
		return 400, entraError("invalid_client", 700024, "Client assertion is not within its valid time range.")
	}
	src = newTestSource(t, f, s, Options{})
	_, err := src.Token(context.Background())
	if err == nil || !strings.Contains(err.Error(), "the federated token in "+file+" has expired") {
		t.Errorf("expired token: %v", err)
	}
	if got := f.lastForm(); got.Get("client_assertion") != "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJrIn0.c2ln" || got.Get("client_assertion_type") != ClientAssertionType {
		t.Errorf("form %v", got)
	}
}

// TestPasswordGrantForm: the password grant posts the app's secret along
// with the service account's name and password; a wrong password is
// AADSTS50126 with its fix, and neither password nor secret shows in it.
func TestPasswordGrantForm(t *testing.T) {
	f := newFakeEntra(t)
	s := secretSettings(f)
	s.Username, s.Password = "svc@contoso.com", "pa55 word"
	src := newTestSource(t, f, s, Options{})
	if _, err := src.Token(context.Background()); err != nil {
		t.Fatal(err)
	}
	form := f.lastForm()
	for k, want := range map[string]string{"grant_type": "password", "username": "svc@contoso.com", "password": "pa55 word",
		"client_secret": testSecret, "client_id": s.ClientID, "scope": DefaultScope} {
		if form.Get(k) != want {
			t.Errorf("%s = %q, want %q", k, form.Get(k), want)
		}
	}
	f.respond = func(int64, url.Values) (int, string) {
		return 400, entraError("invalid_grant", 50126, "Error validating credentials due to invalid username or password. pa55 word")
	}
	src = newTestSource(t, f, s, Options{})
	_, err := src.Token(context.Background())
	var e *Error
	if !errors.As(err, &e) || e.AADSTS != 50126 || !strings.Contains(e.Fix, "password_file") {
		t.Fatalf("wrong password: %v", err)
	}
	if strings.Contains(err.Error(), "pa55") || strings.Contains(err.Error(), testSecret) {
		t.Errorf("a secret shows in %q", err)
	}
}

// TestCertificateReplacedInPlace: a renewed certificate written over the
// old file is used from the next token request once the credential is
// re-read (on reload, or when Entra refuses the old one).
func TestCertificateReplacedInPlace(t *testing.T) {
	file := filepath.Join(t.TempDir(), "relay.pem")
	install := func() *x509.Certificate {
		_, files, err := NewCertificate("CN=oauthrelay", 30, t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(files[0])
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(file, b, 0o600); err != nil {
			t.Fatal(err)
		}
		certs, _, err := LoadCertificate(file, "")
		if err != nil {
			t.Fatal(err)
		}
		return certs[0]
	}
	thumb := func(f *fakeEntra) string {
		tok, _, err := jwt.NewParser().ParseUnverified(f.lastForm().Get("client_assertion"), jwt.MapClaims{})
		if err != nil {
			t.Fatal(err)
		}
		s, _ := tok.Header["x5t#S256"].(string)
		return s
	}
	want := func(c *x509.Certificate) string {
		sum := sha256.Sum256(c.Raw)
		return base64.StdEncoding.EncodeToString(sum[:])
	}
	old := install()
	f := newFakeEntra(t)
	s := secretSettings(f)
	s.ClientSecret, s.CertificateFile = "", file
	src := newTestSource(t, f, s, Options{})
	tok, err := src.Token(context.Background())
	if err != nil || thumb(f) != want(old) {
		t.Fatalf("first token: %v, assertion of %s", err, thumb(f))
	}
	if src.RereadCredential() {
		t.Error("RereadCredential reports a change of an unchanged file")
	}
	renewed := install()
	if !src.RereadCredential() {
		t.Fatal("RereadCredential missed the renewed certificate")
	}
	src.Invalidate(tok.AccessToken)
	if _, err := src.Token(context.Background()); err != nil || thumb(f) != want(renewed) {
		t.Errorf("after the renewal: %v, assertion of %s, want %s", err, thumb(f), want(renewed))
	}
}

// TestFederatedTokenFileAppears: a token file that is not there yet (the
// pod's projected volume mounted late) is watched, and the token comes
// within seconds of the file, not after the backoff of a refused
// credential; the app's OnRecovered hook hears of it.
func TestFederatedTokenFileAppears(t *testing.T) {
	f := newFakeEntra(t)
	file := filepath.Join(t.TempDir(), "token")
	s := secretSettings(f)
	s.ClientSecret, s.FederatedTokenFile = "", file
	recovered := make(chan string, 1)
	src := newTestSource(t, f, s, Options{OnRecovered: func(app string) { recovered <- app }})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := src.Token(ctx); err == nil {
		t.Fatal("a token without the file")
	}
	src.Start(ctx)
	if err := os.WriteFile(file, []byte("eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJrIn0.c2ln"), 0o600); err != nil {
		t.Fatal(err)
	}
	select {
	case app := <-recovered:
		if app != s.Name {
			t.Errorf("OnRecovered(%q)", app)
		}
	case <-ctx.Done():
		t.Fatalf("no token after the file appeared: %v", src.Status().LastError)
	}
	if st := src.Status(); st.LastError != nil || st.ExpiresOn.IsZero() {
		t.Errorf("status %+v", st)
	}
}
