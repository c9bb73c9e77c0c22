package main

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// On Linux, check refuses certificate_store with the sentence that says
// how to export the certificate to a PFX, and cert show/new --store say
// the same.
func TestCertificateStoreOffWindows(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("the store exists on Windows")
	}
	src, err := os.ReadFile("../../config.toml.example")
	if err != nil {
		t.Fatal(err)
	}
	cfg := strings.Replace(string(src), `client_secret = "${CONTOSO_CLIENT_SECRET}"`,
		"certificate_store = \"LocalMachine\\\\My\"\ncertificate_subject = \"CN=oauthrelay\"", 1)
	path := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if code := run([]string{"check", "-config", path}, &out, &errb); code != 1 {
		t.Fatalf("check exited %d:\n%s%s", code, out.String(), errb.String())
	}
	for _, want := range []string{path + ":", "certificate_store", "is a Windows certificate store",
		`Export-PfxCertificate -Cert Cert:\LocalMachine\My\<thumbprint>`, "certificate_file", "certificate_password_file"} {
		if !strings.Contains(errb.String(), want) {
			t.Errorf("check output lacks %q:\n%s", want, errb.String())
		}
	}

	out.Reset()
	errb.Reset()
	if code := run([]string{"cert", "show", "--store", `LocalMachine\My`, "--thumbprint", "3a1f0b2c4d5e6f708192a3b4c5d6e7f8091a2b3c"}, &out, &errb); code != 1 ||
		!strings.Contains(errb.String(), `Cert:\LocalMachine\My\3A1F0B2C4D5E6F708192A3B4C5D6E7F8091A2B3C`) {
		t.Errorf("cert show --store: exit %d\n%s", code, errb.String())
	}
	errb.Reset()
	if code := run([]string{"cert", "new", "--store", `LocalMachine\My`, "--out", t.TempDir()}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "needs Windows") {
		t.Errorf("cert new --store: exit %d\n%s", code, errb.String())
	}
	for _, args := range [][]string{
		{"cert", "show", "--store", `LocalMachine\Root`, "--subject", "CN=x"},
		{"cert", "show", "--store", `LocalMachine\My`},
		{"cert", "show", "--thumbprint", "3a1f0b2c4d5e6f708192a3b4c5d6e7f8091a2b3c"},
		{"cert", "show", "--store", `LocalMachine\My`, "--thumbprint", "xyz"},
	} {
		errb.Reset()
		if code := run(args, &out, &errb); code != 2 || errb.Len() == 0 {
			t.Errorf("%v: exit %d: %s", args, code, errb.String())
		}
	}
}
