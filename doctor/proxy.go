package doctor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/egress"
)

// checkProxy is the proxy's own step: say which way out is in force and,
// with a proxy, reach it (and shake hands with an https proxy). Each
// endpoint's TCP step then opens its tunnel (CONNECT or SOCKS5) through
// it. It reports whether the endpoints' network steps can go on.
func (r *run) checkProxy(ctx context.Context) bool {
	const in = "  "
	eg := r.egress
	if eg.Proxy() == "" {
		fmt.Fprintln(r.o.Out, "proxy: none, connections to Microsoft go directly (no [upstream] proxy, HTTPS_PROXY or ALL_PROXY)")
		return true
	}
	fmt.Fprintf(r.o.Out, "proxy %s (from %s)\n", eg.Proxy(), eg.Source())
	if np := eg.NoProxy(); len(np) > 0 {
		fmt.Fprintf(r.o.Out, "%sno_proxy (reached directly): %s\n", in, strings.Join(np, ", "))
	}
	pctx, cancel := context.WithTimeout(ctx, r.o.Timeout)
	start := r.o.Now()
	err := eg.Reach(pctx)
	cancel()
	if err != nil {
		var pe *egress.Error
		if errors.As(err, &pe) {
			r.fail(in, pe.Error(), pe.Fix())
		} else {
			r.fail(in, "proxy: "+err.Error(), "check [upstream] proxy in "+r.cfg.Path)
		}
		return false
	}
	r.pass(in, "reached the proxy at %s (%s)", proxyAddr(eg.Proxy()), r.o.Now().Sub(start).Round(time.Millisecond))
	return true
}

// proxyAddr is a proxy URL's host:port, for the report.
func proxyAddr(p string) string {
	u, err := url.Parse(p)
	if err != nil {
		return p
	}
	return egress.ProxyAddr(u)
}

// tunnelName says how a connection to addr is made, for the TCP step:
// "CONNECT through proxy X" or "SOCKS5 through proxy X"; "" directly.
func (r *run) tunnelName(addr string) string {
	p := r.egress.ProxyFor(addr)
	if p == "" {
		return ""
	}
	if strings.HasPrefix(p, "socks5") {
		return "SOCKS5 through proxy " + p
	}
	return "CONNECT through proxy " + p
}

// proxyFailure reports err as the proxy's refusal when it is one.
func (r *run) proxyFailure(in string, err error) bool {
	var pe *egress.Error
	if !errors.As(err, &pe) {
		return false
	}
	r.fail(in, "TCP: "+pe.Error(), pe.Fix())
	return true
}

// resolvedByProxy reports (and passes) the DNS step when the proxy, not
// this host, resolves host: a local lookup would prove nothing (and often
// fails where only the proxy may resolve public names).
func (r *run) resolvedByProxy(in, host, port string) bool {
	if !r.egress.ResolvesNames(net.JoinHostPort(host, port)) {
		return false
	}
	r.pass(in, "DNS: %s is resolved by the proxy %s", host, r.egress.Proxy())
	return true
}
