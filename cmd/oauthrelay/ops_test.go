package main

// Tests of issue 5 (operations) against the in-process Microsoft 365
// emulator: queue commands on a live spool, metrics and health, doctor,
// and reload.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/oauthrelay/oauthrelay/config"
	"github.com/oauthrelay/oauthrelay/internal/msemu"
	"github.com/oauthrelay/oauthrelay/internal/msemu/emutest"
	"github.com/oauthrelay/oauthrelay/internal/service"
	"github.com/oauthrelay/oauthrelay/internal/testkit"
)

const (
	opsTenant  = "4f1e2d3c-5b6a-4789-8a9b-0c1d2e3f4a5b"
	opsClient  = "6a7b8c9d-0e1f-4a2b-9c3d-4e5f6a7b8c9d"
	opsSecret  = "Ops~secret.VALUE_0123456789"
	opsMailbox = "helpdesk@contoso.test"
)

// opsWait bounds every wait of these tests.
const opsWait = 30 * time.Second

// lockedBuffer is a log sink safe for concurrent writers.
type lockedBuffer = testkit.SyncBuffer

// opsEnv is an emulator provisioned for one app and mailbox, and a
// configuration directory for the relay.
type opsEnv struct {
	t          *testing.T
	emu        *msemu.Emulator
	dir        string
	caFile     string
	secretFile string
	path       string
}

func newOpsEnv(t *testing.T) *opsEnv {
	t.Helper()
	emu := emutest.Start(t, msemu.Options{})
	emu.Provision(opsTenant, opsClient, opsSecret, opsMailbox)
	dir := t.TempDir()
	e := &opsEnv{t: t, emu: emu, dir: dir, caFile: filepath.Join(dir, "ca.pem"),
		secretFile: filepath.Join(dir, "contoso.secret"), path: filepath.Join(dir, "config.toml")}
	if err := os.WriteFile(e.caFile, emu.CACertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(e.secretFile, []byte(opsSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return e
}

// opsClientConf is a [[client]] trusted by network.
type opsClientConf struct{ name, network string }

// write writes the relay's configuration with the given clients and
// listener address.
func (e *opsEnv) write(listen string, clients ...opsClientConf) {
	e.t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, `[listen]
address = %q
hostname = "relay.ops.test"

[spool]
dir = %q
# Long enough that nothing is retried by itself during a test: only
# queue commands (or a reload) make mail due.
min_retry_delay = "1h"
max_retry_delay = "2h"

[upstream]
address = %q
ca_file = %q
timeout = "20s"

[metrics]
address = "127.0.0.1:0"

[log]
level = "debug"

[[app]]
name = "contoso"
tenant_id = %q
client_id = %q
client_secret_file = %q
authority = %q

[[mailbox]]
address = %q
app = "contoso"
`, listen, filepath.Join(e.dir, "spool"), e.emu.SMTPAddr(), e.caFile, opsTenant, opsClient, e.secretFile, e.emu.Authority(), opsMailbox)
	for _, c := range clients {
		fmt.Fprintf(&b, "\n[[client]]\nname = %q\nnetworks = [%q]\nsenders = [%q]\n", c.name, c.network, opsMailbox)
	}
	if err := os.WriteFile(e.path, []byte(b.String()), 0o600); err != nil {
		e.t.Fatal(err)
	}
}

// start runs the relay as serve does and stops it when the test ends.
func (e *opsEnv) start() (*service.Relay, *lockedBuffer) {
	e.t.Helper()
	return startInProcess(e.t, e.path, slog.LevelDebug)
}

// startInProcess loads the configuration at path and runs the relay as
// serve does, logging at level into the returned buffer; it stops the
// relay when the test ends and shows the log if the test failed.
func startInProcess(t *testing.T, path string, level slog.Level) (*service.Relay, *testkit.SyncBuffer) {
	t.Helper()
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	logs := &testkit.SyncBuffer{}
	r, err := service.Start(cfg, service.Options{Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: level}))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		r.Shutdown(10 * time.Second)
		if t.Failed() {
			t.Logf("relay log:\n%s", logs.String())
		}
	})
	return r, logs
}

