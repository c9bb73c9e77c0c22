package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/oauthrelay/oauthrelay/internal/testkit"
)

// proxyConfig is transportBase with [upstream] proxy keys.
func proxyConfig(t *testing.T, up testkit.Upstream) string {
	t.Helper()
	kc := transportBase()
	kc.Dir = t.TempDir()
	kc.Upstream = up
	return kc.TOML(t)
}

func TestProxyKeys(t *testing.T) {
	t.Setenv("HTTPS_PROXY", "")
	t.Setenv("ALL_PROXY", "")
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "proxy.password")
	if err := os.WriteFile(pwFile, []byte("file-hunter2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		up   testkit.Upstream
		// key and msg of the one problem expected; empty: valid.
		key, msg string
		// line holds the text of the line the problem points at.
		line string
	}{
		{name: "http", up: testkit.Upstream{Proxy: "http://proxy.corp.example:3128"}},
		{name: "https", up: testkit.Upstream{Proxy: "https://proxy.corp.example:3129"}},
		{name: "socks5", up: testkit.Upstream{Proxy: "socks5://127.0.0.1:1080"}},
		{name: "socks5h with no_proxy", up: testkit.Upstream{Proxy: "socks5h://127.0.0.1:1080", NoProxy: []string{"10.0.0.0/8", ".corp.example", "smtp.office365.com", "*"}}},
		{name: "user and password file", up: testkit.Upstream{Proxy: "http://relay@proxy:3128", ProxyPasswordFile: pwFile}},
		{name: "inline password", up: testkit.Upstream{Proxy: "http://relay:url-hunter2@proxy:3128"}},
		{name: "ftp", up: testkit.Upstream{Proxy: "ftp://relay:url-hunter2@proxy"}, key: "upstream.proxy", msg: "is not a proxy URL", line: "proxy ="},
		{name: "no host", up: testkit.Upstream{Proxy: "http://"}, key: "upstream.proxy", msg: "is not a proxy URL", line: "proxy ="},
		{name: "a path", up: testkit.Upstream{Proxy: "http://proxy:3128/x"}, key: "upstream.proxy", msg: "path or query", line: "proxy ="},
		{name: "password file without proxy", up: testkit.Upstream{ProxyPasswordFile: pwFile}, key: "upstream.proxy_password_file", msg: "proxy is not", line: "proxy_password_file ="},
		{name: "password file without user", up: testkit.Upstream{Proxy: "http://proxy:3128", ProxyPasswordFile: pwFile}, key: "upstream.proxy_password_file", msg: "names no user", line: "proxy_password_file ="},
		{name: "two passwords", up: testkit.Upstream{Proxy: "http://relay:url-hunter2@proxy:3128", ProxyPasswordFile: pwFile}, key: "upstream.proxy_password_file", msg: "already holds a password", line: "proxy_password_file ="},
		{name: "empty password file", up: testkit.Upstream{Proxy: "http://relay@proxy:3128", ProxyPasswordFile: empty}, key: "upstream.proxy_password_file", msg: "is empty", line: "proxy_password_file ="},
		{name: "bad no_proxy", up: testkit.Upstream{Proxy: "http://proxy:3128", NoProxy: []string{"10.0.0.0/33"}}, key: "upstream.no_proxy", msg: "not a valid CIDR", line: "no_proxy ="},
	} {
		t.Run(tt.name, func(t *testing.T) {
			src := proxyConfig(t, tt.up)
			c, probs := parse(t, src, noEnv)
			all := ""
			for _, p := range probs {
				all += p.String() + "\n"
			}
			if c != nil {
				for _, w := range c.Warnings {
					all += w.String() + "\n"
				}
			}
			if strings.Contains(all, "hunter2") {
				t.Errorf("a proxy password is shown:\n%s", all)
			}
			if tt.key == "" {
				if probs != nil {
					t.Fatalf("problems: %v", probs)
				}
				if tt.up.ProxyPasswordFile != "" && c.Upstream.ProxyPassword.Reveal() != "file-hunter2" {
					t.Errorf("proxy password not read from the file")
				}
				return
			}
			if len(probs) != 1 || probs[0].Key != tt.key || !strings.Contains(probs[0].Msg, tt.msg) || probs[0].Fix == "" {
				t.Fatalf("problems %v, want one for %s with %q and a fix", probs, tt.key, tt.msg)
			}
			if want := lineOfText(t, src, tt.line); probs[0].Line != want {
				t.Errorf("problem at line %d, want %d (%s)", probs[0].Line, want, tt.line)
			}
		})
	}
}

func TestNoProxyWithoutProxyWarns(t *testing.T) {
	t.Setenv("HTTPS_PROXY", "")
	t.Setenv("ALL_PROXY", "")
	c, probs := parse(t, proxyConfig(t, testkit.Upstream{NoProxy: []string{".corp.example"}}), noEnv)
	if probs != nil {
		t.Fatal(probs)
	}
	if len(c.Warnings) != 1 || c.Warnings[0].Key != "upstream.no_proxy" {
		t.Errorf("warnings %v, want one for upstream.no_proxy", c.Warnings)
	}
}

func TestInvalidEnvironmentProxyIsAProblem(t *testing.T) {
	t.Setenv("HTTPS_PROXY", "gopher://relay:env-hunter2@proxy")
	_, probs := parse(t, proxyConfig(t, testkit.Upstream{}), noEnv)
	if len(probs) != 1 || probs[0].Key != "upstream.proxy" || !strings.Contains(probs[0].Msg, "HTTPS_PROXY") {
		t.Fatalf("problems %v, want one naming HTTPS_PROXY", probs)
	}
	if strings.Contains(probs[0].String(), "hunter2") {
		t.Errorf("the password is shown: %s", probs[0])
	}
	// [upstream] proxy takes precedence: the environment is not used.
	if _, probs := parse(t, proxyConfig(t, testkit.Upstream{Proxy: "http://proxy:3128"}), noEnv); probs != nil {
		t.Errorf("with [upstream] proxy set: %v", probs)
	}
}
