package config

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// Defaults that the example file documents.
const (
	DefaultListenAddress    = "127.0.0.1:2525"
	DefaultHostname         = "oauthrelay.local"
	DefaultMaxMessageSize   = 35 * 1000 * 1000
	DefaultMaxRecipients    = 500
	DefaultSpoolDir         = "/var/spool/oauthrelay"
	DefaultMaxPerMinute     = 30
	DefaultRecipientsPerDay = 10000
	// DefaultMaxConnections is for "smtp" and "hve" mailboxes: Exchange
	// Online allows 3 SMTP connections per mailbox.
	DefaultMaxConnections = 3
	// DefaultGraphMaxConnections is for "graph" mailboxes: Graph allows 4
	// concurrent requests per app and mailbox.
	DefaultGraphMaxConnections = 4
	DefaultHVEAddress          = "smtp-hve.office365.com:587"
)

// The values of mailbox.transport.
const (
	TransportSMTP  = "smtp"  // SMTP AUTH XOAUTH2 client submission
	TransportGraph = "graph" // Microsoft Graph sendMail
	TransportHVE   = "hve"   // High Volume Email (SMTP, internal recipients only)
)

// Transports lists the values of mailbox.transport, the default first.
var Transports = []string{TransportSMTP, TransportGraph, TransportHVE}

// Cloud is a Microsoft cloud with its sign-in authority, SMTP scope,
// submission host and Microsoft Graph base URL.
type Cloud struct {
	Authority string
	Scope     string
	Upstream  string
	Graph     string
}

// Clouds are the presets for app.cloud.
var Clouds = map[string]Cloud{
	"global": {"https://login.microsoftonline.com/", "https://outlook.office365.com/.default", "smtp.office365.com:587", "https://graph.microsoft.com"},
	"usgov":  {"https://login.microsoftonline.us/", "https://outlook.office365.us/.default", "smtp.office365.us:587", "https://graph.microsoft.us"},
	"china":  {"https://login.partner.microsoftonline.cn/", "https://partner.outlook.cn/.default", "smtp.partner.outlook.cn:587", "https://microsoftgraph.chinacloudapi.cn"},
}

// Defaults returns a configuration holding every default value, before any
// file is applied.
func Defaults() *Config {
	return &Config{
		Listen: Listen{
			Address:        DefaultListenAddress,
			Hostname:       DefaultHostname,
			MaxMessageSize: DefaultMaxMessageSize,
			MaxRecipients:  DefaultMaxRecipients,
			IdleTimeout:    Duration{5 * time.Minute},
			DataTimeout:    Duration{10 * time.Minute},
			MaxConnections: 1000,
			// One address may not hold more than a few slots; an app
			// server on a trusted network may open many.
			MaxConnectionsPerIP:        20,
			MaxConnectionsPerTrustedIP: 200,
			LoginTimeout:               Duration{time.Minute},
			MaxRefusedCommands:         50,
			AuthMaxFailures:            5,
			AuthLockout:                Duration{15 * time.Minute},
			MinTLSVersion:              "1.2",
		},
		Spool: Spool{
			Dir:           DefaultSpoolDir,
			MinRetryDelay: Duration{time.Minute},
			MaxRetryDelay: Duration{time.Hour},
			MaxAge:        Duration{120 * time.Hour},
		},
		Upstream: Upstream{
			Address:    Clouds["global"].Upstream,
			GraphURL:   Clouds["global"].Graph,
			HVEAddress: DefaultHVEAddress,
			Timeout:    Duration{2 * time.Minute},
		},
		Log: Log{Format: "text", Level: "info"},
	}
}

// Load reads, checks and resolves the configuration file at path. The
// returned error is an *Error listing every problem; warnings that do not
// stop the relay are in Config.Warnings.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		fix := "check the path given with -config"
		if errors.Is(err, os.ErrPermission) {
			fix = "run oauthrelay as a user that can read the file (it holds secrets: keep it 0600 or 0640)"
		}
		return nil, &Error{Problems: []Problem{{File: path, Msg: "cannot read the configuration file: " + errText(err), Fix: fix}}}
	}
	c, err := Parse(path, data, os.Getenv)
	if err != nil {
		return nil, err
	}
	c.warnReadableFile(path)
	return c, nil
}

