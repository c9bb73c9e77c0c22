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
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/AzureAD/microsoft-authentication-library-for-go/apps/confidential"

	"github.com/oauthrelay/oauthrelay/internal/guid"
)

// Signer is a certificate credential whose private key signs where it is
// kept: in memory for certificate_file, in the Windows certificate store
// (CNG or a legacy CryptoAPI CSP, often non-exportable) for
// certificate_store. The relay builds the client assertion itself and
// hands it to MSAL, whose own certificate credential only takes an
// in-memory RSA key.
type Signer interface {
	crypto.Signer
	// Certificates returns the signing certificate first, then the rest
	// of its chain (sent as x5c with send_certificate_chain).
	Certificates() []*x509.Certificate
	// CanPSS reports whether Sign accepts *rsa.PSSOptions. Keys of legacy
	// CryptoAPI providers cannot sign RSA-PSS; their assertions are RS256
	// with an SHA-1 "x5t", which Entra ID still accepts.
	CanPSS() bool
}

// SignError is a failure to sign a client assertion: the key cannot be
// opened or used. Retrying does not fix it; the administrator does.
type SignError struct {
	Cause string // what is wrong, in words
	Fix   string // what the administrator does
}

func (e *SignError) Error() string { return e.Cause + " — fix: " + e.Fix }

// keySigner is a Signer over any crypto.Signer holding an RSA key: the
// in-memory key of a certificate file, or a test's. It is used by
// pointer, so that AppSettings holding one stay comparable.
type keySigner struct {
	crypto.Signer
	certs []*x509.Certificate
	pss   bool
}

func (k *keySigner) Certificates() []*x509.Certificate { return k.certs }
func (k *keySigner) CanPSS() bool                      { return k.pss }

// NewKeySigner returns the Signer of key and its certificate chain
// (signing certificate first; LoadCertificate returns it so). pss says
// whether the key may sign RSA-PSS (PS256); a software RSA key can.
func NewKeySigner(certs []*x509.Certificate, key crypto.Signer, pss bool) (Signer, error) {
	if len(certs) == 0 {
		return nil, errors.New("no certificate for the key")
	}
	pub, ok := key.Public().(*rsa.PublicKey)
	if !ok {
		return nil, errors.New("Entra client assertions need an RSA key")
	}
	if !pub.Equal(certs[0].PublicKey) {
		return nil, errors.New("the private key does not match the certificate")
	}
	return &keySigner{Signer: key, certs: certs, pss: pss}, nil
}

// resolver is a Signer that finds its certificate again for each
// assertion: the Windows store, so that a certificate renewed under the
// same subject is used without a reload. Resolve returns the Signer for
// this one assertion.
type resolver interface {
	Resolve() (Signer, error)
}

// assertionLifetime is how long an assertion is valid, as MSAL Go signs
// them (exp = now + 10 minutes).
const assertionLifetime = 10 * time.Minute

