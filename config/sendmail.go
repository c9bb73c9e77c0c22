package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/BurntSushi/toml"
	"golang.org/x/crypto/bcrypt"
)

// Sendmail is the [sendmail] table: as which [[client]] `oauthrelay
// sendmail` submits to the relay's own listener, so that the client's
// sender policy applies to cron, PHP's mail() and the like.
type Sendmail struct {
	// Client names the [[client]]. Empty: the command logs in as nobody
	// and the listener decides by address (a client whose networks hold
	// 127.0.0.1).
	Client string `toml:"client"`
	// PasswordFile holds the client's password when it logs in with a
	// username; never on the command line.
	PasswordFile string `toml:"password_file"`

	// Password is read from password_file. It is never printed.
	Password Secret `toml:"-"`
}

// Submission is what `oauthrelay sendmail` needs of a configuration: the
// listener to submit to, how to secure the connection, and the login.
type Submission struct {
	// Address is the host:port to dial: the listener's address, with a
	// wildcard host replaced by loopback.
	Address string
	// ImplicitTLS is set when only the implicit-TLS listener exists.
	ImplicitTLS bool
	// CertFile is the listener's certificate (empty: no TLS); the command
	// uses STARTTLS and trusts exactly this certificate.
	CertFile string
	// Hostname is [listen] hostname, for messages.
	Hostname string
	// Client, Username and Password are the [[client]] to log in as;
	// Username is empty for a client trusted by network.
	Client, Username string
	Password         Secret
}

// sendmailTarget returns the address `oauthrelay sendmail` dials and
// whether it is the implicit-TLS listener.
func sendmailTarget(l *Listen) (addr string, implicitTLS bool) {
	addr = l.Address
	if addr == "" {
		addr, implicitTLS = l.TLSAddress, true
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr, implicitTLS
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return net.JoinHostPort(host, port), implicitTLS
}

// sendmail checks [sendmail]. full is false for `oauthrelay sendmail`
// itself, which reads the file as whichever user runs it: it checks only
// what it needs, and leaves the password to the listener.
func (v *validator) sendmail(full bool) {
	s := &v.c.Sendmail
	line := func(k string) int { return v.lineOf("sendmail", -1, k) }
	if s.Client == "" {
		if s.PasswordFile != "" {
			v.add(line("password_file"), "sendmail.password_file", "is set but client is not", `set client to the name of the [[client]] whose password this is, e.g. client = "local"`)
		}
		return
	}
	cl := v.c.Client(s.Client)
	if cl == nil {
		var names []string
		for _, c := range v.c.Clients {
			names = append(names, fmt.Sprintf("%q", c.Name))
		}
		v.add(line("client"), "sendmail.client", fmt.Sprintf("no [[client]] is named %q", s.Client), "name one of the [[client]] entries ("+strings.Join(names, ", ")+"), or add one for local mail")
		return
	}
	if cl.Username == "" {
		if s.PasswordFile != "" {
			v.add(line("password_file"), "sendmail.password_file", fmt.Sprintf("client %q has no username: it is trusted by its networks, not by a password", cl.Name), "remove password_file, or give the client a username and password_hash")
		}
	} else {
		if s.PasswordFile == "" {
			v.add(line("client"), "sendmail.password_file", fmt.Sprintf("client %q logs in as %q and no password_file holds its password", cl.Name, cl.Username), `set password_file = "/etc/oauthrelay/sendmail.password", a file (0640 root:oauthrelay) holding the password whose hash is the client's password_hash`)
		} else if b, ok := v.readable("sendmail", -1, "sendmail.password_file", s.PasswordFile, true); ok {
			pw := string(b)
			if i := strings.IndexAny(pw, "\r\n"); i >= 0 {
				pw = pw[:i]
			}
			s.Password = Secret(pw)
			switch {
			case s.Password == "":
				v.add(line("password_file"), "sendmail.password_file", s.PasswordFile+" is empty", "write the client's password into it")
			case full && cl.PasswordHash != "" && bcrypt.CompareHashAndPassword([]byte(cl.PasswordHash), []byte(s.Password)) != nil:
				v.add(line("password_file"), "sendmail.password_file", fmt.Sprintf("the password in %s is not the one whose hash is client %q's password_hash", s.PasswordFile, cl.Name), fmt.Sprintf("write the right password into it, or hash this one (oauthrelay hash-password < %s) and paste the result into the client's password_hash", s.PasswordFile))
			}
		}
	}
	if !full {
		return
	}
	// The command connects from the address it dials: the client must be
	// the one the listener sees there.
	addr, _ := sendmailTarget(&v.c.Listen)
	host, _, _ := net.SplitHostPort(addr)
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return // a host name: where it resolves is not known here
	}
	switch {
	case cl.Username == "" && !cl.Trusts(ip):
		v.add(line("client"), "sendmail.client", fmt.Sprintf("oauthrelay sendmail connects from %s, which is not in client %q's networks", ip, cl.Name), fmt.Sprintf(`add "%s" to the client's networks`, ip))
	case cl.Username == "" && v.c.TrustedClient(ip) != cl:
		v.add(line("client"), "sendmail.client", fmt.Sprintf("the listener takes connections from %s as client %q (its network is more specific), not %q", ip, v.c.TrustedClient(ip).Name, cl.Name), "name that client here, or narrow the other client's networks")
	case cl.Username != "" && len(cl.Prefixes) > 0 && !cl.Trusts(ip):
		v.add(line("client"), "sendmail.client", fmt.Sprintf("client %q may log in only from its networks, and oauthrelay sendmail connects from %s", cl.Name, ip), fmt.Sprintf(`add "%s" to the client's networks`, ip))
	}
}

