package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/delivery"
	"github.com/oauthrelay/oauthrelay/doctor"
	"github.com/oauthrelay/oauthrelay/internal/msemu"
	"github.com/oauthrelay/oauthrelay/internal/service"
	"github.com/oauthrelay/oauthrelay/internal/testkit"
	"github.com/oauthrelay/oauthrelay/queue"
)

// The emulator's made-up names: only the proxy resolves them (Squid's
// hosts_file, microsocks' own /etc/hosts), so nothing reaches Microsoft 365
// except through the proxy.
const (
	loginHost = "login.emulator.test"
	smtpHost  = "smtp.emulator.test"
	graphHost = "graph.emulator.test"
)

// Mailboxes of the proxy tests: one per door.
const (
	proxySMTPMbx  = "helpdesk@contoso.com"
	proxyGraphMbx = "graph@contoso.com"
)

// proxyHosts maps the made-up names to the emulator's address.
var proxyHosts = map[string]string{loginHost: "127.0.0.1", smtpHost: "127.0.0.1", graphHost: "127.0.0.1"}

// startHiddenEmulator starts an emulator whose certificate is valid for
// the made-up names, with an app that may use both doors.
func startHiddenEmulator(t *testing.T) *msemu.Emulator {
	t.Helper()
	emu := startEmulator(t, msemu.Options{Hostnames: []string{loginHost, smtpHost, graphHost}})
	emu.ProvisionGraph(tenantID, secretApp, clientSec, proxySMTPMbx, proxyGraphMbx)
	return emu
}

// onlyProxy is the relay's own dialer in these tests: it connects to the
// proxy and refuses every direct connection, which it counts.
type onlyProxy struct {
	proxy string
	mu    sync.Mutex
	tried []string
}

func (d *onlyProxy) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if addr != d.proxy {
		d.mu.Lock()
		d.tried = append(d.tried, addr)
		d.mu.Unlock()
		return nil, fmt.Errorf("direct connection to %s refused by the test: only the proxy %s may be dialled", addr, d.proxy)
	}
	var nd net.Dialer
	return nd.DialContext(ctx, network, addr)
}

func (d *onlyProxy) direct() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.tried...)
}

// proxied is a relay whose every connection must go through a proxy.
type proxied struct {
	*testRelay
	dialer *onlyProxy
}

