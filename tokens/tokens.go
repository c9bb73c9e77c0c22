// Package tokens holds the relay's token sources: one per [[app]] and
// resource (Exchange Online for SMTP AUTH and HVE, Microsoft Graph), built
// from the configuration and kept across reloads, so a reload costs no
// token request and a fixed secret takes effect at once.
package tokens

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"fmt"
	"os"
	"sort"
	"sync"

	"github.com/oauthrelay/oauthrelay/config"
	"github.com/oauthrelay/oauthrelay/internal/egress"
	"github.com/oauthrelay/oauthrelay/oauth"
	"github.com/oauthrelay/oauthrelay/transport"
)

// Roots is the pool Microsoft's certificates are verified against, for the
// token endpoint and the upstream alike: the system roots plus [upstream]
// ca_file.
func Roots(cfg *config.Config) (*x509.CertPool, error) {
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if cfg.Upstream.CAFile != "" {
		b, err := os.ReadFile(cfg.Upstream.CAFile)
		if err != nil {
			return nil, fmt.Errorf("upstream.ca_file: %w", err)
		}
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("upstream.ca_file %s: no PEM certificate found", cfg.Upstream.CAFile)
		}
	}
	return pool, nil
}

// Egress is the relay's one way out to Microsoft for cfg, for tokens,
// SMTP, Graph and doctor alike: [upstream] proxy (with
// proxy_password_file and no_proxy) when set, else the environment's
// HTTPS_PROXY or ALL_PROXY with NO_PROXY, else directly. roots verify an
// https proxy; forward opens the TCP connections themselves (nil: a
// net.Dialer).
func Egress(cfg *config.Config, roots *x509.CertPool, forward egress.DialFunc) (*egress.Dialer, error) {
	u := cfg.Upstream
	if u.Proxy == "" {
		return egress.FromEnvironment(os.Getenv, roots, forward)
	}
	d, err := egress.New(egress.Settings{Proxy: u.Proxy, Password: u.ProxyPassword.Reveal(), NoProxy: u.NoProxy,
		Source: egress.SourceConfig, RootCAs: roots}, forward)
	if err != nil {
		return nil, fmt.Errorf("upstream.proxy: %w", err)
	}
	return d, nil
}

// Settings converts an [[app]] for the oauth package, for one resource.
func Settings(a *config.App, r transport.Resource, roots *x509.CertPool) oauth.AppSettings {
	scope := a.Scope
	if r == transport.Graph {
		scope = a.GraphScope
	}
	return oauth.AppSettings{
		Name:                 a.Name,
		TenantID:             a.TenantID,
		ClientID:             a.ClientID,
		Authority:            a.Authority,
		Scope:                scope,
		ClientSecret:         a.Secret.Reveal(),
		CertificateFile:      a.CertificateFile,
		CertificatePassword:  a.CertificatePassword.Reveal(),
		SendCertificateChain: a.SendCertificateChain,
		MinTokenLifetime:     a.MinTokenLifetime.Duration,
		ProxyURL:             a.ProxyURL,
		RootCAs:              roots,

		FederatedTokenFile:      a.FederatedTokenFile,
		ManagedIdentity:         a.ManagedIdentity,
		ManagedIdentityClientID: a.ManagedIdentityClientID,
		Username:                a.Username,
		Password:                a.Password.Reveal(),
		ClientSecretFile:        a.ClientSecretFile,
		PasswordFile:            a.PasswordFile,
		CertificateStore:        a.StoreRef(),
	}
}

// Resources lists the resources an app needs tokens for: Exchange when
// any of its mailboxes uses SMTP AUTH or HVE (or it has none yet, so its
// credential is still checked), Graph when any uses Graph.
func Resources(cfg *config.Config, app string) []transport.Resource {
	var exchange, graph, any bool
	for _, m := range cfg.Mailboxes {
		if m.App != app {
			continue
		}
		any = true
		if m.Transport == "graph" {
			graph = true
		} else {
			exchange = true
		}
	}
	var out []transport.Resource
	if exchange || !any {
		out = append(out, transport.Exchange)
	}
	if graph {
		out = append(out, transport.Graph)
	}
	return out
}