// LoadSubmission reads what `oauthrelay sendmail` needs from the
// configuration at path. It checks only [listen] and [sendmail], because
// the users that run sendmail (cron jobs, a web server) may read neither
// the apps' secrets nor the listener's key; `check` and `serve` validate
// the whole file. Problems come as an *Error, with file, line, key and fix.
func LoadSubmission(path string) (*Submission, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		fix := "give the path with -config FILE or OAUTHRELAY_CONFIG"
		if errors.Is(err, os.ErrPermission) {
			fix = "let this user read it: add the user to the relay's group (usermod -aG oauthrelay USER) with the file 0640 root:oauthrelay"
		}
		return nil, &Error{Problems: []Problem{{File: path, Msg: "cannot read the configuration file: " + errText(err), Fix: fix}}}
	}
	c := Defaults()
	c.Path = path
	if _, err := toml.Decode(string(data), c); err != nil {
		p := Problem{File: path, Msg: err.Error(), Fix: "correct the TOML syntax (oauthrelay check shows every problem)"}
		var pe toml.ParseError
		if errors.As(err, &pe) {
			p.Line, p.Msg = pe.Position.Line, pe.Message
		}
		return nil, &Error{Problems: []Problem{p}}
	}
	v := &validator{c: c, file: path, src: string(data)}
	l := &c.Listen
	if l.Address == "" && l.TLSAddress == "" {
		v.add(v.lineOf("listen", -1, "address"), "listen.address", "no listener is configured", `set address = "127.0.0.1:2525"`)
	}
	if (l.TLSCertFile != "") != (l.TLSKeyFile != "") {
		v.add(v.lineOf("listen", -1, "tls_cert_file"), "listen.tls_cert_file", "tls_cert_file and tls_key_file must be set together", "set both, or neither (oauthrelay check says more)")
	}
	v.sendmail(false)
	if len(v.problems) > 0 {
		sortProblems(v.problems)
		return nil, &Error{Problems: v.problems}
	}
	s := &Submission{CertFile: l.TLSCertFile, Hostname: l.Hostname, Client: c.Sendmail.Client, Password: c.Sendmail.Password}
	s.Address, s.ImplicitTLS = sendmailTarget(l)
	if cl := c.Client(c.Sendmail.Client); cl != nil {
		s.Username = cl.Username
	}
	return s, nil
}
