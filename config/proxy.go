package config

import (
	"os"
	"strings"

	"github.com/oauthrelay/oauthrelay/internal/egress"
)

// proxyFix is how a proxy URL is written.
const proxyFix = `write it like "http://proxy.example.com:3128" (schemes: http, https, socks5, socks5h; a user as "http://relay@proxy.example.com:3128" with the password in proxy_password_file)`

// proxy checks [upstream] proxy, proxy_password_file and no_proxy, and,
// without a proxy, the process environment's HTTPS_PROXY, ALL_PROXY and
// NO_PROXY, which then apply (read with os.Getenv: they are not ${VAR}
// expansions, which Parse's getenv serves).
func (v *validator) proxy() {
	u := &v.c.Upstream
	line := func(k string) int { return v.lineOf("upstream", -1, k) }
	for _, e := range u.NoProxy {
		if err := egress.CheckNoProxy(e); err != nil {
			v.add(line("no_proxy"), "upstream.no_proxy", err.Error(), `list host names ("smtp.office365.com"), domains (".corp.example"), addresses or CIDRs ("10.0.0.0/8"), or "*"`)
		}
	}
	if u.Proxy == "" {
		if u.ProxyPasswordFile != "" {
			v.add(line("proxy_password_file"), "upstream.proxy_password_file", "is set but proxy is not", "set proxy to the proxy's URL with the user name, or remove proxy_password_file")
		}
		if len(u.NoProxy) > 0 {
			v.warn(line("no_proxy"), "upstream.no_proxy", "has no effect without proxy (NO_PROXY in the environment applies to HTTPS_PROXY and ALL_PROXY)", "set proxy, or remove no_proxy")
		}
		if _, err := egress.FromEnvironment(os.Getenv, nil, nil); err != nil {
			v.add(0, "upstream.proxy", "the environment's proxy setting is invalid: "+err.Error(), "correct the variable in the relay's environment, or set [upstream] proxy, which takes precedence")
		}
		return
	}
	pu, err := egress.ParseProxy(u.Proxy)
	if err != nil {
		v.add(line("proxy"), "upstream.proxy", err.Error(), proxyFix)
		return
	}
	_, inlinePassword := pu.User.Password()
	if inlinePassword {
		v.inline(line("proxy"), "upstream.proxy", "the proxy password in [upstream] proxy", true)
	}
	if u.ProxyPasswordFile == "" {
		return
	}
	switch {
	case pu.User == nil || pu.User.Username() == "":
		v.add(line("proxy_password_file"), "upstream.proxy_password_file", "proxy names no user for this password", `write the user into proxy, like "http://relay@proxy.example.com:3128"`)
	case inlinePassword:
		v.add(line("proxy_password_file"), "upstream.proxy_password_file", "proxy already holds a password", "remove the password from proxy (keep user@), so that it is only in proxy_password_file")
	default:
		if b, ok := v.readable("upstream", -1, "upstream.proxy_password_file", u.ProxyPasswordFile, true); ok {
			pw := strings.TrimRight(string(b), "\r\n")
			if pw == "" {
				v.add(line("proxy_password_file"), "upstream.proxy_password_file", u.ProxyPasswordFile+" is empty", "write the proxy password into the file")
			}
			u.ProxyPassword = Secret(pw)
		}
	}
}
