// Package egress is the relay's one way out to Microsoft: every connection
// to the token endpoint, the SMTP submission servers, Microsoft Graph and
// doctor's probes is opened by a Dialer, which goes through the configured
// proxy (an HTTP CONNECT proxy, over http or https, or a SOCKS5 proxy) or
// directly.
//
// The Dialer only opens a TCP tunnel: TLS to Microsoft is negotiated by the
// caller over it, end to end, with the certificate verified as without a
// proxy. A proxy that refuses (407, 403) or cannot be reached is reported
// as an *Error naming the proxy (its password hidden), its answer and the
// fix.
package egress

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"
)

// DialFunc opens a TCP connection; net.Dialer.DialContext is one.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// Schemes are the proxy URL schemes the relay accepts everywhere: an HTTP
// CONNECT proxy reached over http or https, and SOCKS5 with the name
// resolved here (socks5) or by the proxy (socks5h).
var Schemes = []string{"http", "https", "socks5", "socks5h"}

// SourceConfig is the Source of the configured proxy.
const SourceConfig = "[upstream] proxy"

// Settings choose the way out.
type Settings struct {
	// Proxy is the proxy's URL, perhaps with user:password@; empty means
	// directly.
	Proxy string
	// Password, when set, replaces the URL's password (proxy_password_file).
	Password string
	// NoProxy lists hosts, domains (".corp.example" or "corp.example":
	// the domain and every name under it), IP addresses, CIDRs and "*"
	// that are reached directly.
	NoProxy []string
	// Source says where Proxy came from: SourceConfig, an environment
	// variable's name, or an app's proxy_url.
	Source string
	// RootCAs verify an https proxy's certificate; nil means the system's.
	RootCAs *x509.CertPool
	// Resolver resolves names for socks5 (not socks5h); nil means
	// net.DefaultResolver.
	Resolver *net.Resolver
}

// Dialer opens connections to Microsoft, through the proxy or directly.
// It is safe for concurrent use.
type Dialer struct {
	s       Settings
	proxy   *url.URL // nil: directly
	noProxy []rule
	forward DialFunc
}

// New makes a Dialer. forward opens the TCP connections themselves (to
// the proxy, or to Microsoft when going directly); nil means a net.Dialer
// with a 30-second connect timeout.
func New(s Settings, forward DialFunc) (*Dialer, error) {
	if forward == nil {
		nd := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
		forward = nd.DialContext
	}
	d := &Dialer{s: s, forward: forward}
	if s.Proxy != "" {
		u, err := ParseProxy(s.Proxy)
		if err != nil {
			return nil, err
		}
		if s.Password != "" {
			if u.User == nil || u.User.Username() == "" {
				return nil, fmt.Errorf("a proxy password is set but the proxy URL %s names no user: write it like http://user@proxy:3128", Redact(s.Proxy))
			}
			u.User = url.UserPassword(u.User.Username(), s.Password)
		}
		d.proxy = u
	}
	for _, e := range s.NoProxy {
		r, err := parseRule(e)
		if err != nil {
			return nil, err
		}
		d.noProxy = append(d.noProxy, r)
	}
	return d, nil
}

// FromEnvironment makes the Dialer used when no proxy is configured: the
// first of HTTPS_PROXY, https_proxy, ALL_PROXY and all_proxy that is set,
// with NO_PROXY (or no_proxy). getenv is os.Getenv outside tests.
func FromEnvironment(getenv func(string) string, roots *x509.CertPool, forward DialFunc) (*Dialer, error) {
	s := Settings{RootCAs: roots}
	for _, k := range []string{"HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"} {
		if v := strings.TrimSpace(getenv(k)); v != "" {
			if !strings.Contains(v, "://") {
				// curl and Go take a bare host:port for an HTTP proxy.
				v = "http://" + v
			}
			s.Proxy, s.Source = v, k
			break
		}
	}
	for _, k := range []string{"NO_PROXY", "no_proxy"} {
		if v := getenv(k); v != "" {
			for _, e := range strings.Split(v, ",") {
				if e = strings.TrimSpace(e); e != "" {
					s.NoProxy = append(s.NoProxy, e)
				}
			}
			break
		}
	}
	d, err := New(s, forward)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.Source, err)
	}
	return d, nil
}

// WithProxy is a Dialer for another proxy (an app's proxy_url) that opens
// its connections with the same forward dialer and trusts the same roots.
// Its NoProxy is empty: the override applies to every host.
func (d *Dialer) WithProxy(proxy, source string) (*Dialer, error) {
	return New(Settings{Proxy: proxy, Source: source, RootCAs: d.s.RootCAs, Resolver: d.s.Resolver}, d.forward)
}

// ParseProxy parses a proxy URL and checks its scheme and host. Its errors
// never show the password.
func ParseProxy(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || u.Hostname() == "" {
		return nil, fmt.Errorf("%q is not a proxy URL: write it like \"http://proxy.example.com:3128\"", Redact(s))
	}
	if !slices.Contains(Schemes, u.Scheme) {
		return nil, fmt.Errorf("%q is not a proxy URL: the scheme %q is not one of %s", Redact(s), u.Scheme, strings.Join(Schemes, ", "))
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("%q is not a proxy URL: it has a path or query, and only the scheme, user, host and port belong there", Redact(s))
	}
	return u, nil
}

