package testkit

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Emulator is what Config needs of an emulated Microsoft 365;
// *msemu.Emulator has these methods.
type Emulator interface {
	// Authority is the Entra authority URL apps are pointed at.
	Authority() string
	// SMTPAddr is the SMTP AUTH submission server's "host:port".
	SMTPAddr() string
	// CACertPEM is the CA the emulator's TLS certificates chain to.
	CACertPEM() []byte
}

// Config builds the relay's TOML configuration. Empty fields are left out
// of the file, so the relay's defaults apply; Extra fields are copied into
// their table verbatim for keys the builder does not name.
//
// With Emulator set, the upstream address, its CA file and every app's
// authority default to the emulator's.
type Config struct {
	// Dir holds config.toml, the emulator's CA and the default spool;
	// empty means a new t.TempDir().
	Dir      string
	Emulator Emulator

	Listen   Listen
	Spool    Spool
	Upstream Upstream
	// MetricsAddress is [metrics] address.
	MetricsAddress string
	// LogLevel is [log] level.
	LogLevel  string
	Apps      []App
	Mailboxes []Mailbox
	Clients   []Client
	// Extra is appended to the file; start it with a table header.
	Extra string
}

// Listen is the [listen] table.
type Listen struct {
	Address, TLSAddress, Hostname string
	TLSCertFile, TLSKeyFile       string
	Extra                         string
}

// Spool is the [spool] table. Dir defaults to Config.Dir/spool.
type Spool struct {
	Dir                          string
	MinRetryDelay, MaxRetryDelay string
	MaxAge, BounceTo             string
	Extra                        string
}

// Upstream is the [upstream] table.
type Upstream struct {
	Address, CAFile, Timeout string
	// GraphURL and HVEAddress are the Microsoft Graph and High Volume
	// Email endpoints.
	GraphURL, HVEAddress string
	Extra                string
}

// App is one [[app]].
type App struct {
	Name, TenantID, ClientID string
	// One credential: a secret, a secret file or a certificate file.
	ClientSecret, ClientSecretFile           string
	CertificateFile, CertificatePasswordFile string
	// Authority defaults to the emulator's.
	Authority        string
	MinTokenLifetime string
	Extra            string
}

// Mailbox is one [[mailbox]].
type Mailbox struct {
	Address, App string
	// Transport is "smtp", "graph" or "hve".
	Transport                                         string
	SendAs                                            []string
	MaxPerMinute, MaxConnections, MaxRecipientsPerDay int
	Extra                                             string
}

// Client is one [[client]].
type Client struct {
	Name, Username, PasswordHash string
	Networks, Senders            []string
	RewriteFrom                  string
	Extra                        string
}

