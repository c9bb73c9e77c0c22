package config

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/mail"
	"net/netip"
	"os"
	"regexp"
	"strings"

	"golang.org/x/crypto/bcrypt"
)

var envRE = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

func (v *validator) validate(getenv func(string) string) {
	c := v.c
	v.listen()
	v.listenNet()
	v.spool()
	v.upstream()
	v.proxy()
	switch c.Log.Format {
	case "text", "json":
	default:
		v.add(v.lineOf("log", -1, "format"), "log.format", fmt.Sprintf("%q is not a log format", c.Log.Format), `use "text" or "json"`)
	}
	switch strings.ToLower(c.Log.Level) {
	case "debug", "info", "warn", "warning", "error":
	default:
		v.add(v.lineOf("log", -1, "level"), "log.level", fmt.Sprintf("%q is not a log level", c.Log.Level), `use "debug", "info", "warn" or "error"`)
	}
	if c.Metrics.Address != "" {
		if _, _, err := net.SplitHostPort(c.Metrics.Address); err != nil {
			v.add(v.lineOf("metrics", -1, "address"), "metrics.address", fmt.Sprintf("%q is not host:port", c.Metrics.Address), `write it like "127.0.0.1:9465", or leave it empty to serve no metrics`)
		}
	}
	apps := v.apps(getenv)
	v.mailboxes(apps)
	v.passwordMailboxes()
	v.clients()
	v.sendmail(true)
	v.clientLimits()
	v.cluster()
}

func (v *validator) listen() {
	l := &v.c.Listen
	if l.Address == "" && l.TLSAddress == "" {
		v.add(v.lineOf("listen", -1, "address"), "listen.address", "no listener is configured", `set address = "127.0.0.1:2525" (or tls_address)`)
	}
	for key, a := range map[string]string{"address": l.Address, "tls_address": l.TLSAddress} {
		if a == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(a); err != nil {
			v.add(v.lineOf("listen", -1, key), "listen."+key, fmt.Sprintf("%q is not host:port", a), `write it like "0.0.0.0:25" or "127.0.0.1:2525"`)
		}
	}
	if l.Hostname == "" {
		v.add(v.lineOf("listen", -1, "hostname"), "listen.hostname", "is empty", "set the name the relay announces in its banner, e.g. the host's DNS name")
	}
	hasCert := l.TLSCertFile != "" || l.TLSKeyFile != ""
	switch {
	case l.TLSCertFile != "" && l.TLSKeyFile == "":
		v.add(v.lineOf("listen", -1, "tls_key_file"), "listen.tls_key_file", "tls_cert_file is set but tls_key_file is not", "set tls_key_file to the certificate's PEM private key")
	case l.TLSCertFile == "" && l.TLSKeyFile != "":
		v.add(v.lineOf("listen", -1, "tls_cert_file"), "listen.tls_cert_file", "tls_key_file is set but tls_cert_file is not", "set tls_cert_file to the PEM certificate chain")
	case hasCert:
		if _, ok := v.readable("listen", -1, "listen.tls_cert_file", l.TLSCertFile, false); !ok {
			break
		}
		if _, ok := v.readable("listen", -1, "listen.tls_key_file", l.TLSKeyFile, false); !ok {
			break
		}
		if _, err := tls.LoadX509KeyPair(l.TLSCertFile, l.TLSKeyFile); err != nil {
			v.add(v.lineOf("listen", -1, "tls_cert_file"), "listen.tls_cert_file", "cannot load the certificate and key: "+errText(err), "point tls_cert_file and tls_key_file at a matching PEM certificate chain and private key")
		} else {
			v.secretFileMode("listen", -1, "listen.tls_key_file", l.TLSKeyFile)
		}
	}
	if !hasCert && l.TLSAddress != "" {
		v.add(v.lineOf("listen", -1, "tls_address"), "listen.tls_address", "an implicit-TLS listener needs a certificate", "set tls_cert_file and tls_key_file, or remove tls_address")
	}
	if !hasCert && l.RequireTLS {
		v.add(v.lineOf("listen", -1, "require_tls"), "listen.require_tls", "TLS is required but no certificate is configured", "set tls_cert_file and tls_key_file, or set require_tls = false")
	}
	if l.MaxMessageSize <= 0 {
		v.add(v.lineOf("listen", -1, "max_message_size"), "listen.max_message_size", "must be more than zero", `use "35MB", Exchange Online's default limit`)
	}
	if l.MaxRecipients <= 0 {
		v.add(v.lineOf("listen", -1, "max_recipients"), "listen.max_recipients", "must be more than zero", "use 500, Exchange Online's limit per message")
	}
	for _, d := range []struct {
		key string
		v   Duration
		fix string
	}{
		{"idle_timeout", l.IdleTimeout, `use "5m"`},
		{"data_timeout", l.DataTimeout, `use "10m"`},
		{"auth_lockout", l.AuthLockout, `use "15m"`},
		{"login_timeout", l.LoginTimeout, `use "1m"`},
	} {
		// Zero does not mean "no limit": a zero timeout would cut every
		// client off at once, a zero lockout would never lock out.
		if d.v.Duration <= 0 {
			v.add(v.lineOf("listen", -1, d.key), "listen."+d.key, "must be more than zero", d.fix)
		}
	}
	for _, n := range []struct {
		key string
		v   int
		fix string
	}{
		{"auth_max_failures", l.AuthMaxFailures, "use 5"},
		{"max_connections_per_ip", l.MaxConnectionsPerIP, "use 20"},
		{"max_connections_per_trusted_ip", l.MaxConnectionsPerTrustedIP, "use 200, or the number of connections your busiest trusted host opens at once"},
		{"max_refused_commands", l.MaxRefusedCommands, "use 50"},
	} {
		// Zero does not mean "no limit" either: it would refuse everyone.
		if n.v <= 0 {
			v.add(v.lineOf("listen", -1, n.key), "listen."+n.key, "must be more than zero", n.fix)
		}
	}
}

