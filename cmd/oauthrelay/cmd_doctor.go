package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"

	"github.com/oauthrelay/oauthrelay/doctor"
)

func init() {
	register("doctor", command{summary: "check the whole chain to Microsoft 365 (config, DNS, TLS, token, AUTH per mailbox) and say how to fix it", run: runDoctor})
}

func runDoctor(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("doctor", stderr)
	path := fs.String("config", defaultConfig, "configuration file")
	mailbox := fs.String("mailbox", "", "check only this mailbox (and its app)")
	sendTest := fs.String("send-test", "", "also send a test message to this `address` from each mailbox checked")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "oauthrelay doctor: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	fmt.Fprintf(stdout, "config %s\n", *path)
	cfg, ok := loadConfig(*path, stdout)
	if !ok {
		fmt.Fprintf(stdout, "  ✗ the configuration is invalid\n      fix: correct the problems above (`oauthrelay check -config %s` lists them too)\n", *path)
		return 1
	}
	fmt.Fprintf(stdout, "  ✓ valid: %d app(s), %d mailbox(es), %d client(s)\n", len(cfg.Apps), len(cfg.Mailboxes), len(cfg.Clients))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	o := doctor.Options{Config: cfg, Mailbox: *mailbox, SendTest: *sendTest, Out: stdout}
	if res := doctor.Run(ctx, o); !res.OK() {
		return 1
	}
	return 0
}
