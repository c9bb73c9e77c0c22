package egress

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"net"
	"net/http"
	"net/url"
	"time"
)

// dialConnect opens a tunnel to addr with HTTP CONNECT through p.
func (d *Dialer) dialConnect(ctx context.Context, p *url.URL, addr string) (net.Conn, error) {
	c, err := d.reach(ctx, p, addr)
	if err != nil {
		return nil, err
	}
	fail := func(e *Error) (net.Conn, error) {
		c.Close()
		return nil, e
	}
	// The proxy's answer must come in time and stop at cancellation.
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	req := &http.Request{
		Method: http.MethodConnect,
		URL:    &url.URL{Opaque: addr},
		Host:   addr,
		Header: http.Header{"User-Agent": {"oauthrelay"}},
	}
	sentAuth := false
	if u := p.User; u != nil && u.Username() != "" {
		pw, _ := u.Password()
		req.Header.Set("Proxy-Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(u.Username()+":"+pw)))
		sentAuth = true
	}
	if err := req.Write(c); err != nil {
		stop()
		return fail(&Error{Proxy: p.Redacted(), Target: addr, Reason: "the proxy closed the connection: " + errText(err), Err: err})
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, req)
	if !stop() {
		// Cancelled: the deadline was moved into the past.
		err = ctx.Err()
	}
	if err != nil {
		return fail(&Error{Proxy: p.Redacted(), Target: addr, Reason: "no answer to CONNECT: " + errText(err), Err: err})
	}
	// The body is not read: after a 200 what follows is the tunnel, and
	// after a refusal the connection is closed.
	if resp.StatusCode != http.StatusOK {
		return fail(&Error{Proxy: p.Redacted(), Target: addr, Status: resp.StatusCode, Reason: resp.Status,
			Detail: resp.Header.Get("X-Squid-Error"), sentAuth: sentAuth})
	}
	c.SetDeadline(time.Time{})
	if br.Buffered() > 0 {
		// Bytes the target sent right after the proxy's answer (an SMTP
		// greeting) are already in br.
		return &bufferedConn{Conn: c, r: br}, nil
	}
	return c, nil
}

// bufferedConn reads what a bufio.Reader holds before the connection.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (b *bufferedConn) Read(p []byte) (int, error) { return b.r.Read(p) }

// handshakeProxy does TLS with an https proxy, verifying its certificate.
func handshakeProxy(ctx context.Context, c net.Conn, p *url.URL, roots *x509.CertPool, target string) (net.Conn, error) {
	tc := tls.Client(c, &tls.Config{ServerName: p.Hostname(), RootCAs: roots, MinVersion: tls.VersionTLS12})
	if err := tc.HandshakeContext(ctx); err != nil {
		c.Close()
		return nil, &Error{Proxy: p.Redacted(), Target: target, Reason: "TLS with the proxy failed: " + err.Error(), Err: err, tlsFailed: true}
	}
	return tc, nil
}
