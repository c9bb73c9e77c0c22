package relay

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/oauthrelay/oauthrelay/config"
)

// What one peer may take of the listener: connections per address
// (listen.max_connections_per_ip, or max_connections_per_trusted_ip for
// an address in a client's networks), the time to log in
// (listen.login_timeout, which commands do not extend), and refusals per
// session (listen.max_refused_commands). Each refusal reason is logged
// once per session and counted in a summary line at its end; the metric
// counts every one.

// limitListener answers connections over listen.max_connections, or over
// the limit of their address, with a 421 instead of letting them pile up.
type limitListener struct {
	net.Listener
	s        *Server
	max      int64
	implicit bool
}

// Accept returns the next connection within the limits.
func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			if l.s.isClosed() {
				// Shutdown closed this listener: say so in go-smtp's
				// words, whichever of the two closed it first.
				return nil, smtp.ErrServerClosed
			}
			return nil, err
		}
		ip := l.s.peerIP(c)
		var r *refusal
		switch {
		case l.max > 0 && l.s.conns.Load() >= l.max:
			r = newRefusal(connLimit, l.s.listen.Hostname)
		case !l.s.perIP.take(ip, l.s.ipLimit(ip)):
			r = newRefusal(connLimitIP, l.s.listen.Hostname, ip)
		}
		if r != nil {
			// On the implicit-TLS port a plain-text reply would only read
			// as a broken handshake: replyAndClose just closes.
			replyAndClose(c, l.s.refuse(r), l.implicit)
			continue
		}
		l.s.conns.Add(1)
		cc := &countedConn{Conn: c, s: l.s, ip: ip}
		cc.loginBy.Store(time.Now().Add(l.s.listen.LoginTimeout.Duration).UnixNano())
		return cc, nil
	}
}

// ipLimit is the most connections ip may hold.
func (s *Server) ipLimit(ip netip.Addr) int {
	if inClientNetworks(s.Config(), ip) {
		return s.listen.MaxConnectionsPerTrustedIP
	}
	return s.listen.MaxConnectionsPerIP
}

func inClientNetworks(cfg *config.Config, ip netip.Addr) bool {
	for _, cl := range cfg.Clients {
		if cl.Trusts(ip) {
			return true
		}
	}
	return false
}

// ipCounts counts the open connections of each address.
type ipCounts struct {
	mu sync.Mutex
	n  map[netip.Addr]int
}

// take reserves a connection for ip if it has fewer than max.
func (c *ipCounts) take(ip netip.Addr, max int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[netip.Addr]int{}
	}
	if max > 0 && c.n[ip] >= max {
		return false
	}
	c.n[ip]++
	return true
}

func (c *ipCounts) release(ip netip.Addr) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n[ip]--; c.n[ip] <= 0 {
		delete(c.n, ip)
	}
}

// countedConn is an accepted connection: it holds its places in the
// limits until closed, and until its peer has logged in (or had a sender
// accepted) no read deadline reaches past loginBy.
type countedConn struct {
	net.Conn
	s       *Server
	ip      netip.Addr
	once    sync.Once
	loginBy atomic.Int64 // unix nanoseconds; 0 once the peer got in
	// closingBy is set (unix nanoseconds) once the relay has said 421:
	// what the peer still sends is read and dropped until then, so that
	// closing the socket with unread input does not reset the
	// connection before the peer has read the 421.
	closingBy atomic.Int64
}

// hangupDrain is how long a connection told 421 is read from, and its
// input dropped, before it is closed.
const hangupDrain = 5 * time.Second

// Read reads, or once the connection is closing, drops what the peer
// sends until it stops or hangupDrain passes, and reports the end.
func (c *countedConn) Read(p []byte) (int, error) {
	if c.closingBy.Load() == 0 {
		return c.Conn.Read(p)
	}
	c.Conn.SetReadDeadline(c.clamp(time.Time{}))
	for {
		if _, err := c.Conn.Read(p); err != nil {
			return 0, io.EOF
		}
	}
}

// hangUp ends the session after the reply just written: the peer gets
// the end of the stream after it (top is the connection go-smtp writes
// to: c itself, or TLS over it), and its further input is dropped.
func (c *countedConn) hangUp(top net.Conn) {
	c.closingBy.Store(time.Now().Add(hangupDrain).UnixNano())
	if tc, ok := top.(*tls.Conn); ok {
		tc.CloseWrite()
	} else if tcp, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		tcp.CloseWrite()
	}
}

