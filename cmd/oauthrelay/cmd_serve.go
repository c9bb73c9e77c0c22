package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/oauthrelay/oauthrelay/config"
	"github.com/oauthrelay/oauthrelay/delivery"
	"github.com/oauthrelay/oauthrelay/metrics"
	"github.com/oauthrelay/oauthrelay/oauth"
	"github.com/oauthrelay/oauthrelay/queue"
	"github.com/oauthrelay/oauthrelay/relay"
)

func init() {
	register("serve", command{summary: "run the relay: accept mail from applications and deliver it to Microsoft 365", run: runServe})
}

func runServe(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("serve", stderr)
	path := fs.String("config", defaultConfig, "configuration file")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	reload := make(chan struct{}, 1)
	go func() {
		for range hup {
			select {
			case reload <- struct{}{}:
			default:
			}
		}
	}()
	return serve(ctx, *path, stderr, reload)
}

// serve runs the relay from the configuration at path until ctx ends,
// re-reading the configuration whenever reload fires. It returns the exit
// code. The Windows service runs the relay through it too.
func serve(ctx context.Context, path string, stderr io.Writer, reload <-chan struct{}) int {
	cfg, err := config.Load(path)
	if err != nil {
		// No configuration, no log format: say it plainly.
		reportConfig(path, stderr, nil, err)
		return 1
	}
	log := newLogger(cfg.Log, stderr)
	logWarnings(log, cfg)
	r, err := startRelay(cfg, log)
	if err != nil {
		log.Error("cannot start", "error", err.Error())
		return 1
	}
	for {
		select {
		case <-ctx.Done():
			log.Info("shutting down: no new connections; unfinished mail stays queued")
			r.shutdown(30 * time.Second)
			return 0
		case err := <-r.done:
			if err != nil {
				log.Error("listener stopped", "error", err.Error())
				r.shutdown(30 * time.Second)
				return 1
			}
			return 0
		case <-reload:
			r.reload(path)
		}
	}
}

// running is a started relay: listener, spool, delivery, and the metrics
// and health endpoints.
type running struct {
	cfg     *config.Config
	log     *slog.Logger
	spool   *queue.Spool
	srv     *relay.Server
	tokens  *delivery.TokenSet
	sched   *delivery.Scheduler
	metrics *metrics.Metrics
	// httpSrv serves /metrics, /healthz and /readyz; nil without
	// [metrics] address. metricsAddr is where it listens.
	httpSrv     *http.Server
	metricsAddr net.Addr
	// smtpAddr is the plain listener's address (nil without one).
	smtpAddr net.Addr
	done     chan error
	// delivered is closed when the scheduler has stopped.
	delivered chan struct{}
	cancel    context.CancelFunc
}

