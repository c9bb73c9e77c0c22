package config

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/netip"
	"strings"
)

// tlsVersions maps the values of listen.min_tls_version to crypto/tls's.
var tlsVersions = map[string]uint16{
	"1.0": tls.VersionTLS10,
	"1.1": tls.VersionTLS11,
	"1.2": tls.VersionTLS12,
	"1.3": tls.VersionTLS13,
}

const minTLSFix = `use "1.2" (the default) or "1.3"; "1.0" or "1.1" only for old devices (printers, scanners) that cannot do TLS 1.2`

// TLSMinVersion is listen.min_tls_version as a crypto/tls version; TLS 1.2
// when it is unset.
func (l *Listen) TLSMinVersion() uint16 {
	if v, ok := tlsVersions[l.MinTLSVersion]; ok {
		return v
	}
	return tls.VersionTLS12
}

// LegacyTLS reports whether listen.min_tls_version lets TLS 1.0 or 1.1
// clients in.
func (l *Listen) LegacyTLS() bool { return l.TLSMinVersion() < tls.VersionTLS12 }

// ProxyProtocol reports whether connections from ip must start with a
// PROXY header (ip is in listen.proxy_protocol_from).
func (l *Listen) ProxyProtocol(ip netip.Addr) bool {
	ip = ip.Unmap()
	for _, p := range l.ProxyPrefixes {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// listenNet checks the parts of [listen] that meet the network in front of
// the relay: min_tls_version and proxy_protocol_from.
func (v *validator) listenNet() {
	l := &v.c.Listen
	line := func(k string) int { return v.lineOf("listen", -1, k) }
	// A value written like "TLS1.0" or "tlsv1.2" is still refused, but the
	// fix names the value meant.
	if _, ok := tlsVersions[l.MinTLSVersion]; !ok {
		msg := fmt.Sprintf("%q is not a TLS version", l.MinTLSVersion)
		s := strings.TrimLeft(strings.ToLower(l.MinTLSVersion), "tlsv ")
		if s == "1" {
			s = "1.0" // "TLSv1" is TLS 1.0
		}
		if tlsVersions[s] != 0 {
			msg += fmt.Sprintf(" (write %q)", s)
		}
		v.add(line("min_tls_version"), "listen.min_tls_version", msg, minTLSFix)
	} else if l.LegacyTLS() {
		hasCert := l.TLSCertFile != ""
		if !hasCert {
			v.warn(line("min_tls_version"), "listen.min_tls_version",
				fmt.Sprintf("is %q but the listener has no TLS certificate, so no client uses TLS at all", l.MinTLSVersion),
				"set tls_cert_file and tls_key_file, or remove min_tls_version")
		} else {
			v.warn(line("min_tls_version"), "listen.min_tls_version",
				fmt.Sprintf("is %q: clients may use TLS %s, which is obsolete (RFC 8996), with CBC cipher suites and RSA key exchange that TLS 1.2 clients never need", l.MinTLSVersion, l.MinTLSVersion),
				`keep it only while old devices need it: the log line "legacy TLS session" and the metric oauthrelay_tls_sessions_total{version="1.0"} (and "1.1") show which still connect; then set "1.2"`)
			// Most old devices know only RSA key exchange (and RSA
			// signatures): an ECDSA certificate locks them out.
			if cert, err := tls.LoadX509KeyPair(l.TLSCertFile, l.TLSKeyFile); err == nil && cert.Leaf != nil && cert.Leaf.PublicKeyAlgorithm != x509.RSA {
				v.warn(line("tls_cert_file"), "listen.tls_cert_file",
					"has a "+cert.Leaf.PublicKeyAlgorithm.String()+" key: devices old enough to need TLS "+l.MinTLSVersion+" mostly know only RSA certificates and RSA key exchange, and cannot connect",
					"use an RSA certificate (2048 bits) for this listener, e.g. openssl req -x509 -newkey rsa:2048 ...")
			}
		}
	}
	l.ProxyPrefixes = l.ProxyPrefixes[:0]
	for _, n := range l.ProxyProtocolFrom {
		p, err := ParseNetwork(n)
		if err != nil {
			v.add(line("proxy_protocol_from"), "listen.proxy_protocol_from", err.Error(),
				`list the load balancers' addresses or networks, like ["10.0.0.5/32", "10.0.1.0/28"]`)
			continue
		}
		l.ProxyPrefixes = append(l.ProxyPrefixes, p)
	}
}

// WriteListener prints, for `oauthrelay check`, what the listener accepts
// from the network in front of it: TLS versions and PROXY protocol.
func (c *Config) WriteListener(w io.Writer) {
	l := &c.Listen
	switch {
	case l.TLSCertFile == "":
		fmt.Fprintln(w, "listener: no TLS (no certificate)")
	case l.LegacyTLS():
		fmt.Fprintf(w, "listener: TLS %s and newer; TLS 1.0/1.1 CBC cipher suites with RSA key exchange enabled for old devices (min_tls_version)\n", l.MinTLSVersion)
	default:
		fmt.Fprintf(w, "listener: TLS %s and newer\n", tlsVersionName(l.TLSMinVersion()))
	}
	if len(l.ProxyPrefixes) > 0 {
		var nets []string
		for _, p := range l.ProxyPrefixes {
			nets = append(nets, p.String())
		}
		fmt.Fprintf(w, "listener: PROXY protocol (v1/v2) required from %s; the address in the header is the client's; a header from any other address is refused\n", strings.Join(nets, ", "))
	}
}

func tlsVersionName(v uint16) string { return strings.TrimPrefix(tls.VersionName(v), "TLS ") }
