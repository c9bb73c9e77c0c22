package config

import (
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// base is a small valid configuration; tests break one thing at a time.
const base = `[listen]
address = "127.0.0.1:2525"

[spool]
dir = "/tmp/spool"

[[app]]
name = "contoso"
tenant_id = "00000000-0000-0000-0000-000000000000"
client_id = "11111111-2222-3333-4444-555555555555"
client_secret = "literal-secret"

[[mailbox]]
address = "helpdesk@contoso.com"
app = "contoso"
send_as = ["noreply@contoso.com"]

[[client]]
name = "erp"
username = "erp"
password_hash = "$2a$04$9Ug6dC5vg1Tc2sWcbD7b5.KJ5bSaOo6rbMLFa8DNDqTXsdpm5zQKm"
networks = ["10.0.0.0/24"]
senders = ["noreply@contoso.com"]
`

func noEnv(string) string { return "" }

func parse(t *testing.T, src string, env func(string) string) (*Config, []Problem) {
	t.Helper()
	c, err := Parse("test.toml", []byte(src), env)
	if err == nil {
		return c, nil
	}
	ce, ok := err.(*Error)
	if !ok {
		t.Fatalf("Parse returned %T %v, want *Error", err, err)
	}
	return nil, ce.Problems
}

func TestBaseIsValid(t *testing.T) {
	c, probs := parse(t, base, noEnv)
	if probs != nil {
		t.Fatalf("problems: %v", probs)
	}
	if m := c.MailboxFor("NoReply@Contoso.com"); m == nil || m.Address != "helpdesk@contoso.com" {
		t.Errorf("MailboxFor(noreply) = %v", m)
	}
	if c.Apps[0].Secret.Reveal() != "literal-secret" {
		t.Errorf("secret not resolved")
	}
}

func TestExampleValidatesAndDocumentsEveryKey(t *testing.T) {
	src, err := os.ReadFile("../config.toml.example")
	if err != nil {
		t.Fatal(err)
	}
	env := func(k string) string {
		if k == "CONTOSO_CLIENT_SECRET" {
			return "example-secret-value"
		}
		return ""
	}
	c, probs := parse(t, string(src), env)
	if probs != nil {
		t.Fatalf("config.toml.example has problems: %v", probs)
	}
	if len(c.Warnings) > 0 {
		t.Errorf("config.toml.example has warnings: %v", c.Warnings)
	}
	// The example's hash is of the password the comment documents.
	if err := bcrypt.CompareHashAndPassword([]byte(c.Client("erp").PasswordHash), []byte("example-erp-password")); err != nil {
		t.Errorf("the example's password_hash is not of example-erp-password: %v", err)
	}
	if c.Spool.Dir != "/var/spool/oauthrelay" {
		t.Errorf("spool.dir = %q", c.Spool.Dir)
	}
	// Every key of every table is written out, set or commented.
	for table := range schema {
		if table == "" {
			continue
		}
		for _, k := range knownKeys(table) {
			re := regexp.MustCompile(`(?m)^#? ?` + regexp.QuoteMeta(k) + ` = `)
			if !re.Match(src) {
				t.Errorf("config.toml.example does not document %s.%s", table, k)
			}
		}
	}
	// Without the variable, check names it.
	_, probs = parse(t, string(src), noEnv)
	if len(probs) != 1 || !strings.Contains(probs[0].Msg, "CONTOSO_CLIENT_SECRET") {
		t.Errorf("without CONTOSO_CLIENT_SECRET: %v", probs)
	}
}

// TestProblemsReportedTogether: an unknown key, a sender mapped to no
// mailbox and a bad CIDR are all named at once, so an admin fixes the file
// in one pass.
func TestProblemsReportedTogether(t *testing.T) {
	src := strings.Replace(base, `address = "127.0.0.1:2525"`, `address = "127.0.0.1:2525"
max_recipents = 10`, 1)
	src = strings.Replace(src, `senders = ["noreply@contoso.com"]`, `senders = ["noreply@contoso.com", "ceo@contoso.com"]`, 1)
	src = strings.Replace(src, `networks = ["10.0.0.0/24"]`, `networks = ["10.0.0.0/33"]`, 1)
	_, probs := parse(t, src, noEnv)
	if len(probs) != 3 {
		t.Fatalf("want 3 problems, got %d: %v", len(probs), probs)
	}
	lines := strings.Split(src, "\n")
	lineOf := func(sub string) int {
		for i, l := range lines {
			if strings.Contains(l, sub) {
				return i + 1
			}
		}
		return -1
	}
	want := []struct {
		key, msg, fix string
		line          int
	}{
		{"listen.max_recipents", "unknown key", `did you mean "max_recipients"?`, lineOf("max_recipents")},
		{"client[0] (erp).senders", "ceo@contoso.com is not the address or a send_as of any [[mailbox]]", "add ceo@contoso.com", lineOf("ceo@contoso.com")},
		{"client[0] (erp).networks", `"10.0.0.0/33" is not a valid network`, "CIDR", lineOf("/33")},
	}
	for _, w := range want {
		found := false
		for _, p := range probs {
			if p.Key == w.key {
				found = true
				if p.File != "test.toml" || p.Line != w.line || !strings.Contains(p.Msg, w.msg) || !strings.Contains(p.Fix, w.fix) {
					t.Errorf("problem for %s = %+v, want line %d, msg containing %q, fix containing %q", w.key, p, w.line, w.msg, w.fix)
				}
				if s := p.String(); !strings.HasPrefix(s, "test.toml:") || !strings.Contains(s, w.key) {
					t.Errorf("String() = %q does not name the file, line and key", s)
				}
			}
		}
		if !found {
			t.Errorf("no problem reported for %s in %v", w.key, probs)
		}
	}
}

func TestValidationRules(t *testing.T) {
	tests := []struct {
		name     string
		old, new string // replace old with new in base
		env      map[string]string
		key, msg string
	}{
		{"missing credential", `client_secret = "literal-secret"`, ``, nil, "client_secret", "no credential"},
		{"two credentials", `client_secret = "literal-secret"`, "client_secret = \"x\"\ncertificate_file = \"/etc/x.pem\"", nil, "client_secret", "more than one credential"},
		{"mailbox names unknown app", `app = "contoso"`, `app = "fabrikam"`, nil, "mailbox[0] (helpdesk@contoso.com).app", `no [[app]] is named "fabrikam"`},
		{"undefined variable", `client_secret = "literal-secret"`, `client_secret = "${NOPE_SECRET}"`, nil, "client_secret", "NOPE_SECRET is not set"},
		{"duplicate send_as", "[[client]]", "[[mailbox]]\naddress = \"sales@contoso.com\"\napp = \"contoso\"\nsend_as = [\"NoReply@contoso.com\"]\n\n[[client]]", nil, "mailbox[1] (sales@contoso.com).send_as", "also a sender of mailbox helpdesk@contoso.com"},
		{"duplicate mailbox", "[[client]]", "[[mailbox]]\naddress = \"helpdesk@contoso.com\"\napp = \"contoso\"\n\n[[client]]", nil, "mailbox[1] (helpdesk@contoso.com).address", "also a sender of mailbox helpdesk@contoso.com"},
		{"negative connections", `app = "contoso"`, "app = \"contoso\"\nmax_connections = -1", nil, "max_connections", "cannot be negative"},
		{"zero idle timeout", `address = "127.0.0.1:2525"`, "address = \"127.0.0.1:2525\"\nidle_timeout = \"0s\"", nil, "listen.idle_timeout", "more than zero"},
		{"zero lockout", `address = "127.0.0.1:2525"`, "address = \"127.0.0.1:2525\"\nauth_lockout = \"0s\"", nil, "listen.auth_lockout", "more than zero"},
		{"zero login timeout", `address = "127.0.0.1:2525"`, "address = \"127.0.0.1:2525\"\nlogin_timeout = \"0s\"", nil, "listen.login_timeout", "more than zero"},
		{"zero connections per address", `address = "127.0.0.1:2525"`, "address = \"127.0.0.1:2525\"\nmax_connections_per_ip = 0", nil, "listen.max_connections_per_ip", "more than zero"},
		{"negative connections per trusted address", `address = "127.0.0.1:2525"`, "address = \"127.0.0.1:2525\"\nmax_connections_per_trusted_ip = -1", nil, "listen.max_connections_per_trusted_ip", "more than zero"},
		{"zero refused commands", `address = "127.0.0.1:2525"`, "address = \"127.0.0.1:2525\"\nmax_refused_commands = 0", nil, "listen.max_refused_commands", "more than zero"},
		{"bad duration", `dir = "/tmp/spool"`, "dir = \"/tmp/spool\"\nmax_age = \"5 days\"", nil, "", "not a duration"},
		{"bad size", `address = "127.0.0.1:2525"`, "address = \"127.0.0.1:2525\"\nmax_message_size = \"35 parsecs\"", nil, "", "not a size"},
		{"bad CIDR", `networks = ["10.0.0.0/24"]`, `networks = ["10.0.0.300/24"]`, nil, "client[0] (erp).networks", "not a valid network"},
		{"sender without mailbox", `senders = ["noreply@contoso.com"]`, `senders = ["other@contoso.com"]`, nil, "client[0] (erp).senders", "not the address or a send_as"},
		{"password instead of hash", `password_hash = "$2a$04$9Ug6dC5vg1Tc2sWcbD7b5.KJ5bSaOo6rbMLFa8DNDqTXsdpm5zQKm"`, `password_hash = "hunter2"`, nil, "client[0] (erp).password_hash", "not a bcrypt hash"},
		{"client without username or networks", "username = \"erp\"\npassword_hash = \"$2a$04$9Ug6dC5vg1Tc2sWcbD7b5.KJ5bSaOo6rbMLFa8DNDqTXsdpm5zQKm\"\nnetworks = [\"10.0.0.0/24\"]", "", nil, "client[0] (erp).networks", "neither a username nor networks"},
		{"rewrite_from not a sender", `senders = ["noreply@contoso.com"]`, "senders = [\"noreply@contoso.com\"]\nrewrite_from = \"helpdesk@contoso.com\"", nil, "client[0] (erp).rewrite_from", "not one of this client's senders"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !strings.Contains(base, tt.old) {
				t.Fatalf("base has no %q", tt.old)
			}
			src := strings.Replace(base, tt.old, tt.new, 1)
			env := func(k string) string { return tt.env[k] }
			_, probs := parse(t, src, env)
			if len(probs) == 0 {
				t.Fatal("no problem reported")
			}
			for _, p := range probs {
				if strings.Contains(p.Key, tt.key) && strings.Contains(p.Msg, tt.msg) {
					if p.Fix == "" {
						t.Errorf("problem %v has no fix", p)
					}
					return
				}
			}
			t.Errorf("want a problem with key %q and message %q, got %v", tt.key, tt.msg, probs)
		})
	}
}

