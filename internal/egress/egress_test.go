package egress

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestFromEnvironment(t *testing.T) {
	for _, tt := range []struct {
		name           string
		env            map[string]string
		proxy, source  string
		direct, viaURL string // an address that goes directly, one that goes through
	}{
		{name: "nothing", env: nil, proxy: "", source: ""},
		{name: "HTTPS_PROXY", env: map[string]string{"HTTPS_PROXY": "http://p:3128", "ALL_PROXY": "socks5://s:1080"}, proxy: "http://p:3128", source: "HTTPS_PROXY"},
		{name: "lower case", env: map[string]string{"https_proxy": "p:3128"}, proxy: "http://p:3128", source: "https_proxy"},
		{name: "ALL_PROXY", env: map[string]string{"ALL_PROXY": "socks5h://s:1080"}, proxy: "socks5h://s:1080", source: "ALL_PROXY"},
		{name: "NO_PROXY", env: map[string]string{"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "corp.example, 10.0.0.0/8"},
			proxy: "http://p:3128", source: "HTTPS_PROXY", direct: "mail.corp.example:587", viaURL: "smtp.office365.com:587"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d, err := FromEnvironment(env(tt.env), nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			if d.Proxy() != tt.proxy || d.Source() != tt.source {
				t.Errorf("proxy %q from %q, want %q from %q", d.Proxy(), d.Source(), tt.proxy, tt.source)
			}
			if tt.direct != "" && d.ProxyFor(tt.direct) != "" {
				t.Errorf("%s goes through the proxy, want directly", tt.direct)
			}
			if tt.viaURL != "" && d.ProxyFor(tt.viaURL) != tt.proxy {
				t.Errorf("%s goes directly, want through the proxy", tt.viaURL)
			}
		})
	}
	if _, err := FromEnvironment(env(map[string]string{"HTTPS_PROXY": "ftp://u:hunter2@p"}), nil, nil); err == nil ||
		!strings.Contains(err.Error(), "HTTPS_PROXY") || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("invalid HTTPS_PROXY: %v, want an error naming it without the password", err)
	}
}

func TestNoProxyRules(t *testing.T) {
	d, err := New(Settings{Proxy: "http://p:3128", NoProxy: []string{".corp.example", "login.microsoftonline.com", "10.0.0.0/8", "192.168.1.5", "::1"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for host, direct := range map[string]bool{
		"corp.example": true, "mail.corp.example:587": true, "MAIL.Corp.Example.:25": true, "notcorp.example:443": false,
		"login.microsoftonline.com:443": true, "x.login.microsoftonline.com:443": true, "graph.microsoft.com:443": false,
		"10.1.2.3:587": true, "11.1.2.3:587": false, "192.168.1.5:25": true, "[::1]:25": true, "smtp.office365.com:587": false,
	} {
		if got := d.ProxyFor(host) == ""; got != direct {
			t.Errorf("%s: directly = %v, want %v", host, got, direct)
		}
	}
	all, _ := New(Settings{Proxy: "http://p:3128", NoProxy: []string{"*"}}, nil)
	if all.ProxyFor("smtp.office365.com:587") != "" {
		t.Error(`"*" does not send everything directly`)
	}
	for _, bad := range []string{"10.0.0.0/33", "a b", "user@host", ""} {
		if CheckNoProxy(bad) == nil {
			t.Errorf("no_proxy entry %q accepted", bad)
		}
	}
}

func TestRedactAndDescribe(t *testing.T) {
	d, err := New(Settings{Proxy: "http://relay:hunter2@p:3128", Source: SourceConfig, NoProxy: []string{".corp.example"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := d.Describe(), "through proxy http://relay:xxxxx@p:3128 (from [upstream] proxy), except .corp.example (no_proxy)"; got != want {
		t.Errorf("Describe = %q, want %q", got, want)
	}
	if strings.Contains(d.Proxy(), "hunter2") || strings.Contains(Redact("http://u:hunter2@p"), "hunter2") || strings.Contains(Redact("http://u:hunter2@p x:%zz"), "hunter2") {
		t.Error("a password survives redaction")
	}
	direct, _ := New(Settings{}, nil)
	if direct.Describe() != "directly" || direct.ProxyFor("smtp.office365.com:587") != "" {
		t.Errorf("without a proxy: %q", direct.Describe())
	}
	withFile, _ := New(Settings{Proxy: "http://relay@p:3128", Password: "from-file"}, nil)
	if pw, _ := withFile.proxy.User.Password(); pw != "from-file" {
		t.Errorf("proxy_password_file's password not used")
	}
	if _, err := New(Settings{Proxy: "http://p:3128", Password: "x"}, nil); err == nil {
		t.Error("a password without a user is accepted")
	}
	if !d.ResolvesNames("smtp.office365.com:587") {
		t.Error("an HTTP proxy resolves the names it connects to")
	}
	s5, _ := New(Settings{Proxy: "socks5://p:1080"}, nil)
	s5h, _ := New(Settings{Proxy: "socks5h://p:1080"}, nil)
	if s5.ResolvesNames("a:1") || !s5h.ResolvesNames("a:1") {
		t.Error("socks5 resolves here, socks5h at the proxy")
	}
}

// TestUnreachableProxy: a proxy nothing listens at is an *Error that says
// so, names the proxy without its password and where the setting came
// from, for CONNECT and SOCKS5 alike.
func TestUnreachableProxy(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	for _, scheme := range []string{"http", "https", "socks5h"} {
		d, err := New(Settings{Proxy: scheme + "://relay:hunter2@" + addr, Source: "HTTPS_PROXY"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, err = d.DialContext(context.Background(), "tcp", "smtp.office365.com:587")
		var pe *Error
		if !errors.As(err, &pe) || !pe.Unreachable() {
			t.Fatalf("%s: %v, want an unreachable *Error", scheme, err)
		}
		if strings.Contains(pe.Error()+pe.Fix(), "hunter2") || !strings.Contains(pe.Error(), addr) || !strings.Contains(pe.Fix(), "HTTPS_PROXY") {
			t.Errorf("%s: %s — fix: %s", scheme, pe.Error(), pe.Fix())
		}
		if err := d.Reach(context.Background()); !errors.As(err, &pe) {
			t.Errorf("%s: Reach = %v, want an *Error", scheme, err)
		}
	}
}

func TestFixes(t *testing.T) {
	for _, tt := range []struct {
		e    Error
		want string
	}{
		{Error{Status: 407, Reason: "407 Proxy Authentication Required", Target: "smtp.office365.com:587"}, "wants a login"},
		{Error{Status: 407, Reason: "407 Proxy Authentication Required", sentAuth: true}, "refused the relay's user name and password"},
		{Error{Status: 403, Reason: "403 Forbidden", Target: "smtp.office365.com:587"}, "list smtp.office365.com in [upstream] no_proxy"},
		{Error{Detail: "connection not allowed by ruleset", socksDenied: true, Target: "smtp.office365.com:587"}, "forbids the way"},
		{Error{Status: 502, Reason: "502 Bad Gateway", Target: "smtp.office365.com:587"}, "could not open the way"},
	} {
		if f := tt.e.Fix(); !strings.Contains(f, tt.want) {
			t.Errorf("%s: fix %q lacks %q", tt.e.Error(), f, tt.want)
		}
	}
}