// startRelay starts the listener, the metrics server and delivery; they run
// until shutdown, not until a context ends, so that in-flight mail gets its
// grace period.
func startRelay(cfg *config.Config, log *slog.Logger) (*running, error) {
	roots, err := delivery.UpstreamRoots(cfg)
	if err != nil {
		return nil, err
	}
	spool, _, err := queue.Open(cfg.Spool.Dir, queue.Options{Logger: log, Recover: true})
	if err != nil {
		return nil, fmt.Errorf("spool.dir: %w", err)
	}
	m := metrics.New(spool, nil)
	dctx, cancel := context.WithCancel(context.Background())
	tokens, err := delivery.NewTokenSet(dctx, cfg, roots, oauth.Options{Logger: log, OnRequest: m.OnTokenRequest})
	if err != nil {
		cancel()
		return nil, err
	}
	srv := relay.NewServer(cfg, spool, relay.ServerOptions{Logger: log, Hooks: m.RelayHooks()})
	plain, tlsL, err := srv.Listeners()
	if err != nil {
		cancel()
		return nil, err
	}
	var metricsLn net.Listener
	if cfg.Metrics.Address != "" {
		metricsLn, err = net.Listen("tcp", cfg.Metrics.Address)
		if err != nil {
			cancel()
			for _, l := range []net.Listener{plain, tlsL} {
				if l != nil {
					l.Close()
				}
			}
			return nil, fmt.Errorf("metrics.address %s: %w", cfg.Metrics.Address, err)
		}
	}
	sched := delivery.New(delivery.Options{Spool: spool, Config: cfg, Tokens: tokens.Get, RootCAs: roots, Logger: log, Hooks: m.DeliveryHooks()})
	m.SetTokens(tokens.Statuses)
	m.SetMailboxes(sched.Status)
	r := &running{cfg: cfg, log: log, spool: spool, srv: srv, tokens: tokens, sched: sched, metrics: m,
		done: make(chan error, 1), delivered: make(chan struct{}), cancel: cancel}
	go func() { r.done <- srv.Serve(plain, tlsL) }()
	go func() {
		defer close(r.delivered)
		if err := sched.Run(dctx); err != nil {
			log.Error("delivery stopped", "error", err.Error())
		}
	}()
	attrs := []any{"spool", cfg.Spool.Dir}
	if plain != nil {
		r.smtpAddr = plain.Addr()
		attrs = append(attrs, "smtp", plain.Addr().String())
	}
	if tlsL != nil {
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
	return r, nil
}

func (r *running) shutdown(grace time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	// Both sides wind down at once: deliveries in flight get the
	// scheduler's grace period (what does not finish stays spooled) while
	// the listener waits for open sessions to end.
	r.cancel()
	r.srv.Shutdown(ctx)
	<-r.delivered
	if r.httpSrv != nil {
		r.httpSrv.Shutdown(ctx)
	}
}

// reload re-reads the configuration. Clients, senders, mailboxes and apps
// take effect at once: sessions pick up the new configuration at their
// next command and delivery at its next message, so no connection or mail
// is dropped. An invalid file changes nothing and every problem is logged.
func (r *running) reload(path string) bool {
	cfg, err := config.Load(path)
	if err != nil {
		var ce *config.Error
		if errors.As(err, &ce) {
			for _, p := range ce.Problems {
				r.log.Error("reload refused: "+p.String(), "file", path)
			}
		} else {
			r.log.Error("reload refused: "+err.Error(), "file", path)
		}
		r.log.Error("reload refused: the new configuration is invalid; the old one stays in force", "file", path)
		return false
	}
	if err := r.tokens.Update(cfg); err != nil {
		r.log.Error("reload refused: an app's credential cannot be loaded; the old configuration stays in force", "file", path, "error", err.Error())
		return false
	}
	logWarnings(r.log, cfg)
	old := r.cfg
	restart := func(key string, was, now any) {
		if w, n := fmt.Sprint(was), fmt.Sprint(now); w != n {
			r.log.Warn("reload: "+key+" changed; it takes effect only after a restart", "in_force", w, "configured", n)
		}
	}
	restart("listen.address", old.Listen.Address, cfg.Listen.Address)
	restart("listen.tls_address", old.Listen.TLSAddress, cfg.Listen.TLSAddress)
	restart("listen.tls_cert_file", old.Listen.TLSCertFile, cfg.Listen.TLSCertFile)
	restart("listen.tls_key_file", old.Listen.TLSKeyFile, cfg.Listen.TLSKeyFile)
	// The listener's limits and timeouts are set when it starts.
	restart("listen.hostname", old.Listen.Hostname, cfg.Listen.Hostname)
	restart("listen.max_message_size", old.Listen.MaxMessageSize, cfg.Listen.MaxMessageSize)
	restart("listen.idle_timeout", old.Listen.IdleTimeout, cfg.Listen.IdleTimeout)
	restart("listen.data_timeout", old.Listen.DataTimeout, cfg.Listen.DataTimeout)
	restart("listen.max_connections", old.Listen.MaxConnections, cfg.Listen.MaxConnections)
	restart("listen.auth_max_failures", old.Listen.AuthMaxFailures, cfg.Listen.AuthMaxFailures)
	restart("listen.auth_lockout", old.Listen.AuthLockout, cfg.Listen.AuthLockout)
	restart("log.format", old.Log.Format, cfg.Log.Format)
	restart("log.level", old.Log.Level, cfg.Log.Level)
	restart("spool.dir", old.Spool.Dir, cfg.Spool.Dir)
	restart("metrics.address", old.Metrics.Address, cfg.Metrics.Address)
	restart("upstream.ca_file", old.Upstream.CAFile, cfg.Upstream.CAFile)
	r.cfg = cfg
	r.srv.SetConfig(cfg)
	r.sched.SetConfig(cfg)
	r.log.Info("configuration reloaded", "file", path, "clients", len(cfg.Clients), "mailboxes", len(cfg.Mailboxes), "apps", len(cfg.Apps))
	return true
}

// logWarnings logs a configuration's warnings in the log's own format, at
// start and at every reload alike.
func logWarnings(log *slog.Logger, cfg *config.Config) {
	for _, w := range cfg.Warnings {
		log.Warn("configuration warning: " + w.String())
	}
}
