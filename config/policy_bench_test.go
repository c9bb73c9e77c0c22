package config

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

// benchPolicyConfig has 20 mailboxes with 5 send_as addresses each and 50
// clients (half trusted by network), about what a large site runs.
func benchPolicyConfig(b *testing.B) *Config {
	b.Helper()
	var s strings.Builder
	s.WriteString("[listen]\naddress = \"127.0.0.1:2525\"\n[spool]\ndir = \"/var/spool/oauthrelay\"\n")
	s.WriteString("[[app]]\nname = \"contoso\"\ntenant_id = \"00000000-0000-0000-0000-000000000000\"\nclient_id = \"11111111-2222-3333-4444-555555555555\"\nclient_secret = \"x\"\n")
	for m := range 20 {
		fmt.Fprintf(&s, "[[mailbox]]\naddress = \"mbx%d@contoso.com\"\napp = \"contoso\"\nsend_as = [", m)
		for a := range 5 {
			fmt.Fprintf(&s, "%q,", fmt.Sprintf("alias%d-%d@contoso.com", m, a))
		}
		s.WriteString("]\n")
	}
	for c := range 50 {
		fmt.Fprintf(&s, "[[client]]\nname = \"app%d\"\nnetworks = [\"10.%d.0.0/24\"]\nsenders = [\"mbx%d@contoso.com\", \"alias%d-1@contoso.com\"]\n", c, c, c%20, c%20)
	}
	cfg, err := Parse("bench.toml", []byte(s.String()), func(string) string { return "" })
	if err != nil {
		b.Fatal(err)
	}
	return cfg
}

// BenchmarkPolicyCheck is what the listener does for MAIL FROM and again
// for each From:/Sender: address: find the client of a trusted peer, ask
// whether it may send as the address, and find the address's mailbox.
func BenchmarkPolicyCheck(b *testing.B) {
	cfg := benchPolicyConfig(b)
	ip := netip.MustParseAddr("10.37.0.9")
	from := "Alias17-1@Contoso.com"
	b.ReportAllocs()
	for b.Loop() {
		cl := cfg.TrustedClient(ip)
		if cl == nil || !cl.MaySend(from) || cfg.MailboxFor(from) == nil {
			b.Fatal("policy refused a permitted sender")
		}
	}
}

// BenchmarkPolicyMaySend is the sender check alone.
func BenchmarkPolicyMaySend(b *testing.B) {
	cfg := benchPolicyConfig(b)
	cl := cfg.Client("app37")
	b.ReportAllocs()
	for b.Loop() {
		if !cl.MaySend("alias17-1@contoso.com") || cfg.MailboxFor("alias17-1@contoso.com") == nil {
			b.Fatal("refused")
		}
	}
}
