package relay

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/pires/go-proxyproto"
)

// The PROXY protocol (listen.proxy_protocol_from): a load balancer in
// front of the relay opens each connection with a header naming the client
// it forwards. proxyListener reads it before anything else sees the
// connection, so that the client's address is the connection's
// RemoteAddr: the one limits, trust, lockout, logs and Received: use.

// proxyHeaderTimeout bounds the wait for a balancer's header, which it
// sends at once (go-proxyproto's default is the same).
const proxyHeaderTimeout = 10 * time.Second

// proxyListener hands out connections whose PROXY header (if their peer
// must send one) has been read. Headers are read in a goroutine per
// connection so that one slow peer does not hold up the others' accepts.
type proxyListener struct {
	net.Listener
	s        *Server
	implicit bool
	ready    chan net.Conn
	errs     chan error
	done     chan struct{}
	once     sync.Once
}

func newProxyListener(l net.Listener, s *Server, implicit bool) *proxyListener {
	pl := &proxyListener{Listener: l, s: s, implicit: implicit,
		ready: make(chan net.Conn), errs: make(chan error), done: make(chan struct{})}
	go pl.acceptLoop()
	return pl
}

// Accept returns the next connection whose header, if needed, was read.
func (l *proxyListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ready:
		return c, nil
	case err := <-l.errs:
		return nil, err
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close stops accepting; connections still being read are closed.
func (l *proxyListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return l.Listener.Close()
}

func (l *proxyListener) acceptLoop() {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			// go-smtp retries temporary errors (and paces itself);
			// anything else ends its Serve, and this loop.
			select {
			case l.errs <- err:
			case <-l.done:
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Temporary() { //nolint:staticcheck // as go-smtp decides
				continue
			}
			return
		}
		go l.handshake(c)
	}
}

// handshake reads the PROXY header of a connection from a listed balancer,
// or, from anyone else, arranges for a header to be refused.
func (l *proxyListener) handshake(c net.Conn) {
	peer := remoteIP(c)
	if !l.s.listen.ProxyProtocol(peer) {
		l.hand(&noProxyConn{Conn: c, s: l.s, implicit: l.implicit, peer: peer})
		return
	}
	br := bufio.NewReader(c)
	h, err := proxyproto.ReadHeaderTimeout(c, br, proxyHeaderTimeout)
	if err != nil || h == nil {
		attrs := []any{"remote", peer.String()}
		if err != nil && !errors.Is(err, proxyproto.ErrNoProxyProtocol) {
			attrs = append(attrs, "error", err.Error())
		}
		replyAndClose(c, l.s.refuse(newRefusal(proxyHeaderMissing, l.s.listen.Hostname, peer), attrs...), l.implicit)
		return
	}
	pc := &proxiedConn{Conn: c, r: br, remote: c.RemoteAddr()}
	// LOCAL (a balancer's health check) and UNKNOWN carry no client: the
	// connection is the balancer's own, as the protocol says.
	if src, ok := h.SourceAddr.(*net.TCPAddr); ok && !h.Command.IsLocal() && !h.TransportProtocol.IsUnspec() {
		pc.remote = src
	}
	cmd := "PROXY"
	if h.Command.IsLocal() {
		cmd = "LOCAL"
	}
	l.s.log.Debug("PROXY header", "remote", pc.remote.String(), "balancer", peer.String(), "version", int(h.Version), "command", cmd)
	l.hand(pc)
}

// hand passes c to Accept, or closes it if the listener closed first.
func (l *proxyListener) hand(c net.Conn) {
	select {
	case l.ready <- c:
	case <-l.done:
		c.Close()
	}
}

// proxiedConn is a connection from a balancer, after its header: reads
// come from the buffer the header was read through, and RemoteAddr is
// the client's.
type proxiedConn struct {
	net.Conn
	r      *bufio.Reader
	remote net.Addr
}

// Read reads what followed the header.
func (c *proxiedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// RemoteAddr is the client's address from the header.
func (c *proxiedConn) RemoteAddr() net.Addr { return c.remote }

// CloseWrite half-closes the connection (countedConn.hangUp).
func (c *proxiedConn) CloseWrite() error { return closeWrite(c.Conn) }

// noProxyConn is a connection from a peer that may not send a PROXY
// header. Such a peer sends nothing before the greeting, so the check
// waits for its first read: a header there is refused with a reply and
// the end of the connection, rather than read as SMTP commands (a v2
// header's signature ends in "QUIT").
type noProxyConn struct {
	net.Conn
	s        *Server
	implicit bool
	peer     netip.Addr
	once     sync.Once
	r        *bufio.Reader
	refused  bool
}

// Read checks the peer's first bytes for a PROXY header, then reads.
func (c *noProxyConn) Read(p []byte) (int, error) {
	var err error
	c.once.Do(func() { err = c.check() })
	if c.refused {
		return 0, io.EOF
	}
	if err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// check looks for a header: proxyproto.Read leaves other input in the
// buffer, and a read error (the idle timeout) is the session's to see.
func (c *noProxyConn) check() error {
	c.r = bufio.NewReader(c.Conn)
	h, err := proxyproto.Read(c.r)
	switch {
	case h != nil:
	case errors.Is(err, proxyproto.ErrNoProxyProtocol):
		return nil
	case isIOError(err):
		return err
	}
	// A header, or the signature of one with a broken rest.
	c.refused = true
	replyAndClose(c.Conn, c.s.refuse(newRefusal(proxyHeaderRefused, c.s.listen.Hostname, c.peer), "remote", c.peer.String()), c.implicit)
	return nil
}

// CloseWrite half-closes the connection (countedConn.hangUp).
func (c *noProxyConn) CloseWrite() error { return closeWrite(c.Conn) }

// closeWrite half-closes c if it can (a TCP connection).
func closeWrite(c net.Conn) error {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// replyAndClose writes a refusal in place of the greeting and closes c.
// On the implicit-TLS port a plain-text reply would only read as a
// broken handshake, so there it just closes.
func replyAndClose(c net.Conn, se *smtp.SMTPError, implicit bool) {
	if !implicit {
		c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, wireText(se)+"\r\n")
	}
	c.Close()
}

// isIOError tells a failed read (timeout, reset, end of stream) from
// go-proxyproto's verdicts on the bytes it read.
func isIOError(err error) bool {
	var ne net.Error
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.As(err, &ne) || errors.Is(err, net.ErrClosed)
}
