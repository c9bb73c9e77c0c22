// Package config loads and validates oauthrelay's TOML configuration file.
//
// Loading is strict: an unknown key, a value of the wrong type or a broken
// cross-reference is reported with the file, the line where it can be found,
// the key and the fix, and every problem is reported at once.
package config

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Config is one loaded and validated configuration file.
type Config struct {
	// Path is the file the configuration was read from.
	Path string `toml:"-"`

	Listen    Listen     `toml:"listen"`
	Spool     Spool      `toml:"spool"`
	Upstream  Upstream   `toml:"upstream"`
	Metrics   Metrics    `toml:"metrics"`
	Log       Log        `toml:"log"`
	Apps      []*App     `toml:"app"`
	Mailboxes []*Mailbox `toml:"mailbox"`
	Clients   []*Client  `toml:"client"`
	// Sendmail is how `oauthrelay sendmail` submits (see sendmail.go).
	Sendmail Sendmail `toml:"sendmail"`
	// Cluster shares budgets with other relays through Redis.
	Cluster Cluster `toml:"cluster"`

	// Warnings are problems that do not stop the relay (for example a
	// world-readable secret file); the loader fills them in.
	Warnings []Problem `toml:"-"`

	// senders maps every lower-cased allowed From address to its mailbox.
	senders map[string]*Mailbox
	// inline lists the secrets written in the file itself, for the
	// warning about a file every user can read.
	inline []inlineSecret
}

// Listen is the [listen] table: the side legacy applications talk to.
type Listen struct {
	Address           string   `toml:"address"`
	TLSAddress        string   `toml:"tls_address"`
	Hostname          string   `toml:"hostname"`
	TLSCertFile       string   `toml:"tls_cert_file"`
	TLSKeyFile        string   `toml:"tls_key_file"`
	RequireTLS        bool     `toml:"require_tls"`
	AllowInsecureAuth bool     `toml:"allow_insecure_auth"`
	MaxMessageSize    Size     `toml:"max_message_size"`
	MaxRecipients     int      `toml:"max_recipients"`
	IdleTimeout       Duration `toml:"idle_timeout"`
	DataTimeout       Duration `toml:"data_timeout"`
	MaxConnections    int      `toml:"max_connections"`
	// MaxConnectionsPerIP bounds the connections from one address, so one
	// host cannot take every slot; MaxConnectionsPerTrustedIP is the
	// bound for addresses a [[client]]'s networks include.
	MaxConnectionsPerIP        int `toml:"max_connections_per_ip"`
	MaxConnectionsPerTrustedIP int `toml:"max_connections_per_trusted_ip"`
	// LoginTimeout is the whole time a connection gets to log in (or,
	// from a trusted network, to have a sender accepted), however many
	// commands it sends meanwhile.
	LoginTimeout Duration `toml:"login_timeout"`
	// MaxRefusedCommands is how many refusals one session may collect
	// before it is closed with 421.
	MaxRefusedCommands int      `toml:"max_refused_commands"`
	AuthMaxFailures    int      `toml:"auth_max_failures"`
	AuthLockout        Duration `toml:"auth_lockout"`
	// MinTLSVersion is the oldest TLS version clients may use on STARTTLS
	// and the implicit-TLS port: "1.0", "1.1", "1.2" or "1.3" (see
	// TLSMinVersion).
	MinTLSVersion string `toml:"min_tls_version"`
	// ProxyProtocolFrom lists the load balancers whose connections must
	// start with a PROXY v1 or v2 header; ProxyPrefixes are them parsed.
	ProxyProtocolFrom []string       `toml:"proxy_protocol_from"`
	ProxyPrefixes     []netip.Prefix `toml:"-"`
}

// Spool is the [spool] table: where and how long mail is kept.
type Spool struct {
	Dir           string   `toml:"dir"`
	MinRetryDelay Duration `toml:"min_retry_delay"`
	MaxRetryDelay Duration `toml:"max_retry_delay"`
	MaxAge        Duration `toml:"max_age"`
	BounceTo      string   `toml:"bounce_to"`
}

// Upstream is the [upstream] table: where Microsoft 365 takes the mail,
// for each transport.
type Upstream struct {
	Address    string   `toml:"address"`
	GraphURL   string   `toml:"graph_url"`
	HVEAddress string   `toml:"hve_address"`
	CAFile     string   `toml:"ca_file"`
	Timeout    Duration `toml:"timeout"`
	// Proxy is the proxy every connection to Microsoft goes through
	// (http://, https://, socks5://, socks5h://, perhaps with user:password@);
	// empty: HTTPS_PROXY or ALL_PROXY from the environment, else directly.
	Proxy string `toml:"proxy"`
	// ProxyPasswordFile holds the password of the user named in Proxy.
	ProxyPasswordFile string `toml:"proxy_password_file"`
	// NoProxy lists hosts, domains, addresses and CIDRs reached directly.
	NoProxy []string `toml:"no_proxy"`
	// ProxyPassword is read from proxy_password_file. It is never printed.
	ProxyPassword Secret `toml:"-"`
	// explicit and explicitGraph record whether the admin set address and
	// graph_url; otherwise each app's cloud chooses the host.
	explicit, explicitGraph bool
	// explicitHVE records whether the admin set hve_address, which only
	// has a default in the global cloud.
	explicitHVE bool
}

