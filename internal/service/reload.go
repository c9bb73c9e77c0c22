package service

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/oauthrelay/oauthrelay/config"
	"github.com/oauthrelay/oauthrelay/internal/egress"
)

// Reload re-reads the configuration. Clients, senders, mailboxes and apps
// take effect at once: sessions pick up the new configuration at their
// next command and delivery at its next message, so no connection or mail
// is dropped. Every AUTH lockout is lifted and every count of failed
// logins forgotten. An invalid file changes nothing and every problem is
// logged.
func (r *Relay) Reload(path string) bool {
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
	if ts := r.Tokens(); ts != nil {
		if err := ts.Update(cfg); err != nil {
			r.log.Error("reload refused: an app's credential cannot be loaded; the old configuration stays in force", "file", path, "error", err.Error())
			return false
		}
	}
	LogWarnings(r.log, cfg)
	old := r.Config()
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
	// The TLS configuration and the PROXY protocol listener are built at start.
	restart("listen.min_tls_version", old.Listen.MinTLSVersion, cfg.Listen.MinTLSVersion)
	restart("listen.proxy_protocol_from", old.Listen.ProxyProtocolFrom, cfg.Listen.ProxyProtocolFrom)
	restart("log.format", old.Log.Format, cfg.Log.Format)
	restart("log.level", old.Log.Level, cfg.Log.Level)
	restart("spool.dir", old.Spool.Dir, cfg.Spool.Dir)
	restart("metrics.address", old.Metrics.Address, cfg.Metrics.Address)
	restart("upstream.ca_file", old.Upstream.CAFile, cfg.Upstream.CAFile)
	// The way out is built at start; the password is compared, never shown.
	if ou, nu := old.Upstream, cfg.Upstream; ou.Proxy != nu.Proxy || ou.ProxyPassword != nu.ProxyPassword || fmt.Sprint(ou.NoProxy) != fmt.Sprint(nu.NoProxy) {
		r.log.Warn("reload: upstream.proxy, proxy_password_file or no_proxy changed; it takes effect only after a restart",
			"in_force", r.egress.Describe(), "configured", egress.Redact(nu.Proxy))
	}
	r.mu.Lock()
	r.cfg = cfg
	sched := r.sched
	r.mu.Unlock()
	r.srv.SetConfig(cfg)
	if sched != nil {
		sched.SetConfig(cfg)
	}
	// A reload is how an admin lets a locked-out application (or the
	// demo) in again once its password is fixed.
	locked := r.srv.ClearLockouts()
	r.log.Info("configuration reloaded; AUTH lockouts lifted and failed-login counts cleared", "file", path,
		"clients", len(cfg.Clients), "mailboxes", len(cfg.Mailboxes), "apps", len(cfg.Apps), "lockouts_lifted", locked)
	return true
}

// LogWarnings logs a configuration's warnings in the log's own format, at
// start and at every reload alike.
func LogWarnings(log *slog.Logger, cfg *config.Config) {
	for _, w := range cfg.Warnings {
		log.Warn("configuration warning: " + w.String())
	}
}
