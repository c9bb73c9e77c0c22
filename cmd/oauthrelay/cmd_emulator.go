package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
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
	listen := fs.String("listen", "127.0.0.1", "host for every listener (ports chosen by the OS)")
	tokenAddr := fs.String("token-addr", "", "fixed host:port for the HTTPS token endpoint")
	smtpAddr := fs.String("smtp-addr", "", "fixed host:port for the SMTP AUTH server")
	graphAddr := fs.String("graph-addr", "", "fixed host:port for the HTTPS Microsoft Graph endpoint")
	hveAddr := fs.String("hve-addr", "", "fixed host:port for the High Volume Email SMTP server")
	dir := fs.String("dir", "", "write each delivered message to `DIR`/<n>-<mailbox>.eml")
	caOut := fs.String("ca-out", "", "write the emulator CA certificate (PEM) to `FILE`")
	lifetime := fs.Duration("token-lifetime", msemu.DefaultTokenLifetime, "lifetime of issued access tokens")
	unlimited := fs.Bool("unlimited", false, "lift the per-mailbox connection, rate and recipient limits and Graph's per-mailbox concurrency limit (benchmarks)")
	verbose := fs.Bool("v", false, "log every token request and SMTP event")
	var prov provisionFlags
	fs.Var(&prov, "provision", "grant an app `tenant,client,secret,mailbox[,mailbox...]` SMTP AUTH, Graph (Mail.Send, Mail.ReadWrite) and HVE (repeatable)")
	creds := addEmulatorCredFlags(fs)
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
		Listen: *listen, TokenAddr: *tokenAddr, SMTPAddr: *smtpAddr,
		GraphAddr: *graphAddr, HVEAddr: *hveAddr, Dir: *dir,
		TokenLifetime: *lifetime,
		Logger:        slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})),
	}
	if *unlimited {
		opts.MaxConnsPerMailbox, opts.MaxPerMinute, opts.MaxRecipientsPerDay = -1, -1, -1
		opts.MaxGraphConcurrency = -1
	}
	emu, err := msemu.New(opts)
	if err != nil {
		fmt.Fprintln(stderr, "oauthrelay emulator:", err)
		return 1
	}
	for _, p := range prov {
		emu.ProvisionGraph(p[0], p[1], p[2], p[3:]...)
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
	fmt.Fprintf(stdout, "graph      %s\n", emu.GraphURL())
	fmt.Fprintf(stdout, "hve        %s\n", emu.HVEAddr())
	if *caOut != "" {
		fmt.Fprintf(stdout, "ca_file    %s\n", *caOut)
	}
	for _, p := range prov {
		fmt.Fprintf(stdout, "app        tenant=%s client=%s mailboxes=%s\n", p[0], p[1], strings.Join(p[3:], ","))
	}
	if err := creds.apply(emu, stdout); err != nil {
		fmt.Fprintln(stderr, "oauthrelay emulator:", err)
		return 2
	}
	fmt.Fprintln(stdout, "running; press Ctrl-C to stop")

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	signal.Stop(sig)
	printStopped(stdout, emu)
	return 0
}

// printStopped writes the counters bench/run.sh reads when the emulator
// stops: one "stopped:" line (token requests, SMTP connections, messages
// delivered, then the Graph and HVE counters after them) and, when Graph
// was used, one line of Graph answers by HTTP status.
func printStopped(w io.Writer, emu *msemu.Emulator) {
	st := emu.Stats()
	delivered := emu.Delivered()
	byGraph := 0
	for _, m := range delivered {
		if m.Transport == msemu.TransportGraph {
			byGraph++
		}
	}
	fmt.Fprintf(w, "stopped: %d token requests, %d SMTP connections, %d messages delivered (%d by Graph), "+
		"%d Graph requests, %d Graph connections, %d HVE connections (%s)\n",
		st.TokenRequests, st.Connections, len(delivered), byGraph,
		st.GraphRequests, st.GraphConnections, st.HVEConnections, time.Now().Format(time.RFC3339))
	if len(st.GraphStatuses) == 0 {
		return
	}
	printGraphConns(w, delivered)
	codes := make([]int, 0, len(st.GraphStatuses))
	for c := range st.GraphStatuses {
		codes = append(codes, c)
	}
	slices.Sort(codes)
	fmt.Fprint(w, "graph statuses:")
	for _, c := range codes {
		fmt.Fprintf(w, " %d=%d", c, st.GraphStatuses[c])
	}
	fmt.Fprintln(w)
}

// printGraphConns writes how the Graph deliveries spread over the Graph
// connections: how many connections carried one, the fewest and most
// messages on one, and when the last of them carried its first message,
// counted from the first Graph delivery. A pool that keeps its connections
// shows few connections, all first used in the opening moments.
func printGraphConns(w io.Writer, delivered []msemu.Message) {
	perConn := map[int]int{}
	firstUse := map[int]time.Time{}
	var start time.Time
	for _, m := range delivered {
		if m.Transport != msemu.TransportGraph {
			continue
		}
		if start.IsZero() || m.At.Before(start) {
			start = m.At
		}
		perConn[m.ConnID]++
		if t, ok := firstUse[m.ConnID]; !ok || m.At.Before(t) {
			firstUse[m.ConnID] = m.At
		}
	}
	if len(perConn) == 0 {
		return
	}
	least, most := 0, 0
	var last time.Time
	for id, n := range perConn {
		if least == 0 || n < least {
			least = n
		}
		most = max(most, n)
		if firstUse[id].After(last) {
			last = firstUse[id]
		}
	}
	fmt.Fprintf(w, "graph connections: %d carried messages (%d to %d each); the last first used %.1f s after the first delivery\n",
		len(perConn), least, most, last.Sub(start).Seconds())
}