func (v *validator) spool() {
	s := &v.c.Spool
	if s.Dir == "" {
		v.add(v.lineOf("spool", -1, "dir"), "spool.dir", "is empty", `set it to a directory the relay owns, e.g. "/var/spool/oauthrelay"`)
	}
	if s.MinRetryDelay.Duration <= 0 {
		v.add(v.lineOf("spool", -1, "min_retry_delay"), "spool.min_retry_delay", "must be more than zero", `use "1m"`)
	}
	if s.MaxRetryDelay.Duration < s.MinRetryDelay.Duration {
		v.add(v.lineOf("spool", -1, "max_retry_delay"), "spool.max_retry_delay", fmt.Sprintf("%s is shorter than min_retry_delay %s", s.MaxRetryDelay.Duration, s.MinRetryDelay.Duration), "make max_retry_delay at least min_retry_delay")
	}
	if s.MaxAge.Duration < s.MinRetryDelay.Duration {
		v.add(v.lineOf("spool", -1, "max_age"), "spool.max_age", "is shorter than the first retry", `use "120h" (five days, like Postfix)`)
	}
	if s.BounceTo != "" {
		if _, err := ParseAddress(s.BounceTo); err != nil {
			v.add(v.lineOf("spool", -1, "bounce_to"), "spool.bounce_to", err.Error(), "write a plain address like postmaster@contoso.com, or leave it empty")
		}
	}
}

// readable checks that a file referenced by the configuration can be read,
// and warns when a secret is readable by everyone.
func (v *validator) readable(table string, idx int, key, path string, secret bool) ([]byte, bool) {
	k := key[strings.LastIndexByte(key, '.')+1:]
	if envRE.MatchString(path) {
		return nil, false // expandPaths has reported the unset variable
	}
	// Secrets, certificates and CA bundles are small regular files; a
	// device or FIFO named by mistake would block or never end.
	if st, err := os.Stat(path); err == nil && !st.Mode().IsRegular() {
		v.add(v.lineOf(table, idx, k), key, path+" is not a regular file", "point it at the file that holds the value")
		return nil, false
	} else if err == nil && st.Size() > maxReferencedFile {
		v.add(v.lineOf(table, idx, k), key, fmt.Sprintf("%s is %d bytes, more than such a file ever needs", path, st.Size()), "point it at the right file")
		return nil, false
	}
	b, err := os.ReadFile(path)
	if err != nil {
		fix := "check the path"
		if os.IsPermission(err) {
			fix = "let the relay's user read it (chown or chmod 0640 with the relay's group)"
		}
		v.add(v.lineOf(table, idx, k), key, fmt.Sprintf("cannot read %s: %s", path, errText(err)), fix)
		return nil, false
	}
	if secret {
		v.secretFileMode(table, idx, key, path)
	}
	return b, true
}

// maxReferencedFile bounds files the configuration points at (secrets,
// certificates, CA bundles).
const maxReferencedFile = 4 << 20

func (v *validator) secretFileMode(table string, idx int, key, path string) {
	k := key[strings.LastIndexByte(key, '.')+1:]
	if st, err := os.Stat(path); err == nil && st.Mode().Perm()&0o004 != 0 {
		v.warn(v.lineOf(table, idx, k), key, path+" is readable by every user on this machine", "chmod 0600 "+path+" (or 0640 with the relay's group)")
	}
}

// entry returns how problems of the i-th [[table]] name a key
// ("client[0] (erp).senders") and find its line.
func (v *validator) entry(table string, i int, name string) (key func(string) string, line func(string) int) {
	key = func(k string) string { return fmt.Sprintf("%s[%d].%s", table, i, k) }
	if name != "" {
		key = func(k string) string { return fmt.Sprintf("%s[%d] (%s).%s", table, i, name, k) }
	}
	return key, func(k string) int { return v.lineOf(table, i, k) }
}

