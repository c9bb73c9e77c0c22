package oauth

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// newSoftwareCert creates a certificate and key the way 'cert new' does.
func newSoftwareCert(t *testing.T) ([]*x509.Certificate, *rsa.PrivateKey) {
	t.Helper()
	_, files, err := NewCertificate("CN=oauthrelay", 30, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	certs, key, err := LoadCertificate(files[0], "")
	if err != nil {
		t.Fatal(err)
	}
	return certs, key.(*rsa.PrivateKey)
}

// TestBuildAssertionVariants signs with a software key through the Signer
// interface, as a PSS-capable (CNG) key and as a PKCS #1-only (legacy
// CSP) key, and verifies each JWT against the certificate's public key.
func TestBuildAssertionVariants(t *testing.T) {
	certs, key := newSoftwareCert(t)
	cert := certs[0]
	const client = "11111111-2222-3333-4444-555555555555"
	const aud = "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
	s1 := sha1.Sum(cert.Raw)
	s256 := sha256.Sum256(cert.Raw)
	for _, tc := range []struct {
		pss               bool
		alg, thumb, other string
		want              []byte
	}{
		{true, "PS256", "x5t#S256", "x5t", s256[:]},
		{false, "RS256", "x5t", "x5t#S256", s1[:]},
	} {
		for _, x5c := range []bool{false, true} {
			s, err := NewKeySigner(certs, key, tc.pss)
			if err != nil {
				t.Fatal(err)
			}
			now := time.Now()
			a, err := BuildAssertion(s, client, aud, x5c, now)
			if err != nil {
				t.Fatal(err)
			}
			tok, err := jwt.Parse(a, func(*jwt.Token) (any, error) { return cert.PublicKey, nil },
				jwt.WithValidMethods([]string{tc.alg}), jwt.WithAudience(aud), jwt.WithIssuer(client), jwt.WithSubject(client))
			if err != nil {
				t.Fatalf("%s: the assertion does not verify: %v", tc.alg, err)
			}
			if got := tok.Header[tc.thumb]; got != base64.StdEncoding.EncodeToString(tc.want) {
				t.Errorf("%s: %s = %v", tc.alg, tc.thumb, got)
			}
			if _, has := tok.Header[tc.other]; has {
				t.Errorf("%s: header also carries %s", tc.alg, tc.other)
			}
			if tok.Header["typ"] != "JWT" {
				t.Errorf("%s: typ = %v", tc.alg, tok.Header["typ"])
			}
			chain, has := tok.Header["x5c"].([]any)
			if has != x5c || (x5c && (len(chain) != 1 || chain[0] != base64.StdEncoding.EncodeToString(cert.Raw))) {
				t.Errorf("%s: x5c = %v, want present=%v", tc.alg, tok.Header["x5c"], x5c)
			}
			c := tok.Claims.(jwt.MapClaims)
			nbf, _ := c.GetNotBefore()
			exp, _ := c.GetExpirationTime()
			if nbf.Unix() != now.Unix() || exp.Sub(nbf.Time) != 10*time.Minute {
				t.Errorf("%s: nbf %v exp %v", tc.alg, nbf, exp)
			}
			if jti, _ := c["jti"].(string); len(jti) != 36 {
				t.Errorf("%s: jti = %v", tc.alg, c["jti"])
			}
		}
	}
}

// otherKeySigner signs with a key that is not the certificate's: what a
// store whose certificate was linked to the wrong key container does.
type otherKeySigner struct {
	Signer
	other *rsa.PrivateKey
}

func (o otherKeySigner) Sign(r io.Reader, d []byte, opts crypto.SignerOpts) ([]byte, error) {
	return o.other.Sign(r, d, opts)
}

// failingSigner is a key the operating system refuses to use.
type failingSigner struct{ Signer }

func (failingSigner) Sign(io.Reader, []byte, crypto.SignerOpts) ([]byte, error) {
	return nil, errors.New("Keyset does not exist")
}

func TestBuildAssertionRefusesWrongKey(t *testing.T) {
	certs, key := newSoftwareCert(t)
	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	if _, err := NewKeySigner(certs, other, true); err == nil {
		t.Fatal("NewKeySigner accepted a key that is not the certificate's")
	}
	s, _ := NewKeySigner(certs, key, true)
	_, err := BuildAssertion(otherKeySigner{s, other}, "c", "https://x/t/oauth2/v2.0/token", false, time.Now())
	var se *SignError
	if !errors.As(err, &se) || !strings.Contains(se.Cause, "does not belong to the certificate") || !strings.Contains(se.Cause, Describe(certs[0]).SHA1) {
		t.Fatalf("wrong key: %v", err)
	}
	_, err = BuildAssertion(failingSigner{s}, "c", "https://x/t/oauth2/v2.0/token", false, time.Now())
	if !errors.As(err, &se) || !strings.Contains(se.Cause, "Keyset does not exist") || !strings.Contains(se.Fix, "Manage Private Keys") {
		t.Fatalf("failing key: %v", err)
	}
	// The token source reports it as a permanent fault with the fix,
	// without sending anything.
	f := newFakeEntra(t)
	st := secretSettings(f)
	st.ClientSecret, st.Signer = "", failingSigner{s}
	src := newTestSource(t, f, st, Options{})
	_, err = src.Token(context.Background())
	var oe *Error
	if !errors.As(err, &oe) || !oe.Permanent || !strings.Contains(oe.Error(), "Manage Private Keys") {
		t.Fatalf("token error: %v", err)
	}
	if f.requests.Load() != 0 {
		t.Fatalf("%d requests reached the token endpoint", f.requests.Load())
	}
}

func TestOneCredential(t *testing.T) {
	certs, key := newSoftwareCert(t)
	s, _ := NewKeySigner(certs, key, true)
	f := newFakeEntra(t)
	for name, mod := range map[string]func(*AppSettings){
		"secret and signer": func(a *AppSettings) { a.Signer = s },
		"secret and store":  func(a *AppSettings) { a.CertificateStore = StoreRef{Store: StoreLocalMachine, Subject: "CN=x"} },
		"file and store": func(a *AppSettings) {
			a.ClientSecret, a.CertificateFile, a.CertificateStore = "", "x.pem", StoreRef{Store: StoreLocalMachine, Subject: "CN=x"}
		},
	} {
		a := secretSettings(f)
		mod(&a)
		if _, err := NewSource(a, Options{}); err == nil || !strings.Contains(err.Error(), "more than one credential") {
			t.Errorf("%s: %v", name, err)
		}
	}
}
