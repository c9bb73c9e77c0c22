package config

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/mail"
	"net/netip"
	"net/url"
	"os"
	"regexp"
	"strings"

	"golang.org/x/crypto/bcrypt"
)

var envRE = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

func (v *validator) validate(getenv func(string) string) {
	c := v.c
	v.listen()
	v.spool()
	if c.Upstream.Address != "" {
		if _, _, err := net.SplitHostPort(c.Upstream.Address); err != nil {
			v.add(v.lineOf("upstream", -1, "address"), "upstream.address", fmt.Sprintf("%q is not host:port", c.Upstream.Address), `write it like "smtp.office365.com:587"`)
		}
	}
	if c.Upstream.CAFile != "" {
		v.readable("upstream", -1, "upstream.ca_file", c.Upstream.CAFile, false)
	}
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
	v.clients()
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
	} {
		// Zero does not mean "no limit": a zero timeout would cut every
		// client off at once, a zero lockout would never lock out.
		if d.v.Duration <= 0 {
			v.add(v.lineOf("listen", -1, d.key), "listen."+d.key, "must be more than zero", d.fix)
		}
	}
	if l.AuthMaxFailures <= 0 {
		v.add(v.lineOf("listen", -1, "auth_max_failures"), "listen.auth_max_failures", "must be more than zero", "use 5")
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

func (v *validator) apps(getenv func(string) string) map[string]*App {
	apps := map[string]*App{}
	for i, a := range v.c.Apps {
		key := func(k string) string { return fmt.Sprintf("app[%d].%s", i, k) }
		if a.Name != "" {
			key = func(k string) string { return fmt.Sprintf("app[%d] (%s).%s", i, a.Name, k) }
		}
		line := func(k string) int { return v.lineOf("app", i, k) }
		switch {
		case a.Name == "":
			v.add(line("name"), key("name"), "is missing", `give the app a name that [[mailbox]] entries refer to, e.g. name = "contoso"`)
		case apps[a.Name] != nil:
			v.add(line("name"), key("name"), fmt.Sprintf("app %q is defined twice", a.Name), "give each [[app]] a unique name")
		default:
			apps[a.Name] = a
		}
		if a.TenantID == "" {
			v.add(line("tenant_id"), key("tenant_id"), "is missing", "copy the Directory (tenant) ID from the app registration's Overview page in the Entra admin center")
		}
		if a.ClientID == "" {
			v.add(line("client_id"), key("client_id"), "is missing", "copy the Application (client) ID from the app registration's Overview page")
		} else if !isGUID(a.ClientID) {
			v.add(line("client_id"), key("client_id"), fmt.Sprintf("%q is not a GUID", a.ClientID), "copy the Application (client) ID (a GUID like 1b2c3d4e-…), not the app's name or the secret ID")
		}
		cloud := a.Cloud
		if cloud == "" {
			cloud = "global"
		}
		preset, ok := Clouds[cloud]
		if !ok {
			v.add(line("cloud"), key("cloud"), fmt.Sprintf("%q is not a Microsoft cloud", a.Cloud), `use "global", "usgov" or "china"`)
			preset = Clouds["global"]
		}
		if a.Authority == "" {
			a.Authority = preset.Authority
		}
		if u, err := url.Parse(a.Authority); err != nil || u.Scheme != "https" || u.Host == "" {
			v.add(line("authority"), key("authority"), fmt.Sprintf("%q is not an https URL", a.Authority), `use "https://login.microsoftonline.com/" (Microsoft's identity library requires https)`)
		}
		if a.Scope == "" {
			a.Scope = preset.Scope
		}
		if !strings.HasSuffix(a.Scope, "/.default") {
			v.add(line("scope"), key("scope"), fmt.Sprintf("%q does not end in /.default", a.Scope), `use "https://outlook.office365.com/.default": the client-credentials grant needs a .default scope`)
		}
		if a.MinTokenLifetime.Duration == 0 {
			a.MinTokenLifetime.Duration = DefaultMinTokenLifetime
		}
		if a.MinTokenLifetime.Duration >= 55*60e9 {
			v.add(line("min_token_lifetime"), key("min_token_lifetime"), "is longer than Microsoft's app-only tokens live", `use "10m"`)
		}
		if a.ProxyURL != "" {
			if u, err := url.Parse(a.ProxyURL); err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
				v.add(line("proxy_url"), key("proxy_url"), fmt.Sprintf("%q is not a proxy URL", redactURL(a.ProxyURL)), `write it like "http://proxy.example.com:3128"`)
			}
		}
		a.UpstreamAddress = preset.Upstream
		if v.c.Upstream.explicit || cloud == "global" {
			a.UpstreamAddress = v.c.Upstream.Address
		}
		v.credential(i, a, key, line, getenv)
	}
	return apps
}

