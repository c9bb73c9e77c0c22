// Package msemu is an in-process emulator of the Microsoft 365 services
// the relay talks to: the Entra ID v2 token endpoint (client-credentials
// grant, over HTTPS), the Exchange Online SMTP AUTH submission server
// (smtp.office365.com:587 with STARTTLS and AUTH XOAUTH2), the High Volume
// Email endpoint (smtp-hve.office365.com) and Microsoft Graph's sendMail,
// drafts and attachment upload sessions (over HTTPS, same CA).
//
// Replies, error bodies and token claims follow the project's Microsoft 365
// reference (ms365-reference.md). Tests script faults per attempt (token
// outages, 451 after DATA, dropped connections, 432 on too many connections)
// and read back what was delivered and which tokens were presented.
package msemu

import (
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"
)

// Defaults of the Exchange Online limits for SMTP AUTH client submission
// (reference §4).
const (
	DefaultTokenLifetime       = 3599 * time.Second
	DefaultMaxConnsPerMailbox  = 3
	DefaultMaxPerMinute        = 30
	DefaultMaxRecipientsPerDay = 10000
	DefaultMaxMessageSize      = 35 << 20
	// AdvertisedSize is what EHLO announces, as Exchange Online does,
	// whatever the tenant's actual limit.
	AdvertisedSize = 157286400
	// MaxRecipientsPerMessage is the per-message recipient limit.
	MaxRecipientsPerMessage = 500
)

// Options configures an Emulator. The zero value is usable.
type Options struct {
	// Listen is the host both listeners bind to; default "127.0.0.1".
	// Ports are chosen by the OS unless TokenAddr or SMTPAddr is set.
	Listen string
	// TokenAddr, SMTPAddr, GraphAddr and HVEAddr optionally fix
	// "host:port" for each listener.
	TokenAddr, SMTPAddr, GraphAddr, HVEAddr string
	// AcceptedDomains are the tenant's accepted domains, the only
	// recipients High Volume Email delivers to; default: the domains of
	// the mailboxes added so far.
	AcceptedDomains []string
	// MaxGraphConcurrency bounds concurrent Graph requests per app and
	// mailbox; default 4, negative means unlimited.
	MaxGraphConcurrency int
	// Dir, if set, receives each delivered message as Dir/<n>-<mailbox>.eml
	// (mode 0600) so that demo users can open them.
	Dir string
	// Now is the clock used for tokens, assertions and limits; default time.Now.
	Now func() time.Time
	// Logger gets one line per notable event; default discards.
	Logger *slog.Logger
	// TokenLifetime is the issued tokens' expires_in; default 3599 s.
	TokenLifetime time.Duration
	// MaxConnsPerMailbox bounds concurrent authenticated connections per
	// mailbox; default 3, negative means unlimited.
	MaxConnsPerMailbox int
	// MaxPerMinute bounds messages per mailbox in any rolling 60 s;
	// default 30, negative means unlimited.
	MaxPerMinute int
	// MaxRecipientsPerDay bounds recipients per mailbox in any rolling
	// 24 h; default 10000, negative means unlimited.
	MaxRecipientsPerDay int
	// Hostnames are more names the TLS certificate is valid for, besides
	// localhost and the loopback addresses: made-up names such as
	// smtp.emulator.test that tests let only a proxy resolve.
	Hostnames []string
	// MaxMessageSize is the largest accepted message in bytes; default
	// 35 MB, negative means unlimited. EHLO still advertises SIZE 157286400.
	MaxMessageSize int64
}

// Emulator runs the token endpoint, the SMTP AUTH and High Volume Email
// servers and Graph.
type Emulator struct {
	opts Options
	log  *slog.Logger

	ca      *x509.Certificate
	caPEM   []byte
	tlsCert tls.Certificate
	signKey *rsa.PrivateKey
	kid     string

	tokenLn, smtpLn, graphLn, hveLn net.Listener
	httpSrv, graphSrv               *http.Server
	wg                              sync.WaitGroup

	mu         sync.Mutex
	apps       map[string]*App // by lower-case client ID
	mailboxes  map[string]*Mailbox
	outage     bool
	tokenDelay time.Duration
	lifetime   time.Duration
	tenantOff  bool
	tlsMin     uint16
	tlsMax     uint16

	failData, failRcpt, failConnect, failAuthNext fault
	dropData                                      int
	failRcptAddr                                  map[string]string
	failAuth                                      map[string]string
	graph                                         graphState

	stats       Stats
	active      map[string]int // authenticated connections per mailbox
	sent        map[string][]time.Time
	rcptLog     map[string][]rcptEntry
	conns       map[net.Conn]struct{}
	connSeq     int
	delivered   []Message
	deliveredCh chan struct{} // closed and replaced on every delivery
	closed      bool
	// creds holds issuers, managed identities, users and the token
	// requests seen (federation.go).
	creds credState
}

type rcptEntry struct {
	at time.Time
	n  int
}

