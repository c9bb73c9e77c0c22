package main

// `oauthrelay init`: from nothing to a working configuration. It asks (on
// a terminal) or takes from flags (in scripts) only what it cannot find out
// by itself, writes a commented config.toml and the client secret's file,
// prints the Entra and Exchange steps with every id filled in, and offers
// to run doctor.

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/oauthrelay/oauthrelay/config"
)

func init() {
	register("init", command{
		summary: "write a working configuration step by step and print the Microsoft 365 steps for it",
		run: func(args []string, stdout, stderr io.Writer) int {
			return runInit(os.Stdin, args, stdout, stderr)
		},
	})
}

// initOptions are init's flags, and then the answers to its questions.
type initOptions struct {
	config     string
	tenant     string // as given: a tenant id or a domain name
	tenantID   string // resolved
	clientID   string
	secretFile string
	secret     []byte // read from secretFile or typed in; never printed
	certNew    bool
	certFile   string
	mailbox    string
	sendAs     listFlag
	transport  string
	clientName string
	auth       bool
	networks   listFlag
	listen     string
	spool      string
	yes        bool
	force      bool
	noDoctor   bool
	// replacing is set when the configuration exists and may be replaced
	// (--force, or the admin said yes): its secret file may be too.
	replacing bool

	// Advanced: another cloud, or a test's emulated Microsoft 365.
	cloud      string
	authority  string
	caFile     string
	upstream   string
	graphURL   string
	hveAddress string
	bcryptCost int
}

// initHidden are the advanced flags left out of `init -h`: they point
// init and the written file at another endpoint, such as the emulator.
var initHidden = map[string]bool{"authority": true, "ca-file": true, "upstream": true, "graph-url": true, "hve-address": true, "bcrypt-cost": true}

// listFlag is a flag that may be repeated and takes comma-separated
// values.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

func initFlags(o *initOptions, stderr io.Writer) *flag.FlagSet {
	fs := newFlags("init", stderr)
	fs.StringVar(&o.config, "config", defaultConfig, "the configuration `file` to write (the client secret goes next to it)")
	fs.StringVar(&o.tenant, "tenant", "", "Directory (tenant) ID, or a domain of the tenant such as contoso.onmicrosoft.com (looked up)")
	fs.StringVar(&o.clientID, "client-id", "", "the app registration's Application (client) ID")
	fs.StringVar(&o.secretFile, "secret-file", "", "a `file` holding the client secret's Value; it is copied next to the config (0600)")
	fs.BoolVar(&o.certNew, "cert-new", false, "make a certificate next to the config, as 'oauthrelay cert new' does, and use it instead of a secret")
	fs.StringVar(&o.certFile, "cert-file", "", "use this existing certificate `file` (PEM with key, or .pfx) instead of a secret")
	fs.StringVar(&o.mailbox, "mailbox", "", "the mailbox the relay sends as (its primary SMTP `address`)")
	fs.Var(&o.sendAs, "send-as", "other From `addresses` the mailbox may send as (repeat it, or separate with commas)")
	fs.StringVar(&o.transport, "transport", "", "how mail reaches Microsoft 365: smtp (SMTP AUTH, the default), graph (Microsoft Graph) or hve (High Volume Email)")
	fs.StringVar(&o.clientName, "client-name", "", "the legacy application's name, also its AUTH username (default \"app\")")
	fs.BoolVar(&o.auth, "auth", false, "the application logs in: generate a password (printed once, only its bcrypt hash is stored)")
	fs.Var(&o.networks, "networks", "`CIDRs` or addresses the application connects from; without --auth it is trusted by address alone")
	fs.StringVar(&o.listen, "listen", "", "the relay's SMTP listen `address` (default 127.0.0.1:2525, or 0.0.0.0:2525 for trusted networks beyond this host)")
	fs.StringVar(&o.spool, "spool", "", "the spool `directory` (default "+config.DefaultSpoolDir+")")
	fs.BoolVar(&o.yes, "yes", false, "ask nothing: take flags and defaults, and run doctor at the end")
	fs.BoolVar(&o.force, "force", false, "overwrite an existing configuration and secret file")
	fs.BoolVar(&o.noDoctor, "no-doctor", false, "do not run doctor at the end")
	fs.StringVar(&o.cloud, "cloud", "global", "the Microsoft cloud: global, usgov or china")
	fs.StringVar(&o.authority, "authority", "", "token endpoint base URL, as app.authority (default: the cloud's)")
	fs.StringVar(&o.caFile, "ca-file", "", "extra trusted CAs (PEM), as upstream.ca_file")
	fs.StringVar(&o.upstream, "upstream", "", "SMTP AUTH endpoint host:port, as upstream.address")
	fs.StringVar(&o.graphURL, "graph-url", "", "Microsoft Graph base URL, as upstream.graph_url")
	fs.StringVar(&o.hveAddress, "hve-address", "", "High Volume Email endpoint host:port, as upstream.hve_address")
	fs.IntVar(&o.bcryptCost, "bcrypt-cost", 12, "bcrypt cost of the generated password's hash, as hash-password -cost")
	fs.Usage = func() {
		fmt.Fprintln(stderr, `Usage: oauthrelay init [flags]

Asks for what it needs (or takes it from flags with --yes), writes a commented
configuration and the client secret's file (both 0600), prints the Entra ID and
Exchange Online steps with the ids filled in, and offers to run doctor.

Flags:`)
		fs.VisitAll(func(f *flag.Flag) {
			if initHidden[f.Name] {
				return
			}
			name, usage := flag.UnquoteUsage(f)
			if f.DefValue != "" && f.DefValue != "false" {
				usage += fmt.Sprintf(" (default %s)", f.DefValue)
			}
			fmt.Fprintf(stderr, "  %s\n    \t%s\n", strings.TrimSpace("--"+f.Name+" "+name), usage)
		})
	}
	return fs
}

