package oauth

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/AzureAD/microsoft-authentication-library-for-go/apps/confidential"

	"github.com/oauthrelay/oauthrelay/internal/backoff"
	"github.com/oauthrelay/oauthrelay/internal/egress"
)

// Options are the runtime hooks of a Source.
type Options struct {
	Now        func() time.Time            // injectable clock; default time.Now
	Logger     *slog.Logger                // default slog.Default()
	OnRequest  func(app string, err error) // called after every request to the token endpoint (metrics)
	HTTPClient *http.Client                // optional override (tests); else built from Egress, ProxyURL and RootCAs, TLS >= 1.2
	// Egress is the relay's way out to Microsoft (its proxy or none); nil
	// means the environment's HTTPS_PROXY, ALL_PROXY and NO_PROXY. An
	// app's ProxyURL overrides its proxy for the token requests.
	Egress *egress.Dialer
	// OnRecovered is called when a token request succeeds after a
	// configuration fault, so that mail held back by it goes at once.
	OnRecovered func(app string)
}

// Status is a Source's state for health checks and metrics.
type Status struct {
	App         string
	ExpiresOn   time.Time // of the cached token; zero if none
	LastError   error     // of the last token request; nil after a success
	LastErrorAt time.Time
	Requests    int64 // token requests made so far
	// CertNotAfter is when the app's certificate credential expires;
	// zero for a client secret.
	CertNotAfter time.Time
}

// cached is a token plus the facts needed to judge its freshness.
type cached struct {
	tok      Token
	issued   time.Time     // our clock when it arrived
	lifetime time.Duration // expires_in
}

// minLeft is the remaining lifetime a token must have to be handed out.
// Normally MinTokenLifetime; a token issued with less lifetime than that
// would otherwise be refetched on every call, so it is allowed to drop to
// half its lifetime instead (logged as a warning when fetched).
func (c cached) minLeft(min time.Duration) time.Duration {
	if c.lifetime > min {
		return min
	}
	return c.lifetime / 2
}

// call is one in-flight token request that any number of callers wait for.
type call struct {
	done chan struct{}
	tok  Token
	err  error
}

// Source hands out access tokens for one app registration.
type Source struct {
	name      string
	scope     string
	minLife   time.Duration
	authHost  string
	secret    string // only for scrubbing error text
	client    confidential.Client
	now       func() time.Time
	log       *slog.Logger
	onRequest func(string, error)
	// after is time.After; tests replace it to run Start in simulated time.
	after func(time.Duration) <-chan time.Time

	mu        sync.Mutex
	tok       *cached
	inflight  *call
	lastErr   error
	lastErrAt time.Time
	failures  int
	retryAt   time.Time
	requests  int64
	changed   chan struct{} // closed and replaced whenever state changes; wakes Start
	jitter    func() float64

	// cert is the certificate credential (nil for a secret), so that a
	// relay running for months still warns as its expiry nears.
	cert       *CertInfo
	certFile   string
	certWarned time.Time

	// acquire asks the token endpoint once (MSAL's client credentials,
	// or the password grant).
	acquire func(ctx context.Context) (string, time.Duration, error)
	// settings and opts rebuild the credential when its files change;
	// credDigest is the certificate file's hash when it was loaded.
	settings   AppSettings
	opts       Options
	credDigest [32]byte
}

// warnCertExpiry logs the certificate's expiry warning, at most once a day.
func (s *Source) warnCertExpiry() {
	if s.cert == nil {
		return
	}
	now := s.now()
	w := s.cert.ExpiryWarning(now)
	if w == "" || (!s.certWarned.IsZero() && now.Sub(s.certWarned) < 24*time.Hour) {
		return
	}
	s.certWarned = now
	if now.After(s.cert.NotAfter) {
		s.log.Error("certificate: "+w, "certificate", s.certFile, "not_after", s.cert.NotAfter)
		return
	}
	s.log.Warn("certificate: "+w, "certificate", s.certFile, "not_after", s.cert.NotAfter)
}