// New makes an emulator with a fresh in-memory CA, a server certificate
// valid for 127.0.0.1, ::1 and localhost, and a token signing key.
// Call Start to listen.
func New(o Options) (*Emulator, error) {
	if o.Listen == "" {
		o.Listen = "127.0.0.1"
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.TokenLifetime <= 0 {
		o.TokenLifetime = DefaultTokenLifetime
	}
	if o.MaxConnsPerMailbox == 0 {
		o.MaxConnsPerMailbox = DefaultMaxConnsPerMailbox
	}
	if o.MaxPerMinute == 0 {
		o.MaxPerMinute = DefaultMaxPerMinute
	}
	if o.MaxRecipientsPerDay == 0 {
		o.MaxRecipientsPerDay = DefaultMaxRecipientsPerDay
	}
	if o.MaxMessageSize == 0 {
		o.MaxMessageSize = DefaultMaxMessageSize
	}
	if o.MaxGraphConcurrency == 0 {
		o.MaxGraphConcurrency = DefaultMaxGraphConcurrency
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	e := &Emulator{
		opts:         o,
		log:          log,
		apps:         map[string]*App{},
		mailboxes:    map[string]*Mailbox{},
		lifetime:     o.TokenLifetime,
		tlsMin:       tls.VersionTLS12,
		failRcptAddr: map[string]string{},
		failAuth:     map[string]string{},
		active:       map[string]int{},
		sent:         map[string][]time.Time{},
		rcptLog:      map[string][]rcptEntry{},
		conns:        map[net.Conn]struct{}{},
		deliveredCh:  make(chan struct{}),
		graph:        newGraphState(),
	}
	e.resetStatsLocked()
	if err := e.makeCerts(); err != nil {
		return nil, fmt.Errorf("msemu: %w", err)
	}
	return e, nil
}

func (e *Emulator) now() time.Time { return e.opts.Now() }

// Start listens on all four addresses and serves in the background.
func (e *Emulator) Start() error {
	addrs := []string{e.opts.TokenAddr, e.opts.SMTPAddr, e.opts.GraphAddr, e.opts.HVEAddr}
	names := []string{"token", "smtp", "graph", "hve"}
	lns := make([]net.Listener, len(addrs))
	for i, addr := range addrs {
		if addr == "" {
			addr = net.JoinHostPort(e.opts.Listen, "0")
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			for _, l := range lns[:i] {
				l.Close()
			}
			return fmt.Errorf("msemu: %s listener: %w", names[i], err)
		}
		lns[i] = ln
	}
	e.tokenLn, e.smtpLn, e.graphLn, e.hveLn = lns[0], lns[1], lns[2], lns[3]
	e.httpSrv = e.newHTTPServer(e.tokenHandler())
	e.graphSrv = e.newHTTPServer(e.graphHandler())
	e.graphSrv.ConnContext = e.graphConnContext
	e.wg.Add(4)
	for i, srv := range []*http.Server{e.httpSrv, e.graphSrv} {
		go func() {
			defer e.wg.Done()
			if err := srv.ServeTLS(lns[2*i], "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
				e.log.Error("msemu https server", "err", err)
			}
		}()
	}
	go func() {
		defer e.wg.Done()
		e.serveSMTP(e.smtpLn, false)
	}()
	go func() {
		defer e.wg.Done()
		e.serveSMTP(e.hveLn, true)
	}()
	e.log.Info("msemu started", "authority", e.Authority(), "smtp", e.SMTPAddr(), "graph", e.GraphURL(), "hve", e.HVEAddr())
	return nil
}

// newHTTPServer serves h over TLS with the emulator's certificate.
func (e *Emulator) newHTTPServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler: h,
		// Entra ID and Graph require TLS 1.2 as well.
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{e.tlsCert}, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: 30 * time.Second,
		ErrorLog:          slog.NewLogLogger(e.log.Handler(), slog.LevelDebug),
	}
}

// Close stops all servers and drops open SMTP connections.
func (e *Emulator) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	for c := range e.conns {
		c.Close()
	}
	e.mu.Unlock()
	var err error
	keep := func(cerr error) {
		if err == nil {
			err = cerr
		}
	}
	for _, srv := range []*http.Server{e.httpSrv, e.graphSrv} {
		if srv != nil {
			keep(srv.Close())
		}
	}
	for _, ln := range []net.Listener{e.smtpLn, e.hveLn} {
		if ln != nil {
			keep(ln.Close())
		}
	}
	e.wg.Wait()
	return err
}

// Authority is the base URL of the token service, "https://127.0.0.1:PORT/";
// the token URL is Authority()+tenant+"/oauth2/v2.0/token".
func (e *Emulator) Authority() string {
	if e.tokenLn == nil {
		return ""
	}
	return "https://" + e.tokenLn.Addr().String() + "/"
}

// TokenURL is the token endpoint for tenant.
func (e *Emulator) TokenURL(tenant string) string {
	return e.Authority() + tenant + "/oauth2/v2.0/token"
}

// SMTPAddr is the SMTP listener's "host:port".
func (e *Emulator) SMTPAddr() string {
	if e.smtpLn == nil {
		return ""
	}
	return e.smtpLn.Addr().String()
}

// GraphURL is the Graph service root, "https://127.0.0.1:PORT" (no
// trailing slash); tokens for scope GraphURL()+"/.default" are accepted.
func (e *Emulator) GraphURL() string {
	if e.graphLn == nil {
		return ""
	}
	return "https://" + e.graphLn.Addr().String()
}

// HVEAddr is the High Volume Email SMTP listener's "host:port".
func (e *Emulator) HVEAddr() string {
	if e.hveLn == nil {
		return ""
	}
	return e.hveLn.Addr().String()
}

// CACertPEM is the PEM of the emulator's CA, for the relay's [upstream] ca_file.
func (e *Emulator) CACertPEM() []byte { return append([]byte(nil), e.caPEM...) }

// CertPool is a pool holding only the emulator's CA.
func (e *Emulator) CertPool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(e.ca)
	return p
}

// HTTPClient is an HTTP client that trusts the emulator's CA.
func (e *Emulator) HTTPClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: e.CertPool()},
	}, Timeout: 30 * time.Second}
}
