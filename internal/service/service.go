// Package service assembles a running relay from a configuration: the
// spool, the listener, the token sources, the transports, the delivery
// scheduler, and the metrics and health endpoints. `serve`, `demo`, the
// Windows service and the end-to-end tests all start it the same way.
package service

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/oauthrelay/oauthrelay/config"
	"github.com/oauthrelay/oauthrelay/delivery"
	"github.com/oauthrelay/oauthrelay/internal/cluster"
	"github.com/oauthrelay/oauthrelay/internal/egress"
	"github.com/oauthrelay/oauthrelay/metrics"
	"github.com/oauthrelay/oauthrelay/oauth"
	"github.com/oauthrelay/oauthrelay/queue"
	"github.com/oauthrelay/oauthrelay/relay"
	"github.com/oauthrelay/oauthrelay/tokens"
	"github.com/oauthrelay/oauthrelay/transport"
	"github.com/oauthrelay/oauthrelay/transport/graph"
	"github.com/oauthrelay/oauthrelay/transport/submit"
)

// Options replace the parts of the relay that tests and the demo need to
// control. The zero value is what `serve` runs.
type Options struct {
	Logger *slog.Logger
	// Now is every part's clock; nil for real time.
	Now func() time.Time
	// HTTPClient, if set, carries token requests and Graph's.
	HTTPClient *http.Client
	// Dial, if set, opens the TCP connections under the proxy layer: to
	// the proxy, or to Microsoft where traffic goes directly. Tests use it
	// to make direct connections to Microsoft impossible.
	Dial transport.Dialer
	// UpstreamRoots, if set, replaces the pool the upstream's certificate
	// is verified against (the token endpoint keeps the configured one).
	UpstreamRoots *x509.CertPool
	// WrapTokens, if set, wraps the token lookup the transports use.
	WrapTokens func(transport.Tokens) transport.Tokens
	// NoDelivery leaves delivery stopped until StartDelivery.
	NoDelivery bool
	// Delivery tunes the scheduler; zero fields keep its defaults.
	Delivery delivery.Options
	// Cluster tunes the budgets shared through Redis (timeouts, lease
	// TTL); URL, password and node come from [cluster].
	Cluster cluster.Options
}

// Relay is a started relay.
type Relay struct {
	o       Options
	log     *slog.Logger
	mu      sync.Mutex
	cfg     *config.Config
	spool   *queue.Spool
	lock    *queue.Lock
	srv     *relay.Server
	metrics *metrics.Metrics
	roots   *x509.CertPool
	// egress is the way out to Microsoft: the proxy, or directly.
	egress *egress.Dialer
	// cluster holds the budgets shared with other relays (or counts
	// them locally without [cluster] redis).
	cluster *cluster.Cluster

	httpSrv     *http.Server
	smtpAddr    net.Addr
	tlsAddr     net.Addr
	metricsAddr net.Addr
	done        chan error

	// Delivery: the token sources and the scheduler, with what stops them.
	tokens    *tokens.Set
	sched     *delivery.Scheduler
	cancel    context.CancelFunc
	delivered chan struct{}
}

