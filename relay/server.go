// Package relay is the listening side of oauthrelay: the SMTP server
// legacy applications talk to, its local authentication and sender
// policy, and the spooling of what it accepts. It never talks to
// Microsoft 365; the spool is all it shares with delivery.
package relay

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/oauthrelay/oauthrelay/config"
	"github.com/oauthrelay/oauthrelay/internal/cluster"
	"github.com/oauthrelay/oauthrelay/queue"
)

// Hooks let the caller count what the listener does (metrics) without the
// listener knowing about Prometheus.
type Hooks struct {
	Accepted func(client string)
	Refused  func(reason string)
	// LockedOut is called when failed logins lock an address out.
	LockedOut func()
	// TLSSession is called for each session over TLS with the version it
	// negotiated ("1.0" ... "1.3").
	TLSSession func(version string)
}

// Server is the listener side of the relay.
type Server struct {
	cfg atomic.Pointer[config.Config]
	// listen is [listen] as it was at start: the listener's addresses,
	// limits and timeouts are fixed then, and everything that reports
	// them must quote what is enforced, not a reloaded value.
	listen config.Listen
	spool  *queue.Spool
	log    *slog.Logger
	hooks  Hooks
	now    func() time.Time
	lim    *limiter
	// budgets counts each client's accepted messages (max_per_minute,
	// max_per_day), shared with other relays when Redis is configured.
	budgets *cluster.Cluster

	mu      sync.Mutex
	servers []*smtp.Server
	// listeners are the ones handed to go-smtp. Shutdown closes them too:
	// go-smtp's Shutdown closes only the listeners its Serve has already
	// registered, so a Serve goroutine that starts after it would accept
	// for ever.
	listeners []net.Listener
	// closed is set by Shutdown, so that a Serve that starts after it
	// closes its listeners rather than serving forever.
	closed     bool
	conns      atomic.Int64
	perIP      ipCounts
	ownReplies sync.Once // warns once if go-smtp's texts cannot be replaced
	rawData    sync.Once // warns once if go-smtp's DATA reader cannot be replaced

	// peerIP decides the address a connection comes from. Tests replace it
	// to play a peer that is not on loopback; production always uses the
	// socket's real address.
	peerIP func(net.Conn) netip.Addr
	// beforeServe, when a test sets it, runs in each listener's goroutine
	// just before go-smtp's Serve, to hold it back past a Shutdown.
	beforeServe func()
}

// ServerOptions are the optional parts of a Server.
type ServerOptions struct {
	Logger *slog.Logger
	Hooks  Hooks
	Now    func() time.Time
	// Cluster counts the clients' rate limits; nil counts them locally.
	Cluster *cluster.Cluster
}

// NewServer makes a listener for cfg that queues into spool.
func NewServer(cfg *config.Config, spool *queue.Spool, o ServerOptions) *Server {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	s := &Server{spool: spool, log: o.Logger, hooks: o.Hooks, now: o.Now, peerIP: remoteIP, budgets: o.Cluster}
	if s.budgets == nil {
		s.budgets, _ = cluster.New(cluster.Options{Now: o.Now})
	}
	s.cfg.Store(cfg)
	s.listen = cfg.Listen
	s.lim = newLimiter(cfg.Listen.AuthMaxFailures, cfg.Listen.AuthLockout.Duration, o.Now)
	return s
}

// SetConfig swaps in a reloaded configuration. Sessions pick it up at
// their next command; listener addresses and TLS files need a restart.
func (s *Server) SetConfig(cfg *config.Config) { s.cfg.Store(cfg) }

// LockedOut counts the addresses locked out of AUTH now.
func (s *Server) LockedOut() int { return s.lim.lockedOut() }

// ClearLockouts lifts every AUTH lockout and forgets every count of
// failed logins; it returns how many addresses were locked out.
func (s *Server) ClearLockouts() int { return s.lim.clear() }

// Config returns the configuration in force.
func (s *Server) Config() *config.Config { return s.cfg.Load() }

// Listeners opens the configured listeners. They are returned so that
// tests and the demo can learn the ports chosen for ":0".
func (s *Server) Listeners() (plain, implicitTLS net.Listener, err error) {
	l := s.listen
	if l.Address != "" {
		plain, err = net.Listen("tcp", l.Address)
		if err != nil {
			return nil, nil, fmt.Errorf("listen.address %s: %w", l.Address, err)
		}
	}
	if l.TLSAddress != "" {
		implicitTLS, err = net.Listen("tcp", l.TLSAddress)
		if err != nil {
			if plain != nil {
				plain.Close()
			}
			return nil, nil, fmt.Errorf("listen.tls_address %s: %w", l.TLSAddress, err)
		}
	}
	return plain, implicitTLS, nil
}

