package main

// The questions `oauthrelay init` asks and the checks of their answers.

import (
	"errors"
	"fmt"
	"io"
	"net/mail"
	"net/netip"
	"os"
	"regexp"
	"strings"

	"golang.org/x/term"

	"github.com/oauthrelay/oauthrelay/config"
)

// errDeclined is the answer "no" to replacing an existing file.
var errDeclined = errors.New("declined")

// prompter asks questions on stdout and reads the answers from stdin, a
// terminal or a pipe. With --yes it is not interactive and asks nothing.
type prompter struct {
	in          io.Reader
	out         io.Writer
	interactive bool
	// tty is stdin's descriptor when it is a terminal (secrets are then
	// read without echo), or -1.
	tty int
}

func newPrompter(in io.Reader, out io.Writer, yes bool) *prompter {
	p := &prompter{in: in, out: out, interactive: !yes, tty: -1}
	if f, ok := in.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		p.tty = int(f.Fd())
	}
	return p
}

// errEOF says the answers ran out: stdin was closed or a pipe ended.
var errEOF = errors.New("standard input ended before every question was answered; nothing was written (give the answers as flags with --yes in scripts)")

// readLine reads one line a byte at a time, so that nothing is buffered
// beyond it (a secret read from the terminal next must find its bytes).
func (p *prompter) readLine() (string, error) {
	var b []byte
	var c [1]byte
	for {
		n, err := p.in.Read(c[:])
		if n == 1 {
			if c[0] == '\n' {
				return strings.TrimRight(string(b), "\r"), nil
			}
			b = append(b, c[0])
			continue
		}
		if err == io.EOF {
			if len(b) > 0 {
				return strings.TrimRight(string(b), "\r"), nil
			}
			return "", errEOF
		}
		if err != nil {
			return "", err
		}
	}
}

// ask asks until check accepts the answer; an empty answer is def.
func (p *prompter) ask(label, def string, check func(string) error) (string, error) {
	for {
		if def != "" {
			fmt.Fprintf(p.out, "%s [%s]: ", label, def)
		} else {
			fmt.Fprintf(p.out, "%s: ", label)
		}
		s, err := p.readLine()
		if err != nil {
			fmt.Fprintln(p.out)
			return "", err
		}
		if s = strings.TrimSpace(s); s == "" {
			s = def
		}
		if err := check(s); err != nil {
			fmt.Fprintf(p.out, "  %v\n", err)
			continue
		}
		return s, nil
	}
}

// secret reads a secret without echoing it on a terminal. It is never
// written anywhere but the secret file.
func (p *prompter) secret(label string) ([]byte, error) {
	fmt.Fprintf(p.out, "%s: ", label)
	if p.tty >= 0 {
		b, err := term.ReadPassword(p.tty)
		fmt.Fprintln(p.out)
		return b, err
	}
	s, err := p.readLine()
	fmt.Fprintln(p.out)
	return []byte(s), err
}

// confirm asks a yes/no question.
func (p *prompter) confirm(label string, def bool) (bool, error) {
	hint := "y/N"
	if def {
		hint = "Y/n"
	}
	s, err := p.ask(label+" ["+hint+"]", "", func(s string) error {
		switch strings.ToLower(s) {
		case "", "y", "yes", "n", "no":
			return nil
		}
		return errors.New("answer y or n")
	})
	if err != nil {
		return false, err
	}
	switch strings.ToLower(s) {
	case "y", "yes":
		return true, nil
	case "n", "no":
		return false, nil
	}
	return def, nil
}

// mayReplace reports whether path may be written: it does not exist, or
// --force, or the admin said yes. Otherwise the error is errDeclined.
func (p *prompter) mayReplace(path string, force bool) (bool, error) {
	if _, err := os.Lstat(path); errors.Is(err, os.ErrNotExist) {
		return true, nil
	} else if err != nil {
		return false, err
	}
	if force {
		return true, nil
	}
	if !p.interactive {
		return false, errDeclined
	}
	ok, err := p.confirm(path+" already exists. Replace it", false)
	if err != nil {
		return false, err
	}
	if !ok {
		return false, errDeclined
	}
	return true, nil
}

var (
	guidRE   = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
	domainRE = regexp.MustCompile(`^([a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?\.)+[a-zA-Z]{2,}$`)
	nameRE   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
)

func checkGUID(s string) error {
	if !guidRE.MatchString(s) {
		return fmt.Errorf("%q is not an id like 00000000-0000-0000-0000-000000000000 (copy it from the app's Overview page)", s)
	}
	return nil
}

func checkTenant(s string) error {
	if guidRE.MatchString(s) || domainRE.MatchString(s) {
		return nil
	}
	return fmt.Errorf("%q is neither a tenant id (00000000-0000-0000-0000-000000000000) nor a domain like contoso.onmicrosoft.com", s)
}

func checkAddress(s string) error {
	a, err := mail.ParseAddress(s)
	if err != nil || a.Address != s || a.Name != "" || strings.ContainsAny(s, " \"\t") {
		return fmt.Errorf("%q is not a plain mail address like helpdesk@contoso.com", s)
	}
	return nil
}

func checkAddressList(s string) error {
	var l listFlag
	l.Set(s)
	for _, a := range l {
		if err := checkAddress(a); err != nil {
			return err
		}
	}
	return nil
}

func checkName(s string) error {
	if !nameRE.MatchString(s) {
		return fmt.Errorf("%q: use letters, digits, '.', '_' and '-' (at most 64)", s)
	}
	return nil
}

func checkNetwork(s string) error {
	if _, err := netip.ParsePrefix(s); err == nil {
		return nil
	}
	if _, err := netip.ParseAddr(s); err == nil {
		return nil
	}
	return fmt.Errorf("%q is not a CIDR like 10.0.0.0/24 or an address like 10.0.0.5", s)
}

func checkNetworkList(s string) error {
	var l listFlag
	l.Set(s)
	if len(l) == 0 {
		return errors.New("name at least one network, e.g. 10.0.0.0/24")
	}
	for _, n := range l {
		if err := checkNetwork(n); err != nil {
			return err
		}
	}
	return nil
}

func checkTransport(s string) error {
	for _, t := range config.Transports {
		if s == t {
			return nil
		}
	}
	return fmt.Errorf("%q: choose %s", s, strings.Join(config.Transports, ", "))
}

func oneOf(choices ...string) func(string) error {
	return func(s string) error {
		for _, c := range choices {
			if s == c {
				return nil
			}
		}
		return fmt.Errorf("answer %s", strings.Join(choices, " or "))
	}
}

// trimSecret drops the line end a file or a paste adds.
func trimSecret(b []byte) []byte {
	return []byte(strings.TrimSpace(string(b)))
}

// checkSecret catches the usual mistakes without showing the secret.
func checkSecret(b []byte) error {
	s := string(b)
	switch {
	case s == "":
		return errors.New("the client secret is empty: paste the Value of a secret from Certificates & secrets")
	case guidRE.MatchString(s):
		return errors.New("that is a Secret ID (an id like 00000000-…), not the secret: copy the Value column instead (it is shown only right after the secret is created)")
	case strings.ContainsAny(s, "\r\n"):
		return errors.New("the client secret holds a line break: put only the secret's Value in the file")
	}
	return nil
}
