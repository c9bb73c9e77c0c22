package config

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// withCred replaces the base config's client secret by cred.
func withCred(cred string) string {
	return strings.Replace(base, `client_secret = "literal-secret"`, cred, 1)
}

// On Linux check refuses certificate_store, naming the file, the key and
// the way to export the certificate to a PFX instead.
func TestCertificateStoreRefusedOffWindows(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("the store exists on Windows")
	}
	src := withCred("certificate_store = 'LocalMachine\\My'\ncertificate_thumbprint = \"3a 1f 0b 2c 4d 5e 6f 70 81 92 a3 b4 c5 d6 e7 f8 09 1a 2b 3c\"")
	_, probs := parse(t, src, noEnv)
	if len(probs) != 1 {
		t.Fatalf("want one problem, got %v", probs)
	}
	p := probs[0]
	s := p.String()
	for _, want := range []string{"test.toml:", "app[0] (contoso).certificate_store", "Windows certificate store", runtime.GOOS,
		`Export-PfxCertificate -Cert Cert:\LocalMachine\My\3A1F0B2C4D5E6F708192A3B4C5D6E7F8091A2B3C`, "certutil -exportPFX",
		`certificate_file = "/etc/oauthrelay/oauthrelay.pfx"`, "certificate_password_file"} {
		if !strings.Contains(s, want) {
			t.Errorf("problem lacks %q:\n%s", want, s)
		}
	}
	if p.Line != 11 {
		t.Errorf("line %d, want 11 (certificate_store)", p.Line)
	}
}

func TestCertificateStoreRules(t *testing.T) {
	for _, tt := range []struct {
		name, cred, key, msg string
	}{
		{"store and secret", "client_secret = \"x\"\ncertificate_store = \"LocalMachine\\\\My\"\ncertificate_subject = \"CN=x\"", "client_secret", "more than one credential"},
		{"store and file", "certificate_file = \"/x.pem\"\ncertificate_store = \"LocalMachine\\\\My\"\ncertificate_subject = \"CN=x\"", "client_secret", "more than one credential"},
		{"bad store", "certificate_store = \"LocalMachine\\\\Root\"\ncertificate_subject = \"CN=x\"", "certificate_store", "not a certificate store"},
		{"neither thumbprint nor subject", "certificate_store = \"CurrentUser\\\\My\"", "certificate_thumbprint", "needs certificate_thumbprint or certificate_subject"},
		{"both thumbprint and subject", "certificate_store = \"CurrentUser\\\\My\"\ncertificate_subject = \"CN=x\"\ncertificate_thumbprint = \"3A1F0B2C4D5E6F708192A3B4C5D6E7F8091A2B3C\"", "certificate_subject", "together with certificate_thumbprint"},
		{"bad thumbprint", "certificate_store = \"CurrentUser\\\\My\"\ncertificate_thumbprint = \"3A1F\"", "certificate_thumbprint", "not a certificate thumbprint"},
		{"thumbprint without store", "client_secret = \"x\"\ncertificate_thumbprint = \"3A1F0B2C4D5E6F708192A3B4C5D6E7F8091A2B3C\"", "certificate_thumbprint", "certificate_store is not"},
		{"subject alone", "certificate_subject = \"CN=x\"", "certificate_subject", "certificate_store is not"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, probs := parse(t, withCred(tt.cred), noEnv)
			for _, p := range probs {
				if strings.HasSuffix(p.Key, "."+tt.key) && strings.Contains(p.Msg, tt.msg) && p.Fix != "" {
					return
				}
			}
			t.Errorf("want %s: %q, got %v", tt.key, tt.msg, probs)
		})
	}
}

// ${CREDENTIALS_DIRECTORY} (systemd LoadCredential=) expands in secret
// file paths; unset, it is named with what to do.
func TestCredentialsDirectory(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "contoso.secret"), []byte("from-systemd\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	src := withCred(`client_secret_file = "${CREDENTIALS_DIRECTORY}/contoso.secret"`)
	c, probs := parse(t, src, func(k string) string {
		if k == "CREDENTIALS_DIRECTORY" {
			return dir
		}
		return ""
	})
	if probs != nil {
		t.Fatal(probs)
	}
	if c.Apps[0].Secret.Reveal() != "from-systemd" || c.Apps[0].ClientSecretFile != filepath.Join(dir, "contoso.secret") {
		t.Errorf("secret %q from %q", c.Apps[0].Secret.Reveal(), c.Apps[0].ClientSecretFile)
	}
	_, probs = parse(t, src, noEnv)
	if len(probs) != 1 || !strings.Contains(probs[0].Msg, "CREDENTIALS_DIRECTORY is not set") || !strings.Contains(probs[0].Fix, "LoadCredential=") ||
		!strings.HasSuffix(probs[0].Key, ".client_secret_file") {
		t.Errorf("unset: %v", probs)
	}
}

// check in a shell without the service's environment warns and does not
// try to read the file.
func TestCredentialsDirectoryInCheck(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.toml")
	src := withCred(`certificate_file = "${CREDENTIALS_DIRECTORY}/contoso.pem"`)
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CREDENTIALS_DIRECTORY", "")
	c, err := LoadForCheck(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Warnings) != 1 || !strings.Contains(c.Warnings[0].Msg, "CREDENTIALS_DIRECTORY is not set here") {
		t.Errorf("warnings: %v", c.Warnings)
	}
	if _, err := Load(path); err == nil || !strings.Contains(err.Error(), "CREDENTIALS_DIRECTORY is not set") {
		t.Errorf("Load: %v", err)
	}
}
