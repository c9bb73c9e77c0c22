package oauth

import (
	"strings"
	"testing"
)

// BenchmarkXOAUTH2Start builds the initial response for one upstream login,
// with a token the size Entra ID issues (about 2 KB).
func BenchmarkXOAUTH2Start(b *testing.B) {
	token := strings.Repeat("eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9", 60)
	b.ReportAllocs()
	for b.Loop() {
		c := NewXOAUTH2Client("helpdesk@contoso.com", token)
		mech, ir, err := c.Start()
		if err != nil || mech != XOAUTH2 || len(ir) == 0 {
			b.Fatal(mech, err)
		}
	}
}

// BenchmarkXOAUTH2Exchange is a whole exchange that Exchange refuses: the
// initial response, the server's JSON challenge, the empty answer.
func BenchmarkXOAUTH2Exchange(b *testing.B) {
	token := strings.Repeat("eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9", 60)
	ch := []byte(`{"status":"401","schemes":"bearer","scope":"https://outlook.office365.com/.default"}`)
	b.ReportAllocs()
	for b.Loop() {
		c := NewXOAUTH2Client("helpdesk@contoso.com", token)
		if _, _, err := c.Start(); err != nil {
			b.Fatal(err)
		}
		if resp, err := c.Next(ch); err != nil || len(resp) != 0 {
			b.Fatal(err)
		}
	}
}