func (v *validator) credential(i int, a *App, key func(string) string, line func(string) int, getenv func(string) string) {
	n := 0
	for _, s := range []string{a.ClientSecret, a.ClientSecretFile, a.CertificateFile} {
		if s != "" {
			n++
		}
	}
	switch {
	case n == 0:
		v.add(line("name"), key("client_secret"), "the app has no credential", "set one of client_secret, client_secret_file or certificate_file")
		return
	case n > 1:
		v.add(line("certificate_file"), key("client_secret"), "the app has more than one credential", "keep exactly one of client_secret, client_secret_file and certificate_file")
		return
	}
	switch {
	case a.ClientSecret != "":
		var missing []string
		s := envRE.ReplaceAllStringFunc(a.ClientSecret, func(m string) string {
			name := envRE.FindStringSubmatch(m)[1]
			val := getenv(name)
			if val == "" {
				missing = append(missing, name)
			}
			return val
		})
		if len(missing) > 0 {
			v.add(line("client_secret"), key("client_secret"), "environment variable "+strings.Join(missing, ", ")+" is not set", "export it in the service's environment (for systemd: an EnvironmentFile), or use client_secret_file")
			return
		}
		if isGUID(s) {
			v.warn(line("client_secret"), key("client_secret"), "looks like a GUID, which is what a secret's ID looks like", "copy the secret's Value column in Certificates & secrets, not its Secret ID")
		}
		a.Secret = Secret(s)
	case a.ClientSecretFile != "":
		b, ok := v.readable("app", i, key("client_secret_file"), a.ClientSecretFile, true)
		if ok {
			s := strings.TrimSpace(string(b))
			if s == "" {
				v.add(line("client_secret_file"), key("client_secret_file"), a.ClientSecretFile+" is empty", "write the client secret's Value into the file")
			}
			a.Secret = Secret(s)
		}
	case a.CertificateFile != "":
		v.readable("app", i, key("certificate_file"), a.CertificateFile, true)
		if a.CertificatePasswordFile != "" {
			if b, ok := v.readable("app", i, key("certificate_password_file"), a.CertificatePasswordFile, true); ok {
				a.CertificatePassword = Secret(strings.TrimRight(string(b), "\r\n"))
			}
		}
	}
	if a.CertificateFile == "" && (a.CertificatePasswordFile != "" || a.SendCertificateChain) {
		v.warn(line("certificate_password_file"), key("certificate_password_file"), "is set but the app uses a client secret", "remove certificate_password_file and send_certificate_chain, or switch to certificate_file")
	}
}

// readable checks that a file referenced by the configuration can be read,
// and warns when a secret is readable by everyone.
func (v *validator) readable(table string, idx int, key, path string, secret bool) ([]byte, bool) {
	k := key[strings.LastIndexByte(key, '.')+1:]
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

func (v *validator) mailboxes(apps map[string]*App) {
	c := v.c
	c.senders = map[string]*Mailbox{}
	seen := map[string]int{} // address → index of the mailbox that sends it
	for i, m := range c.Mailboxes {
		key := fmt.Sprintf("mailbox[%d]", i)
		if m.Address != "" {
			key = fmt.Sprintf("mailbox[%d] (%s)", i, m.Address)
		}
		line := func(k string) int { return v.lineOf("mailbox", i, k) }
		if m.MaxPerMinute == 0 {
			m.MaxPerMinute = DefaultMaxPerMinute
		}
		if m.MaxConnections == 0 {
			m.MaxConnections = DefaultMaxConnections
		}
		if m.MaxRecipientsPerDay == 0 {
			m.MaxRecipientsPerDay = DefaultRecipientsPerDay
		}
		for _, lim := range []struct {
			key string
			n   int
			fix string
		}{
			{"max_per_minute", m.MaxPerMinute, "use 30, Exchange Online's limit"},
			{"max_connections", m.MaxConnections, "use 3, Exchange Online's limit"},
			{"max_recipients_per_day", m.MaxRecipientsPerDay, "use 10000, Exchange Online's limit"},
		} {
			if lim.n < 0 {
				v.add(line(lim.key), key+"."+lim.key, "cannot be negative", lim.fix)
			}
		}
		if m.MaxConnections > 3 {
			v.warn(line("max_connections"), key+".max_connections", fmt.Sprintf("%d is more than the 3 connections Exchange Online allows per mailbox", m.MaxConnections), "use 3 or less, or Exchange answers 432 4.3.2 and mail waits")
		}
		addr, err := ParseAddress(m.Address)
		if err != nil {
			v.add(line("address"), key+".address", err.Error(), "write the mailbox's primary SMTP address, e.g. helpdesk@contoso.com")
		}
		m.Address = addr
		if m.App == "" {
			v.add(line("app"), key+".app", "is missing", "name the [[app]] that signs in as this mailbox")
		} else if a := apps[m.App]; a == nil {
			v.add(line("app"), key+".app", fmt.Sprintf("no [[app]] is named %q", m.App), "add an [[app]] with that name, or correct the name")
		} else {
			m.AppRef = a
		}
		for j, s := range append([]string{m.Address}, m.SendAs...) {
			if s == "" {
				continue
			}
			a, err := ParseAddress(s)
			if err != nil {
				v.add(line("send_as"), key+".send_as", err.Error(), "list plain addresses like noreply@contoso.com")
				continue
			}
			if j > 0 {
				m.SendAs[j-1] = a
			}
			la := strings.ToLower(a)
			// Compared by entry, not by address: a second [[mailbox]] with the
			// same address is as ambiguous as a shared send_as.
			if prev, dup := seen[la]; dup && prev != i {
				k := key + ".send_as"
				if j == 0 {
					k = key + ".address"
				}
				v.add(line(k[strings.LastIndexByte(k, '.')+1:]), k, fmt.Sprintf("%s is also a sender of mailbox %s (entry %d)", a, c.Mailboxes[prev].Address, prev), "list each address under exactly one [[mailbox]], so the relay knows which mailbox sends it")
				continue
			}
			seen[la] = i
			c.senders[la] = m
		}
	}
}

func (v *validator) clients() {
	c := v.c
	names, users := map[string]bool{}, map[string]bool{}
	for i, cl := range c.Clients {
		key := func(k string) string { return fmt.Sprintf("client[%d].%s", i, k) }
		if cl.Name != "" {
			key = func(k string) string { return fmt.Sprintf("client[%d] (%s).%s", i, cl.Name, k) }
		}
		line := func(k string) int { return v.lineOf("client", i, k) }
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

var guidRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

func isGUID(s string) bool { return guidRE.MatchString(s) }

func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.User == nil {
		return s
	}
	u.User = url.User(u.User.Username())
	return u.String()
}