// oauthrelay runs a subcommand in-process and returns its exit code and
// output.
func oauthrelay(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return code, out.String(), errb.String()
}

// sendVia submits one message to the relay at addr over c (a fresh
// connection when c is nil).
func sendVia(c *smtp.Client, subject string) error {
	if err := c.Mail(opsMailbox, nil); err != nil {
		return err
	}
	if err := c.Rcpt("customer@example.org", nil); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "From: <%s>\r\nTo: <customer@example.org>\r\nSubject: %s\r\nMessage-ID: <%d@ops.test>\r\n\r\nhello\r\n", opsMailbox, subject, time.Now().UnixNano())
	return w.Close()
}

func dialRelay(t *testing.T, addr string) *smtp.Client {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, opsWait)
	if err != nil {
		t.Fatal(err)
	}
	nc.SetDeadline(time.Now().Add(opsWait))
	c := smtp.NewClient(nc)
	if err := c.Hello("app.ops.test"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func send(t *testing.T, addr, subject string) error {
	t.Helper()
	c := dialRelay(t, addr)
	err := sendVia(c, subject)
	if err == nil {
		c.Quit()
	}
	return err
}

// eventually polls cond until it holds or opsWait passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(opsWait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", opsWait, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: opsWait}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

type listedRow struct {
	ID         string `json:"id"`
	State      string `json:"state"`
	Mailbox    string `json:"mailbox"`
	Client     string `json:"client"`
	LastError  string `json:"last_error"`
	AgeSeconds int64  `json:"age_seconds"`
	Attempts   []struct {
		Reply string `json:"reply"`
	} `json:"attempts"`
}

func queueListJSON(t *testing.T, path string, extra ...string) []listedRow {
	t.Helper()
	code, out, errOut := oauthrelay(append([]string{"queue", "list", "-config", path, "-json"}, extra...)...)
	if code != 0 {
		t.Fatalf("queue list: exit %d: %s", code, errOut)
	}
	var rows []listedRow
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("queue list -json: %v\n%s", err, out)
	}
	return rows
}