// Metrics is the [metrics] table.
type Metrics struct {
	Address string `toml:"address"`
}

// Log is the [log] table.
type Log struct {
	Format string `toml:"format"`
	Level  string `toml:"level"`
}

// App is one [[app]]: an Entra ID app registration and its credential.
type App struct {
	Name                    string   `toml:"name"`
	TenantID                string   `toml:"tenant_id"`
	ClientID                string   `toml:"client_id"`
	ClientSecret            string   `toml:"client_secret"`
	ClientSecretFile        string   `toml:"client_secret_file"`
	CertificateFile         string   `toml:"certificate_file"`
	CertificatePasswordFile string   `toml:"certificate_password_file"`
	SendCertificateChain    bool     `toml:"send_certificate_chain"`
	Cloud                   string   `toml:"cloud"`
	Authority               string   `toml:"authority"`
	Scope                   string   `toml:"scope"`
	MinTokenLifetime        Duration `toml:"min_token_lifetime"`
	ProxyURL                string   `toml:"proxy_url"`
	// GraphScope is the token scope for Microsoft Graph: graph_scope when
	// set, else "https://<host of GraphURL>/.default".
	GraphScope string `toml:"graph_scope"`
	// FederatedTokenFile is a token of an issuer the app trusts
	// (workload identity federation), read at every token request;
	// AZURE_FEDERATED_TOKEN_FILE when the app names no credential.
	FederatedTokenFile string `toml:"federated_token_file"`
	// ManagedIdentity uses this machine's managed identity as the app's
	// federated credential; ManagedIdentityClientID names a
	// user-assigned one.
	ManagedIdentity         bool   `toml:"managed_identity"`
	ManagedIdentityClientID string `toml:"managed_identity_client_id"`
	// Username and PasswordFile sign in as a service account with the
	// password grant (the app's secret or certificate alongside).
	Username     string `toml:"username"`
	PasswordFile string `toml:"password_file"`
	// TokenEndpoint is a full v2 token URL as other products configure
	// it; it sets Authority (and the tenant when tenant_id is empty).
	TokenEndpoint string `toml:"token_endpoint"`
	// Password is read from password_file. It is never printed.
	Password Secret `toml:"-"`
	// fromEnv lists the keys filled from AZURE_* variables, which a
	// reload cannot change.
	fromEnv []string
	// ClientSecretExpires is the client secret's expiry date as the Entra
	// portal shows it ("2027-06-30"): the token endpoint never says, so the
	// admin writes it down for `check`'s warning and the expiry metric.
	ClientSecretExpires string `toml:"client_secret_expires"`
	// CertificateStore names a Windows certificate store
	// ("LocalMachine\My" or "CurrentUser\My") holding the app's
	// certificate, found by CertificateThumbprint or CertificateSubject
	// (Windows only).
	CertificateStore      string `toml:"certificate_store"`
	CertificateThumbprint string `toml:"certificate_thumbprint"`
	CertificateSubject    string `toml:"certificate_subject"`

	// Secret is the client secret after ${VAR} expansion or reading
	// client_secret_file. It is never printed.
	Secret Secret `toml:"-"`
	// CertificatePassword is read from certificate_password_file.
	CertificatePassword Secret `toml:"-"`
	// SecretExpires is client_secret_expires parsed: midnight UTC of that
	// day (zero when not set), so an alert comes early rather than late.
	SecretExpires time.Time `toml:"-"`
	// UpstreamAddress is where this app's "smtp" mailboxes deliver:
	// [upstream] address when set, else the submission host of the app's
	// cloud.
	UpstreamAddress string `toml:"-"`
	// GraphURL is the Microsoft Graph base URL of this app's "graph"
	// mailboxes, without a trailing slash: [upstream] graph_url when set,
	// else the Graph host of the app's cloud.
	GraphURL string `toml:"-"`
	// HVEAddress is the High Volume Email host:port of this app's "hve"
	// mailboxes: [upstream] hve_address.
	HVEAddress string `toml:"-"`

	// cloud is the app's cloud with the default filled in, or "" when
	// cloud names no Microsoft cloud.
	cloud string
}

// Mailbox is one [[mailbox]]: an Exchange mailbox the app signs in as.
type Mailbox struct {
	Address             string   `toml:"address"`
	App                 string   `toml:"app"`
	SendAs              []string `toml:"send_as"`
	MaxPerMinute        int      `toml:"max_per_minute"`
	MaxConnections      int      `toml:"max_connections"`
	MaxRecipientsPerDay int      `toml:"max_recipients_per_day"`
	// Transport is how mail reaches Microsoft 365: TransportSMTP (the
	// default when the key is left out), TransportGraph or TransportHVE.
	Transport string `toml:"transport"`

	// AppRef is the resolved app.
	AppRef *App `toml:"-"`
}

