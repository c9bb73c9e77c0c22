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
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
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

// App is an app registration in Entra ID together with its Exchange
// Online service principal.
type App struct {
	TenantID, ClientID string
	// Secrets are the accepted client secret values.
	Secrets []string
	// ExpiredSecrets are recognised but expired (AADSTS7000222).
	ExpiredSecrets []string
	// Certificates are the uploaded public certificates, matched by the
	// assertion's x5t#S256 or x5t thumbprint (or x5c).
	Certificates []*x509.Certificate
	// Consent means admin consent for SMTP.SendAsApp was granted, so the
	// token carries roles ["SMTP.SendAsApp"].
	Consent bool
	// ServicePrincipal means New-ServicePrincipal was run in Exchange;
	// without it AUTH fails with 535 5.7.3.
	ServicePrincipal bool
	// ObjectID is the service principal's object id (oid claim);
	// generated when empty.
	ObjectID string
}

// Mailbox is an Exchange Online mailbox.
type Mailbox struct {
	Address string
	// FullAccess lists client IDs granted Add-MailboxPermission FullAccess,
	// which may AUTH as this mailbox.
	FullAccess []string
	// SendAs lists other From addresses this mailbox may send as
	// (Add-RecipientPermission SendAs).
	SendAs []string
	// SMTPAuthDisabled is Set-CASMailbox -SmtpClientAuthenticationDisabled $true.
	SMTPAuthDisabled bool
}

// Message is one message accepted by the SMTP server.
type Message struct {
	Mailbox, AppID, MailFrom string
	Rcpts                    []string
	// Data is the message exactly as received (after dot-unstuffing).
	Data []byte
	// QueueID is the message id quoted in the 250 reply, with brackets.
	QueueID string
	At      time.Time
	// ConnID numbers SMTP connections from 1, so tests can tell whether
	// messages shared a connection.
	ConnID int
}

// AuthRecord describes one AUTH XOAUTH2 attempt.
type AuthRecord struct {
	Mailbox, AppID string
	At             time.Time
	// Expires is the presented token's exp; zero if it did not parse.
	Expires time.Time
	// Remaining is Expires-At: tests assert it never falls below the
	// relay's minimum lifetime.
	Remaining time.Duration
	OK        bool
	// Reply is the server's reply line.
	Reply  string
	ConnID int
}

// Stats counts what the emulator has seen since New or ResetStats.
type Stats struct {
	TokenRequests          int64
	TokenRequestsByClient  map[string]int64
	TokensIssued           int64
	Connections            int64
	MaxConcurrentByMailbox map[string]int
	AuthFailures           int64
	AuthTokens             []AuthRecord
}

type fault struct {
	n     int
	reply string
}