// runInit is `oauthrelay init`, reading answers from stdin.
func runInit(stdin io.Reader, args []string, stdout, stderr io.Writer) int {
	var o initOptions
	fs := initFlags(&o, stderr)
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "oauthrelay init: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if err := o.checkFlags(); err != nil {
		fmt.Fprintf(stderr, "oauthrelay init: %v\n", err)
		return 2
	}
	abs, err := filepath.Abs(o.config)
	if err != nil {
		fmt.Fprintf(stderr, "oauthrelay init: %v\n", err)
		return 1
	}
	o.config = abs
	p := newPrompter(stdin, stdout, o.yes)
	if !p.interactive {
		if missing := o.missingForYes(); len(missing) > 0 {
			fmt.Fprintf(stderr, "oauthrelay init: with --yes, give %s\n", strings.Join(missing, ", "))
			return 2
		}
	}
	// A second run changes nothing without asking.
	_, statErr := os.Lstat(o.config)
	if ok, err := p.mayReplace(o.config, o.force); err != nil || !ok {
		fmt.Fprintf(stderr, "oauthrelay init: %s\n", refusal(o.config, err))
		return 1
	}
	o.replacing = statErr == nil
	if o.spool != "" {
		if o.spool, err = filepath.Abs(o.spool); err != nil {
			fmt.Fprintf(stderr, "oauthrelay init: %v\n", err)
			return 1
		}
	}
	if p.interactive {
		fmt.Fprintf(stdout, "oauthrelay init: a configuration for %s\nPress Enter to take the [default]; Ctrl-C stops without writing anything.\n\n", o.config)
	}
	if err := o.gather(p, stdout); err != nil {
		fmt.Fprintf(stderr, "oauthrelay init: %v\n", err)
		return 1
	}
	w, err := o.write(p, stdout)
	if err != nil {
		fmt.Fprintf(stderr, "oauthrelay init: %v\n", err)
		return 1
	}
	o.printSteps(stdout, w)
	return o.offerDoctor(p, stdout, stderr)
}

// refusal says why an existing file was left alone.
func refusal(path string, err error) string {
	if err != nil && !errors.Is(err, errDeclined) {
		return err.Error()
	}
	return fmt.Sprintf("%s already exists; nothing was changed. Run again with --force to overwrite it, or choose another file with -config FILE", path)
}