// Redact hides the password of a proxy URL ("http://user:xxxxx@host:3128"),
// so that it can be shown in logs, errors and `check`. A string that does
// not parse loses everything before its last "@".
func Redact(s string) string {
	if u, err := url.Parse(s); err == nil {
		if u.User == nil {
			return s
		}
		return u.Redacted()
	}
	if i := strings.LastIndex(s, "@"); i >= 0 {
		return "[redacted]" + s[i:]
	}
	return s
}

// Proxy is the proxy's URL with its password hidden, "" when going
// directly.
func (d *Dialer) Proxy() string {
	if d.proxy == nil {
		return ""
	}
	return d.proxy.Redacted()
}

// Source is where the proxy setting came from (SourceConfig, an
// environment variable's name), "" when going directly.
func (d *Dialer) Source() string {
	if d.proxy == nil {
		return ""
	}
	return d.s.Source
}

// NoProxy lists the exceptions as configured.
func (d *Dialer) NoProxy() []string { return append([]string(nil), d.s.NoProxy...) }

// Describe says how traffic to Microsoft leaves, for the start log:
// "through proxy http://proxy:3128 (from [upstream] proxy)" or "directly".
func (d *Dialer) Describe() string {
	if d.proxy == nil {
		return "directly"
	}
	s := "through proxy " + d.Proxy() + " (from " + d.s.Source + ")"
	if len(d.s.NoProxy) > 0 {
		s += ", except " + strings.Join(d.s.NoProxy, ", ") + " (no_proxy)"
	}
	return s
}

// ProxyFor is the proxy (password hidden) that connections to addr
// ("host:port") go through, "" when they go directly.
func (d *Dialer) ProxyFor(addr string) string {
	if d.via(addr) == nil {
		return ""
	}
	return d.Proxy()
}

// ResolvesNames reports whether the proxy, not this host, resolves the
// names of addr (an HTTP CONNECT or socks5h proxy), so that a local DNS
// lookup proves nothing.
func (d *Dialer) ResolvesNames(addr string) bool {
	p := d.via(addr)
	return p != nil && p.Scheme != "socks5"
}

// via is the proxy for addr, or nil.
func (d *Dialer) via(addr string) *url.URL {
	if d.proxy == nil {
		return nil
	}
	host := addr
	if h, _, err := net.SplitHostPort(addr); err == nil {
		host = h
	}
	for _, r := range d.noProxy {
		if r.match(host) {
			return nil
		}
	}
	return d.proxy
}

// DialContext opens a TCP connection to addr ("host:port"), through the
// proxy unless addr is in no_proxy. A failure of the proxy is an *Error.
func (d *Dialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	p := d.via(addr)
	if p == nil {
		return d.forward(ctx, network, addr)
	}
	var c net.Conn
	var err error
	switch p.Scheme {
	case "socks5", "socks5h":
		c, err = d.dialSOCKS(ctx, p, addr)
	default:
		c, err = d.dialConnect(ctx, p, addr)
	}
	return c, d.sourced(err)
}

// sourced fills in where the proxy setting came from.
func (d *Dialer) sourced(err error) error {
	var e *Error
	if errors.As(err, &e) && e.Source == "" {
		e.Source = d.s.Source
	}
	return err
}

// Reach opens a connection to the proxy itself (and, for an https proxy,
// completes its TLS handshake) and closes it: doctor's first proxy step.
func (d *Dialer) Reach(ctx context.Context) error {
	if d.proxy == nil {
		return nil
	}
	c, err := d.reach(ctx, d.proxy, "")
	if err != nil {
		return d.sourced(err)
	}
	return c.Close()
}

// ProxyAddr is the proxy's host:port, with the scheme's default port.
func ProxyAddr(u *url.URL) string {
	if u.Port() != "" {
		return u.Host
	}
	port := "1080"
	switch u.Scheme {
	case "http":
		port = "80"
	case "https":
		port = "443"
	}
	return net.JoinHostPort(u.Hostname(), port)
}

// reach dials the proxy, wrapping a failure in an *Error for target.
func (d *Dialer) reach(ctx context.Context, p *url.URL, target string) (net.Conn, error) {
	c, err := d.forward(ctx, "tcp", ProxyAddr(p))
	if err != nil {
		return nil, &Error{Proxy: p.Redacted(), Target: target, Reason: "cannot reach the proxy: " + errText(err), Err: err, unreachable: true}
	}
	if p.Scheme == "https" {
		return handshakeProxy(ctx, c, p, d.s.RootCAs, target)
	}
	return c, nil
}

// errText is an error's text without the address noise of net.OpError.
func errText(err error) string {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		return oe.Err.Error()
	}
	return err.Error()
}
