// Command oauthrelay is an SMTP relay that lets legacy applications keep
// sending mail through Microsoft 365 with OAuth2 (AUTH XOAUTH2).
//
// Each subcommand lives in a cmd_*.go file of its own and registers itself
// in the commands table from an init function, so that the pieces can grow
// independently.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// command is one subcommand of the binary.
type command struct {
	summary string
	// run gets the arguments after the subcommand name and returns the
	// process exit code.
	run func(args []string, stdout, stderr io.Writer) int
	// hidden keeps internal commands out of the usage text.
	hidden bool
}

var commands = map[string]command{}

func register(name string, c command) {
	if _, dup := commands[name]; dup {
		panic("duplicate command " + name)
	}
	commands[name] = c
}

func main() {
	os.Exit(run(invokedAs(os.Args), os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && (args[0] == "--version" || args[0] == "-version") {
		args = append([]string{"version"}, args[1:]...)
	}
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	c, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "oauthrelay: unknown command %q\n\n", args[0])
		usage(stderr)
		return 2
	}
	return c.run(args[1:], stdout, stderr)
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "oauthrelay: an SMTP relay from legacy applications to Microsoft 365 with OAuth2")
	fmt.Fprintln(w, "\nUsage: oauthrelay <command> [flags]\n\nCommands:")
	names := make([]string, 0, len(commands))
	for n, c := range commands {
		if !c.hidden {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-14s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w, "\nRun 'oauthrelay <command> -h' for the arguments and flags of one command,")
	fmt.Fprintln(w, "'oauthrelay --version' for the version.")
	fmt.Fprintln(w, "Start with 'oauthrelay demo' to see the whole path work against a built-in Microsoft 365 emulator.")
}

// usageText is what 'oauthrelay NAME -h' prints for a command or for one
// action of a command ("queue show"), above that command's flags.
type usageText struct {
	// args is the synopsis after the name, e.g. "[-config FILE] ID".
	args string
	// about says what the command does, in a sentence or two.
	about string
	// flags names the flags the command takes, in the order shown; nil
	// shows every flag of its FlagSet. Actions that share one FlagSet
	// (queue) list only the flags that apply to them.
	flags []string
}

// queueSelect is the synopsis of the queue actions that take ids or -all.
const queueSelect = "[-config FILE | -spool DIR] ID... | -all [-state S] [-mailbox A] [-client N] [-older-than D]"

