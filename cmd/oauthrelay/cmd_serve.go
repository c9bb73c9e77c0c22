package main

import (
	"context"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/oauthrelay/oauthrelay/config"
	"github.com/oauthrelay/oauthrelay/internal/service"
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
	service.LogWarnings(log, cfg)
	r, err := service.Start(cfg, service.Options{Logger: log})
	if err != nil {
		log.Error("cannot start", "error", err.Error())
		return 1
	}
	for {
		select {
		case <-ctx.Done():
			log.Info("shutting down: no new connections; unfinished mail stays queued")
			r.Shutdown(30 * time.Second)
			return 0
		case err := <-r.Done():
			if err != nil {
				log.Error("listener stopped", "error", err.Error())
				r.Shutdown(30 * time.Second)
				return 1
			}
			return 0
		case <-reload:
			r.Reload(path)
		}
	}
}
