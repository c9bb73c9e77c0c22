package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/oauthrelay/oauthrelay/config"
	"github.com/oauthrelay/oauthrelay/delivery"
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
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, ok := loadConfig(*path, stderr)
	if !ok {
		return 1
	}
	log := newLogger(cfg.Log, stderr)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	r, err := startRelay(ctx, cfg, log)
	if err != nil {
		log.Error("cannot start", "error", err.Error())
		return 1
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
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
		case <-hup:
			r.reload(*path)
		}
	}
}

// running is a started relay: listener, spool and delivery.
type running struct {
	cfg    *config.Config
	log    *slog.Logger
	spool  *queue.Spool
	srv    *relay.Server
	tokens *delivery.TokenSet
	sched  *delivery.Scheduler
	done   chan error
	// delivered is closed when the scheduler has stopped.
	delivered chan struct{}
	cancel    context.CancelFunc
}

func startRelay(ctx context.Context, cfg *config.Config, log *slog.Logger) (*running, error) {
	spool, _, err := queue.Open(cfg.Spool.Dir, queue.Options{Logger: log, Recover: true})
	if err != nil {
		return nil, fmt.Errorf("spool.dir: %w", err)
	}
	roots, err := delivery.UpstreamRoots(cfg)
	if err != nil {
		return nil, err
	}
	dctx, cancel := context.WithCancel(context.Background())
	tokens, err := delivery.NewTokenSet(dctx, cfg, roots, oauth.Options{Logger: log})
	if err != nil {
		cancel()
		return nil, err
	}
	srv := relay.NewServer(cfg, spool, relay.ServerOptions{Logger: log})
	plain, tlsL, err := srv.Listeners()
	if err != nil {
		cancel()
		return nil, err
	}
	sched := delivery.New(delivery.Options{Spool: spool, Config: cfg, Tokens: tokens.Get, RootCAs: roots, Logger: log})
	r := &running{cfg: cfg, log: log, spool: spool, srv: srv, tokens: tokens, sched: sched,
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
		attrs = append(attrs, "smtp", plain.Addr().String())
	}
	if tlsL != nil {
		attrs = append(attrs, "smtps", tlsL.Addr().String())
	}
	log.Info("oauthrelay listening", attrs...)
	return r, nil
}

func (r *running) shutdown(grace time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	r.srv.Shutdown(ctx)
	// Deliveries in flight get the scheduler's grace period; what does
	// not finish stays spooled.
	r.cancel()
	<-r.delivered
}

// reload re-reads the configuration; an invalid file changes nothing.
func (r *running) reload(path string) {
	cfg, err := config.Load(path)
	if err != nil {
		r.log.Error("reload refused: the new configuration is invalid; the old one stays in force", "error", err.Error())
		return
	}
	if err := r.tokens.Update(cfg); err != nil {
		r.log.Error("reload refused: an app's credential cannot be loaded; the old configuration stays in force", "error", err.Error())
		return
	}
	r.cfg = cfg
	r.srv.SetConfig(cfg)
	r.sched.SetConfig(cfg)
	r.log.Info("configuration reloaded", "file", path, "clients", len(cfg.Clients), "mailboxes", len(cfg.Mailboxes), "apps", len(cfg.Apps))
}
