//go:build windows

package oauth

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"fmt"
	"io"
	"math/big"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/sys/windows"
)

// TestStoreRoundTrip creates a non-exportable CNG key and certificate in
// CurrentUser\My (no administrator needed), finds it by thumbprint and
// by subject, signs an assertion with it and checks the JWT against the
// certificate, then removes both. It needs a Windows that implements CNG
// (or Wine); OAUTHRELAY_SKIP_STORE_TEST=1 skips it.
func TestStoreRoundTrip(t *testing.T) {
	if os.Getenv("OAUTHRELAY_SKIP_STORE_TEST") != "" {
		t.Skip("OAUTHRELAY_SKIP_STORE_TEST is set")
	}
	subject := fmt.Sprintf("CN=oauthrelay-test-%d", time.Now().UnixNano())
	info, cer, err := NewStoreCertificate(StoreCurrentUser, subject, 1, t.TempDir())
	if err != nil {
		t.Fatalf("cert new --store: %v", err)
	}
	byThumb := StoreRef{Store: StoreCurrentUser, Thumbprint: info.SHA1}
	t.Cleanup(func() { removeFromStore(t, byThumb) })
	if _, err := os.Stat(cer); err != nil {
		t.Errorf("no .cer written: %v", err)
	}
	for _, ref := range []StoreRef{byThumb, {Store: StoreCurrentUser, Thumbprint: info.SHA256}, {Store: StoreCurrentUser, Subject: subject}} {
		s, err := OpenStoreSigner(ref)
		if err != nil && underWine() {
			// Wine 8's ncrypt makes keys but cannot open a persisted one
			// again (NCryptOpenKey: NTE_NOT_SUPPORTED).
			t.Skipf("Wine cannot reopen a CNG key: %v", err)
		}
		if err != nil {
			t.Fatalf("%s: %v", ref, err)
		}
		cert := s.Certificates()[0]
		if Describe(cert).SHA1 != info.SHA1 {
			t.Fatalf("%s found %s", ref, Describe(cert).SHA1)
		}
		alg := "RS256"
		if s.CanPSS() {
			alg = "PS256"
		}
		t.Logf("%s: key signs %s", ref, alg)
		a, err := BuildAssertion(s, "c", "https://login.example/t/oauth2/v2.0/token", false, time.Now())
		if err != nil {
			t.Fatalf("%s: %v", ref, err)
		}
		if _, err := jwt.Parse(a, func(*jwt.Token) (any, error) { return cert.PublicKey, nil }, jwt.WithValidMethods([]string{alg})); err != nil {
			t.Fatalf("%s: %v", ref, err)
		}
	}
	_, err = OpenStoreSigner(StoreRef{Store: StoreCurrentUser, Thumbprint: strings.Repeat("00", 20)})
	if se, ok := err.(*SignError); !ok || !strings.Contains(se.Cause, "no certificate with this thumbprint") {
		t.Errorf("missing thumbprint: %v", err)
	}
}

// removeFromStore deletes the test certificate and its key.
func removeFromStore(t *testing.T, ref StoreRef) {
	if k, err := openStoreKey(ref); err == nil {
		if k.ncrypt {
			procNCryptDeleteKey.Call(uintptr(k.handle), 0)
			k.handle = 0
		}
		k.Close()
	}
	st, err := openStore(ref.Store, true)
	if err != nil {
		t.Log(err)
		return
	}
	defer windows.CertCloseStore(st, 0)
	ctx, _, err := findInStore(st, ref, time.Now())
	if err != nil {
		t.Log(err)
		return
	}
	if err := windows.CertDeleteCertificateFromStore(ctx); err != nil { // frees ctx
		t.Log(err)
	}
}

var (
	procCryptGenKey     = modadvapi32.NewProc("CryptGenKey")
	procCryptExportKey  = modadvapi32.NewProc("CryptExportKey")
	procCryptDestroyKey = modadvapi32.NewProc("CryptDestroyKey")
)

