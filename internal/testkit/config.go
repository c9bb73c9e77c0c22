package testkit

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
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
//
// The tables are written from their structs' toml tags: a new key of the
// relay's configuration is one tagged field here.
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
	Address     string `toml:"address"`
	TLSAddress  string `toml:"tls_address"`
	Hostname    string `toml:"hostname"`
	TLSCertFile string `toml:"tls_cert_file"`
	TLSKeyFile  string `toml:"tls_key_file"`
	Extra       string
}

// Spool is the [spool] table. Dir defaults to Config.Dir/spool.
type Spool struct {
	Dir           string `toml:"dir"`
	MinRetryDelay string `toml:"min_retry_delay"`
	MaxRetryDelay string `toml:"max_retry_delay"`
	MaxAge        string `toml:"max_age"`
	BounceTo      string `toml:"bounce_to"`
	Extra         string
}

// Upstream is the [upstream] table.
type Upstream struct {
	Address string `toml:"address"`
	CAFile  string `toml:"ca_file"`
	Timeout string `toml:"timeout"`
	// GraphURL and HVEAddress are the Microsoft Graph and High Volume
	// Email endpoints.
	GraphURL   string `toml:"graph_url"`
	HVEAddress string `toml:"hve_address"`
	// Proxy, ProxyPasswordFile and NoProxy are the way out to Microsoft.
	Proxy             string   `toml:"proxy"`
	ProxyPasswordFile string   `toml:"proxy_password_file"`
	NoProxy           []string `toml:"no_proxy"`
	Extra             string
}

// App is one [[app]].
type App struct {
	Name     string `toml:"name"`
	TenantID string `toml:"tenant_id"`
	ClientID string `toml:"client_id"`
	// One credential: a secret, a secret file or a certificate file.
	ClientSecret            string `toml:"client_secret"`
	ClientSecretFile        string `toml:"client_secret_file"`
	CertificateFile         string `toml:"certificate_file"`
	CertificatePasswordFile string `toml:"certificate_password_file"`
	// Authority defaults to the emulator's.
	Authority        string `toml:"authority"`
	MinTokenLifetime string `toml:"min_token_lifetime"`
	Extra            string
}

// Mailbox is one [[mailbox]].
type Mailbox struct {
	Address string `toml:"address"`
	App     string `toml:"app"`
	// Transport is "smtp", "graph" or "hve".
	Transport           string   `toml:"transport"`
	SendAs              []string `toml:"send_as"`
	MaxPerMinute        int      `toml:"max_per_minute"`
	MaxConnections      int      `toml:"max_connections"`
	MaxRecipientsPerDay int      `toml:"max_recipients_per_day"`
	Extra               string
}

// Client is one [[client]].
type Client struct {
	Name         string   `toml:"name"`
	Username     string   `toml:"username"`
	PasswordHash string   `toml:"password_hash"`
	Networks     []string `toml:"networks"`
	Senders      []string `toml:"senders"`
	RewriteFrom  string   `toml:"rewrite_from"`
	Extra        string
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
	w.table("[listen]", c.Listen)
	w.table("[spool]", c.Spool)
	w.table("[upstream]", c.Upstream)
	if c.MetricsAddress != "" {
		w.table("[metrics]", struct {
			Address string `toml:"address"`
		}{c.MetricsAddress})
	}
	if c.LogLevel != "" {
		w.table("[log]", struct {
			Level string `toml:"level"`
		}{c.LogLevel})
	}
	for _, a := range c.Apps {
		w.table("[[app]]", a)
	}
	for _, m := range c.Mailboxes {
		w.table("[[mailbox]]", m)
	}
	for _, cl := range c.Clients {
		w.table("[[client]]", cl)
	}
	w.extra(c.Extra)
	return w.String()
}

// tomlWriter writes a table's keys from its struct's toml tags, leaving
// out those not set, then its Extra. Go's %q quoting is valid TOML for the
// strings tests use (paths, addresses, secrets).
type tomlWriter struct{ strings.Builder }

func (w *tomlWriter) table(header string, v any) {
	if w.Len() > 0 {
		w.WriteString("\n")
	}
	w.WriteString(header + "\n")
	rv := reflect.ValueOf(v)
	for i := range rv.NumField() {
		f, key := rv.Field(i), rv.Type().Field(i).Tag.Get("toml")
		switch {
		case rv.Type().Field(i).Name == "Extra":
			w.extra(f.String())
		case f.IsZero():
		case f.Kind() == reflect.String:
			fmt.Fprintf(w, "%s = %q\n", key, f.String())
		case f.Kind() == reflect.Int:
			fmt.Fprintf(w, "%s = %d\n", key, f.Int())
		default: // []string
			q := make([]string, f.Len())
			for j := range q {
				q[j] = fmt.Sprintf("%q", f.Index(j).String())
			}
			fmt.Fprintf(w, "%s = [%s]\n", key, strings.Join(q, ", "))
		}
	}
}

func (w *tomlWriter) extra(s string) {
	if s != "" {
		w.WriteString(strings.TrimRight(s, "\n") + "\n")
	}
}
