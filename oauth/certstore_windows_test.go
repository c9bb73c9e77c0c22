//go:build windows

package oauth

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

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