func (v *validator) clients() {
	c := v.c
	names, users := map[string]bool{}, map[string]bool{}
	for i, cl := range c.Clients {
		key, line := v.entry("client", i, cl.Name)
		switch {
		case cl.Name == "":
			v.add(line("name"), key("name"), "is missing", `name the application, e.g. name = "erp"; logs and the queue show it`)
		case names[cl.Name]:
			v.add(line("name"), key("name"), fmt.Sprintf("client %q is defined twice", cl.Name), "give each [[client]] a unique name")
		}
		names[cl.Name] = true
		if cl.Username != "" {
			if users[strings.ToLower(cl.Username)] {
				v.add(line("username"), key("username"), fmt.Sprintf("username %q is used by two clients", cl.Username), "give each client its own username")
			}
			users[strings.ToLower(cl.Username)] = true
			if cl.PasswordHash != "" {
				v.inline(line("password_hash"), key("password_hash"), "client "+cl.Name+"'s password_hash", false)
			}
			if cl.PasswordHash == "" {
				v.add(line("password_hash"), key("password_hash"), "a username needs a password_hash", "run `oauthrelay hash-password` and paste its output here")
			} else if _, err := bcrypt.Cost([]byte(cl.PasswordHash)); err != nil {
				v.add(line("password_hash"), key("password_hash"), "is not a bcrypt hash", "run `oauthrelay hash-password` and paste its output (it starts with $2a$); never put the password itself here")
			}
		} else if cl.PasswordHash != "" {
			v.add(line("username"), key("username"), "password_hash is set but username is not", "set the username the application logs in with")
		}
		if cl.Username == "" && len(cl.Networks) == 0 {
			v.add(line("name"), key("networks"), "the client has neither a username nor networks, so nobody can be it", `set username and password_hash, or networks = ["10.0.0.5/32"] for an application that cannot log in`)
		}
		cl.Prefixes = cl.Prefixes[:0]
		for _, n := range cl.Networks {
			p, err := ParseNetwork(n)
			if err != nil {
				v.add(line("networks"), key("networks"), err.Error(), `write networks as CIDRs like "10.0.0.0/24" or single addresses like "10.0.0.5"`)
				continue
			}
			cl.Prefixes = append(cl.Prefixes, p)
			if p.Bits() == 0 && cl.Username == "" {
				v.warn(line("networks"), key("networks"), n+" trusts the whole Internet without a password", "narrow it to the application's own addresses, or add a username")
			}
		}
		if len(cl.Senders) == 0 {
			v.add(line("senders"), key("senders"), "is empty, so the client could not send anything", `list the From addresses it may use, or "*" for every configured mailbox and send_as address`)
		}
		cl.allowed = map[string]bool{}
		cl.AnySender = false
		for _, s := range cl.Senders {
			if s == "*" {
				cl.AnySender = true
				continue
			}
			a, err := ParseAddress(s)
			if err != nil {
				v.add(line("senders"), key("senders"), err.Error(), "list plain addresses like noreply@contoso.com")
				continue
			}
			if c.senders[strings.ToLower(a)] == nil {
				v.add(line("senders"), key("senders"), fmt.Sprintf("%s is not the address or a send_as of any [[mailbox]], so the relay would not know which mailbox sends it", a), fmt.Sprintf("add %s to a mailbox's send_as (and grant SendAs in Exchange), or remove it from senders", a))
				continue
			}
			cl.allowed[strings.ToLower(a)] = true
		}
		if cl.RewriteFrom != "" {
			a, err := ParseAddress(cl.RewriteFrom)
			switch {
			case err != nil:
				v.add(line("rewrite_from"), key("rewrite_from"), err.Error(), "write a plain address like noreply@contoso.com")
			case !cl.MaySend(a) || c.senders[strings.ToLower(a)] == nil:
				v.add(line("rewrite_from"), key("rewrite_from"), fmt.Sprintf("%s is not one of this client's senders", a), "add it to senders, or pick one of them")
			default:
				cl.RewriteFrom = a
			}
		}
	}
}

// ParseAddress checks a bare mailbox address (no display name, no angle
// brackets) and returns it trimmed.
func ParseAddress(s string) (string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return "", fmt.Errorf("the address is empty")
	}
	a, err := mail.ParseAddress(s)
	if err != nil || a.Name != "" || a.Address != s || !strings.Contains(s, "@") {
		return s, fmt.Errorf("%q is not a plain e-mail address", s)
	}
	return s, nil
}

// ParseNetwork parses a CIDR or a single address.
func ParseNetwork(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return p, fmt.Errorf("%q is not a valid network", s)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not a valid network or address", s)
	}
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
}
