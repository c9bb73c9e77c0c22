package egress

import (
	"fmt"
	"net"
	"strings"
)

// Error is a proxy's refusal or failure on the way to Microsoft: it could
// not be reached, or it answered CONNECT (or SOCKS5) with something other
// than success. It never holds the proxy's password. The relay treats it as
// transient: mail stays queued until the proxy lets it through.
type Error struct {
	// Proxy is the proxy's URL with the password hidden.
	Proxy string
	// Source is where the proxy setting came from ("[upstream] proxy",
	// "HTTPS_PROXY", an app's proxy_url).
	Source string
	// Target is the host:port the tunnel was for.
	Target string
	// Status is the proxy's HTTP status (407, 403, 502, ...); 0 when it
	// did not answer with one (unreachable, SOCKS5).
	Status int
	// Reason is the proxy's status line or what went wrong.
	Reason string
	// Detail is what the proxy added (Squid's X-Squid-Error, the SOCKS5
	// reply).
	Detail string
	// Err is the underlying error, if any.
	Err error

	unreachable, tlsFailed, sentAuth, socksDenied bool
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "proxy %s", e.Proxy)
	switch {
	case e.Status != 0:
		fmt.Fprintf(&b, " answered %q to CONNECT %s", e.Reason, e.Target)
		if e.Detail != "" {
			fmt.Fprintf(&b, " (%s)", e.Detail)
		}
	case e.Target != "":
		fmt.Fprintf(&b, ": %s (on the way to %s)", e.Reason, e.Target)
	default:
		fmt.Fprintf(&b, ": %s", e.Reason)
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// Unreachable reports whether the proxy itself could not be reached.
func (e *Error) Unreachable() bool { return e.unreachable }

// Fix says what to change: at the proxy, or in the relay's setting.
func (e *Error) Fix() string {
	src := e.Source
	if src == "" {
		src = SourceConfig
	}
	host := e.Target
	if h, _, err := net.SplitHostPort(e.Target); err == nil {
		host = h
	}
	auth := e.Status == 407 || strings.Contains(e.Detail, "authentication")
	switch {
	case e.unreachable:
		return "start the proxy, or check that this host can reach " + e.Proxy + " (firewall, DNS); if the proxy moved, correct " + src +
			". Mail stays queued and is retried"
	case e.tlsFailed:
		return "the https proxy's certificate does not verify: add its CA to [upstream] ca_file, or write http:// in " + src + " if the proxy speaks plain HTTP"
	case auth && e.sentAuth:
		return "the proxy refused the relay's user name and password: correct the user in " + src + " and the password (proxy_password_file). Mail stays queued and is retried"
	case auth:
		return "the proxy wants a login: write the user into " + src + ` (like "http://relay@proxy.example.com:3128") and its password into [upstream] proxy_password_file, ` +
			"or have the proxy's admin allow this host without one. Mail stays queued and is retried"
	case e.Status == 403 || e.socksDenied:
		return "the proxy forbids the way to " + e.Target + ": ask its admin to allow CONNECT from this host to " + e.Target +
			" (Microsoft 365 needs port 443 for tokens and Graph, 587 for SMTP), or list " + host + " in [upstream] no_proxy if it is reachable directly. Mail stays queued and is retried"
	}
	return "the proxy could not open the way to " + e.Target + " (its own DNS or firewall): check the proxy's outbound access to " + e.Target + ". Mail stays queued and is retried"
}

// socksDenied reports whether a SOCKS5 reply means the proxy's rules
// forbid the connection.
func socksDenied(reply string) bool {
	return strings.Contains(reply, "not allowed")
}