// Serve accepts on the given listeners (either may be nil) until Shutdown.
func (s *Server) Serve(plain, implicitTLS net.Listener) error {
	var tlsConf *tls.Config
	if s.listen.TLSCertFile != "" {
		var err error
		if tlsConf, err = tlsConfig(&s.listen); err != nil {
			return err
		}
		tlsConf.GetConfigForClient = s.tooOldClient(tlsConf.MinVersion)
		if s.listen.LegacyTLS() {
			s.log.Warn("listen.min_tls_version lets TLS "+s.listen.MinTLSVersion+" clients in, with CBC cipher suites and RSA key exchange",
				"fix", "keep it only while old devices need it; the \"legacy TLS session\" log lines name them")
		}
	}
	errc := make(chan error, 2)
	n := 0
	start := func(l net.Listener, implicit bool) {
		srv := s.newSMTPServer(tlsConf)
		// The limit wraps the raw listener so that TLS sits on top: go-smtp
		// recognises TLS connections by their *tls.Conn type.
		// The PROXY header is read under the limits, so that they count
		// the client it names rather than the balancer.
		if len(s.listen.ProxyPrefixes) > 0 {
			l = newProxyListener(l, s, implicit)
		}
		l = &limitListener{Listener: l, s: s, max: int64(s.listen.MaxConnections), implicit: implicit}
		if implicit {
			l = tls.NewListener(l, tlsConf)
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			l.Close()
			return
		}
		s.servers = append(s.servers, srv)
		s.listeners = append(s.listeners, l)
		s.mu.Unlock()
		n++
		go func() {
			if s.beforeServe != nil {
				s.beforeServe()
			}
			errc <- srv.Serve(l)
		}()
	}
	if plain != nil {
		start(plain, false)
	}
	if implicitTLS != nil {
		start(implicitTLS, true)
	}
	if n == 0 {
		if s.isClosed() {
			return nil // shut down before it began, as if after
		}
		return errors.New("no listener configured")
	}
	var first error
	for i := 0; i < n; i++ {
		if err := <-errc; err != nil && !errors.Is(err, smtp.ErrServerClosed) && first == nil {
			first = err
		}
	}
	return first
}

func (s *Server) newSMTPServer(tlsConf *tls.Config) *smtp.Server {
	srv := smtp.NewServer(&backend{s: s})
	srv.Domain = s.listen.Hostname
	srv.TLSConfig = tlsConf
	srv.MaxMessageBytes = int64(s.listen.MaxMessageSize)
	// We enforce recipients ourselves for a clearer reply, and decide per
	// connection whether AUTH may go without TLS (loopback may).
	srv.MaxRecipients = 0
	srv.AllowInsecureAuth = true
	srv.EnableSMTPUTF8 = true
	srv.ReadTimeout = s.listen.IdleTimeout.Duration
	srv.WriteTimeout = time.Minute
	srv.ErrorLog = slogLogger{s.log}
	return srv
}

// isClosed reports whether Shutdown has begun.
func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// Shutdown stops accepting and waits for open sessions to finish, until
// ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	srvs, ls := s.servers, s.listeners
	s.mu.Unlock()
	// A Serve goroutine not yet begun would register its listener after
	// go-smtp's Shutdown has looked: closing them here ends it too, and
	// limitListener then reports ErrServerClosed, which Serve ignores.
	for _, l := range ls {
		l.Close()
	}
	var first error
	for _, srv := range srvs {
		if err := srv.Shutdown(ctx); err != nil && first == nil && !errors.Is(err, net.ErrClosed) {
			first = err
		}
	}
	return first
}

type backend struct{ s *Server }

// NewSession implements smtp.Backend.
func (b *backend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	ss := newSession(b.s, c)
	if !useOwnReplies(c, ss) {
		b.s.ownReplies.Do(func() {
			b.s.log.Warn("go-smtp's reply texts cannot be replaced; clients see go-smtp's own (\"Roger, accepting mail from\")",
				"fix", "a go-smtp upgrade changed its internals: update relay/replywriter.go")
		})
	}
	return ss, nil
}

// remoteIP extracts the peer address of a connection.
func remoteIP(c net.Conn) netip.Addr {
	if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}

type slogLogger struct{ l *slog.Logger }

// Printf logs go-smtp's messages at debug level, except a panic go-smtp
// recovered from (it answers 421 and closes the connection): that is a bug
// an operator must see.
func (l slogLogger) Printf(format string, v ...any) {
	if strings.HasPrefix(format, "panic serving") {
		l.l.Error("smtp: " + fmt.Sprintf(format, v...))
		return
	}
	l.l.Debug("smtp: " + fmt.Sprintf(format, v...))
}

// Println logs go-smtp's messages at debug level.
func (l slogLogger) Println(v ...any) { l.l.Debug("smtp: " + fmt.Sprint(v...)) }
