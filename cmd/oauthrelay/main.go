// Command oauthrelay is an SMTP relay that lets legacy applications keep
// sending mail through Microsoft 365 with OAuth2 (AUTH XOAUTH2).
//
// Each subcommand lives in a cmd_*.go file of its own and registers itself
// in the commands table from an init function, so that the pieces can grow
// independently.
package main

import (
	"fmt"
	"io"
	"os"
	"sort"
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
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
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
	fmt.Fprintln(w, "\nRun 'oauthrelay <command> -h' for the flags of one command.")
	fmt.Fprintln(w, "Start with 'oauthrelay demo' to see the whole path work against a built-in Microsoft 365 emulator.")
}
