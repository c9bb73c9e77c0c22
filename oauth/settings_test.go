package oauth

import (
	"strings"
	"testing"
	"time"
)

// TestCheckApp is the one set of app rules: the config loader and
// NewSource both apply it, so a file that passes `check` builds a Source.
func TestCheckApp(t *testing.T) {
	ok := AppSettings{TenantID: "11111111-2222-3333-4444-555555555555", ClientID: "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"}
	if ps := CheckApp(ok); ps != nil {
		t.Fatalf("valid settings: %v", ps)
	}
	for _, tt := range []struct {
		name    string
		mod     func(*AppSettings)
		key     string // "" = no problem
		msg     string
		noValue string // must not appear in the problem
	}{
		{"tenant domain", func(s *AppSettings) { s.TenantID = "contoso.onmicrosoft.com" }, "", "", ""},
		{"no tenant", func(s *AppSettings) { s.TenantID = "" }, "tenant_id", "is missing", ""},
		{"tenant with a slash", func(s *AppSettings) { s.TenantID = "a/b" }, "tenant_id", `"a/b" is not a tenant ID`, ""},
		{"tenant with a blank", func(s *AppSettings) { s.TenantID = "contoso .com" }, "tenant_id", "is not a tenant ID", ""},
		{"tenant with a query", func(s *AppSettings) { s.TenantID = "t?x=1" }, "tenant_id", "is not a tenant ID", ""},
		{"no client", func(s *AppSettings) { s.ClientID = "" }, "client_id", "is missing", ""},
		{"secret as client", func(s *AppSettings) { s.ClientID = "Zq8~secret-value" }, "client_id", "is not a GUID", "Zq8~secret-value"},
		{"upper-case client", func(s *AppSettings) { s.ClientID = "AAAAAAAA-BBBB-CCCC-DDDD-EEEEEEEEEEEE" }, "", "", ""},
		{"http authority", func(s *AppSettings) { s.Authority = "http://login.example/" }, "authority", "not an https URL", ""},
		{"authority without host", func(s *AppSettings) { s.Authority = "https:///" }, "authority", "not an https URL", ""},
		{"sovereign authority", func(s *AppSettings) { s.Authority = "https://login.microsoftonline.us/" }, "", "", ""},
		{"scope", func(s *AppSettings) { s.Scope = "https://outlook.office365.com/SMTP.Send" }, "scope", "does not end in /.default", ""},
		{"long min lifetime", func(s *AppSettings) { s.MinTokenLifetime = time.Hour }, "min_token_lifetime", "longer than Microsoft's app-only tokens live", ""},
		{"http proxy", func(s *AppSettings) { s.ProxyURL = "http://proxy:3128" }, "", "", ""},
		{"https proxy", func(s *AppSettings) { s.ProxyURL = "https://proxy:3128" }, "", "", ""},
		{"socks5 proxy", func(s *AppSettings) { s.ProxyURL = "socks5://proxy:1080" }, "", "", ""},
		{"socks5h proxy", func(s *AppSettings) { s.ProxyURL = "socks5h://u:pw@proxy:1080" }, "", "", ""},
		{"ftp proxy", func(s *AppSettings) { s.ProxyURL = "ftp://user:hunter2@proxy" }, "proxy_url", "is not a proxy URL", "hunter2"},
		{"proxy without host", func(s *AppSettings) { s.ProxyURL = "http://" }, "proxy_url", "is not a proxy URL", ""},
		{"unparsable proxy", func(s *AppSettings) { s.ProxyURL = "http://user:hunter2@pro xy:%zz" }, "proxy_url", "is not a proxy URL", "hunter2"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := ok
			tt.mod(&s)
			ps := CheckApp(s)
			if tt.key == "" {
				if ps != nil {
					t.Fatalf("want no problem, got %v", ps)
				}
				return
			}
			if len(ps) != 1 || ps[0].Key != tt.key || !strings.Contains(ps[0].Msg, tt.msg) || ps[0].Fix == "" {
				t.Fatalf("want one problem %s: %q with a fix, got %v", tt.key, tt.msg, ps)
			}
			if tt.noValue != "" && strings.Contains(ps[0].String(), tt.noValue) {
				t.Fatalf("problem shows %q: %s", tt.noValue, ps[0])
			}
		})
	}
	// Every problem at once, in key order.
	ps := CheckApp(AppSettings{Authority: "http://x/", Scope: "x", MinTokenLifetime: time.Hour, ProxyURL: "gopher://x"})
	var keys []string
	for _, p := range ps {
		keys = append(keys, p.Key)
	}
	if got := strings.Join(keys, " "); got != "tenant_id client_id authority scope min_token_lifetime proxy_url" {
		t.Errorf("keys = %s", got)
	}
}

func TestCheckScope(t *testing.T) {
	if p := CheckScope("graph_scope", "https://graph.microsoft.us/.default", "https://graph.microsoft.us/.default"); p != nil {
		t.Errorf("valid scope: %v", p)
	}
	p := CheckScope("graph_scope", "https://graph.microsoft.com/Mail.Send", "https://graph.microsoft.com/.default")
	if p == nil || p.Key != "graph_scope" || !strings.Contains(p.Fix, `"https://graph.microsoft.com/.default"`) {
		t.Errorf("CheckScope = %v", p)
	}
}

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"http://proxy:3128":              "http://proxy:3128",
		"http://user:hunter2@proxy:3128": "http://user:xxxxx@proxy:3128",
		"http://user@proxy:3128":         "http://user@proxy:3128",
		"http://u:hunter2@pro xy:%zz":    "[redacted]@pro xy:%zz",
		"not a url":                      "not a url",
	} {
		if got := RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
}