// TestStoreLegacyCSP puts a certificate whose key lives in a legacy
// CryptoAPI provider (Microsoft Enhanced Cryptographic Provider v1.0, the
// kind certtostore cannot open) into CurrentUser\My, and checks that the
// relay signs with it through CryptoAPI: RS256 with x5t, verified against
// the certificate.
func TestStoreLegacyCSP(t *testing.T) {
	if os.Getenv("OAUTHRELAY_SKIP_STORE_TEST") != "" {
		t.Skip("OAUTHRELAY_SKIP_STORE_TEST is set")
	}
	const provName = "Microsoft Enhanced Cryptographic Provider v1.0"
	const provRSAFull, atKeyExchange, newKeyset, deleteKeyset, publicKeyBlob = 1, 1, 0x8, 0x10, 6
	container := fmt.Sprintf("oauthrelay-test-%d", time.Now().UnixNano())
	var h windows.Handle
	if err := windows.CryptAcquireContext(&h, utf16(container), utf16(provName), provRSAFull, newKeyset); err != nil {
		t.Fatalf("CryptAcquireContext(NEWKEYSET): %v", err)
	}
	t.Cleanup(func() {
		var d windows.Handle
		windows.CryptAcquireContext(&d, utf16(container), utf16(provName), provRSAFull, deleteKeyset)
	})
	var key uintptr
	if r, _, err := procCryptGenKey.Call(uintptr(h), atKeyExchange, 2048<<16, uintptr(unsafe.Pointer(&key))); r == 0 {
		t.Fatalf("CryptGenKey: %v", err)
	}
	var n uint32
	procCryptExportKey.Call(key, 0, publicKeyBlob, 0, 0, uintptr(unsafe.Pointer(&n)))
	blob := make([]byte, n)
	if r, _, err := procCryptExportKey.Call(key, 0, publicKeyBlob, 0, uintptr(unsafe.Pointer(&blob[0])), uintptr(unsafe.Pointer(&n))); r == 0 {
		t.Fatalf("CryptExportKey: %v", err)
	}
	procCryptDestroyKey.Call(key)
	// Open the container afresh: Wine's CSP writes a new key out only
	// when the handle that made it is released.
	windows.CryptReleaseContext(h, 0)
	if err := windows.CryptAcquireContext(&h, utf16(container), utf16(provName), provRSAFull, 0); err != nil {
		t.Fatalf("CryptAcquireContext: %v", err)
	}
	// PUBLICKEYBLOB: BLOBHEADER (8 bytes), RSAPUBKEY (magic, bit length,
	// exponent), then the modulus little-endian.
	bits := binary.LittleEndian.Uint32(blob[12:])
	mod := append([]byte(nil), blob[20:20+bits/8]...)
	slices.Reverse(mod)
	pub := &rsa.PublicKey{N: new(big.Int).SetBytes(mod), E: int(binary.LittleEndian.Uint32(blob[16:]))}

	// The certificate is signed by the CSP key through the relay's own
	// CryptoAPI signing code.
	csp := &storeKey{handle: h, spec: atKeyExchange, free: true}
	csp.certs = []*x509.Certificate{{PublicKey: pub}}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: container},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), SignatureAlgorithm: x509.SHA256WithRSA}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, cspSigner{csp, pub})
	csp.Close()
	if err != nil {
		t.Fatalf("signing the certificate through CryptoAPI: %v", err)
	}
	ctx, err := windows.CertCreateCertificateContext(encodingX509, &der[0], uint32(len(der)))
	if err != nil {
		t.Fatal(err)
	}
	defer windows.CertFreeCertificateContext(ctx)
	info := cryptKeyProvInfo{container: utf16(container), provider: utf16(provName), provType: provRSAFull, keySpec: atKeyExchange}
	if r, _, err := procCertSetCertificateContextProperty.Call(uintptr(unsafe.Pointer(ctx)), certKeyProvInfoPropID, 0, uintptr(unsafe.Pointer(&info))); r == 0 {
		t.Fatal(err)
	}
	st, err := openStore(StoreCurrentUser, true)
	if err != nil {
		t.Fatal(err)
	}
	err = windows.CertAddCertificateContextToStore(st, ctx, certStoreAddNew, nil)
	windows.CertCloseStore(st, 0)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	ref := StoreRef{Store: StoreCurrentUser, Thumbprint: Describe(cert).SHA1}
	t.Cleanup(func() { removeFromStore(t, ref) })

	s, err := OpenStoreSigner(ref)
	if err != nil {
		t.Fatalf("OpenStoreSigner: %v", err)
	}
	if s.CanPSS() {
		t.Error("a legacy CSP key claims RSA-PSS")
	}
	a, err := BuildAssertion(s, "c", "https://login.example/t/oauth2/v2.0/token", true, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Parse(a, func(*jwt.Token) (any, error) { return cert.PublicKey, nil }, jwt.WithValidMethods([]string{"RS256"}))
	if err != nil {
		t.Fatalf("the CSP-signed assertion does not verify: %v", err)
	}
	if x5c, _ := tok.Header["x5c"].([]any); len(x5c) != 1 {
		t.Errorf("x5c of a self-signed certificate: %v", tok.Header["x5c"])
	}
	if _, ok := tok.Header["x5t"]; !ok {
		t.Errorf("header %v has no x5t", tok.Header)
	}
}

// cspSigner lets x509.CreateCertificate sign with a storeKey.
type cspSigner struct {
	k   *storeKey
	pub *rsa.PublicKey
}

func (c cspSigner) Public() crypto.PublicKey { return c.pub }
func (c cspSigner) Sign(r io.Reader, d []byte, o crypto.SignerOpts) ([]byte, error) {
	return c.k.Sign(r, d, o)
}

// underWine reports whether the test runs under Wine rather than Windows.
func underWine() bool {
	return windows.NewLazySystemDLL("ntdll.dll").NewProc("wine_get_version").Find() == nil
}
