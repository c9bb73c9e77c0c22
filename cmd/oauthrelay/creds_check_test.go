package main

import (
	"strings"
	"testing"

	"github.com/oauthrelay/oauthrelay/internal/testkit"
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
	secret := testkit.WriteFile(t, "enaio.secret", []byte("value\n"))
	path := testkit.WriteFile(t, "config.toml", []byte(strings.Replace(src, "SECRET", secret, 1)))
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