// Start opens the spool (recovering what a crash left), starts the
// listeners, the metrics endpoint and delivery. They run until Shutdown,
// not until a context ends, so that in-flight mail gets its grace period.
func Start(cfg *config.Config, o Options) (*Relay, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	log := o.Logger
	roots, err := tokens.Roots(cfg)
	if err != nil {
		return nil, err
	}
	eg, err := tokens.Egress(cfg, roots, egress.DialFunc(o.Dial))
	if err != nil {
		return nil, err
	}
	// One relay per spool, taken before recovery touches anything: two
	// would deliver the same files.
	lock, err := queue.LockSpool(cfg.Spool.Dir, o.Now())
	if err != nil {
		return nil, err
	}
	spool, _, err := queue.Open(cfg.Spool.Dir, queue.Options{Logger: log, Now: o.Now, Recover: true, Precreate: true})
	if err != nil {
		lock.Release()
		return nil, fmt.Errorf("spool.dir: %w", err)
	}
	m := metrics.New(spool, o.Now)
	cl, err := startCluster(cfg, o, spool)
	if err != nil {
		spool.Close()
		lock.Release()
		return nil, err
	}
	if cfg.Cluster.Redis != "" {
		m.SetCluster(cl)
	}
	srv := relay.NewServer(cfg, spool, relay.ServerOptions{Logger: log, Now: o.Now, Hooks: m.RelayHooks(), Cluster: cl})
	plain, tlsL, err := srv.Listeners()
	if err != nil {
		cl.Close()
		spool.Close()
		lock.Release()
		return nil, err
	}
	closeListeners := func() {
		for _, l := range []net.Listener{plain, tlsL} {
			if l != nil {
				l.Close()
			}
		}
	}
	var metricsLn net.Listener
	if cfg.Metrics.Address != "" {
		metricsLn, err = net.Listen("tcp", cfg.Metrics.Address)
		if err != nil {
			closeListeners()
			cl.Close()
			spool.Close()
			lock.Release()
			return nil, fmt.Errorf("metrics.address %s: %w", cfg.Metrics.Address, err)
		}
	}
	r := &Relay{o: o, log: log, cfg: cfg, spool: spool, lock: lock, srv: srv, metrics: m, roots: roots, egress: eg, cluster: cl, done: make(chan error, 1)}
	m.SetMailboxes(r.mailboxStatus)
	m.SetTokens(r.tokenStatus)
	m.SetLockouts(srv.LockedOut)
	m.SetConfig(r.Config)
	if !o.NoDelivery {
		if err := r.StartDelivery(); err != nil {
			closeListeners()
			if metricsLn != nil {
				metricsLn.Close()
			}
			cl.Close()
			spool.Close()
			lock.Release()
			return nil, err
		}
	}
	go func() { r.done <- srv.Serve(plain, tlsL) }()
	attrs := []any{"spool", cfg.Spool.Dir}
	if plain != nil {
		r.smtpAddr = plain.Addr()
		attrs = append(attrs, "smtp", plain.Addr().String())
	}
	if tlsL != nil {
		r.tlsAddr = tlsL.Addr()
		attrs = append(attrs, "smtps", tlsL.Addr().String())
	}
	if metricsLn != nil {
		r.metricsAddr = metricsLn.Addr()
		r.httpSrv = &http.Server{Handler: m.Handler(), ReadHeaderTimeout: 10 * time.Second}
		go func() {
			if err := r.httpSrv.Serve(metricsLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("metrics endpoint stopped", "error", err.Error())
			}
		}()
		attrs = append(attrs, "metrics", "http://"+metricsLn.Addr().String()+"/metrics")
	}
	log.Info("oauthrelay listening", attrs...)
	log.Info("outbound traffic to Microsoft goes "+eg.Describe(), "proxy", eg.Proxy(), "proxy_source", eg.Source())
	return r, nil
}

// StartDelivery starts the token sources and the scheduler.
func (r *Relay) StartDelivery() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.sched != nil {
		return nil
	}
	cfg := r.cfg
	ctx, cancel := context.WithCancel(context.Background())
	ts, err := tokens.New(ctx, cfg, r.roots, oauth.Options{Logger: r.log, Now: r.o.Now, HTTPClient: r.o.HTTPClient, Egress: r.egress, OnRequest: r.metrics.OnTokenRequest,
		// Mail paused by a refused credential goes as soon as a token comes.
		OnRecovered: func(app string) {
			if s := r.Scheduler(); s != nil {
				s.CredentialRecovered(app)
			}
		}})
	if err != nil {
		cancel()
		return err
	}
	get := transport.Tokens(ts.Get)
	if r.o.WrapTokens != nil {
		get = r.o.WrapTokens(get)
	}
	upRoots := r.roots
	if r.o.UpstreamRoots != nil {
		upRoots = r.o.UpstreamRoots
	}
	deps := transport.Deps{Tokens: get, RootCAs: upRoots, Dial: r.egress.DialContext, Egress: r.egress, HTTPClient: r.o.HTTPClient, Now: r.o.Now, Logger: r.log}
	do := r.o.Delivery
	do.Spool, do.Config, do.Logger, do.Now = r.spool, cfg, r.log, r.o.Now
	do.Transports = Transports(deps)
	do.Hooks = r.metrics.DeliveryHooks()
	if cfg.Cluster.Redis != "" {
		do.Shared = r.cluster
	}
	sched := delivery.New(do)
	done := make(chan struct{})
	r.tokens, r.sched, r.cancel, r.delivered = ts, sched, cancel, done
	go func() {
		defer close(done)
		if err := sched.Run(ctx); err != nil {
			r.log.Error("delivery stopped", "error", err.Error())
		}
	}()
	return nil
}

