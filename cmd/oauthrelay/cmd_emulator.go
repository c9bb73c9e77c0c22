package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/msemu"
)

func init() {
	register("emulator", command{
		summary: "run the built-in Microsoft 365 emulator (for tests and benchmarks)",
		run:     runEmulator,
	})
}

// provisionFlags collects repeated -provision tenant,client,secret,mbx... values.
type provisionFlags [][]string

func (p *provisionFlags) String() string { return fmt.Sprint(*p) }

func (p *provisionFlags) Set(v string) error {
	f := strings.Split(v, ",")
	if len(f) < 4 {
		return errors.New("want tenant,client,secret,mailbox[,mailbox...]")
	}
	*p = append(*p, f)
	return nil
}

func runEmulator(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("emulator", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1", "host for both listeners (ports chosen by the OS)")
	tokenAddr := fs.String("token-addr", "", "fixed host:port for the HTTPS token endpoint")
	smtpAddr := fs.String("smtp-addr", "", "fixed host:port for the SMTP AUTH server")
	dir := fs.String("dir", "", "write each delivered message to `DIR`/<n>-<mailbox>.eml")
	caOut := fs.String("ca-out", "", "write the emulator CA certificate (PEM) to `FILE`")
	lifetime := fs.Duration("token-lifetime", msemu.DefaultTokenLifetime, "lifetime of issued access tokens")
	unlimited := fs.Bool("unlimited", false, "lift the per-mailbox connection, rate and recipient limits (benchmarks)")
	verbose := fs.Bool("v", false, "log every token request and SMTP event")
	var prov provisionFlags
	fs.Var(&prov, "provision", "grant an app `tenant,client,secret,mailbox[,mailbox...]` (repeatable)")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "oauthrelay emulator: unexpected argument %q\n", fs.Arg(0))
		return 2
	}

	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
	}
	opts := msemu.Options{
		Listen: *listen, TokenAddr: *tokenAddr, SMTPAddr: *smtpAddr, Dir: *dir,
		TokenLifetime: *lifetime,
		Logger:        slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})),
	}
	if *unlimited {
		opts.MaxConnsPerMailbox, opts.MaxPerMinute, opts.MaxRecipientsPerDay = -1, -1, -1
	}
	emu, err := msemu.New(opts)
	if err != nil {
		fmt.Fprintln(stderr, "oauthrelay emulator:", err)
		return 1
	}
	for _, p := range prov {
		emu.Provision(p[0], p[1], p[2], p[3:]...)
	}
	if *caOut != "" {
		if err := os.WriteFile(*caOut, emu.CACertPEM(), 0o644); err != nil {
			fmt.Fprintln(stderr, "oauthrelay emulator:", err)
			return 1
		}
	}
	if err := emu.Start(); err != nil {
		fmt.Fprintln(stderr, "oauthrelay emulator:", err)
		return 1
	}
	defer emu.Close()

	fmt.Fprintf(stdout, "authority  %s\n", emu.Authority())
	fmt.Fprintf(stdout, "smtp       %s\n", emu.SMTPAddr())
	if *caOut != "" {
		fmt.Fprintf(stdout, "ca_file    %s\n", *caOut)
	}
	for _, p := range prov {
		fmt.Fprintf(stdout, "app        tenant=%s client=%s mailboxes=%s\n", p[0], p[1], strings.Join(p[3:], ","))
	}
	fmt.Fprintln(stdout, "running; press Ctrl-C to stop")

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	signal.Stop(sig)
	st := emu.Stats()
	fmt.Fprintf(stdout, "stopped: %d token requests, %d SMTP connections, %d messages delivered (%s)\n",
		st.TokenRequests, st.Connections, len(emu.Delivered()), time.Now().Format(time.RFC3339))
	return 0
}