// Parse is Load for a file already in memory. getenv expands ${VAR}.
func Parse(path string, data []byte, getenv func(string) string) (*Config, error) {
	c := Defaults()
	c.Path = path
	src := string(data)
	md, err := toml.Decode(src, c)
	if err != nil {
		p := Problem{File: path, Msg: err.Error(), Fix: "correct the TOML syntax or the value's type at that line"}
		var pe toml.ParseError
		if errors.As(err, &pe) {
			p.Line = pe.Position.Line
			p.Msg = pe.Message
			if pe.Usage != "" {
				p.Fix = firstLine(pe.Usage)
			}
		}
		return nil, &Error{Problems: []Problem{p}}
	}
	v := &validator{c: c, file: path, src: src}
	for _, k := range md.Undecoded() {
		v.unknownKey(k)
	}
	c.Upstream.explicit = md.IsDefined("upstream", "address")
	c.Upstream.explicitGraph = md.IsDefined("upstream", "graph_url")
	c.Upstream.explicitHVE = md.IsDefined("upstream", "hve_address")
	v.validate(getenv)
	sortProblems(v.problems)
	sortProblems(v.warnings)
	c.Warnings = v.warnings
	if len(v.problems) > 0 {
		return nil, &Error{Problems: v.problems}
	}
	return c, nil
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// errText drops the Go "open path:" prefix noise, keeping the OS reason.
func errText(err error) string {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

type validator struct {
	c        *Config
	file     string
	src      string
	problems []Problem
	warnings []Problem
	// cloudSeen remembers which [upstream] key was refused for which app,
	// so that each is reported once.
	cloudSeen map[string]bool
}

func (v *validator) add(line int, key, msg, fix string) {
	v.problems = append(v.problems, Problem{File: v.file, Line: line, Key: key, Msg: msg, Fix: fix})
}

func (v *validator) warn(line int, key, msg, fix string) {
	v.warnings = append(v.warnings, Problem{File: v.file, Line: line, Key: key, Msg: msg, Fix: fix})
}

// unknownKey reports a key the schema does not have, with a suggestion when
// it is a likely typo of a real one.
func (v *validator) unknownKey(k toml.Key) {
	parts := []string(k)
	name := parts[len(parts)-1]
	table := strings.Join(parts[:len(parts)-1], ".")
	line := v.lineOf(table, -1, name)
	fix := "remove it"
	if s := suggest(table, name); s != "" {
		fix = fmt.Sprintf("did you mean %q?", s)
	} else if known := knownKeys(table); len(known) > 0 {
		fix = "remove it; the keys of this table are " + strings.Join(known, ", ")
	}
	v.add(line, k.String(), "unknown key", fix)
}

// schema maps a table name to the struct type whose toml tags are its keys.
var schema = map[string]reflect.Type{
	"":         reflect.TypeOf(Config{}),
	"listen":   reflect.TypeOf(Listen{}),
	"spool":    reflect.TypeOf(Spool{}),
	"upstream": reflect.TypeOf(Upstream{}),
	"metrics":  reflect.TypeOf(Metrics{}),
	"log":      reflect.TypeOf(Log{}),
	"app":      reflect.TypeOf(App{}),
	"mailbox":  reflect.TypeOf(Mailbox{}),
	"client":   reflect.TypeOf(Client{}),
	"sendmail": reflect.TypeOf(Sendmail{}),
}

func knownKeys(table string) []string {
	t, ok := schema[table]
	if !ok {
		return nil
	}
	var keys []string
	for i := 0; i < t.NumField(); i++ {
		tag := t.Field(i).Tag.Get("toml")
		if tag != "" && tag != "-" {
			keys = append(keys, tag)
		}
	}
	return keys
}

func suggest(table, name string) string { return closest(name, knownKeys(table)) }

// closest is the option name is most likely a typo of (at most two edits,
// ignoring case), or "".
func closest(name string, options []string) string {
	best, bestD := "", 3
	for _, k := range options {
		if d := editDistance(strings.ToLower(name), k); d < bestD {
			best, bestD = k, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

var headerRE = regexp.MustCompile(`^\s*\[(\[)?\s*([A-Za-z0-9_.\-"]+)\s*\]`)

// lineOf finds the line of key in table (the idx-th [[table]] when idx >= 0,
// any section of that name otherwise). It returns the table header's line
// when the key is not written, and 0 when neither is found. BurntSushi/toml
// does not expose key positions, so this reads the source like a person would.
func (v *validator) lineOf(table string, idx int, key string) int {
	lines := strings.Split(v.src, "\n")
	keyRE := regexp.MustCompile(`^\s*"?` + regexp.QuoteMeta(key) + `"?\s*=`)
	cur, n, header := "", -1, 0
	for i, l := range lines {
		if m := headerRE.FindStringSubmatch(l); m != nil {
			cur = strings.Trim(m[2], `"`)
			if cur == table {
				n++
				if idx < 0 || n == idx {
					header = i + 1
				}
			}
			continue
		}
		if cur == table && (idx < 0 || n == idx) && key != "" && keyRE.MatchString(l) {
			return i + 1
		}
	}
	return header
}

// LoadForCheck is Load for `oauthrelay check`: a ${VAR} that is not set in
// the checking shell is a warning, not an error, because admins check files
// in a shell that does not hold the service's secrets. serve uses Load and
// refuses to start without it.
func LoadForCheck(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Load(path)
	}
	var missing []string
	getenv := func(name string) string {
		if v := os.Getenv(name); v != "" {
			return v
		}
		missing = append(missing, name)
		return unsetInCheck
	}
	c, err := Parse(path, data, getenv)
	if err != nil {
		return nil, err
	}
	for _, name := range missing {
		c.Warnings = append(c.Warnings, Problem{File: path, Line: strings.Count(string(data[:max(strings.Index(string(data), "${"+name+"}"), 0)]), "\n") + 1,
			Key: "${" + name + "}", Msg: "environment variable " + name + " is not set here, so the secret was not checked",
			Fix: "set it in the service's environment (systemd: EnvironmentFile); serve refuses to start without it"})
	}
	sortProblems(c.Warnings)
	c.warnReadableFile(path)
	return c, nil
}
