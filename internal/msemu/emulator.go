// Package msemu is an in-process emulator of the two Microsoft 365 services
// the relay talks to: the Entra ID v2 token endpoint (client-credentials
// grant, over HTTPS) and the Exchange Online SMTP AUTH submission server
// (smtp.office365.com:587 with STARTTLS and AUTH XOAUTH2).
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
	// TokenAddr and SMTPAddr optionally fix "host:port" for each listener.
	TokenAddr, SMTPAddr string
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
	// MaxMessageSize is the largest accepted message in bytes; default
	// 35 MB, negative means unlimited. EHLO still advertises SIZE 157286400.
	MaxMessageSize int64
}

// Emulator runs the token endpoint and the SMTP server.
type Emulator struct {
	opts Options
	log  *slog.Logger

	ca      *x509.Certificate
	caPEM   []byte
	tlsCert tls.Certificate
	signKey *rsa.PrivateKey
	kid     string

	tokenLn, smtpLn net.Listener
	httpSrv         *http.Server
	wg              sync.WaitGroup

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

	stats       Stats
	active      map[string]int // authenticated connections per mailbox
	sent        map[string][]time.Time
	rcptLog     map[string][]rcptEntry
	conns       map[net.Conn]struct{}
	connSeq     int
	delivered   []Message
	deliveredCh chan struct{} // closed and replaced on every delivery
	closed      bool
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
	}
	e.resetStatsLocked()
	if err := e.makeCerts(); err != nil {
		return nil, fmt.Errorf("msemu: %w", err)
	}
	return e, nil
}

func (e *Emulator) now() time.Time { return e.opts.Now() }

// Start listens on both addresses and serves in the background.
func (e *Emulator) Start() error {
	tokenAddr := e.opts.TokenAddr
	if tokenAddr == "" {
		tokenAddr = net.JoinHostPort(e.opts.Listen, "0")
	}
	smtpAddr := e.opts.SMTPAddr
	if smtpAddr == "" {
		smtpAddr = net.JoinHostPort(e.opts.Listen, "0")
	}
	tl, err := net.Listen("tcp", tokenAddr)
	if err != nil {
		return fmt.Errorf("msemu: token listener: %w", err)
	}
	sl, err := net.Listen("tcp", smtpAddr)
	if err != nil {
		tl.Close()
		return fmt.Errorf("msemu: smtp listener: %w", err)
	}
	e.tokenLn, e.smtpLn = tl, sl
	e.httpSrv = &http.Server{
		Handler: e.tokenHandler(),
		// Entra ID requires TLS 1.2 as well.
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{e.tlsCert}, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: 30 * time.Second,
		ErrorLog:          slog.NewLogLogger(e.log.Handler(), slog.LevelDebug),
	}
	e.wg.Add(2)
	go func() {
		defer e.wg.Done()
		if err := e.httpSrv.ServeTLS(tl, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			e.log.Error("msemu token server", "err", err)
		}
	}()
	go func() {
		defer e.wg.Done()
		e.serveSMTP(sl)
	}()
	e.log.Info("msemu started", "authority", e.Authority(), "smtp", e.SMTPAddr())
	return nil
}

// Close stops both servers and drops open SMTP connections.
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
	if e.httpSrv != nil {
		err = e.httpSrv.Close()
	}
	if e.smtpLn != nil {
		if cerr := e.smtpLn.Close(); err == nil {
			err = cerr
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