// Status is one source's state, with the resource it serves.
type Status struct {
	oauth.Status
	Resource transport.Resource
	// SecretFromEnv says the app's secret comes from ${VAR}, so fixing it
	// takes a restart, not a reload.
	SecretFromEnv bool
}

type key struct {
	app string
	res transport.Resource
}

// Set holds the token sources of a configuration.
type Set struct {
	mu      sync.Mutex
	roots   *x509.CertPool
	opts    oauth.Options
	sources map[key]*entry
	ctx     context.Context
}

type entry struct {
	settings oauth.AppSettings
	// certSum is the certificate file's digest when the source was built:
	// a certificate renewed in place (same path) is a new credential.
	certSum [sha256.Size]byte
	fromEnv bool
	src     *oauth.Source
	cancel  context.CancelFunc
}

// New builds the sources for cfg. Background refresh runs until ctx ends.
func New(ctx context.Context, cfg *config.Config, roots *x509.CertPool, o oauth.Options) (*Set, error) {
	t := &Set{roots: roots, opts: o, sources: map[key]*entry{}, ctx: ctx}
	if err := t.Update(cfg); err != nil {
		return nil, err
	}
	return t, nil
}

// Update applies a (re)loaded configuration: new or changed apps get new
// sources, removed apps are stopped, and kept ones forget their error
// backoff (the admin may have fixed the cause in Entra, which the file does
// not show). On error nothing changes.
func (t *Set) Update(cfg *config.Config) error {
	t.mu.Lock()
	cur := t.sources
	t.mu.Unlock()
	// New sources are built without the lock: loading a certificate can
	// take a while, and deliveries must keep getting tokens meanwhile.
	next := map[key]*entry{}
	var started, kept []*entry
	for _, a := range cfg.Apps {
		for _, r := range Resources(cfg, a.Name) {
			k := key{a.Name, r}
			st := Settings(a, r, t.roots)
			sum := oauth.FileDigest(st.CertificateFile)
			if old := cur[k]; old != nil && sameSettings(old.settings, st) && old.certSum == sum {
				old.fromEnv = a.SecretFromEnvironment()
				next[k] = old
				kept = append(kept, old)
				continue
			}
			src, err := oauth.NewSource(st, t.opts)
			if err != nil {
				return fmt.Errorf("app %q: %w", a.Name, err)
			}
			e := &entry{settings: st, certSum: sum, src: src, fromEnv: a.SecretFromEnvironment()}
			started = append(started, e)
			next[k] = e
		}
	}
	for _, e := range started {
		ctx, cancel := context.WithCancel(t.ctx)
		e.cancel = cancel
		e.src.Start(ctx)
	}
	for _, e := range kept {
		e.src.ResetBackoff()
		// A certificate file replaced in place has the same settings.
		e.src.RereadCredential()
	}
	t.mu.Lock()
	t.sources = next
	t.mu.Unlock()
	for k, e := range cur {
		if next[k] != e {
			e.cancel()
		}
	}
	return nil
}

func sameSettings(a, b oauth.AppSettings) bool {
	a.RootCAs, b.RootCAs = nil, nil
	return a == b
}

// Get returns the source of an app for a resource.
func (t *Set) Get(app string, r transport.Resource) (transport.TokenSource, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.sources[key{app, r}]
	if e == nil {
		if t.hasApp(app) {
			return nil, fmt.Errorf("app %q has no %s token source: no mailbox of it uses that transport", app, r)
		}
		return nil, fmt.Errorf("no [[app]] named %q", app)
	}
	return e.src, nil
}

func (t *Set) hasApp(app string) bool {
	for k := range t.sources {
		if k.app == app {
			return true
		}
	}
	return false
}

// Statuses reports every source's token state, by app and resource.
func (t *Set) Statuses() []Status {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []Status
	for k, e := range t.sources {
		out = append(out, Status{Status: e.src.Status(), Resource: k.res, SecretFromEnv: e.fromEnv})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].App != out[j].App {
			return out[i].App < out[j].App
		}
		return out[i].Resource < out[j].Resource
	})
	return out
}