// usages holds the usage of every command and action whose FlagSet comes
// from newFlags. A command without an entry gets "[flags]" and its
// summary.
var usages = map[string]usageText{
	"check":         {"[-config FILE]", "Validates a configuration file and prints its routing table (client → sender → mailbox → app → transport), or every problem with its file:line, key and fix and exits 1.", nil},
	"hash-password": {"[-cost N]", "Reads a client's password (asked twice on a terminal, or from standard input) and prints the bcrypt hash for password_hash in its [[client]]. Example: echo -n 'the-erp-password' | oauthrelay hash-password", nil},
	"serve":         {"[-config FILE]", "Runs the relay: accepts mail from applications, queues it on disk and delivers it to Microsoft 365. SIGHUP reloads the configuration.", nil},
	"demo":          {"[-listen ADDR] [-dir DIR] [-v]", "Runs a relay in front of a built-in Microsoft 365 emulator, sends a sample message through it and prints commands to try next. No Azure tenant is needed.", nil},
	"doctor":        {"[-config FILE] [-mailbox ADDRESS] [-send-test ADDRESS]", "Checks the whole chain to Microsoft 365 for each mailbox (configuration, DNS, TCP, TLS, the token and its claims, AUTH or Graph's answer) and prints the fix for each step that fails; exits 1 if any does.", nil},
	"emulator":      {"[-listen HOST] [-provision TENANT,CLIENT,SECRET,MAILBOX...]... [flags]", "Runs the built-in Microsoft 365 emulator (Entra ID token endpoint, SMTP AUTH, Microsoft Graph, High Volume Email) for tests and benchmarks, and prints its addresses.", nil},
	"version":       {"", "Prints the version, the commit and the Go version oauthrelay was built with.", nil},
	"cert new":      {`[-subject "CN=oauthrelay"] [-days 730] [-out DIR]`, "Creates a self-signed RSA 2048 certificate: DIR/oauthrelay.pem (private key and certificate, for certificate_file) and DIR/oauthrelay.cer (to upload to Entra ID), and prints its thumbprints and manifest keyCredentials.", nil},
	"cert show":     {"FILE [-password-file FILE]", "Prints the subject, dates, thumbprints and manifest keyCredentials of a certificate: a .pem or .pfx with its private key, or the public .cer (PEM or DER). Warns when it expires within 30 days.", nil},
	"queue list": {"[-config FILE | -spool DIR] [-state S] [-mailbox A] [-client N] [-older-than D] [-json]", "Lists queued mail, oldest first, as a table (or JSON for scripts).",
		[]string{"config", "spool", "state", "mailbox", "client", "older-than", "json"}},
	"queue show":           {"[-config FILE | -spool DIR] ID", "Shows one message: its envelope, every delivery attempt with Microsoft's reply, and its headers.", []string{"config", "spool"}},
	"queue retry":          {queueSelect, "Makes deferred mail due now; serve picks it up within a second or two.", []string{"config", "spool", "all", "state", "mailbox", "client", "older-than"}},
	"queue hold":           {queueSelect, "Stops delivering waiting mail until it is released.", []string{"config", "spool", "all", "state", "mailbox", "client", "older-than"}},
	"queue release":        {queueSelect, "Makes held mail due now.", []string{"config", "spool", "all", "state", "mailbox", "client", "older-than"}},
	"queue requeue-failed": {queueSelect, "Sends failed mail back for another try, after the cause was fixed; a sender is never notified twice.", []string{"config", "spool", "all", "state", "mailbox", "client", "older-than"}},
	"queue delete":         {queueSelect + " [-yes]", "Removes mail for good; its senders are not told. Asks first unless -yes.", []string{"config", "spool", "all", "state", "mailbox", "client", "older-than", "yes"}},
	"service install":      {`[-name NAME] [-config FILE] [-log FILE] [-account ACCOUNT]`, "Registers oauthrelay as a Windows service that starts at boot (from an elevated prompt).", nil},
	"service uninstall":    {"[-name NAME]", "Removes the Windows service; the spool and configuration stay.", []string{"name"}},
	"service start":        {"[-name NAME]", "Starts the Windows service.", []string{"name", "log"}},
	"service stop":         {"[-name NAME]", "Stops the Windows service; unfinished mail stays queued.", []string{"name"}},
	"service run":          {"[-name NAME] [-config FILE] [-log FILE]", "What the Windows service manager runs; not for interactive use.", []string{"name", "config", "log"}},
}

// printUsage writes the usage of the command or action name: the synopsis,
// what it does, and only the flags that apply to it.
func printUsage(w io.Writer, name string, fs *flag.FlagSet) {
	u, ok := usages[name]
	if !ok {
		u = usageText{args: "[flags]", about: commands[strings.Fields(name)[0]].summary}
	}
	fmt.Fprintf(w, "Usage: oauthrelay %s\n", strings.TrimSpace(name+" "+u.args))
	if u.about != "" {
		fmt.Fprintf(w, "\n%s\n", u.about)
	}
	shown := flag.NewFlagSet(name, flag.ContinueOnError)
	shown.SetOutput(w)
	add := func(f *flag.Flag) {
		shown.Var(f.Value, f.Name, f.Usage)
		shown.Lookup(f.Name).DefValue = f.DefValue
	}
	if u.flags == nil {
		fs.VisitAll(add)
	}
	for _, n := range u.flags {
		if f := fs.Lookup(n); f != nil {
			add(f)
		}
	}
	n := 0
	shown.VisitAll(func(*flag.Flag) { n++ })
	if n > 0 {
		fmt.Fprintln(w, "\nFlags:")
		shown.PrintDefaults()
	}
}