// take consumes one shot of the fault, returning its reply.
func (f *fault) take() (string, bool) {
	if f.n <= 0 {
		return "", false
	}
	f.n--
	return f.reply, true
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

// AddApp registers an app, replacing any app with the same client ID.
func (e *Emulator) AddApp(a App) {
	if a.ObjectID == "" {
		a.ObjectID = newGUID()
	}
	a.Secrets = append([]string(nil), a.Secrets...)
	a.ExpiredSecrets = append([]string(nil), a.ExpiredSecrets...)
	a.Certificates = append([]*x509.Certificate(nil), a.Certificates...)
	e.mu.Lock()
	defer e.mu.Unlock()
	e.apps[strings.ToLower(a.ClientID)] = &a
}

// AddMailbox creates or replaces a mailbox.
func (e *Emulator) AddMailbox(m Mailbox) {
	m.FullAccess = append([]string(nil), m.FullAccess...)
	m.SendAs = append([]string(nil), m.SendAs...)
	e.mu.Lock()
	defer e.mu.Unlock()
	e.mailboxes[strings.ToLower(m.Address)] = &m
}

// Provision grants everything an admin would for app-only SMTP: the app
// with a secret, admin consent and a service principal, and FullAccess on
// each mailbox (created if missing).
func (e *Emulator) Provision(tenantID, clientID, secret string, mailboxes ...string) {
	e.mu.Lock()
	a, ok := e.apps[strings.ToLower(clientID)]
	var app App
	if ok && strings.EqualFold(a.TenantID, tenantID) {
		app = *a
	} else {
		app = App{TenantID: tenantID, ClientID: clientID}
	}
	e.mu.Unlock()
	if secret != "" && !contains(app.Secrets, secret) {
		app.Secrets = append(app.Secrets, secret)
	}
	app.Consent, app.ServicePrincipal = true, true
	e.AddApp(app)
	for _, addr := range mailboxes {
		e.mu.Lock()
		m, ok := e.mailboxes[strings.ToLower(addr)]
		var mb Mailbox
		if ok {
			mb = *m
		} else {
			mb = Mailbox{Address: addr}
		}
		e.mu.Unlock()
		if !contains(mb.FullAccess, clientID) {
			mb.FullAccess = append(mb.FullAccess, clientID)
		}
		e.AddMailbox(mb)
	}
}

// SetTokenOutage makes the token endpoint answer 503 temporarily_unavailable.
func (e *Emulator) SetTokenOutage(on bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.outage = on
}

// SetTokenDelay delays every token endpoint answer by d.
func (e *Emulator) SetTokenDelay(d time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.tokenDelay = d
}

// SetTokenLifetime changes the lifetime of tokens issued from now on.
func (e *Emulator) SetTokenLifetime(d time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.lifetime = d
}

// SetTenantSMTPAuthDisabled is Set-TransportConfig
// -SmtpClientAuthenticationDisabled: every AUTH gets 535 5.7.139.
func (e *Emulator) SetTenantSMTPAuthDisabled(on bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.tenantOff = on
}

// FailNextData answers the next n DATA transactions (after the final dot)
// with reply, a full reply line such as
// "451 4.7.0 Temporary server error. Please try again later. PRX4".
func (e *Emulator) FailNextData(n int, reply string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.failData = fault{n, reply}
}

// FailNextRcpt answers the next n RCPT commands with reply.
func (e *Emulator) FailNextRcpt(n int, reply string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.failRcpt = fault{n, reply}
}

// FailRcptAddress answers every RCPT for addr with reply; "" clears.
func (e *Emulator) FailRcptAddress(addr, reply string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if reply == "" {
		delete(e.failRcptAddr, strings.ToLower(addr))
		return
	}
	e.failRcptAddr[strings.ToLower(addr)] = reply
}

// DropAfterData makes the next n messages read the whole DATA and then
// close the TCP connection without replying; they are not delivered.
func (e *Emulator) DropAfterData(n int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.dropData = n
}

// FailAuth answers every AUTH for mailbox with reply; "" clears.
func (e *Emulator) FailAuth(mailbox, reply string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if reply == "" {
		delete(e.failAuth, strings.ToLower(mailbox))
		return
	}
	e.failAuth[strings.ToLower(mailbox)] = reply
}

// FailNextAuth answers the next n AUTH commands, whatever the mailbox,
// with reply.
func (e *Emulator) FailNextAuth(n int, reply string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.failAuthNext = fault{n, reply}
}

// FailNextConnect answers the next n connections with reply instead of
// the greeting, then closes them (e.g. "432 4.3.2 Concurrent connections
// limit exceeded." or "421 4.3.2 Service not available").
func (e *Emulator) FailNextConnect(n int, reply string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.failConnect = fault{n, reply}
}

// SetAcceptedTLSMin sets the oldest TLS version the SMTP server accepts;
// default TLS 1.2. An older client completes the handshake, as with
// Exchange Online, and then gets 421 4.7.66 and is disconnected.
func (e *Emulator) SetAcceptedTLSMin(v uint16) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.tlsMin = v
}

// SetTLSMax caps the newest TLS version the SMTP server negotiates after
// STARTTLS (0: no cap), to play a server that only speaks TLS 1.0 or 1.1.
func (e *Emulator) SetTLSMax(v uint16) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.tlsMax = v
}

// Delivered returns a copy of the messages accepted so far.
func (e *Emulator) Delivered() []Message {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]Message(nil), e.delivered...)
}

// WaitDelivered waits until at least n messages were delivered and
// returns them all, or returns ctx's error with what has arrived.
func (e *Emulator) WaitDelivered(ctx context.Context, n int) ([]Message, error) {
	for {
		e.mu.Lock()
		ch := e.deliveredCh
		if len(e.delivered) >= n {
			msgs := append([]Message(nil), e.delivered...)
			e.mu.Unlock()
			return msgs, nil
		}
		e.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return e.Delivered(), ctx.Err()
		}
	}
}

// Stats returns a copy of the counters.
func (e *Emulator) Stats() Stats {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := e.stats
	s.TokenRequestsByClient = map[string]int64{}
	for k, v := range e.stats.TokenRequestsByClient {
		s.TokenRequestsByClient[k] = v
	}
	s.MaxConcurrentByMailbox = map[string]int{}
	for k, v := range e.stats.MaxConcurrentByMailbox {
		s.MaxConcurrentByMailbox[k] = v
	}
	s.AuthTokens = append([]AuthRecord(nil), e.stats.AuthTokens...)
	return s
}

// ResetStats zeroes the counters (not the delivered messages, nor the
// rate and quota windows).
func (e *Emulator) ResetStats() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.resetStatsLocked()
}

func (e *Emulator) resetStatsLocked() {
	e.stats = Stats{
		TokenRequestsByClient:  map[string]int64{},
		MaxConcurrentByMailbox: map[string]int{},
	}
	// Keep the high-water mark honest for connections still open.
	for m, n := range e.active {
		if n > 0 {
			e.stats.MaxConcurrentByMailbox[m] = n
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if strings.EqualFold(x, s) {
			return true
		}
	}
	return false
}

// newGUID returns a random version-4 UUID, as Entra's ids look.
func newGUID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
