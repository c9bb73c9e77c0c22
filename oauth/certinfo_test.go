package oauth

import (
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/guid"
)

// TestKeyIDIsTheCertificates: the manifest keyId is derived from the
// certificate, so cert new and cert show (and any later run) agree, and
// it is a GUID Entra accepts.
func TestKeyIDIsTheCertificates(t *testing.T) {
	_, files, err := NewCertificate("CN=one", 30, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	_, other, err := NewCertificate("CN=two", 30, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	certs, _, err := LoadCertificate(files[0], "")
	if err != nil {
		t.Fatal(err)
	}
	a, b := Describe(certs[0]), Describe(certs[0])
	if a.KeyID != b.KeyID || !guid.Valid(a.KeyID) || a.KeyID[14] != '8' || !strings.Contains(a.KeyCredentials, `"keyId": "`+a.KeyID+`"`) {
		t.Errorf("keyId %q then %q; keyCredentials:\n%s", a.KeyID, b.KeyID, a.KeyCredentials)
	}
	if !strings.HasPrefix(strings.ReplaceAll(a.KeyID, "-", "")[:12], strings.ToLower(a.SHA256[:12])) {
		t.Errorf("keyId %s is not taken from the SHA-256 thumbprint %s", a.KeyID, a.SHA256)
	}
	oc, _, _ := LoadCertificate(other[0], "")
	if Describe(oc[0]).KeyID == a.KeyID {
		t.Error("two certificates share a keyId")
	}
}

// TestReadCertificateFilePublic: the public .cer (PEM, or DER as Windows
// exports it) is read without a key, while LoadCertificate, which needs
// the key, says which file it wants.
func TestReadCertificateFilePublic(t *testing.T) {
	dir := t.TempDir()
	_, files, err := NewCertificate("CN=oauthrelay", 30, dir)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(files[1])
	block, _ := pem.Decode(b)
	der := filepath.Join(dir, "exported.cer")
	if err := os.WriteFile(der, block.Bytes, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{files[1], der} {
		certs, key, err := ReadCertificateFile(f, "")
		if err != nil || key != nil || len(certs) != 1 || certs[0].Subject.CommonName != "oauthrelay" {
			t.Errorf("%s: %v %v %v", filepath.Base(f), certs, key, err)
		}
		if _, _, err := LoadCertificate(f, ""); err == nil || !strings.Contains(err.Error(), "not the .cer uploaded to Entra ID") {
			t.Errorf("LoadCertificate(%s) = %v", filepath.Base(f), err)
		}
	}
}

// TestExpiryWarningRounds: a certificate made for 10 days reads "10
// days" just after, not 9; the last hours are counted in hours.
func TestExpiryWarningRounds(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		left time.Duration
		want string
	}{
		{10*24*time.Hour - time.Second, "expires in 10 day(s)"},
		{10*24*time.Hour + 5*time.Minute, "expires in 10 day(s)"},
		{9*24*time.Hour + 11*time.Hour, "expires in 9 day(s)"},
		{30 * time.Hour, "expires in 1 day(s)"},
		{5*time.Hour + time.Minute, "expires in 6 hour(s)"},
		{-time.Hour, "EXPIRED"},
	} {
		info := CertInfo{NotAfter: now.Add(tt.left)}
		if w := info.ExpiryWarning(now); !strings.Contains(w, tt.want) {
			t.Errorf("%v left: %q, want %q", tt.left, w, tt.want)
		}
	}
	if w := (CertInfo{NotAfter: now.Add(31 * 24 * time.Hour)}).ExpiryWarning(now); w != "" {
		t.Errorf("31 days left: %q", w)
	}
}
