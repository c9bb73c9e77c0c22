package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"golang.org/x/term"

	"github.com/oauthrelay/oauthrelay/config"
	"golang.org/x/crypto/bcrypt"
)

func init() {
	register("check", command{summary: "validate a configuration file and print its routing table", run: runCheck})
	register("hash-password", command{summary: "hash a client password for password_hash (reads standard input)", run: runHashPassword})
}

// newFlags makes a FlagSet whose errors and help go to stderr. Its -h
// prints the command's synopsis, what it does and its flags (see usages);
// name is the command, or the command and its action ("queue show").
func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("oauthrelay "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { printUsage(fs.Output(), name, fs) }
	return fs
}

// parseFlags parses a command's flags the same way for every command:
// -h prints the flags and exits 0, a wrong flag exits 2.
func parseFlags(fs *flag.FlagSet, args []string) (code int, ok bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, false
		}
		return 2, false
	}
	return 0, true
}

// loadConfig loads a configuration and prints its problems and warnings the
// same way for every command.
func loadConfig(path string, stderr io.Writer) (*config.Config, bool) {
	cfg, err := config.Load(path)
	return reportConfig(path, stderr, cfg, err)
}

// reportConfig prints the problems or warnings of a loaded configuration.
func reportConfig(path string, stderr io.Writer, cfg *config.Config, err error) (*config.Config, bool) {
	if err != nil {
		var ce *config.Error
		if errors.As(err, &ce) {
			fmt.Fprintf(stderr, "%s: %d problem(s):\n", path, len(ce.Problems))
			for _, p := range ce.Problems {
				fmt.Fprintf(stderr, "  ✗ %s\n", p)
			}
		} else {
			fmt.Fprintf(stderr, "%s: %v\n", path, err)
		}
		return nil, false
	}
	for _, w := range cfg.Warnings {
		fmt.Fprintf(stderr, "  ! warning: %s\n", w)
	}
	return cfg, true
}

func runCheck(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("check", stderr)
	path := fs.String("config", defaultConfig, "configuration file")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	cfg, err := config.LoadForCheck(*path)
	cfg, ok := reportConfig(*path, stderr, cfg, err)
	if !ok {
		return 1
	}
	fmt.Fprintf(stdout, "%s: configuration is valid\n\n", *path)
	cfg.WriteRoutes(stdout)
	cfg.WriteListener(stdout)
	return 0
}

func runHashPassword(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("hash-password", stderr)
	cost := fs.Int("cost", 12, "bcrypt cost")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	var pw []byte
	var err error
	if term.IsTerminal(int(os.Stdin.Fd())) {
		fmt.Fprint(stderr, "Password: ")
		pw, err = term.ReadPassword(int(os.Stdin.Fd()))
		fmt.Fprintln(stderr)
		if err == nil {
			fmt.Fprint(stderr, "Again: ")
			var again []byte
			again, err = term.ReadPassword(int(os.Stdin.Fd()))
			fmt.Fprintln(stderr)
			if err == nil && string(again) != string(pw) {
				fmt.Fprintln(stderr, "oauthrelay hash-password: the passwords differ; nothing was printed")
				return 1
			}
		}
	} else {
		pw, err = io.ReadAll(io.LimitReader(os.Stdin, 4096))
		// A trailing newline from echo or a file is not part of the
		// password.
		for len(pw) > 0 && (pw[len(pw)-1] == '\n' || pw[len(pw)-1] == '\r') {
			pw = pw[:len(pw)-1]
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "oauthrelay hash-password: cannot read the password: %v\n", err)
		return 1
	}
	if len(pw) == 0 {
		fmt.Fprintln(stderr, "oauthrelay hash-password: the password is empty; type it at the prompt or pipe it in: echo -n 'secret' | oauthrelay hash-password")
		return 1
	}
	if len(pw) > 72 {
		fmt.Fprintln(stderr, "oauthrelay hash-password: bcrypt uses at most 72 bytes of a password; choose a shorter one")
		return 1
	}
	h, err := bcrypt.GenerateFromPassword(pw, *cost)
	if err != nil {
		fmt.Fprintf(stderr, "oauthrelay hash-password: %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, string(h))
	return 0
}
