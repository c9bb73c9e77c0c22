package tokens

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
// sources, removed apps are stopped, and kept ones forget their error
// backoff (the admin may have fixed the cause in Entra, which the file does
// not show). On error nothing changes.
func (t *TokenSet) Update(cfg *config.Config) error {
	t.mu.Lock()
	cur := t.sources
	t.mu.Unlock()
	// New sources are built without the lock: loading a certificate can
	// take a while, and deliveries must keep getting tokens meanwhile.
	next := map[string]*tokenEntry{}
	var started, kept []*tokenEntry
	for _, a := range cfg.Apps {
		st := TokenSettings(a, t.roots)
		if old := cur[a.Name]; old != nil && sameSettings(old.settings, st) {
			next[a.Name] = old
			kept = append(kept, old)
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
	for _, e := range started {
		ctx, cancel := context.WithCancel(t.ctx)
		e.cancel = cancel
		e.src.Start(ctx)
	}
	for _, e := range kept {
		e.src.ResetBackoff()
	}
	t.mu.Lock()
	t.sources = next
	t.mu.Unlock()
	for name, e := range cur {
		if next[name] != e {
			e.cancel()
		}
	}
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