func TestVariableExpansion(t *testing.T) {
	src := strings.Replace(base, `client_secret = "literal-secret"`, `client_secret = "${MY_SECRET}"`, 1)
	c, probs := parse(t, src, func(k string) string {
		if k == "MY_SECRET" {
			return "s3cr3t"
		}
		return ""
	})
	if probs != nil {
		t.Fatal(probs)
	}
	if c.Apps[0].Secret.Reveal() != "s3cr3t" {
		t.Errorf("secret = %q", c.Apps[0].Secret.Reveal())
	}
	if s := c.Apps[0].Secret.String(); strings.Contains(s, "s3cr3t") {
		t.Errorf("Secret.String leaks the secret: %q", s)
	}
}

func TestSecretFileModes(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct {
		mode os.FileMode
		warn bool
	}{{0o600, false}, {0o640, false}, {0o644, true}} {
		path := filepath.Join(dir, "secret-"+tt.mode.String())
		if err := os.WriteFile(path, []byte("the-secret\n"), tt.mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(path, tt.mode) // whatever the umask
		src := strings.Replace(base, `client_secret = "literal-secret"`, `client_secret_file = "`+path+`"`, 1)
		c, probs := parse(t, src, noEnv)
		if probs != nil {
			t.Fatalf("%v: %v", tt.mode, probs)
		}
		if c.Apps[0].Secret.Reveal() != "the-secret" {
			t.Errorf("%v: secret = %q", tt.mode, c.Apps[0].Secret.Reveal())
		}
		warned := false
		for _, w := range c.Warnings {
			if strings.Contains(w.Msg, "readable by every user") && strings.Contains(w.Fix, "chmod 0600") {
				warned = true
			}
		}
		if warned != tt.warn {
			t.Errorf("mode %v: warned = %v, want %v (%v)", tt.mode, warned, tt.warn, c.Warnings)
		}
	}
	// A missing secret file is an error, not a warning.
	src := strings.Replace(base, `client_secret = "literal-secret"`, `client_secret_file = "`+filepath.Join(dir, "nope")+`"`, 1)
	if _, probs := parse(t, src, noEnv); len(probs) != 1 || !strings.Contains(probs[0].Msg, "cannot read") {
		t.Errorf("missing secret file: %v", probs)
	}
	// A device named by mistake is refused, not read forever.
	src = strings.Replace(base, `client_secret = "literal-secret"`, `client_secret_file = "/dev/zero"`, 1)
	if _, probs := parse(t, src, noEnv); len(probs) != 1 || !strings.Contains(probs[0].Msg, "not a regular file") || probs[0].Line == 0 {
		t.Errorf("device as secret file: %v", probs)
	}
}

func TestParseDuration(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"90s", 90 * time.Second, true},
		{"5m", 5 * time.Minute, true},
		{"120h", 120 * time.Hour, true},
		{"5d", 120 * time.Hour, true},
		{"1h30m", 90 * time.Minute, true},
		{"0d", 0, true},
		{"5 days", 0, false},
		{"-1m", 0, false},
		{"-1d", 0, false},
		{"", 0, false},
	} {
		got, err := ParseDuration(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func TestParseSize(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"35MB", 35_000_000, true},
		{"35 MiB", 35 << 20, true},
		{"512KB", 512_000, true},
		{"512kib", 512 << 10, true},
		{"1.5GB", 1_500_000_000, true},
		{"4096", 4096, true},
		{"10B", 10, true},
		{"MB", 0, false},
		{"-1MB", 0, false},
		{"lots", 0, false},
	} {
		got, err := ParseSize(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseSize(%q) = %v, %v; want %v, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
	// Both spellings in the file: a bare integer and a string with a unit.
	for src, want := range map[string]Size{`max_message_size = 1000`: 1000, `max_message_size = "35MB"`: 35_000_000} {
		c, probs := parse(t, strings.Replace(base, `address = "127.0.0.1:2525"`, "address = \"127.0.0.1:2525\"\n"+src, 1), noEnv)
		if probs != nil || c.Listen.MaxMessageSize != want {
			t.Errorf("%s: %v, %v", src, probs, c)
		}
	}
}

func TestDefaults(t *testing.T) {
	c, probs := parse(t, base, noEnv)
	if probs != nil {
		t.Fatal(probs)
	}
	if c.Listen.MaxMessageSize != 35_000_000 || c.Listen.MaxRecipients != 500 || c.Spool.MaxAge.Duration != 120*time.Hour ||
		c.Apps[0].MinTokenLifetime.Duration != 10*time.Minute || c.Mailboxes[0].MaxConnections != 3 || c.Apps[0].UpstreamAddress != "smtp.office365.com:587" {
		t.Errorf("defaults not applied: %+v", c)
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.toml"))
	ce, ok := err.(*Error)
	if !ok || len(ce.Problems) != 1 || !strings.Contains(ce.Problems[0].Msg, "cannot read") {
		t.Errorf("Load(missing) = %v", err)
	}
}

func TestSyntaxErrorHasLine(t *testing.T) {
	_, probs := parse(t, base+"\n[[client]\n", noEnv)
	if len(probs) != 1 || probs[0].Line == 0 {
		t.Errorf("syntax error: %v", probs)
	}
}

func TestTrustedClientPrefersMostSpecific(t *testing.T) {
	src := base + `
[[client]]
name = "lan"
networks = ["10.0.0.0/8"]
senders = ["*"]

[[client]]
name = "printer"
networks = ["10.1.2.3"]
senders = ["noreply@contoso.com"]
`
	c, probs := parse(t, src, noEnv)
	if probs != nil {
		t.Fatal(probs)
	}
	for ip, want := range map[string]string{"10.1.2.3": "printer", "10.9.9.9": "lan", "10.0.0.7": "lan", "192.168.1.1": ""} {
		got := c.TrustedClient(mustAddr(t, ip))
		name := ""
		if got != nil {
			name = got.Name
		}
		if name != want {
			t.Errorf("TrustedClient(%s) = %q, want %q", ip, name, want)
		}
	}
	if lan := c.Client("lan"); !lan.MaySend("helpdesk@contoso.com") || lan.MaySend("x@example.com") && c.MailboxFor("x@example.com") != nil {
		t.Errorf("* should allow every configured sender")
	}
}

func mustAddr(t *testing.T, s string) netip.Addr {
	t.Helper()
	a, err := netip.ParseAddr(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestListenLimitDefaults: the limits against hostile clients are on
// when the file does not set them.
func TestListenLimitDefaults(t *testing.T) {
	c, probs := parse(t, base, func(string) string { return "" })
	if len(probs) > 0 {
		t.Fatal(probs)
	}
	l := c.Listen
	if l.MaxConnectionsPerIP != 20 || l.MaxConnectionsPerTrustedIP != 200 || l.LoginTimeout.Duration != time.Minute || l.MaxRefusedCommands != 50 {
		t.Errorf("defaults: per ip %d, per trusted ip %d, login timeout %s, refused commands %d", l.MaxConnectionsPerIP, l.MaxConnectionsPerTrustedIP, l.LoginTimeout.Duration, l.MaxRefusedCommands)
	}
}