// NewSource validates s, loads its credential and builds the MSAL client.
// It does no network I/O.
func NewSource(s AppSettings, o Options) (*Source, error) {
	name := s.Name
	if name == "" {
		name = s.ClientID
	}
	bad := func(format string, a ...any) error {
		return fmt.Errorf("app %q: "+format, append([]any{name}, a...)...)
	}
	if ps := CheckApp(s); len(ps) > 0 {
		msgs := make([]string, len(ps))
		for i, p := range ps {
			msgs[i] = p.String()
		}
		return nil, bad("%s", strings.Join(msgs, "; "))
	}
	authority := s.Authority
	if authority == "" {
		authority = DefaultAuthority
	}
	if !strings.HasSuffix(authority, "/") {
		authority += "/"
	}
	au, err := url.Parse(authority)
	if err != nil {
		return nil, bad("authority: %v", err) // CheckApp parsed it already
	}
	scope := s.Scope
	if scope == "" {
		scope = DefaultScope
	}
	minLife := s.MinTokenLifetime
	if minLife <= 0 {
		minLife = DefaultMinTokenLifetime
	}

	var cred confidential.Credential
	var cert *CertInfo
	var signer Signer
	var certLabel string
	var msalOpts []confidential.Option
	switch {
	case countCredentials(s) > 1:
		return nil, bad("more than one credential is set: keep one of client_secret, certificate_file and certificate_store (not both)")
	case s.ClientSecret != "":
		cred, err = confidential.NewCredFromSecret(s.ClientSecret)
		if err != nil {
			return nil, bad("client secret: %v", err)
		}
	case s.FederatedTokenFile != "" || s.ManagedIdentity:
		cred, err = federatedCredential(s, au.Host)
		if err != nil {
			return nil, bad("%v", err)
		}
	default:
		var label string
		signer, label, err = certSigner(s)
		if err != nil {
			return nil, bad("%v", err)
		}
		if signer == nil {
			return nil, bad("no credential: set client_secret (or client_secret_file), certificate_file or certificate_store")
		}
		info := Describe(signer.Certificates()[0])
		cert, certLabel = &info, label
		cred = signerCredential(signer, s.SendCertificateChain)
	}

	hc := o.HTTPClient
	if hc == nil {
		hc, err = newHTTPClient(s.ProxyURL, s.RootCAs, o.Egress)
		if err != nil {
			return nil, bad("%v", err)
		}
	}
	msalOpts = append(msalOpts,
		confidential.WithHTTPClient(hc),
		// Instance discovery would call login.microsoftonline.com even for
		// sovereign clouds or a test authority; the authority is configured
		// explicitly, so trust it.
		confidential.WithInstanceDiscovery(false),
		confidential.WithCache(emptyCache{}),
	)
	client, err := confidential.New(authority+s.TenantID, s.ClientID, cred, msalOpts...)
	if err != nil {
		return nil, bad("%v", err)
	}

	src := &Source{
		name:      name,
		scope:     scope,
		minLife:   minLife,
		authHost:  au.Host,
		secret:    s.ClientSecret,
		client:    client,
		now:       o.Now,
		log:       o.Logger,
		onRequest: o.OnRequest,
		after:     time.After,
		changed:   make(chan struct{}),
		jitter:    rand.Float64,
	}
	if src.now == nil {
		src.now = time.Now
	}
	if src.log == nil {
		src.log = slog.Default()
	}
	// The scope tells apart the sources of one app (Exchange, Graph).
	src.log = src.log.With("app", name, "scope", scope)
	src.cert, src.certFile = cert, certLabel
	src.settings, src.opts, src.credDigest = s, o, FileDigest(credentialFile(s))
	src.acquire = func(ctx context.Context) (string, time.Duration, error) {
		res, err := client.AcquireTokenByCredential(ctx, []string{scope})
		if err != nil {
			return "", 0, err
		}
		// MSAL computed ExpiresOn from the wall clock.
		return res.AccessToken, time.Until(res.ExpiresOn).Round(time.Second), nil
	}
	if s.Username != "" {
		g, err := newPasswordGrant(s, signer, authority, scope, hc, src.now)
		if err != nil {
			return nil, bad("%v", err)
		}
		src.acquire = g.acquire
	}
	src.warnCertExpiry()
	return src, nil
}

// Token returns the cached token if it has at least MinTokenLifetime left;
// otherwise it fetches a new one, sharing a single request among all
// concurrent callers. While a failed request's backoff is running it
// returns that failure without contacting the endpoint (see package doc).
func (s *Source) Token(ctx context.Context) (Token, error) {
	s.mu.Lock()
	if t, ok := s.freshLocked(); ok {
		s.mu.Unlock()
		return t, nil
	}
	if s.inflight == nil && s.lastErr != nil && s.now().Before(s.retryAt) {
		err := s.lastErr
		s.mu.Unlock()
		return Token{}, err
	}
	c := s.startLocked()
	s.mu.Unlock()
	select {
	case <-c.done:
		return c.tok, c.err
	case <-ctx.Done():
		return Token{}, ctx.Err()
	}
}

// freshLocked returns the cached token if it may be handed out now.
func (s *Source) freshLocked() (Token, bool) {
	if s.tok == nil {
		return Token{}, false
	}
	if s.tok.tok.ExpiresOn.Sub(s.now()) >= s.tok.minLeft(s.minLife) {
		return s.tok.tok, true
	}
	return Token{}, false
}