// Client is one [[client]]: a legacy application allowed to send.
type Client struct {
	Name         string   `toml:"name"`
	Username     string   `toml:"username"`
	PasswordHash string   `toml:"password_hash"`
	Networks     []string `toml:"networks"`
	Senders      []string `toml:"senders"`
	RewriteFrom  string   `toml:"rewrite_from"`
	// MaxPerMinute and MaxPerDay limit the messages the client may hand
	// in (0: no limit); see cluster.go.
	MaxPerMinute int `toml:"max_per_minute"`
	MaxPerDay    int `toml:"max_per_day"`

	// Prefixes are the parsed networks.
	Prefixes []netip.Prefix `toml:"-"`
	// AnySender is true when senders holds "*".
	AnySender bool `toml:"-"`
	// allowed is the lower-cased set of senders.
	allowed map[string]bool
}

// Secret holds a credential. Its String and GoString methods never reveal
// it, so that a config dumped into a log by mistake leaks nothing.
type Secret string

// String redacts the secret.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return "[redacted]"
}

// GoString redacts the secret for %#v.
func (s Secret) GoString() string { return s.String() }

// Reveal returns the secret itself, for the one place that sends it.
func (s Secret) Reveal() string { return string(s) }

// Duration is a time.Duration written as "90s", "5m" or "120h" in the file.
// Days are accepted as "5d" because admins think of queue lifetimes in days.
type Duration struct{ time.Duration }

// UnmarshalText parses a duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := ParseDuration(string(b))
	if err != nil {
		return err
	}
	d.Duration = v
	return nil
}

// MarshalText writes the duration back in Go syntax.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.Duration.String()), nil }

// ParseDuration accepts Go durations plus a whole-day suffix "d".
func ParseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if strings.HasSuffix(s, "d") {
		n, err := strconv.Atoi(strings.TrimSuffix(s, "d"))
		if err == nil && n >= 0 {
			return time.Duration(n) * 24 * time.Hour, nil
		}
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration (write it like \"90s\", \"5m\", \"1h\" or \"5d\")", s)
	}
	if v < 0 {
		return 0, fmt.Errorf("%q is negative", s)
	}
	return v, nil
}

// Size is a byte count written as 35MB, "35 MiB", "512KB" or a bare number.
type Size int64

// UnmarshalTOML accepts both integers and strings with a unit.
func (s *Size) UnmarshalTOML(v any) error {
	switch x := v.(type) {
	case int64:
		if x < 0 {
			return fmt.Errorf("size %d is negative", x)
		}
		*s = Size(x)
		return nil
	case string:
		n, err := ParseSize(x)
		if err != nil {
			return err
		}
		*s = Size(n)
		return nil
	}
	return fmt.Errorf("size must be a number of bytes or a string like \"35MB\"")
}

// ParseSize parses "35MB" (decimal), "35MiB" (binary), "100KB", "4096".
func ParseSize(str string) (int64, error) {
	t := strings.ToUpper(strings.ReplaceAll(strings.TrimSpace(str), " ", ""))
	units := []struct {
		suffix string
		mult   int64
	}{{"KIB", 1 << 10}, {"MIB", 1 << 20}, {"GIB", 1 << 30}, {"KB", 1000}, {"MB", 1000 * 1000}, {"GB", 1000 * 1000 * 1000}, {"K", 1000}, {"M", 1000 * 1000}, {"G", 1000 * 1000 * 1000}, {"B", 1}}
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSuffix(t, u.suffix), u.mult
			break
		}
	}
	f, err := strconv.ParseFloat(t, 64)
	if err != nil || f < 0 {
		return 0, fmt.Errorf("%q is not a size (write it like \"35MB\", \"512KB\" or a number of bytes)", str)
	}
	return int64(f * float64(mult)), nil
}

// Problem is one thing wrong with a configuration file.
type Problem struct {
	File string
	Line int    // 0 when unknown
	Key  string // e.g. "client[1].senders" or "listen.adress"
	Msg  string
	Fix  string
}

// String renders the problem as "file:line: key: message — fix: …".
func (p Problem) String() string {
	var b strings.Builder
	b.WriteString(p.File)
	if p.Line > 0 {
		fmt.Fprintf(&b, ":%d", p.Line)
	}
	b.WriteString(": ")
	if p.Key != "" {
		b.WriteString(p.Key)
		b.WriteString(": ")
	}
	b.WriteString(p.Msg)
	if p.Fix != "" {
		b.WriteString(" — fix: ")
		b.WriteString(p.Fix)
	}
	return b.String()
}

// Error lists every problem found in a configuration file.
type Error struct {
	Problems []Problem
}

// Error lists every problem, one per line.
func (e *Error) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	if len(lines) == 1 {
		return "configuration problem: " + lines[0]
	}
	return fmt.Sprintf("%d configuration problems:\n  %s", len(lines), strings.Join(lines, "\n  "))
}
