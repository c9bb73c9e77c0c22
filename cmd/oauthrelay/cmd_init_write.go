package main

// The files `oauthrelay init` writes: the client secret's file, a new
// certificate, and the commented configuration, checked with config.Load
// before it replaces anything.

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/crypto/bcrypt"

	"github.com/oauthrelay/oauthrelay/config"
	"github.com/oauthrelay/oauthrelay/oauth"
)

// initWritten is what init wrote, for its closing report.
type initWritten struct {
	appName    string
	secretFile string // client_secret_file, or ""
	certFile   string // certificate_file, or ""
	certPublic string // the .cer to upload (a new certificate), or ""
	cert       *oauth.CertInfo
	password   string // the generated AUTH password, shown once, or ""
	listen     string
}

// write writes the credential's files and then the configuration.
func (o *initOptions) write(p *prompter, stdout io.Writer) (*initWritten, error) {
	dir := filepath.Dir(o.config)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, err
	}
	w := &initWritten{appName: appNameFor(o.mailbox), listen: o.listenAddress()}
	switch {
	case o.certNew:
		if _, err := os.Lstat(filepath.Join(dir, oauth.CertKeyFile)); err == nil {
			return nil, fmt.Errorf("%s already exists; keep it with --cert-file %[1]s, or move it away for a new one", filepath.Join(dir, oauth.CertKeyFile))
		}
		info, files, err := oauth.NewCertificate("CN=oauthrelay", 730, dir)
		if err != nil {
			return nil, err
		}
		w.cert, w.certFile, w.certPublic = &info, files[0], files[1]
	case o.certFile != "":
		abs, err := filepath.Abs(o.certFile)
		if err != nil {
			return nil, err
		}
		certs, _, err := oauth.LoadCertificate(abs, "")
		if err != nil {
			return nil, fmt.Errorf("--cert-file: %v (an encrypted key or .pfx: set certificate_password_file in the written file afterwards)", err)
		}
		info := oauth.Describe(certs[0])
		w.cert, w.certFile = &info, abs
	default:
		path := filepath.Join(dir, w.appName+".secret")
		if !sameFile(path, o.secretFile) {
			if ok, err := p.mayReplace(path, o.force || o.replacing); err != nil || !ok {
				return nil, errors.New(refusal(path, err))
			}
			if err := writeFileAtomic(path, append(append([]byte(nil), o.secret...), '\n')); err != nil {
				return nil, err
			}
		}
		w.secretFile = path
	}
	var hash string
	if o.auth {
		pw, err := newPassword()
		if err != nil {
			return nil, err
		}
		h, err := bcrypt.GenerateFromPassword([]byte(pw), o.bcryptCost)
		if err != nil {
			return nil, err
		}
		w.password, hash = pw, string(h)
	}
	text := o.render(w, hash)
	if err := writeConfigChecked(o.config, []byte(text)); err != nil {
		return nil, err
	}
	fmt.Fprintf(stdout, "\nWrote %s (mode 0600)\n", o.config)
	switch {
	case w.secretFile != "":
		fmt.Fprintf(stdout, "Wrote %s (mode 0600): the client secret, which appears nowhere else\n", w.secretFile)
	case w.certPublic != "":
		fmt.Fprintf(stdout, "Wrote %s (private key + certificate, mode 0600) and %s (to upload)\n", w.certFile, w.certPublic)
	}
	if os.Geteuid() == 0 {
		fmt.Fprintf(stdout, "The files belong to root. If the relay runs as user oauthrelay (the systemd unit):\n  chown oauthrelay: %s %s\n", o.config, w.secretFile+w.certFile)
	}
	return w, nil
}

// listenAddress is --listen, or where the application can reach the relay.
func (o *initOptions) listenAddress() string {
	if o.listen != "" {
		return o.listen
	}
	for _, n := range o.networks {
		if !isLoopback(n) {
			return "0.0.0.0:2525"
		}
	}
	return config.DefaultListenAddress
}

func isLoopback(n string) bool {
	if p, err := netip.ParsePrefix(n); err == nil {
		return p.Addr().IsLoopback() && p.Bits() >= 8
	}
	a, err := netip.ParseAddr(n)
	return err == nil && a.IsLoopback()
}