// startLocked joins the in-flight request or starts one. The request runs
// detached from any caller's context so that one caller giving up does not
// fail the others; fetchTimeout bounds it.
func (s *Source) startLocked() *call {
	if s.inflight != nil {
		return s.inflight
	}
	c := &call{done: make(chan struct{})}
	s.inflight = c
	go s.fetch(c)
	return c
}

func (s *Source) fetch(c *call) {
	ctx, cancel := context.WithTimeout(context.Background(), fetchTimeout)
	defer cancel()
	s.log.Debug("requesting token")
	s.mu.Lock()
	acquire, settings, secrets := s.acquire, s.settings, []string{s.secret, s.settings.Password}
	s.mu.Unlock()
	asked := s.now()
	access, lifetime, err := acquire(ctx)
	got := s.now()
	var tok Token
	if err == nil {
		// Carry the lifetime over to the injected clock, counted from
		// when the token was asked for: it was issued after that, so the
		// expiry is never later than the endpoint's, even if the clock
		// moved while the request ran (a simulated clock jumps).
		tok = Token{AccessToken: access, ExpiresOn: asked.Add(lifetime)}
	} else if oe := asOAuthError(s.name, err); oe != nil {
		err = oe
	} else {
		oe = classify(s.name, s.authHost, err, secrets...)
		explainFor(oe, settings)
		err = oe
	}
	if s.onRequest != nil {
		s.onRequest(s.name, err)
	}
	// A wrong or expired secret may have been fixed in its file already.
	reread := err != nil && credentialFault(err) && s.rereadCredential()

	s.mu.Lock()
	s.requests++
	recovered := err == nil && s.lastErr != nil && IsPermanent(s.lastErr)
	if err == nil {
		s.tok = &cached{tok: tok, issued: got, lifetime: lifetime}
		s.lastErr, s.failures, s.retryAt = nil, 0, time.Time{}
		s.warnCertExpiry()
	} else {
		s.failures++
		s.lastErr, s.lastErrAt = err, got
		s.retryAt = got.Add(s.backoff(IsPermanent(err), s.failures))
		if reread {
			s.failures, s.retryAt = 0, got // the new credential is tried at once
		}
	}
	retryAt, failures := s.retryAt, s.failures
	s.inflight = nil
	c.tok, c.err = tok, err
	s.notifyLocked()
	s.mu.Unlock()
	// Log before releasing the waiters so the log is complete when Token returns.
	defer close(c.done)

	if err != nil {
		level := slog.LevelWarn
		if IsPermanent(err) {
			level = slog.LevelError
		}
		s.log.Log(context.Background(), level, "token request failed", "err", err.Error(),
			"permanent", IsPermanent(err), "failures", failures, "retry_at", retryAt)
		return
	}
	s.log.Info("token acquired", "expires_on", tok.ExpiresOn, "lifetime", lifetime)
	if recovered && s.opts.OnRecovered != nil {
		s.opts.OnRecovered(s.name)
	}
	if lifetime <= s.minLife {
		s.log.Warn("token lifetime is shorter than min_token_lifetime; using it down to half its lifetime",
			"lifetime", lifetime, "min_token_lifetime", s.minLife)
	}
}

// backoff is the wait after the n-th consecutive failure (n >= 1).
func (s *Source) backoff(permanent bool, n int) time.Duration {
	return backoffDelay(permanent, n, s.jitter())
}

// backoffDelay is the pure backoff rule: doubling from 1s to 5m after
// transient failures, from 1m to 30m after permanent ones; r in [0,1)
// shortens it by up to 20% so that the cap is never exceeded.
func backoffDelay(permanent bool, n int, r float64) time.Duration {
	base, max := time.Second, 5*time.Minute
	if permanent {
		base, max = time.Minute, 30*time.Minute
	}
	return backoff.Shorten(backoff.Doubling(base, max, n), 0.2, r)
}

// notifyLocked wakes the Start loop to recompute its schedule.
func (s *Source) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// Invalidate drops accessToken if it is still the cached token, so the next
// Token call fetches a fresh one. Use it when Exchange refused the token.
func (s *Source) Invalidate(accessToken string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tok != nil && s.tok.tok.AccessToken == accessToken {
		s.tok = nil
		s.log.Info("cached token invalidated")
		s.notifyLocked()
	}
}

// Status reports the Source's state.
func (s *Source) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Status{App: s.name, LastError: s.lastErr, LastErrorAt: s.lastErrAt, Requests: s.requests}
	if s.cert != nil {
		st.CertNotAfter = s.cert.NotAfter
	}
	if s.tok != nil {
		st.ExpiresOn = s.tok.tok.ExpiresOn
	}
	return st
}
