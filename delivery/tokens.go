package delivery

import (
	"context"
	"crypto/x509"
	"fmt"
	"sync"

	"github.com/oauthrelay/oauthrelay/config"
	"github.com/oauthrelay/oauthrelay/oauth"
)

// TokenSet holds one token source per [[app]] and keeps them across
// reloads unless the app's settings changed, so a reload costs no token
// request and a fixed secret takes effect at once.
type TokenSet struct {
	mu      sync.Mutex
	roots   *x509.CertPool
	opts    oauth.Options
	sources map[string]*tokenEntry
	ctx     context.Context
}

type tokenEntry struct {
	settings oauth.AppSettings
	src      *oauth.Source
	cancel   context.CancelFunc
}

// NewTokenSet builds the sources for cfg. Background refresh runs until
// ctx ends.
func NewTokenSet(ctx context.Context, cfg *config.Config, roots *x509.CertPool, o oauth.Options) (*TokenSet, error) {
	t := &TokenSet{roots: roots, opts: o, sources: map[string]*tokenEntry{}, ctx: ctx}
	if err := t.Update(cfg); err != nil {
		return nil, err
	}
	return t, nil
}

// Update applies a (re)loaded configuration: new or changed apps get new
// sources, removed apps are stopped. On error nothing changes.
func (t *TokenSet) Update(cfg *config.Config) error {
	next := map[string]*tokenEntry{}
	var started []*tokenEntry
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, a := range cfg.Apps {
		st := TokenSettings(a, t.roots)
		if old := t.sources[a.Name]; old != nil && sameSettings(old.settings, st) {
			next[a.Name] = old
			continue
		}
		src, err := oauth.NewSource(st, t.opts)
		if err != nil {
			return fmt.Errorf("app %q: %w", a.Name, err)
		}
		e := &tokenEntry{settings: st, src: src}
		started = append(started, e)
		next[a.Name] = e
	}
	for name, e := range t.sources {
		if next[name] != e {
			e.cancel()
		}
	}
	for _, e := range started {
		ctx, cancel := context.WithCancel(t.ctx)
		e.cancel = cancel
		go e.src.Start(ctx)
	}
	t.sources = next
	return nil
}

func sameSettings(a, b oauth.AppSettings) bool {
	a.RootCAs, b.RootCAs = nil, nil
	return a == b
}

// Get returns the source of an app.
func (t *TokenSet) Get(app string) (TokenSource, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.sources[app]
	if e == nil {
		return nil, fmt.Errorf("no [[app]] named %q", app)
	}
	return e.src, nil
}

// Source returns the concrete source of an app (for status and metrics).
func (t *TokenSet) Source(app string) *oauth.Source {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e := t.sources[app]; e != nil {
		return e.src
	}
	return nil
}

// Statuses reports every app's token state.
func (t *TokenSet) Statuses() []oauth.Status {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []oauth.Status
	for _, e := range t.sources {
		out = append(out, e.src.Status())
	}
	return out
}
