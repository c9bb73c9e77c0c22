package doctor

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/oauthrelay/oauthrelay/config"
	"github.com/oauthrelay/oauthrelay/transport"
	"github.com/oauthrelay/oauthrelay/transport/submit"
)

// endpointOf is where a mailbox's mail goes: host:port for SMTP AUTH and
// HVE, the base URL for Graph.
func endpointOf(app *config.App, mb *config.Mailbox) string {
	switch mb.Transport {
	case config.TransportGraph:
		return app.GraphURL
	case config.TransportHVE:
		return app.HVEAddress
	}
	return app.UpstreamAddress
}

// checkEndpoint runs the DNS, TCP and TLS steps for one endpoint; it
// reports whether all passed.
func (r *run) checkEndpoint(ctx context.Context, kind, ep string) bool {
	const in = "  "
	addr, setting, want := ep, "[upstream] address", "smtp.office365.com:587"
	switch kind {
	case config.TransportHVE:
		setting, want = "[upstream] hve_address", config.DefaultHVEAddress
	case config.TransportGraph:
		setting, want = "[upstream] graph_url", "https://graph.microsoft.com"
		u, err := url.Parse(ep)
		if err != nil || u.Host == "" {
			r.fail(in, fmt.Sprintf("Graph URL %q is not a URL", ep), "set "+setting+" to "+want)
			return false
		}
		addr = u.Host
		if u.Port() == "" {
			addr = net.JoinHostPort(u.Hostname(), "443")
		}
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		r.fail(in, fmt.Sprintf("address %q is not host:port", addr), "set "+setting+" to "+want)
		return false
	}
	if r.tunnelName(addr) != "" && !r.proxyOK {
		r.skip(in, "DNS, TCP and TLS through the proxy")
		return false
	}
	if r.resolvedByProxy(in, host, port) {
		// The proxy resolves the name when it opens the tunnel.
	} else if _, err := netip.ParseAddr(host); err == nil {
		r.pass(in, "DNS: %s is an IP address; nothing to look up", host)
	} else {
		lctx, cancel := context.WithTimeout(ctx, r.o.Timeout)
		ips, err := r.o.Resolver.LookupHost(lctx, host)
		cancel()
		if err != nil {
			r.fail(in, fmt.Sprintf("DNS: cannot resolve %s: %s", host, dnsSummary(err)),
				"check this host's DNS resolver (/etc/resolv.conf) and that it may resolve public names; "+host+" must resolve")
			return false
		}
		shown := ips
		if len(shown) > 3 {
			shown = append(shown[:3:3], "…")
		}
		r.pass(in, "DNS: %s → %s", host, strings.Join(shown, ", "))
	}
	dctx, cancel := context.WithTimeout(ctx, r.o.Timeout)
	start := r.o.Now()
	c, err := r.dial(dctx, "tcp", addr)
	cancel()
	if err != nil && r.proxyFailure(in, err) {
		return false
	}
	if err != nil {
		fix := fmt.Sprintf("allow outbound TCP to port %s (firewall, security group, proxy); many networks block outbound SMTP ports", port)
		if kind == config.TransportGraph {
			fix = fmt.Sprintf("allow outbound HTTPS to %s port %s (firewall, security group, proxy)", host, port)
		}
		r.fail(in, fmt.Sprintf("TCP: cannot connect to %s: %v", addr, err), fix)
		return false
	}
	if how := r.tunnelName(addr); how != "" {
		r.pass(in, "TCP: %s to %s: tunnel open (%s)", how, addr, r.o.Now().Sub(start).Round(time.Millisecond))
	} else {
		r.pass(in, "TCP: connected to %s (%s)", addr, r.o.Now().Sub(start).Round(time.Millisecond))
	}
	if kind == config.TransportGraph {
		return r.checkHTTPS(ctx, c, host, addr)
	}
	c.Close()
	start = r.o.Now()
	st, err := submit.ProbeTLS(ctx, r.dial, addr, r.cfg.Listen.Hostname, r.roots, r.o.Timeout)
	if err != nil && r.silent(start) {
		r.fail(in, fmt.Sprintf("TLS: no answer from %s in %s (no greeting, EHLO or STARTTLS reply)", addr, r.o.Timeout),
			"the server accepted the connection but said nothing; check that "+addr+" is Microsoft 365's submission server ("+want+") and that no proxy or firewall holds the connection")
		return false
	}
	if err != nil {
		v := transport.Classify(transport.StageConnect, err, "")
		fix := v.Fix
		if fix == "" {
			fix = "check that " + addr + " is Microsoft 365's submission server (" + want + ") and that nothing between blocks STARTTLS"
		}
		r.fail(in, "TLS: STARTTLS to "+addr+" failed: "+v.Reply, fix)
		return false
	}
	r.pass(in, "TLS: STARTTLS with %s, certificate %q verified", tls.VersionName(st.Version), certName(st))
	return true
}

// checkHTTPS shakes hands over c as the Graph transport does: TLS 1.2 or
// newer, the certificate verified against the relay's roots.
func (r *run) checkHTTPS(ctx context.Context, c net.Conn, host, addr string) bool {
	const in = "  "
	tc := tls.Client(c, &tls.Config{ServerName: host, RootCAs: r.roots, MinVersion: tls.VersionTLS12})
	defer tc.Close()
	hctx, cancel := context.WithTimeout(ctx, r.o.Timeout)
	start := r.o.Now()
	err := tc.HandshakeContext(hctx)
	cancel()
	if err != nil && r.silent(start) {
		r.fail(in, fmt.Sprintf("TLS: no answer from %s in %s (no TLS handshake)", addr, r.o.Timeout),
			"the server accepted the connection but did not answer; check that "+addr+" is Microsoft Graph and that no proxy or firewall holds the connection")
		return false
	}
	if err != nil {
		v := transport.Classify(transport.StageConnect, err, "")
		fix := v.Fix
		if fix == "" || errors.Is(err, context.DeadlineExceeded) {
			fix = "check that " + addr + " is Microsoft Graph and that nothing between intercepts HTTPS (a TLS-inspecting proxy needs its CA in [upstream] ca_file)"
		}
		r.fail(in, "TLS: HTTPS to "+addr+" failed: "+v.Reply, fix)
		return false
	}
	st := tc.ConnectionState()
	r.pass(in, "TLS: HTTPS with %s, certificate %q verified", tls.VersionName(st.Version), certName(st))
	return true
}

func certName(st tls.ConnectionState) string {
	if len(st.PeerCertificates) == 0 {
		return ""
	}
	c := st.PeerCertificates[0]
	if c.Subject.CommonName == "" && len(c.DNSNames) > 0 {
		return c.DNSNames[0]
	}
	return c.Subject.CommonName
}