// Write writes the configuration to Dir/config.toml (and the emulator's
// CA beside it) and returns the file's path. Load it with config.Load.
func (c Config) Write(t testing.TB) string {
	t.Helper()
	c = c.resolve(t)
	path := filepath.Join(c.Dir, "config.toml")
	if err := os.WriteFile(path, []byte(c.render()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TOML returns the configuration's text, for config.Parse; the emulator's
// CA is still written into Dir.
func (c Config) TOML(t testing.TB) string {
	t.Helper()
	return c.resolve(t).render()
}

// resolve fills the defaults that need a directory or the emulator.
func (c Config) resolve(t testing.TB) Config {
	t.Helper()
	if c.Dir == "" {
		c.Dir = t.TempDir()
	}
	if c.Spool.Dir == "" {
		c.Spool.Dir = filepath.Join(c.Dir, "spool")
	}
	if e := c.Emulator; e != nil {
		if c.Upstream.Address == "" {
			c.Upstream.Address = e.SMTPAddr()
		}
		if c.Upstream.CAFile == "" {
			c.Upstream.CAFile = filepath.Join(c.Dir, "emulator-ca.pem")
			if err := os.WriteFile(c.Upstream.CAFile, e.CACertPEM(), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		apps := make([]App, len(c.Apps))
		for i, a := range c.Apps {
			if a.Authority == "" {
				a.Authority = e.Authority()
			}
			apps[i] = a
		}
		c.Apps = apps
	}
	return c
}

func (c Config) render() string {
	var w tomlWriter
	w.table("[listen]")
	w.str("address", c.Listen.Address)
	w.str("tls_address", c.Listen.TLSAddress)
	w.str("hostname", c.Listen.Hostname)
	w.str("tls_cert_file", c.Listen.TLSCertFile)
	w.str("tls_key_file", c.Listen.TLSKeyFile)
	w.extra(c.Listen.Extra)

	w.table("[spool]")
	w.str("dir", c.Spool.Dir)
	w.str("min_retry_delay", c.Spool.MinRetryDelay)
	w.str("max_retry_delay", c.Spool.MaxRetryDelay)
	w.str("max_age", c.Spool.MaxAge)
	w.str("bounce_to", c.Spool.BounceTo)
	w.extra(c.Spool.Extra)

	w.table("[upstream]")
	w.str("address", c.Upstream.Address)
	w.str("ca_file", c.Upstream.CAFile)
	w.str("timeout", c.Upstream.Timeout)
	w.str("graph_url", c.Upstream.GraphURL)
	w.str("hve_address", c.Upstream.HVEAddress)
	w.extra(c.Upstream.Extra)

	if c.MetricsAddress != "" {
		w.table("[metrics]")
		w.str("address", c.MetricsAddress)
	}
	if c.LogLevel != "" {
		w.table("[log]")
		w.str("level", c.LogLevel)
	}
	for _, a := range c.Apps {
		w.table("[[app]]")
		w.str("name", a.Name)
		w.str("tenant_id", a.TenantID)
		w.str("client_id", a.ClientID)
		w.str("client_secret", a.ClientSecret)
		w.str("client_secret_file", a.ClientSecretFile)
		w.str("certificate_file", a.CertificateFile)
		w.str("certificate_password_file", a.CertificatePasswordFile)
		w.str("authority", a.Authority)
		w.str("min_token_lifetime", a.MinTokenLifetime)
		w.extra(a.Extra)
	}
	for _, m := range c.Mailboxes {
		w.table("[[mailbox]]")
		w.str("address", m.Address)
		w.str("app", m.App)
		w.str("transport", m.Transport)
		w.list("send_as", m.SendAs)
		w.int("max_per_minute", m.MaxPerMinute)
		w.int("max_connections", m.MaxConnections)
		w.int("max_recipients_per_day", m.MaxRecipientsPerDay)
		w.extra(m.Extra)
	}
	for _, cl := range c.Clients {
		w.table("[[client]]")
		w.str("name", cl.Name)
		w.str("username", cl.Username)
		w.str("password_hash", cl.PasswordHash)
		w.list("networks", cl.Networks)
		w.list("senders", cl.Senders)
		w.str("rewrite_from", cl.RewriteFrom)
		w.extra(cl.Extra)
	}
	w.extra(c.Extra)
	return w.String()
}

// tomlWriter writes keys only when they are set. Go's %q quoting is valid
// TOML for the strings tests use (paths, addresses, secrets).
type tomlWriter struct{ strings.Builder }

func (w *tomlWriter) table(header string) {
	if w.Len() > 0 {
		w.WriteString("\n")
	}
	w.WriteString(header + "\n")
}

func (w *tomlWriter) str(key, v string) {
	if v != "" {
		fmt.Fprintf(w, "%s = %q\n", key, v)
	}
}

func (w *tomlWriter) int(key string, v int) {
	if v != 0 {
		fmt.Fprintf(w, "%s = %d\n", key, v)
	}
}

func (w *tomlWriter) list(key string, vs []string) {
	if len(vs) == 0 {
		return
	}
	q := make([]string, len(vs))
	for i, v := range vs {
		q[i] = fmt.Sprintf("%q", v)
	}
	fmt.Fprintf(w, "%s = [%s]\n", key, strings.Join(q, ", "))
}

func (w *tomlWriter) extra(s string) {
	if s != "" {
		w.WriteString(strings.TrimRight(s, "\n") + "\n")
	}
}