// Done when: with Microsoft answering 451 to everything, three messages
// show in `queue list --json`; after the faults clear, `queue retry --all`
// delivers them within seconds. /metrics exposes the queue gauge and
// /healthz answers 200.
func TestQueueRetryAllAfterOutage(t *testing.T) {
	e := newOpsEnv(t)
	e.write("127.0.0.1:0", opsClientConf{"erp", "127.0.0.1/32"})
	e.emu.FailNextData(1_000_000, msemu.ReplyTempError)
	r, _ := e.start()
	addr := r.SMTPAddr().String()
	metricsURL := "http://" + r.MetricsAddr().String()

	for i := range 3 {
		if err := send(t, addr, fmt.Sprintf("outage %d", i)); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	var rows []listedRow
	eventually(t, "three deferred messages", func() bool {
		rows = queueListJSON(t, e.path, "-state", "deferred")
		return len(rows) == 3
	})
	for _, row := range rows {
		if row.Mailbox != opsMailbox || row.Client != "erp" || !strings.HasPrefix(row.LastError, "451 4.7.0") || len(row.Attempts) == 0 {
			t.Errorf("queue list row %+v: want mailbox %s, client erp and the 451 as last error", row, opsMailbox)
		}
	}
	// Filters.
	if got := queueListJSON(t, e.path, "-mailbox", "nobody@contoso.test"); len(got) != 0 {
		t.Errorf("-mailbox filter kept %d rows", len(got))
	}
	if got := queueListJSON(t, e.path, "-client", "erp", "-older-than", "1h"); len(got) != 0 {
		t.Errorf("-older-than 1h kept %d fresh rows", len(got))
	}
	if code, out, _ := oauthrelay("queue", "list", "-config", e.path); code != 0 || !strings.Contains(out, "3 message(s)") || !strings.Contains(out, "deferred") {
		t.Errorf("queue list table (exit %d):\n%s", code, out)
	}
	code, out, errOut := oauthrelay("queue", "show", rows[0].ID, "-config", e.path)
	if code != 0 {
		t.Fatalf("queue show: exit %d: %s", code, errOut)
	}
	for _, want := range []string{rows[0].ID, "451 4.7.0 Temporary server error", "attempts (1)", "Subject: outage", "customer@example.org"} {
		if !strings.Contains(out, want) {
			t.Errorf("queue show lacks %q:\n%s", want, out)
		}
	}

	code, body := httpGet(t, metricsURL+"/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	for _, want := range []string{
		`oauthrelay_queue_messages{mailbox="` + opsMailbox + `",state="deferred"} 3`,
		`oauthrelay_delivery_attempts_total{reply_class="4xx",result="deferred",transport="smtp"} 3`,
		`oauthrelay_messages_accepted_total{client="erp"} 3`,
		`oauthrelay_token_requests_total{app="contoso",result="ok"}`,
		`oauthrelay_token_seconds_left{app="contoso",resource="exchange"}`,
		`oauthrelay_queue_oldest_age_seconds`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if code, body := httpGet(t, metricsURL+"/healthz"); code != 200 || strings.TrimSpace(body) != "ok" {
		t.Errorf("/healthz = %d %q", code, body)
	}
	if code, body := httpGet(t, metricsURL+"/readyz"); code != 200 {
		t.Errorf("/readyz = %d %q (transient 451s are no configuration fault)", code, body)
	}

	e.emu.FailNextData(0, "")
	code, out, errOut = oauthrelay("queue", "retry", "-all", "-config", e.path)
	if code != 0 || strings.Count(out, "due now") != 3 {
		t.Fatalf("queue retry -all: exit %d\n%s%s", code, out, errOut)
	}
	ctx, cancel := context.WithTimeout(context.Background(), opsWait)
	defer cancel()
	if _, err := e.emu.WaitDelivered(ctx, 3); err != nil {
		t.Fatalf("the three messages were not delivered after queue retry -all: %v", err)
	}
	eventually(t, "an empty queue", func() bool { return len(queueListJSON(t, e.path)) == 0 })
}

// hold, release and delete on a live spool; delete asks first.
func TestQueueHoldReleaseDelete(t *testing.T) {
	e := newOpsEnv(t)
	e.write("127.0.0.1:0", opsClientConf{"erp", "127.0.0.1/32"})
	e.emu.FailNextData(1_000_000, msemu.ReplyTempError)
	r, _ := e.start()
	for i := range 2 {
		if err := send(t, r.SMTPAddr().String(), fmt.Sprintf("held %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	var rows []listedRow
	eventually(t, "two deferred messages", func() bool {
		rows = queueListJSON(t, e.path, "-state", "deferred")
		return len(rows) == 2
	})
	keep, drop := rows[0].ID, rows[1].ID
	if code, out, errOut := oauthrelay("queue", "hold", keep, drop, "-config", e.path); code != 0 {
		t.Fatalf("queue hold: exit %d\n%s%s", code, out, errOut)
	}
	if got := queueListJSON(t, e.path, "-state", "hold"); len(got) != 2 {
		t.Fatalf("%d held, want 2", len(got))
	}
	if code, _, errOut := oauthrelay("queue", "retry", keep, "-config", e.path); code == 0 || !strings.Contains(errOut, "queue release") {
		t.Errorf("retry of a held message: exit %d, %q; want a pointer to release", code, errOut)
	}

	// delete: no terminal and no -yes → refused.
	confirmIsTerminal = func() bool { return false }
	defer func() { confirmIsTerminal = func() bool { return false } }()
	code, _, errOut := oauthrelay("queue", "delete", drop, "-config", e.path)
	if code == 0 || !strings.Contains(errOut, "-yes") {
		t.Fatalf("delete without -yes and no terminal: exit %d, %q", code, errOut)
	}
	// A terminal that answers no, then one that answers yes.
	confirmIsTerminal = func() bool { return true }
	confirmIn = strings.NewReader("n\n")
	if code, _, _ := oauthrelay("queue", "delete", drop, "-config", e.path); code == 0 {
		t.Fatal("delete went ahead after the answer n")
	}
	confirmIn = strings.NewReader("y\n")
	if code, out, errOut := oauthrelay("queue", "delete", drop, "-config", e.path); code != 0 || !strings.Contains(out, "deleted") {
		t.Fatalf("delete after y: exit %d\n%s%s", code, out, errOut)
	}
	if code, _, errOut := oauthrelay("queue", "show", drop, "-config", e.path); code == 0 || !strings.Contains(errOut, "no message") {
		t.Errorf("show of a deleted message: exit %d %q", code, errOut)
	}

	e.emu.FailNextData(0, "")
	if code, out, errOut := oauthrelay("queue", "release", "-all", "-config", e.path); code != 0 {
		t.Fatalf("queue release -all: exit %d\n%s%s", code, out, errOut)
	}
	ctx, cancel := context.WithTimeout(context.Background(), opsWait)
	defer cancel()
	msgs, err := e.emu.WaitDelivered(ctx, 1)
	if err != nil {
		t.Fatalf("released message not delivered: %v", err)
	}
	if !bytes.Contains(msgs[0].Data, []byte("Subject: held")) {
		t.Errorf("delivered %q", msgs[0].Data)
	}
	eventually(t, "an empty queue", func() bool { return len(queueListJSON(t, e.path)) == 0 })
	if n := len(e.emu.Delivered()); n != 1 {
		t.Errorf("%d messages delivered, want 1 (the other was deleted)", n)
	}
}

// requeue-failed sends mail that failed for good back once the cause is
// fixed.
func TestQueueRequeueFailed(t *testing.T) {
	e := newOpsEnv(t)
	e.write("127.0.0.1:0", opsClientConf{"erp", "127.0.0.1/32"})
	e.emu.FailRcptAddress("customer@example.org", "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup")
	r, _ := e.start()
	if err := send(t, r.SMTPAddr().String(), "will fail"); err != nil {
		t.Fatal(err)
	}
	var rows []listedRow
	eventually(t, "a failed message", func() bool {
		rows = queueListJSON(t, e.path, "-state", "failed")
		return len(rows) == 1
	})
	dsns := func() int {
		n := 0
		for _, m := range e.emu.Delivered() {
			if bytes.Contains(m.Data, []byte("Subject: Undelivered Mail")) {
				n++
			}
		}
		return n
	}
	eventually(t, "the delivery status notification", func() bool { return dsns() == 1 })

	// Requeued before the cause is fixed: it fails again, and the sender,
	// already told once, is not told again.
	if code, out, errOut := oauthrelay("queue", "requeue-failed", rows[0].ID, "-config", e.path); code != 0 {
		t.Fatalf("requeue-failed: exit %d\n%s%s", code, out, errOut)
	}
	eventually(t, "the second failure", func() bool {
		rows = queueListJSON(t, e.path, "-state", "failed")
		return len(rows) == 1 && len(rows[0].Attempts) == 2
	})
	// A second notification would be queued before the failure is written
	// down; once nothing is waiting, it would have been delivered.
	eventually(t, "nothing left to deliver", func() bool {
		return len(queueListJSON(t, e.path, "-state", "incoming,active,deferred")) == 0
	})
	if n := dsns(); n != 1 {
		t.Fatalf("%d delivery status notifications after a requeued message failed again, want 1", n)
	}

	e.emu.FailRcptAddress("customer@example.org", "")
	if code, out, errOut := oauthrelay("queue", "requeue-failed", "-all", "-config", e.path); code != 0 {
		t.Fatalf("requeue-failed: exit %d\n%s%s", code, out, errOut)
	}
	ctx, cancel := context.WithTimeout(context.Background(), opsWait)
	defer cancel()
	eventually(t, "the requeued message delivered", func() bool {
		for _, m := range e.emu.Delivered() {
			if bytes.Contains(m.Data, []byte("Subject: will fail")) {
				return true
			}
		}
		return ctx.Err() != nil
	})
	if ctx.Err() != nil {
		t.Fatal("requeued message not delivered")
	}
}

// /readyz names the mailbox, Microsoft's reply and the fix when a mailbox
// is paused by a configuration fault.
func TestReadyzNamesConfigFault(t *testing.T) {
	e := newOpsEnv(t)
	e.write("127.0.0.1:0", opsClientConf{"erp", "127.0.0.1/32"})
	e.emu.AddMailbox(msemu.Mailbox{Address: opsMailbox, FullAccess: []string{opsClient}, SMTPAuthDisabled: true})
	r, _ := e.start()
	if err := send(t, r.SMTPAddr().String(), "paused"); err != nil {
		t.Fatal(err)
	}
	url := "http://" + r.MetricsAddr().String() + "/readyz"
	var body string
	eventually(t, "/readyz to report the paused mailbox", func() bool {
		var code int
		code, body = httpGet(t, url)
		return code == http.StatusServiceUnavailable
	})
	for _, want := range []string{opsMailbox, "5.7.139", "Set-CASMailbox -Identity " + opsMailbox + " -SmtpClientAuthenticationDisabled $false"} {
		if !strings.Contains(body, want) {
			t.Errorf("/readyz body lacks %q:\n%s", want, body)
		}
	}
	if code, _ := httpGet(t, "http://"+r.MetricsAddr().String()+"/healthz"); code != 200 {
		t.Errorf("/healthz = %d while not ready; the process is alive", code)
	}
}

// Done when: doctor exits 0 on a healthy setup, and sends a test message.
func TestDoctorHealthy(t *testing.T) {
	e := newOpsEnv(t)
	e.write("127.0.0.1:0", opsClientConf{"erp", "127.0.0.1/32"})
	code, out, errOut := oauthrelay("doctor", "-config", e.path, "-send-test", "someone@example.org")
	t.Logf("doctor output:\n%s", out)
	if code != 0 {
		t.Fatalf("doctor: exit %d\n%s%s", code, out, errOut)
	}
	for _, want := range []string{"✓ valid", "✓ DNS", "✓ TCP", "✓ TLS: STARTTLS with TLS 1.", "✓ token: acquired", "roles SMTP.SendAsApp",
		"✓ AUTH XOAUTH2 as " + opsMailbox, "✓ test message to someone@example.org accepted", "checks passed"} {
		if !strings.Contains(out, want) {
			t.Errorf("doctor output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "✗") {
		t.Errorf("doctor printed a failure:\n%s", out)
	}
	if n := len(e.emu.Delivered()); n != 1 {
		t.Errorf("emulator got %d test messages, want 1", n)
	}
	if strings.Contains(out+errOut, opsSecret) {
		t.Error("doctor printed the client secret")
	}
}

// Done when: doctor exits non-zero naming AADSTS7000215 and the fix after
// the secret file is replaced with a wrong value.
func TestDoctorWrongSecret(t *testing.T) {
	e := newOpsEnv(t)
	e.write("127.0.0.1:0", opsClientConf{"erp", "127.0.0.1/32"})
	const wrong = "c0ffee00-1111-2222-3333-444455556666" // a secret ID, not its Value
	if err := os.WriteFile(e.secretFile, []byte(wrong+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := oauthrelay("doctor", "-config", e.path)
	t.Logf("doctor output:\n%s", out)
	if code == 0 {
		t.Fatalf("doctor exited 0 with a wrong secret:\n%s", out)
	}
	for _, want := range []string{"✗ token: AADSTS7000215", "copy the secret's Value", opsClient, opsTenant, "AUTH XOAUTH2: skipped"} {
		if !strings.Contains(out, want) {
			t.Errorf("doctor output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out+errOut, wrong) {
		t.Error("doctor printed the (wrong) secret")
	}
}

// Done when: doctor names Set-CASMailbox when the mailbox answers 5.7.139;
// and the New-ServicePrincipal / Add-MailboxPermission steps, with the
// client id filled in, for 5.7.3.
func TestDoctorExplainsAuthReplies(t *testing.T) {
	e := newOpsEnv(t)
	e.write("127.0.0.1:0", opsClientConf{"erp", "127.0.0.1/32"})

	e.emu.AddMailbox(msemu.Mailbox{Address: opsMailbox, FullAccess: []string{opsClient}, SMTPAuthDisabled: true})
	code, out, _ := oauthrelay("doctor", "-config", e.path, "-mailbox", opsMailbox)
	t.Logf("doctor output:\n%s", out)
	if code == 0 {
		t.Fatalf("doctor exited 0 with SMTP AUTH disabled:\n%s", out)
	}
	for _, want := range []string{"535 5.7.139", "Set-CASMailbox -Identity " + opsMailbox + " -SmtpClientAuthenticationDisabled $false"} {
		if !strings.Contains(out, want) {
			t.Errorf("doctor output lacks %q:\n%s", want, out)
		}
	}

	e.emu.AddMailbox(msemu.Mailbox{Address: opsMailbox}) // no FullAccess: 535 5.7.3
	code, out, _ = oauthrelay("doctor", "-config", e.path)
	t.Logf("doctor output:\n%s", out)
	if code == 0 {
		t.Fatalf("doctor exited 0 without FullAccess:\n%s", out)
	}
	for _, want := range []string{"535 5.7.3", "New-ServicePrincipal -AppId " + opsClient, "Add-MailboxPermission -Identity " + opsMailbox} {
		if !strings.Contains(out, want) {
			t.Errorf("doctor output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "<client id>") || strings.Contains(out, "<service principal id>") {
		t.Errorf("doctor left placeholders unfilled:\n%s", out)
	}

	if code, out, _ := oauthrelay("doctor", "-config", e.path, "-mailbox", "nobody@contoso.test"); code == 0 || !strings.Contains(out, "no [[mailbox]] nobody@contoso.test") {
		t.Errorf("doctor -mailbox with an unknown mailbox: exit %d\n%s", code, out)
	}
}

// Done when: after SIGHUP a newly added [[client]] can send without a
// restart; an open connection survives the reload; an invalid file is
// refused with each problem logged and the old configuration stays.
func TestReloadAddsClient(t *testing.T) {
	e := newOpsEnv(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	// Only a client elsewhere is configured: this host may not send.
	e.write(addr, opsClientConf{"elsewhere", "192.0.2.10/32"})

	logs := &lockedBuffer{}
	reload := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	exited := make(chan int, 1)
	go func() { exited <- serve(ctx, e.path, logs, reload) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-exited:
		case <-time.After(opsWait):
			t.Error("serve did not stop")
		}
		if t.Failed() {
			t.Logf("relay log:\n%s", logs.String())
		}
	})
	eventually(t, "serve to listen", func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	if err := send(t, addr, "before"); err == nil {
		t.Fatal("an unconfigured client could send before the reload")
	}
	// A connection opened before the reload must survive it.
	open := dialRelay(t, addr)

	e.write(addr, opsClientConf{"elsewhere", "192.0.2.10/32"}, opsClientConf{"erp", "127.0.0.1/32"})
	reload <- struct{}{}
	eventually(t, "the reload", func() bool { return strings.Contains(logs.String(), "configuration reloaded") })
	if err := send(t, addr, "after"); err != nil {
		t.Fatalf("the client added by the reload cannot send: %v", err)
	}
	if err := sendVia(open, "open across reload"); err != nil {
		t.Fatalf("a connection opened before the reload: %v", err)
	}

	// An invalid file: refused, each problem logged, the old one in force.
	good, err := os.ReadFile(e.path)
	if err != nil {
		t.Fatal(err)
	}
	bad := string(good) + "\n[[client]]\nname = \"x\"\nnetwork = [\"10.0.0.0/8\"]\nsenders = [\"stranger@example.org\"]\n"
	if err := os.WriteFile(e.path, []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	reload <- struct{}{}
	eventually(t, "the refused reload", func() bool {
		return strings.Contains(logs.String(), "the old one stays in force")
	})
	l := logs.String()
	if strings.Count(l, "reload refused: "+e.path+":") < 2 || !strings.Contains(l, "network") || !strings.Contains(l, "stranger@example.org") {
		t.Errorf("the refused reload does not name each problem with its line:\n%s", l)
	}
	if err := send(t, addr, "after bad reload"); err != nil {
		t.Fatalf("the old configuration is no longer in force: %v", err)
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), opsWait)
	defer cancel2()
	if _, err := e.emu.WaitDelivered(ctx2, 3); err != nil {
		t.Fatalf("mail accepted around the reloads was not delivered: %v", err)
	}
}

// doctor stops at the first network step that fails and says what to do.
func TestDoctorUnreachableUpstream(t *testing.T) {
	e := newOpsEnv(t)
	e.write("127.0.0.1:0", opsClientConf{"erp", "127.0.0.1/32"})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	b, err := os.ReadFile(e.path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(e.path, bytes.Replace(b, []byte(e.emu.SMTPAddr()), []byte(closed), 1), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, _ := oauthrelay("doctor", "-config", e.path)
	t.Logf("doctor output:\n%s", out)
	if code == 0 {
		t.Fatal("doctor exited 0 with an unreachable upstream")
	}
	for _, want := range []string{"✗ TCP: cannot connect to " + closed, "fix: allow outbound TCP", "✓ token: acquired", "AUTH XOAUTH2: skipped"} {
		if !strings.Contains(out, want) {
			t.Errorf("doctor output lacks %q", want)
		}
	}
}

// An invalid configuration is the first ✗.
func TestDoctorInvalidConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(path, []byte("[listen]\nadress = \"127.0.0.1:25\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, _ := oauthrelay("doctor", "-config", path)
	if code == 0 || !strings.Contains(out, "✗ the configuration is invalid") || !strings.Contains(out, "adress") {
		t.Fatalf("doctor on an invalid file: exit %d\n%s", code, out)
	}
}

// A second serve on the same spool exits at once, naming the process that
// holds it; queue commands still work beside the first.
func TestSecondServeOnOneSpool(t *testing.T) {
	e := newOpsEnv(t)
	e.write("127.0.0.1:0", opsClientConf{"erp", "127.0.0.1/32"})
	logs := &lockedBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	exited := make(chan int, 1)
	go func() { exited <- serve(ctx, e.path, logs, nil) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-exited:
		case <-time.After(opsWait):
			t.Error("serve did not stop")
		}
	})
	eventually(t, "the first serve to listen", func() bool { return strings.Contains(logs.String(), "oauthrelay listening") })
	code, _, errOut := oauthrelay("serve", "-config", e.path)
	want := fmt.Sprintf("is in use by process %d (started ", os.Getpid())
	if code == 0 || !strings.Contains(errOut, want) || !strings.Contains(errOut, filepath.Join(e.dir, "spool")) {
		t.Fatalf("second serve: exit %d, stderr %q; want non-zero and %q", code, errOut, want)
	}
	if code, out, errOut := oauthrelay("queue", "list", "-config", e.path); code != 0 {
		t.Fatalf("queue list beside serve: exit %d %s%s", code, out, errOut)
	}
}
