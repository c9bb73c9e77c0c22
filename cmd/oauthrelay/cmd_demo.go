package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"golang.org/x/crypto/bcrypt"

	"github.com/oauthrelay/oauthrelay/internal/msemu"
	"github.com/oauthrelay/oauthrelay/internal/service"
)

func init() {
	register("demo", command{summary: "see the whole path work: a relay in front of a built-in Microsoft 365 emulator", run: runDemo})
}

// The demo's made-up tenant. None of it exists at Microsoft.
const (
	demoTenant  = "0b8e2e5c-3f4a-4c1e-9d7b-1a2b3c4d5e6f"
	demoClient  = "7c9d1e2f-5a6b-4c3d-8e9f-0a1b2c3d4e5f"
	demoSecret  = "demo-secret-value-not-real"
	demoMailbox = "helpdesk@contoso.com"
	demoSendAs  = "noreply@contoso.com"
	// demoGraph is a second mailbox, reached through Microsoft Graph
	// instead of SMTP AUTH, as in a tenant that keeps SMTP AUTH off.
	demoGraph    = "reports@contoso.com"
	demoUser     = "erp"
	demoPassword = "demo-password"
)

func runDemo(args []string, stdout, stderr io.Writer) (code int) {
	fs := newFlags("demo", stderr)
	listen := fs.String("listen", "127.0.0.1:2525", "where the demo relay accepts mail")
	dir := fs.String("dir", "", "working directory for the config, spool and delivered mail (default: a new temporary directory)")
	verbose := fs.Bool("v", false, "show debug logs")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if *dir == "" {
		d, err := os.MkdirTemp("", "oauthrelay-demo-")
		if err != nil {
			fmt.Fprintf(stderr, "oauthrelay demo: cannot make a temporary directory: %v\n", err)
			return 1
		}
		*dir = d
		// A demo that fails leaves nothing behind; one that ran keeps its
		// files for a look (it says where).
		defer func() {
			if code != 0 {
				os.RemoveAll(d)
			}
		}()
	}
	if err := os.MkdirAll(*dir, 0o700); err != nil {
		fmt.Fprintf(stderr, "oauthrelay demo: %v\n", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	// 1. The emulated Microsoft 365: Entra ID token endpoint + Exchange SMTP AUTH.
	delivered := filepath.Join(*dir, "delivered")
	emu, err := msemu.New(msemu.Options{Dir: delivered, Logger: slog.New(slog.DiscardHandler)})
	if err == nil {
		err = emu.Start()
	}
	if err != nil {
		fmt.Fprintf(stderr, "oauthrelay demo: cannot start the Microsoft 365 emulator: %v\n", err)
		return 1
	}
	defer emu.Close()
	emu.ProvisionGraph(demoTenant, demoClient, demoSecret)
	emu.AddMailbox(msemu.Mailbox{Address: demoMailbox, FullAccess: []string{demoClient}, SendAs: []string{demoSendAs}})
	emu.AddMailbox(msemu.Mailbox{Address: demoGraph, FullAccess: []string{demoClient}})

	// 2. A relay configuration pointing at it, written like an admin would.
	cfgPath, err := writeDemoConfig(*dir, *listen, emu)
	if err != nil {
		fmt.Fprintf(stderr, "oauthrelay demo: %v\n", err)
		return 1
	}
	cfg, ok := loadConfig(cfgPath, stderr)
	if !ok {
		return 1
	}
	level := "info"
	if *verbose {
		level = "debug"
	}
	cfg.Log.Level = level
	log := newLogger(cfg.Log, stderr)
	fmt.Fprintf(stdout, "oauthrelay demo\n\n")
	fmt.Fprintf(stdout, "  emulated Microsoft 365   token endpoint %s, SMTP %s, Graph %s\n", emu.Authority(), emu.SMTPAddr(), emu.GraphURL())
	fmt.Fprintf(stdout, "  relay configuration      %s\n", cfgPath)
	fmt.Fprintf(stdout, "  relay spool              %s\n", cfg.Spool.Dir)
	fmt.Fprintf(stdout, "  delivered mail           %s\n\n", delivered)

	r, err := service.Start(cfg, service.Options{Logger: log})
	if err != nil {
		fmt.Fprintf(stderr, "oauthrelay demo: cannot start the relay: %v\n", err)
		if errors.Is(err, syscall.EADDRINUSE) {
			fmt.Fprintf(stderr, "  another program is using %s; try: oauthrelay demo -listen 127.0.0.1:2526\n", *listen)
		}
		return 1
	}
	defer r.Shutdown(5 * time.Second)

	// 3. Two sample messages, as a legacy application would send them: one
	// for the SMTP AUTH mailbox, one for the Graph mailbox.
	fmt.Fprintf(stdout, "Sending two sample messages to the relay as client %q (AUTH PLAIN, password %q)...\n", demoUser, demoPassword)
	// The address actually bound (the flag may say port 0).
	addr := r.SMTPAddr().String()
	for _, from := range []string{demoSendAs, demoGraph} {
		if err := sendDemoMessage(addr, from); err != nil {
			fmt.Fprintf(stderr, "oauthrelay demo: the relay refused the sample message from %s: %v\n", from, err)
			return 1
		}
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	msgs, err := emu.WaitDelivered(wctx, 2)
	cancel()
	if err != nil {
		fmt.Fprintf(stderr, "oauthrelay demo: the sample messages did not reach the emulator: %v (see the log above)\n", err)
		return 1
	}
	for i, m := range msgs {
		showDelivered(stdout, m, delivered, i+1)
	}
	fmt.Fprintf(stdout, `
It worked: the relay took plain SMTP, queued each message on disk, got OAuth2
tokens from the emulated Entra ID, and delivered
  - as %s with STARTTLS + AUTH XOAUTH2 (transport = "smtp"),
  - as %s through Microsoft Graph sendMail (transport = "graph").

Try it yourself (swaks is in Debian: apt-get install swaks):

  swaks --server %s --from %s --to someone@example.org
      (no AUTH: 127.0.0.1 is a trusted network of client "printer")

  swaks --server %s -au %s -ap %s --from %s --to someone@example.org
      (AUTH as client "erp"; goes through Graph)

  swaks --server %s --from boss@contoso.com --to someone@example.org
      (refused: the sender policy allows only the configured senders)

  printf 'To: someone@example.org\nSubject: t\n\nhi\n' | oauthrelay sendmail -config %s -t -f %s
      (the sendmail command cron and PHP's mail() call; client "printer" by address)

Each delivered message appears below and in %s.
Press Ctrl-C to stop.
`, demoMailbox, demoGraph, addr, demoSendAs, addr, demoUser, demoPassword, demoGraph, addr, cfgPath, demoSendAs, delivered)

	seen := len(msgs)
	tick := time.NewTicker(300 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			fmt.Fprintln(stdout, "\nStopping. The demo's files stay in", *dir)
			return 0
		case err := <-r.Done():
			if err != nil {
				fmt.Fprintf(stderr, "oauthrelay demo: the relay stopped: %v\n", err)
				return 1
			}
			return 0
		case <-tick.C:
			all := emu.Delivered()
			for ; seen < len(all); seen++ {
				showDelivered(stdout, all[seen], delivered, seen+1)
			}
		}
	}
}

func writeDemoConfig(dir, listen string, emu *msemu.Emulator) (string, error) {
	ca := filepath.Join(dir, "emulator-ca.pem")
	if err := os.WriteFile(ca, emu.CACertPEM(), 0o644); err != nil {
		return "", err
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(demoPassword), bcrypt.MinCost)
	if err != nil {
		return "", err
	}
	secretFile := filepath.Join(dir, "contoso.secret")
	if err := os.WriteFile(secretFile, []byte(demoSecret+"\n"), 0o600); err != nil {
		return "", err
	}
	toml := fmt.Sprintf(`# Written by 'oauthrelay demo': a relay in front of the built-in Microsoft 365
# emulator. Every key is explained in config.toml.example.

[listen]
address = %q
hostname = "oauthrelay.demo"

[spool]
dir = %q
min_retry_delay = "5s"
max_retry_delay = "1m"

[upstream]
address = %q          # the emulator's SMTP AUTH endpoint
graph_url = %q        # the emulator's Microsoft Graph
ca_file = %q          # trust the emulator's certificate authority

[log]
format = "text"
level = "info"

[[app]]
name = "contoso"
tenant_id = %q
client_id = %q
client_secret_file = %q
authority = %q

[[mailbox]]
address = %q
app = "contoso"
send_as = [%q]

# The same app, through Microsoft Graph instead of SMTP AUTH.
[[mailbox]]
address = %q
app = "contoso"
transport = "graph"

[[client]]
name = "erp"
username = %q
password_hash = %q   # %s
senders = ["*"]

[[client]]
name = "printer"
networks = ["127.0.0.1/32", "::1/128"]
senders = [%q]
`, listen, filepath.Join(dir, "spool"), emu.SMTPAddr(), emu.GraphURL(), ca, demoTenant, demoClient, secretFile, emu.Authority(),
		demoMailbox, demoSendAs, demoGraph, demoUser, string(hash), "password: "+demoPassword, demoSendAs)
	path := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(path, []byte(toml), 0o600); err != nil {
		return "", err
	}
	return path, nil
}

func sendDemoMessage(addr, from string) error {
	c, err := smtp.Dial(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Hello("demo.example"); err != nil {
		return err
	}
	if err := c.Auth(sasl.NewPlainClient("", demoUser, demoPassword)); err != nil {
		return err
	}
	msg := "From: ERP System <" + from + ">\r\n" +
		"To: <someone@example.org>\r\n" +
		"Subject: Invoice 4711 from the demo ERP (via " + from + ")\r\n" +
		"\r\n" +
		"Hello,\r\n\r\nthis message went from plain SMTP through oauthrelay to the emulated Microsoft 365.\r\n"
	if err := c.SendMail(from, []string{"someone@example.org"}, strings.NewReader(msg)); err != nil {
		return err
	}
	return c.Quit()
}

func showDelivered(w io.Writer, m msemu.Message, dir string, n int) {
	subject := ""
	for _, l := range strings.Split(string(m.Data), "\n") {
		l = strings.TrimRight(l, "\r")
		if l == "" {
			break
		}
		if strings.HasPrefix(strings.ToLower(l), "subject:") {
			subject = strings.TrimSpace(l[len("subject:"):])
		}
	}
	how := "SMTP AUTH"
	switch m.Transport {
	case msemu.TransportGraph:
		how = "Microsoft Graph (" + m.GraphPath + ")"
	case msemu.TransportHVE:
		how = "High Volume Email"
	}
	fmt.Fprintf(w, "\n==> emulated Microsoft 365 received message %d through %s: mailbox %s, from <%s>, to %s, %d bytes\n    subject: %s\n    message id at Microsoft: %s\n    saved as %s\n",
		n, how, m.Mailbox, m.MailFrom, strings.Join(m.Recipients, ", "), len(m.Data), subject, m.QueueID, filepath.Join(dir, fmt.Sprintf("%d-%s.eml", n, m.Mailbox)))
}