// Transports are the doors into Microsoft 365, by [[mailbox]] transport.
func Transports(deps transport.Deps) map[string]transport.Transport {
	return map[string]transport.Transport{
		"smtp":  submit.New(deps),
		"hve":   submit.NewHVE(deps),
		"graph": graph.New(deps),
	}
}

// StopDelivery stops the scheduler (in-flight mail gets its grace
// period; what does not finish stays spooled) and the token sources.
func (r *Relay) StopDelivery() {
	r.mu.Lock()
	cancel, done := r.cancel, r.delivered
	r.mu.Unlock()
	if cancel == nil {
		return
	}
	cancel()
	<-done
	r.mu.Lock()
	r.tokens, r.sched, r.cancel, r.delivered = nil, nil, nil, nil
	r.mu.Unlock()
}

// Done reports the listener's end: nil after Shutdown, an error if it
// failed.
func (r *Relay) Done() <-chan error { return r.done }

// Shutdown stops taking mail and winds delivery down; both sides wind down
// at once, within grace for the listener's open sessions.
func (r *Relay) Shutdown(grace time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	stopped := make(chan struct{})
	go func() { r.StopDelivery(); close(stopped) }()
	r.srv.Shutdown(ctx)
	<-stopped
	if r.httpSrv != nil {
		r.httpSrv.Shutdown(ctx)
	}
	r.cluster.Close()
	// The files made ahead of need go before the lock: the next relay's
	// recovery would otherwise remove them under this one.
	r.spool.Close()
	r.lock.Release()
}

// SMTPAddr is the plain listener's address (nil without one).
func (r *Relay) SMTPAddr() net.Addr { return r.smtpAddr }

// TLSAddr is the implicit-TLS listener's address (nil without one).
func (r *Relay) TLSAddr() net.Addr { return r.tlsAddr }

// MetricsAddr is where /metrics, /healthz and /readyz are served (nil
// without [metrics] address).
func (r *Relay) MetricsAddr() net.Addr { return r.metricsAddr }

// Spool is the relay's spool.
func (r *Relay) Spool() *queue.Spool { return r.spool }

// Metrics is the relay's metrics registry and health checks.
func (r *Relay) Metrics() *metrics.Metrics { return r.metrics }

// Egress is the way out to Microsoft in force (the proxy or directly).
func (r *Relay) Egress() *egress.Dialer { return r.egress }

// Config is the configuration in force.
func (r *Relay) Config() *config.Config {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cfg
}

// Scheduler is the running scheduler, nil while delivery is stopped.
func (r *Relay) Scheduler() *delivery.Scheduler {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.sched
}

// Tokens are the running token sources, nil while delivery is stopped.
func (r *Relay) Tokens() *tokens.Set {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.tokens
}

func (r *Relay) mailboxStatus() []delivery.MailboxStatus {
	if s := r.Scheduler(); s != nil {
		return s.Status()
	}
	return nil
}

func (r *Relay) tokenStatus() []tokens.Status {
	if t := r.Tokens(); t != nil {
		return t.Statuses()
	}
	return nil
}

// SetUpstreamRoots replaces the pool the upstream's certificate is
// verified against from the next StartDelivery on (nil: the configured
// one). Tests use it to take trust away from a running relay.
func (r *Relay) SetUpstreamRoots(p *x509.CertPool) {
	r.mu.Lock()
	r.o.UpstreamRoots = p
	r.mu.Unlock()
}