// Close releases the connection's places in the limits once.
func (c *countedConn) Close() error {
	c.once.Do(func() {
		c.s.conns.Add(-1)
		c.s.perIP.release(c.ip)
	})
	return c.Conn.Close()
}

// SetReadDeadline sets the read deadline, but not past loginBy.
func (c *countedConn) SetReadDeadline(t time.Time) error {
	return c.Conn.SetReadDeadline(c.clamp(t))
}

// SetDeadline sets both deadlines, the read one not past loginBy.
func (c *countedConn) SetDeadline(t time.Time) error {
	if err := c.Conn.SetWriteDeadline(t); err != nil {
		return err
	}
	return c.SetReadDeadline(t)
}

func (c *countedConn) clamp(t time.Time) time.Time {
	for _, by := range []*atomic.Int64{&c.loginBy, &c.closingBy} {
		if n := by.Load(); n != 0 {
			if end := time.Unix(0, n); t.IsZero() || t.After(end) {
				t = end
			}
		}
	}
	return t
}

// loginExpired reports whether the peer has used up login_timeout
// without getting in.
func (c *countedConn) loginExpired() bool {
	n := c.loginBy.Load()
	return n != 0 && !time.Now().Before(time.Unix(0, n))
}

// connOf finds the countedConn under c (under TLS, too), or nil.
func connOf(c net.Conn) *countedConn {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	cc, _ := c.(*countedConn)
	return cc
}

// gotIn lifts login_timeout: the peer logged in or had a sender accepted.
func (ss *session) gotIn() {
	if cc := connOf(ss.conn.Conn()); cc != nil {
		cc.loginBy.Store(0)
	}
}

// refusalLog is a session's account of its refusals: how many of each
// kind (only the first of each is logged) and in all.
type refusalLog struct {
	mu      sync.Mutex
	byKind  map[kind]int
	counted int // those that count against max_refused_commands
	// hangup: the reply being written closes the session; hungUp: it
	// has been written.
	hangup, hungUp atomic.Bool
}

// refuse reports a refusal of this session's peer: the first of its kind
// in the session is logged, every one is counted. The refusal that
// reaches listen.max_refused_commands is answered with a 421 instead, and
// after any 421 the connection is closed.
func (ss *session) refuse(r *refusal, attrs ...any) *smtp.SMTPError {
	if ss.rl.hangup.Load() {
		return r.reply() // the session is over: nothing is written or counted
	}
	ss.rl.mu.Lock()
	if ss.rl.byKind == nil {
		ss.rl.byKind = map[kind]int{}
	}
	ss.rl.byKind[r.kind]++
	first := ss.rl.byKind[r.kind] == 1
	if refusals[r.kind].reason != "" && r.kind != tooManyRcpts {
		ss.rl.counted++
	}
	over := ss.rl.counted >= ss.s.listen.MaxRefusedCommands && refusals[r.kind].code != 421
	ss.rl.mu.Unlock()
	attrs = append(attrs, "remote", ss.ip.String())
	se := ss.s.report(r, first, attrs...)
	if over {
		se = ss.s.refuse(newRefusal(tooManyRefusals, ss.s.listen.Hostname, ss.s.listen.MaxRefusedCommands), attrs...)
	}
	if se.Code == 421 {
		ss.rl.hangup.Store(true)
	}
	return se
}

// closing refuses, quietly, every command go-smtp still reads from its
// buffer after the session was told 421: nothing is written to the peer
// any more, and nothing may be accepted.
func (ss *session) closing() error {
	if ss.rl.hangup.Load() {
		return newRefusal(tooManyRefusals, ss.s.listen.Hostname, ss.s.listen.MaxRefusedCommands).reply()
	}
	return nil
}

// logSummary logs, at the end of a session, how often each refusal that
// was logged only the first time happened.
func (ss *session) logSummary() {
	ss.rl.mu.Lock()
	defer ss.rl.mu.Unlock()
	for k, n := range ss.rl.byKind {
		sp := refusals[k]
		if n > 1 && sp.log != "" {
			ss.s.log.Log(context.Background(), sp.level, sp.log+" (repeated; logged once per session)",
				"reason", sp.reason, "count", n, "remote", ss.ip.String(), "client", ss.clientName())
		}
	}
	ss.rl.byKind = nil
}
