package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCheckRefusesV1TokenURL: a v1 token URL pasted from another product
// is refused by check, which prints the v2 URL to write instead.
func TestCheckRefusesV1TokenURL(t *testing.T) {
	const tid = "00000000-0000-0000-0000-000000000000"
	src := `[[app]]
name = "enaio"
tenant_id = "` + tid + `"
client_id = "11111111-2222-3333-4444-555555555555"
client_secret_file = "SECRET"
token_endpoint = "https://login.microsoftonline.com/#TenantID#/oauth2/token"

[[mailbox]]
address = "dms@contoso.com"
app = "enaio"

[[client]]
name = "dms"
networks = ["127.0.0.1/32"]
senders = ["dms@contoso.com"]
`
	dir := t.TempDir()
	secret := filepath.Join(dir, "enaio.secret")
	if err := os.WriteFile(secret, []byte("value\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(path, []byte(strings.Replace(src, "SECRET", secret, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := oauthrelay("check", "-config", path)
	if code == 0 {
		t.Fatalf("check accepted a v1 token URL:\n%s", out)
	}
	for _, want := range []string{"token_endpoint", "v1 token endpoint",
		`token_endpoint = "https://login.microsoftonline.com/#TenantID#/oauth2/v2.0/token"`, path + ":6"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("check's report lacks %q:\n%s", want, errOut)
		}
	}
}