// BuildAssertion returns the signed client assertion for one token
// request to tokenEndpoint (the aud claim), in the form MSAL Go sends:
// PS256 with an "x5t#S256" header when the key can sign RSA-PSS, else
// RS256 with an SHA-1 "x5t"; thumbprints and x5c in standard base64;
// claims aud, iss = sub = clientID, a random jti, nbf = now and exp = now
// + 10 minutes as JSON numbers. With x5c the header carries the chain.
// The signature is checked against the certificate before it is sent, so
// a key that does not belong to the certificate is named here rather than
// by Entra's AADSTS700027.
func BuildAssertion(s Signer, clientID, tokenEndpoint string, x5c bool, now time.Time) (string, error) {
	if r, ok := s.(resolver); ok {
		var err error
		if s, err = r.Resolve(); err != nil {
			return "", err
		}
		if c, ok := s.(io.Closer); ok {
			defer c.Close()
		}
	}
	certs := s.Certificates()
	if len(certs) == 0 {
		return "", &SignError{"the credential has no certificate", "check certificate_file or certificate_store"}
	}
	leaf := certs[0]
	pub, ok := leaf.PublicKey.(*rsa.PublicKey)
	if !ok {
		return "", &SignError{"the certificate's key is not RSA", "Entra client assertions need an RSA certificate: create one with 'oauthrelay cert new'"}
	}
	hdr := map[string]any{"typ": "JWT"}
	var opts crypto.SignerOpts
	if s.CanPSS() {
		sum := sha256.Sum256(leaf.Raw)
		hdr["alg"], hdr["x5t#S256"] = "PS256", base64.StdEncoding.EncodeToString(sum[:])
		opts = &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256}
	} else {
		sum := sha1.Sum(leaf.Raw)
		hdr["alg"], hdr["x5t"] = "RS256", base64.StdEncoding.EncodeToString(sum[:])
		opts = crypto.SHA256
	}
	if x5c {
		chain := make([]string, len(certs))
		for i, c := range certs {
			chain[i] = base64.StdEncoding.EncodeToString(c.Raw)
		}
		hdr["x5c"] = chain
	}
	claims := map[string]any{
		"aud": tokenEndpoint,
		"iss": clientID,
		"sub": clientID,
		"jti": guid.New(),
		"nbf": now.Unix(),
		"exp": now.Add(assertionLifetime).Unix(),
	}
	hb, err := json.Marshal(hdr)
	if err != nil {
		return "", err
	}
	cb, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	input := base64.RawURLEncoding.EncodeToString(hb) + "." + base64.RawURLEncoding.EncodeToString(cb)
	digest := sha256.Sum256([]byte(input))
	sig, err := s.Sign(rand.Reader, digest[:], opts)
	if err != nil {
		var se *SignError
		if errors.As(err, &se) {
			return "", se
		}
		return "", &SignError{"the certificate's private key could not sign: " + err.Error(),
			"check that the relay's account may use the key (certlm.msc → the certificate → All Tasks → Manage Private Keys → Read)"}
	}
	if pss, ok := opts.(*rsa.PSSOptions); ok {
		err = rsa.VerifyPSS(pub, crypto.SHA256, digest[:], sig, pss)
	} else {
		err = rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest[:], sig)
	}
	if err != nil {
		return "", &SignError{"the private key that signed does not belong to the certificate (thumbprint " + Describe(leaf).SHA1 + ")",
			"re-import the certificate together with its own private key (a .pfx), or point the configuration at the right certificate"}
	}
	return input + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}

// signerCredential hands MSAL an assertion built by BuildAssertion for
// every token request. The wall clock dates it, as MSAL's own did: Entra
// compares nbf and exp with real time, whatever clock the Source runs on.
func signerCredential(s Signer, x5c bool) confidential.Credential {
	return confidential.NewCredFromAssertionCallback(func(_ context.Context, o confidential.AssertionRequestOptions) (string, error) {
		return BuildAssertion(s, o.ClientID, o.TokenEndpoint, x5c, time.Now())
	})
}

// fileSigner loads a certificate file (PEM or PKCS#12) as a Signer.
func fileSigner(file, password string) (Signer, error) {
	certs, key, err := LoadCertificate(file, password)
	if err != nil {
		return nil, err
	}
	s, err := NewKeySigner(certs, key.(*rsa.PrivateKey), true)
	if err != nil {
		return nil, fmt.Errorf("certificate file %s: %v", file, err)
	}
	return s, nil
}

// countCredentials counts the credentials s names; exactly one is right.
func countCredentials(s AppSettings) int {
	n := 0
	for _, set := range []bool{s.ClientSecret != "", s.CertificateFile != "", s.CertificateStore.Store != "", s.Signer != nil} {
		if set {
			n++
		}
	}
	return n
}

// certSigner returns the Signer of s's certificate credential and how
// logs name it, or a nil Signer when s names none.
func certSigner(s AppSettings) (Signer, string, error) {
	switch {
	case s.Signer != nil:
		return s.Signer, "(given signer)", nil
	case s.CertificateFile != "":
		signer, err := fileSigner(s.CertificateFile, s.CertificatePassword)
		return signer, s.CertificateFile, err
	case s.CertificateStore.Store != "":
		signer, err := OpenStoreSigner(s.CertificateStore)
		return signer, "certificate_store " + s.CertificateStore.String(), err
	}
	return nil, "", nil
}