// checkFlags rejects contradictory or malformed flags before anything is
// asked.
func (o *initOptions) checkFlags() error {
	creds := 0
	for _, set := range []bool{o.secretFile != "", o.certNew, o.certFile != ""} {
		if set {
			creds++
		}
	}
	if creds > 1 {
		return errors.New("give only one of --secret-file, --cert-new and --cert-file")
	}
	if _, ok := config.Clouds[o.cloud]; !ok {
		return fmt.Errorf("--cloud %q: use global, usgov or china", o.cloud)
	}
	if o.transport != "" {
		if err := checkTransport(o.transport); err != nil {
			return fmt.Errorf("--transport: %v", err)
		}
	}
	checks := []struct {
		flag, value string
		check       func(string) error
	}{
		{"--tenant", o.tenant, checkTenant},
		{"--client-id", o.clientID, checkGUID},
		{"--mailbox", o.mailbox, checkAddress},
		{"--client-name", o.clientName, checkName},
	}
	for _, c := range checks {
		if c.value == "" {
			continue
		}
		if err := c.check(c.value); err != nil {
			return fmt.Errorf("%s: %v", c.flag, err)
		}
	}
	for _, a := range o.sendAs {
		if err := checkAddress(a); err != nil {
			return fmt.Errorf("--send-as: %v", err)
		}
	}
	for _, n := range o.networks {
		if err := checkNetwork(n); err != nil {
			return fmt.Errorf("--networks: %v", err)
		}
	}
	return nil
}

// missingForYes lists the flags --yes cannot do without.
func (o *initOptions) missingForYes() []string {
	var m []string
	if o.tenant == "" {
		m = append(m, "--tenant")
	}
	if o.clientID == "" {
		m = append(m, "--client-id")
	}
	if o.secretFile == "" && !o.certNew && o.certFile == "" {
		m = append(m, "--secret-file (or --cert-new, --cert-file)")
	}
	if o.mailbox == "" {
		m = append(m, "--mailbox")
	}
	return m
}

// gather asks for what the flags left open and resolves the tenant.
func (o *initOptions) gather(p *prompter, stdout io.Writer) error {
	var err error
	fromFlag := o.tenant != ""
	if !fromFlag {
		fmt.Fprintln(stdout, "The tenant: its Directory (tenant) ID from Entra ID → Overview, or one of its domains (contoso.onmicrosoft.com).")
	}
	for {
		if o.tenant == "" {
			if o.tenant, err = p.ask("Tenant", "", checkTenant); err != nil {
				return err
			}
		}
		if o.tenantID, err = o.resolveTenant(); err == nil {
			break
		}
		if fromFlag {
			return fmt.Errorf("--tenant: %v", err)
		}
		fmt.Fprintf(stdout, "  %v\n", err)
		o.tenant = ""
	}
	if o.tenantID != o.tenant {
		fmt.Fprintf(stdout, "  %s is tenant %s\n", o.tenant, o.tenantID)
	}
	if o.clientID == "" {
		fmt.Fprintln(stdout, "\nThe app registration (Entra ID → App registrations → New registration, single tenant, no redirect URI).")
		if o.clientID, err = p.ask("Application (client) ID", "", checkGUID); err != nil {
			return err
		}
	}
	if err := o.gatherCredential(p, stdout); err != nil {
		return err
	}
	if o.mailbox == "" {
		fmt.Fprintln(stdout, "\nThe mailbox the relay sends as (a user or shared mailbox with an Exchange Online license).")
		if o.mailbox, err = p.ask("Mailbox address", "", checkAddress); err != nil {
			return err
		}
		s, err := p.ask("Other From addresses it may send as (comma-separated, Enter for none)", "", checkAddressList)
		if err != nil {
			return err
		}
		o.sendAs.Set(s)
	}
	if o.transport == "" {
		o.transport = config.TransportSMTP
		if p.interactive {
			fmt.Fprintln(stdout, "\nHow mail reaches Microsoft 365: smtp (SMTP AUTH), graph (Microsoft Graph, for tenants that keep SMTP AUTH off) or hve (High Volume Email, internal recipients only).")
			if o.transport, err = p.ask("Transport", config.TransportSMTP, checkTransport); err != nil {
				return err
			}
		}
	}
	return o.gatherClient(p, stdout)
}

