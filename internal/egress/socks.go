package egress

import (
	"context"
	"errors"
	"net"
	"net/url"

	"golang.org/x/net/proxy"
)

// reachFailed marks a failure to connect to the SOCKS proxy itself, as
// opposed to the proxy's refusal.
type reachFailed struct{ err *Error }

func (r reachFailed) Error() string { return r.err.Error() }
func (r reachFailed) Unwrap() error { return r.err }

// dialSOCKS opens a connection to addr through the SOCKS5 proxy p. With
// socks5 the name is resolved here and the proxy gets an address; with
// socks5h the proxy gets the name.
func (d *Dialer) dialSOCKS(ctx context.Context, p *url.URL, addr string) (net.Conn, error) {
	target := addr
	if p.Scheme == "socks5" {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		if net.ParseIP(host) == nil {
			r := d.s.Resolver
			if r == nil {
				r = net.DefaultResolver
			}
			ips, err := r.LookupIPAddr(ctx, host)
			if err != nil {
				return nil, err
			}
			if len(ips) == 0 {
				return nil, &net.DNSError{Err: "no address", Name: host, IsNotFound: true}
			}
			target = net.JoinHostPort(ips[0].IP.String(), port)
		}
	}
	var auth *proxy.Auth
	if u := p.User; u != nil && u.Username() != "" {
		pw, _ := u.Password()
		auth = &proxy.Auth{User: u.Username(), Password: pw}
	}
	sd, err := proxy.SOCKS5("tcp", ProxyAddr(p), auth, forwardDialer(func(ctx context.Context, network, a string) (net.Conn, error) {
		c, err := d.reach(ctx, p, addr)
		if err != nil {
			var e *Error
			errors.As(err, &e)
			return nil, reachFailed{e}
		}
		return c, nil
	}))
	if err != nil {
		return nil, &Error{Proxy: p.Redacted(), Target: addr, Reason: err.Error(), Err: err}
	}
	c, err := sd.(proxy.ContextDialer).DialContext(ctx, "tcp", target)
	if err == nil {
		return c, nil
	}
	var rf reachFailed
	if errors.As(err, &rf) {
		return nil, rf.err
	}
	e := &Error{Proxy: p.Redacted(), Target: addr, Reason: "the proxy refused: " + errText(err), Err: err, sentAuth: auth != nil}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		e.Detail = oe.Err.Error()
	}
	e.socksDenied = socksDenied(e.Detail)
	return nil, e
}

// forwardDialer adapts a DialFunc to the proxy package's ContextDialer.
type forwardDialer DialFunc

func (f forwardDialer) Dial(network, addr string) (net.Conn, error) {
	return f(context.Background(), network, addr)
}

func (f forwardDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	return f(ctx, network, addr)
}