// appNameFor names the [[app]] after the mailbox's domain: contoso for
// helpdesk@contoso.com.
func appNameFor(mailbox string) string {
	domain := mailbox[strings.LastIndexByte(mailbox, '@')+1:]
	label := strings.ToLower(strings.SplitN(domain, ".", 2)[0])
	if !nameRE.MatchString(label) {
		return "m365"
	}
	return label
}

func sameFile(a, b string) bool {
	if b == "" {
		return false
	}
	fa, errA := os.Stat(a)
	fb, errB := os.Stat(b)
	return errA == nil && errB == nil && os.SameFile(fa, fb)
}

// newPassword makes a 24-character password from letters and digits that
// cannot be mistaken for one another (about 137 bits).
func newPassword() (string, error) {
	const alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789"
	b := make([]byte, 24)
	for i := range b {
		n, err := rand.Int(rand.Reader, big.NewInt(int64(len(alphabet))))
		if err != nil {
			return "", err
		}
		b[i] = alphabet[n.Int64()]
	}
	return string(b), nil
}

// writeFileAtomic writes a 0600 file through a temporary file in the same
// directory, so that a crash leaves the old file or the new one.
func writeFileAtomic(path string, b []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	err = f.Chmod(0o600)
	if err == nil {
		_, err = f.Write(b)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// writeConfigChecked writes the configuration only if config.Load accepts
// it as written.
func writeConfigChecked(path string, text []byte) error {
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".init")
	if err := os.WriteFile(tmp, text, 0o600); err != nil {
		return err
	}
	defer os.Remove(tmp)
	if _, err := config.Load(tmp); err != nil {
		var ce *config.Error
		if errors.As(err, &ce) {
			var b strings.Builder
			for _, p := range ce.Problems {
				fmt.Fprintf(&b, "\n  ✗ %s", p)
			}
			return fmt.Errorf("the configuration init made does not load, so nothing was written to %s:%s", path, b.String())
		}
		return fmt.Errorf("the configuration init made does not load, so nothing was written to %s: %v", path, err)
	}
	return writeFileAtomic(path, text)
}

// tomlString quotes s as a TOML basic string.
func tomlString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f || r == utf8.RuneError:
			fmt.Fprintf(&b, "\\u%04X", r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

func tomlList(l []string) string {
	q := make([]string, len(l))
	for i, s := range l {
		q[i] = tomlString(s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// commentRE finds the start of each line, for comment blocks.
var commentRE = regexp.MustCompile(`(?m)^`)

// render is the configuration's text, commented like config.toml.example.
func (o *initOptions) render(w *initWritten, hash string) string {
	var b strings.Builder
	section := func(title string) {
		fmt.Fprintf(&b, "\n# %s\n# %s\n", strings.Repeat("-", 75), title)
	}
	comment := func(text string) {
		b.WriteString(strings.ReplaceAll(commentRE.ReplaceAllString(text, "# "), "# \n", "#\n") + "\n")
	}
	kv := func(key, value string) { fmt.Fprintf(&b, "%s = %s\n", key, value) }

	fmt.Fprintf(&b, "# oauthrelay configuration, written by `oauthrelay init` on %s.\n", time.Now().Format("2006-01-02"))
	comment(`config.toml.example documents every key; keys left out take their defaults.
Keep this file 0600 (or 0640 with the relay's group). After a change, check
it and reload the relay (SIGHUP, systemctl reload oauthrelay):

  oauthrelay check -config ` + o.config)

	section("The side legacy applications talk to.")
	b.WriteString("[listen]\n")
	comment(`Plain SMTP listener; STARTTLS is offered once tls_cert_file and tls_key_file
are set. Applications on other hosts need an address they reach, such as
"0.0.0.0:2525", and, to log in from there, TLS (AUTH in clear text is only
accepted from this host).`)
	kv("address", tomlString(w.listen))
	comment(`tls_cert_file = "/etc/oauthrelay/tls.crt"   # PEM certificate chain
tls_key_file = "/etc/oauthrelay/tls.key"    # and its private key`)

	section("The durable spool: a message is on disk before the application gets 250.")
	b.WriteString("[spool]\n")
	comment("Owned by the relay's user, mode 0700; `oauthrelay queue list` shows it.")
	kv("dir", tomlString(orDefault(o.spool, config.DefaultSpoolDir)))

	section("Where Microsoft 365 takes the mail.")
	if o.upstream == "" && o.graphURL == "" && o.hveAddress == "" && o.caFile == "" {
		comment(`The defaults follow app.cloud: smtp.office365.com:587 (transport "smtp"),
https://graph.microsoft.com ("graph"), smtp-hve.office365.com:587 ("hve").
[upstream]
ca_file = "/etc/oauthrelay/proxy-ca.pem"   # extra CAs for a TLS-inspecting proxy`)
	} else {
		b.WriteString("[upstream]\n")
		comment("Set by init's advanced flags: endpoints other than Microsoft's own (a proxy or a test).")
		for _, e := range [][2]string{{"address", o.upstream}, {"graph_url", o.graphURL}, {"hve_address", o.hveAddress}, {"ca_file", o.caFile}} {
			if e[1] != "" {
				v := e[1]
				if e[0] == "ca_file" {
					v, _ = filepath.Abs(v)
				}
				kv(e[0], tomlString(v))
			}
		}
	}

	section("The Entra ID app registration the relay signs in as (app-only tokens).")
	b.WriteString("[[app]]\n")
	comment("The name [[mailbox]] entries refer to.")
	kv("name", tomlString(w.appName))
	comment("Directory (tenant) ID and Application (client) ID, from the app's Overview page.")
	kv("tenant_id", tomlString(o.tenantID))
	kv("client_id", tomlString(o.clientID))
	if w.secretFile != "" {
		comment(`The client secret's Value, in a file of its own (0600). When the secret
expires, create a new one, write its Value into this file and reload.`)
		kv("client_secret_file", tomlString(w.secretFile))
	} else {
		exp := ""
		if w.cert != nil {
			exp = " It expires on " + w.cert.NotAfter.Format("2006-01-02") + " (thumbprint " + w.cert.SHA1 + ");\nrenew it before then with `oauthrelay cert new` and upload the new one."
		}
		comment("A certificate with its private key; its public part is uploaded to the app\nregistration." + exp)
		kv("certificate_file", tomlString(w.certFile))
	}
	if o.cloud != "global" {
		comment(`The Microsoft cloud: sets the authority, the token scopes and the hosts.`)
		kv("cloud", tomlString(o.cloud))
	}
	if o.authority != "" {
		comment("The token endpoint's base URL (set by init's --authority).")
		kv("authority", tomlString(o.authority))
	}

	section("The mailbox the app sends as.")
	b.WriteString("[[mailbox]]\n")
	comment("Its primary SMTP address, and the [[app]] that signs in as it.")
	kv("address", tomlString(o.mailbox))
	kv("app", tomlString(w.appName))
	comment(`How mail reaches Microsoft 365: "smtp" (SMTP AUTH with XOAUTH2; the app needs
SMTP.SendAsApp), "graph" (Microsoft Graph sendMail; Mail.Send) or "hve" (High
Volume Email; Mail.Send; internal recipients only).`)
	kv("transport", tomlString(o.transport))
	comment("Other From addresses this mailbox may send as (SendAs granted in Exchange).")
	kv("send_as", tomlList(sortedUnique(o.sendAs, o.mailbox)))
	comment("Exchange Online's limits per mailbox apply by default (30 messages a minute,\n10,000 recipients a day); see config.toml.example.")

	section("The legacy application.")
	b.WriteString("[[client]]\n")
	comment("Its name in logs and in the queue.")
	kv("name", tomlString(o.clientName))
	if hash != "" {
		comment(`It logs in with AUTH PLAIN or LOGIN as this user. Only the password's bcrypt
hash is kept; for a new password: oauthrelay hash-password.`)
		kv("username", tomlString(o.clientName))
		kv("password_hash", tomlString(hash))
	}
	if len(o.networks) > 0 {
		if hash != "" {
			comment("It may log in only from these networks.")
		} else {
			comment("No login: a connection from these networks is this application.")
		}
		kv("networks", tomlList(o.networks))
	}
	comment(`The envelope senders and From: addresses it may use: "*" is the mailbox and
its send_as addresses.`)
	kv("senders", `["*"]`)
	return b.String()
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
