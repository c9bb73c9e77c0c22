package config

import (
	"crypto/tls"
	"net/netip"
	"strings"
	"testing"

	"github.com/oauthrelay/oauthrelay/internal/testkit"
)

// withListen is base with extra [listen] keys.
func withListen(keys string) string {
	return strings.Replace(base, "[listen]\n", "[listen]\n"+keys+"\n", 1)
}

func TestMinTLSVersion(t *testing.T) {
	leaf := testkit.NewCA(t).Leaf(t, "relay.example")
	cert, key := leaf.Files(t)
	withCert := `tls_cert_file = "` + cert + `"` + "\n" + `tls_key_file = "` + key + `"` + "\n"
	for _, tt := range []struct {
		name, keys string
		want       uint16
		legacy     bool
		// problem: the text of the one problem expected; warning: of
		// the one warning expected.
		problem, warning string
	}{
		{name: "default", want: tls.VersionTLS12},
		{name: "1.2", keys: `min_tls_version = "1.2"`, want: tls.VersionTLS12},
		{name: "1.3", keys: `min_tls_version = "1.3"`, want: tls.VersionTLS13},
		{name: "1.0", keys: withCert + `min_tls_version = "1.0"`, want: tls.VersionTLS10, legacy: true, warning: "obsolete"},
		{name: "1.1", keys: withCert + `min_tls_version = "1.1"`, want: tls.VersionTLS11, legacy: true, warning: "obsolete"},
		{name: "1.0 without a certificate", keys: `min_tls_version = "1.0"`, want: tls.VersionTLS10, legacy: true, warning: "no TLS certificate"},
		{name: "TLSv1.0", keys: `min_tls_version = "TLSv1.0"`, problem: `"TLSv1.0" is not a TLS version (write "1.0")`},
		{name: "TLSv1", keys: `min_tls_version = "TLSv1"`, problem: `"TLSv1" is not a TLS version (write "1.0")`},
		{name: "1.4", keys: `min_tls_version = "1.4"`, problem: `"1.4" is not a TLS version`},
		{name: "empty", keys: `min_tls_version = ""`, problem: `"" is not a TLS version`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			src := withListen(tt.keys)
			c, probs := parse(t, src, noEnv)
			if tt.problem != "" {
				if len(probs) != 1 || probs[0].Key != "listen.min_tls_version" || !strings.Contains(probs[0].Msg, tt.problem) ||
					!strings.Contains(probs[0].Fix, `"1.2"`) || probs[0].File != "test.toml" {
					t.Fatalf("problems %v, want one for listen.min_tls_version with %q, the file and a fix", probs, tt.problem)
				}
				if want := lineOfText(t, src, "min_tls_version ="); probs[0].Line != want {
					t.Errorf("problem at line %d, want %d", probs[0].Line, want)
				}
				return
			}
			if probs != nil {
				t.Fatal(probs)
			}
			if got := c.Listen.TLSMinVersion(); got != tt.want || c.Listen.LegacyTLS() != tt.legacy {
				t.Errorf("TLSMinVersion %x legacy %v, want %x %v", got, c.Listen.LegacyTLS(), tt.want, tt.legacy)
			}
			var warns []Problem
			for _, w := range c.Warnings {
				if w.Key == "listen.min_tls_version" {
					warns = append(warns, w)
				}
			}
			if tt.warning == "" {
				if len(warns) != 0 {
					t.Errorf("warnings %v, want none", warns)
				}
				return
			}
			if len(warns) != 1 || !strings.Contains(warns[0].Msg, tt.warning) || warns[0].Fix == "" {
				t.Errorf("warnings %v, want one with %q and a fix", warns, tt.warning)
			}
			// testkit's certificates are ECDSA, which old devices
			// cannot use.
			if tt.legacy && strings.Contains(tt.keys, "tls_cert_file") && !hasWarning(c.Warnings, "listen.tls_cert_file", "ECDSA key") {
				t.Errorf("no warning about the ECDSA certificate: %v", c.Warnings)
			}
		})
	}
}

func TestProxyProtocolFrom(t *testing.T) {
	c, probs := parse(t, withListen(`proxy_protocol_from = ["10.0.0.5/32", "192.0.2.7", "2001:db8::/64"]`), noEnv)
	if probs != nil {
		t.Fatal(probs)
	}
	for _, tt := range []struct {
		ip   string
		want bool
	}{
		{"10.0.0.5", true}, {"10.0.0.6", false}, {"192.0.2.7", true}, {"::ffff:192.0.2.7", true},
		{"2001:db8::1", true}, {"2001:db9::1", false}, {"127.0.0.1", false},
	} {
		if got := c.Listen.ProxyProtocol(netip.MustParseAddr(tt.ip)); got != tt.want {
			t.Errorf("ProxyProtocol(%s) = %v, want %v", tt.ip, got, tt.want)
		}
	}
	if c, _ := parse(t, base, noEnv); c.Listen.ProxyProtocol(netip.MustParseAddr("10.0.0.5")) {
		t.Error("without proxy_protocol_from, an address must not need a PROXY header")
	}

	src := withListen(`proxy_protocol_from = ["10.0.0.5/32", "balancer.corp.example"]`)
	_, probs = parse(t, src, noEnv)
	if len(probs) != 1 || probs[0].Key != "listen.proxy_protocol_from" || !strings.Contains(probs[0].Msg, "balancer.corp.example") ||
		!strings.Contains(probs[0].Fix, "10.0.0.5/32") {
		t.Fatalf("problems %v, want one for listen.proxy_protocol_from naming the entry, with a fix", probs)
	}
	if want := lineOfText(t, src, "proxy_protocol_from ="); probs[0].Line != want {
		t.Errorf("problem at line %d, want %d", probs[0].Line, want)
	}
}

func hasWarning(ws []Problem, key, msg string) bool {
	for _, w := range ws {
		if w.Key == key && strings.Contains(w.Msg, msg) {
			return true
		}
	}
	return false
}

func TestWriteListener(t *testing.T) {
	leaf := testkit.NewCA(t).Leaf(t, "relay.example")
	cert, key := leaf.Files(t)
	c, probs := parse(t, withListen(`tls_cert_file = "`+cert+`"`+"\n"+`tls_key_file = "`+key+`"`+"\n"+
		`min_tls_version = "1.0"`+"\n"+`proxy_protocol_from = ["10.0.0.5", "10.0.1.0/28"]`), noEnv)
	if probs != nil {
		t.Fatal(probs)
	}
	var b strings.Builder
	c.WriteListener(&b)
	for _, want := range []string{"TLS 1.0 and newer; TLS 1.0/1.1 CBC cipher suites", "PROXY protocol (v1/v2) required from 10.0.0.5/32, 10.0.1.0/28"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("check prints %q, want %q", b.String(), want)
		}
	}
	c, _ = parse(t, base, noEnv)
	b.Reset()
	c.WriteListener(&b)
	if b.String() != "listener: no TLS (no certificate)\n" {
		t.Errorf("check prints %q for the base configuration", b.String())
	}
}