// gatherCredential reads the client secret or chooses a certificate.
func (o *initOptions) gatherCredential(p *prompter, stdout io.Writer) error {
	if o.secretFile != "" {
		b, err := os.ReadFile(o.secretFile)
		if err != nil {
			return fmt.Errorf("--secret-file: %v", err)
		}
		o.secret = trimSecret(b)
		return checkSecret(o.secret)
	}
	if o.certNew || o.certFile != "" {
		return nil
	}
	fmt.Fprintln(stdout, "\nThe app's credential: 1 = a client secret (Certificates & secrets → New client secret; paste its Value),\n2 = a new certificate made here (you upload its .cer to the app).")
	choice, err := p.ask("Credential", "1", oneOf("1", "2"))
	if err != nil {
		return err
	}
	if choice == "2" {
		o.certNew = true
		return nil
	}
	for {
		s, err := p.secret("Client secret Value (not echoed)")
		if err != nil {
			return err
		}
		o.secret = trimSecret(s)
		if err = checkSecret(o.secret); err == nil {
			return nil
		}
		fmt.Fprintf(stdout, "  %v\n", err)
	}
}

// gatherClient decides how the legacy application connects.
func (o *initOptions) gatherClient(p *prompter, stdout io.Writer) error {
	var err error
	if p.interactive && !o.auth && len(o.networks) == 0 {
		fmt.Fprintln(stdout, "\nHow the legacy application connects: 1 = it logs in (AUTH) with a password generated now,\n2 = no login: it is trusted by the address it connects from.")
		choice, err := p.ask("Connection", "1", oneOf("1", "2"))
		if err != nil {
			return err
		}
		if choice == "1" {
			o.auth = true
		} else {
			s, err := p.ask("Its networks (CIDRs or addresses, comma-separated)", "", checkNetworkList)
			if err != nil {
				return err
			}
			o.networks.Set(s)
		}
	}
	if !o.auth && len(o.networks) == 0 {
		o.auth = true // --yes without either: a password is the safe default
	}
	if o.clientName == "" {
		o.clientName = "app"
		if p.interactive {
			what := "Its name in logs"
			if o.auth {
				what = "Its name (also its AUTH username)"
			}
			if o.clientName, err = p.ask(what, "app", checkName); err != nil {
				return err
			}
		}
	}
	return nil
}

// offerDoctor runs doctor on the written file: asked interactively, by
// default with --yes. Its verdict does not change init's exit code: the
// tenant steps usually still have to be done.
func (o *initOptions) offerDoctor(p *prompter, stdout, stderr io.Writer) int {
	if o.noDoctor {
		fmt.Fprintf(stdout, "\nWhen the steps are done: oauthrelay doctor -config %s\n", o.config)
		return 0
	}
	if p.interactive {
		ok, err := p.confirm("\nRun oauthrelay doctor now? It fails until the steps above are done (grants can take up to an hour)", true)
		if err != nil || !ok {
			fmt.Fprintf(stdout, "Later: oauthrelay doctor -config %s\n", o.config)
			return 0
		}
	}
	fmt.Fprintf(stdout, "\n$ oauthrelay doctor -config %s\n", o.config)
	if code := run([]string{"doctor", "-config", o.config}, stdout, stderr); code != 0 {
		fmt.Fprintf(stdout, "\ndoctor found problems: each ✗ above says its fix. The configuration is written; run doctor again once they are fixed:\n  oauthrelay doctor -config %s\n", o.config)
		return 0
	}
	fmt.Fprintf(stdout, "\nReady: oauthrelay serve -config %s\n", o.config)
	return 0
}

// sortedUnique returns the addresses lower-cased, without duplicates and
// without the mailbox itself.
func sortedUnique(list []string, except string) []string {
	seen := map[string]bool{strings.ToLower(except): true}
	var out []string
	for _, s := range list {
		k := strings.ToLower(s)
		if !seen[k] {
			seen[k] = true
			out = append(out, s)
		}
	}
	sort.Strings(out)
	return out
}