// startProxiedRelay starts the relay as `serve` does (internal/service),
// pointed at the emulator's made-up names, with [upstream] proxy set to
// proxyURL (and extra keys for [upstream]); proxyAddr is the only address
// its dialer may reach.
func startProxiedRelay(t *testing.T, emu *msemu.Emulator, proxyURL, proxyAddr, upstreamExtra string) *proxied {
	t.Helper()
	port := func(addr string) string {
		_, p, err := net.SplitHostPort(strings.TrimPrefix(addr, "https://"))
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	dir := t.TempDir()
	kc := testkit.Config{
		Dir:      dir,
		Emulator: emu,
		Listen:   testkit.Listen{Address: "127.0.0.1:0", Hostname: "relay.e2e.test"},
		Spool:    testkit.Spool{MinRetryDelay: "1s", MaxRetryDelay: "2s", MaxAge: "1h"},
		Upstream: testkit.Upstream{Timeout: "30s", Proxy: proxyURL, Extra: upstreamExtra,
			Address:  net.JoinHostPort(smtpHost, port(emu.SMTPAddr())),
			GraphURL: "https://" + net.JoinHostPort(graphHost, port(emu.GraphURL()))},
		LogLevel: "debug",
		Apps: []testkit.App{{Name: "contoso", TenantID: tenantID, ClientID: secretApp, ClientSecret: clientSec,
			Authority: "https://" + net.JoinHostPort(loginHost, port(strings.TrimSuffix(emu.Authority(), "/"))) + "/"}},
		Mailboxes: []testkit.Mailbox{
			{Address: proxySMTPMbx, App: "contoso"},
			{Address: proxyGraphMbx, App: "contoso", Transport: "graph"},
		},
		Clients: []testkit.Client{{Name: "app", Networks: []string{"127.0.0.1"}, Senders: []string{"*"}}},
	}
	path, cfg := loadConfig(t, kc)
	logs, log := debugLog()
	d := &onlyProxy{proxy: proxyAddr}
	svc, err := service.Start(cfg, service.Options{Logger: log, Dial: d.dial,
		Delivery: delivery.Options{PollInterval: 100 * time.Millisecond, ShutdownGrace: 5 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	r := &testRelay{t: t, emu: emu, dir: dir, path: path, cfg: cfg, log: log, logs: logs, rec: &tokenRecorder{},
		transcripts: &syncBuffer{}, svc: svc, spool: svc.Spool(), addr: svc.SMTPAddr().String(), sched: svc.Scheduler()}
	t.Cleanup(func() {
		svc.Shutdown(10 * time.Second)
		if t.Failed() || os.Getenv("E2E_DUMP_LOGS") != "" {
			t.Logf("relay log:\n%s", logs.String())
		}
	})
	return &proxied{testRelay: r, dialer: d}
}

// mailboxStatus is the scheduler's health view of a mailbox.
func (r *proxied) mailboxStatus(mailbox string) delivery.MailboxStatus {
	for _, st := range r.sched.Status() {
		if strings.EqualFold(st.Mailbox, mailbox) {
			return st
		}
	}
	return delivery.MailboxStatus{}
}

// deliverThrough sends a message through each door and waits for the
// emulator to have both, in addition to the n already delivered.
func (r *proxied) deliverThrough(ctx context.Context, n int, body string) {
	r.t.Helper()
	r.mustSend(ctx, proxySMTPMbx, "someone@example.org", body+" via SMTP")
	r.mustSend(ctx, proxyGraphMbx, "someone@example.org", body+" via Graph")
	msgs, err := r.emu.WaitDelivered(ctx, n+2)
	if err != nil {
		r.t.Fatalf("waiting for delivery through the proxy: %v", err)
	}
	if len(deliveredTo(msgs, proxySMTPMbx)) == 0 || len(deliveredTo(msgs, proxyGraphMbx)) == 0 {
		r.t.Fatalf("delivered %d messages, want SMTP and Graph ones", len(msgs))
	}
}

// runDoctor runs `oauthrelay doctor` on the relay's configuration, with
// the same dialer, and returns its report.
func (r *proxied) runDoctor(ctx context.Context) (doctor.Result, string) {
	var out bytes.Buffer
	res := doctor.Run(ctx, doctor.Options{Config: r.cfg, Out: &out, Dial: r.dialer.dial})
	return res, out.String()
}

// TestProxySquidCarriesEverything: with Microsoft's names resolvable only
// by Squid and direct connections impossible, tokens, SMTP AUTH and Graph
// all go through Squid's CONNECT (its access log shows each tunnel), the
// start log names the proxy, and doctor passes and names it.
func TestProxySquidCarriesEverything(t *testing.T) {
	ctx := ctxFor(t)
	sq := testkit.StartSquid(t, testkit.SquidOptions{Hosts: proxyHosts})
	emu := startHiddenEmulator(t)
	r := startProxiedRelay(t, emu, sq.URL(), sq.Addr(), "")

	if l := findLine(r.logs.String(), "outbound traffic to Microsoft goes through proxy "+sq.URL()+" (from [upstream] proxy)"); l == "" {
		t.Errorf("the start log does not say the proxy is used:\n%s", r.logs.String())
	}
	r.deliverThrough(ctx, 0, "through Squid")
	if d := r.dialer.direct(); len(d) > 0 {
		t.Errorf("the relay tried direct connections: %v", d)
	}

	res, out := r.runDoctor(ctx)
	t.Logf("doctor:\n%s", out)
	if !res.OK() {
		t.Fatalf("doctor failed through Squid")
	}
	for _, want := range []string{"proxy " + sq.URL() + " (from [upstream] proxy)", "reached the proxy at " + sq.Addr(),
		"DNS: " + smtpHost + " is resolved by the proxy", "TCP: CONNECT through proxy " + sq.URL() + " to " + smtpHost} {
		if !strings.Contains(out, want) {
			t.Errorf("doctor's report lacks %q", want)
		}
	}
	// Squid logs a tunnel when it ends: stop it, then read its log.
	sq.Stop()
	log := sq.AccessLog()
	for _, h := range []string{loginHost, smtpHost, graphHost} {
		if !strings.Contains(log, "TCP_TUNNEL/200") || !strings.Contains(log, "CONNECT "+h+":") {
			t.Errorf("Squid's access log shows no tunnel to %s:\n%s", h, log)
		}
	}
}

// TestProxyRefusalKeepsMailQueued: a proxy that wants a login (407) or
// forbids the way (403) keeps mail queued, for the token request and for
// SMTP alike; the mailbox's last error and the log name the proxy and its
// answer, and delivery resumes once the proxy lets it through.
func TestProxyRefusalKeepsMailQueued(t *testing.T) {
	ctx := ctxFor(t)
	sq := testkit.StartSquid(t, testkit.SquidOptions{Hosts: proxyHosts, Mode: testkit.SquidAuth, User: "relay", Password: "not-given"})
	emu := startHiddenEmulator(t)
	r := startProxiedRelay(t, emu, sq.URL(), sq.Addr(), "")

	// 407 to the token request: nothing reaches Microsoft, mail waits.
	r.mustSend(ctx, proxySMTPMbx, "someone@example.org", "behind a 407")
	waitRefusal(ctx, t, r, "407", "token", "wants a login")
	if n := len(emu.Delivered()); n != 0 {
		t.Fatalf("%d messages delivered past a proxy answering 407", n)
	}
	if len(r.ids(queue.Failed)) != 0 {
		t.Fatal("a proxy's 407 failed a message; it must stay queued")
	}

	sq.Restart(testkit.SquidAllow)
	if _, err := emu.WaitDelivered(ctx, 1); err != nil {
		t.Fatalf("no delivery after the proxy allowed the way: %v", err)
	}

	// 403 to SMTP's CONNECT (the token is cached by now).
	sq.Restart(testkit.SquidDeny)
	r.mustSend(ctx, proxySMTPMbx, "someone@example.org", "behind a 403")
	waitRefusal(ctx, t, r, "403", "connect", "forbids the way to "+smtpHost)
	if len(r.ids(queue.Failed)) != 0 {
		t.Fatal("a proxy's 403 failed a message; it must stay queued")
	}
	sq.Restart(testkit.SquidAllow)
	if _, err := emu.WaitDelivered(ctx, 2); err != nil {
		t.Fatalf("no delivery after the proxy allowed the way again: %v", err)
	}
}

// waitRefusal waits until the SMTP mailbox's last error names the proxy's
// answer at stage, and finds the log line with it and the fix.
func waitRefusal(ctx context.Context, t *testing.T, r *proxied, status, stage, fix string) {
	t.Helper()
	proxy := r.svc.Egress().Proxy()
	var st delivery.MailboxStatus
	testkit.WaitFor(ctx, t, "the mailbox's last error to name the proxy's "+status, func() bool {
		st = r.mailboxStatus(proxySMTPMbx)
		return strings.Contains(st.LastError, "proxy "+proxy) && strings.Contains(st.LastError, status) && strings.HasPrefix(st.LastError, stage)
	})
	t.Logf("last error: %s", st.LastError)
	var line string
	testkit.WaitFor(ctx, t, "a log line naming the proxy, its "+status+" and the fix", func() bool {
		line = findLine(r.logs.String(), "proxy "+proxy, status, fix)
		return line != ""
	})
	t.Logf("log: %s", line)
}

// TestProxyLoginFromPasswordFile: the proxy's user is in [upstream] proxy
// and its password in proxy_password_file; Squid checks both, mail goes
// through, and the password shows nowhere: not in the log, not in the
// configuration's warnings, not in the spool.
func TestProxyLoginFromPasswordFile(t *testing.T) {
	ctx := ctxFor(t)
	const password = "Sq1d-pr0xy-passw0rd"
	sq := testkit.StartSquid(t, testkit.SquidOptions{Hosts: proxyHosts, Mode: testkit.SquidAuth, User: "relay", Password: password})
	emu := startHiddenEmulator(t)
	pwFile := filepath.Join(t.TempDir(), "proxy.password")
	if err := os.WriteFile(pwFile, []byte(password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	withUser := strings.Replace(sq.URL(), "http://", "http://relay@", 1)
	r := startProxiedRelay(t, emu, withUser, sq.Addr(), fmt.Sprintf("proxy_password_file = %q\n", pwFile))
	r.deliverThrough(ctx, 0, "with a proxy login")
	sq.Stop()
	if !strings.Contains(sq.AccessLog(), " relay ") {
		t.Errorf("Squid's access log shows no login as relay:\n%s", sq.AccessLog())
	}
	var warnings []string
	for _, w := range r.cfg.Warnings {
		warnings = append(warnings, w.String())
	}
	where := map[string]string{"log": r.logs.String(), "warnings": strings.Join(warnings, "\n"), "listener replies": r.transcripts.String()}
	for _, st := range []queue.State{queue.Deferred, queue.Failed} {
		envs, _, _ := r.spool.List(st)
		where["spool "+string(st)] = fmt.Sprint(envs)
	}
	for name, text := range where {
		if strings.Contains(text, password) {
			t.Errorf("the proxy password appears in the %s", name)
		}
	}
}

// TestProxySOCKS5: with socks5h:// the SOCKS5 proxy (microsocks) resolves
// Microsoft's names, which only it knows; tokens, SMTP and Graph go
// through it, and doctor passes and names it.
func TestProxySOCKS5(t *testing.T) {
	ctx := ctxFor(t)
	sp := testkit.StartSOCKS(t, testkit.SOCKSOptions{Hosts: proxyHosts})
	emu := startHiddenEmulator(t)
	url := "socks5h://" + sp.Addr
	r := startProxiedRelay(t, emu, url, sp.Addr, "")
	r.deliverThrough(ctx, 0, "through SOCKS5")
	if d := r.dialer.direct(); len(d) > 0 {
		t.Errorf("the relay tried direct connections: %v", d)
	}
	res, out := r.runDoctor(ctx)
	t.Logf("doctor:\n%s", out)
	if !res.OK() {
		t.Fatalf("doctor failed through the SOCKS5 proxy")
	}
	for _, want := range []string{"proxy " + url + " (from [upstream] proxy)", "TCP: SOCKS5 through proxy " + url + " to " + smtpHost} {
		if !strings.Contains(out, want) {
			t.Errorf("doctor's report lacks %q", want)
		}
	}
}
