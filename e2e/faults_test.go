package e2e

// The fault matrix of issue 7, over the whole pipeline (SMTP listener,
// spool, scheduler, token source, upstream client) against the emulator:
// every fault has its expected replies, log line and health state, and
// ends with everything delivered once it clears. The revoked secret fixed
// by SIGHUP runs the real binary (cmd/oauthrelay/sighup_test.go).

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/oauthrelay/oauthrelay/delivery"
	"github.com/oauthrelay/oauthrelay/internal/msemu"
	"github.com/oauthrelay/oauthrelay/internal/testkit"
	"github.com/oauthrelay/oauthrelay/queue"
)

const faultMailbox = "helpdesk@contoso.com"

func faultRelay(t *testing.T, emu *msemu.Emulator, o relayOptions) *testRelay {
	t.Helper()
	emu.Provision(tenantID, secretApp, clientSec, faultMailbox)
	o.Apps = []testkit.App{{Name: "contoso", TenantID: tenantID, ClientID: secretApp, ClientSecret: clientSec}}
	o.Mailboxes = []testkit.Mailbox{{Address: faultMailbox, App: "contoso"}}
	return startRelay(t, emu, o)
}

// status is the scheduler's health view of the test mailbox.
func (r *testRelay) status() delivery.MailboxStatus {
	if r.sched == nil {
		return delivery.MailboxStatus{}
	}
	for _, st := range r.sched.Status() {
		if strings.EqualFold(st.Mailbox, faultMailbox) {
			return st
		}
	}
	return delivery.MailboxStatus{}
}

// queuedCount is what is still to be delivered.
func (r *testRelay) queuedCount() int {
	return len(r.ids(queue.Incoming)) + len(r.ids(queue.Active)) + len(r.ids(queue.Deferred))
}

// sendTagged sends n messages whose bodies carry tag-i, each of which
// must be acknowledged.
func (r *testRelay) sendTagged(ctx context.Context, tag string, n int) {
	r.t.Helper()
	for i := range n {
		if err := r.send(ctx, faultMailbox, []string{"someone@example.org"}, fmt.Sprintf("%s-%d", tag, i)); err != nil {
			r.t.Fatalf("message %s-%d was not acknowledged: %v", tag, i, err)
		}
	}
}

// waitAllDelivered waits until the spool is empty and checks that each
// tagged message reached the emulator exactly once (allowDup: at least
// once) and that nothing failed.
func (r *testRelay) waitAllDelivered(ctx context.Context, tag string, n int, allowDup bool) {
	t := r.t
	t.Helper()
	testkit.WaitFor(ctx, t, "every message delivered and the spool empty", func() bool {
		return r.queuedCount() == 0 && len(r.emu.Delivered()) >= n
	})
	if f := r.ids(queue.Failed); len(f) > 0 {
		t.Errorf("messages failed: %v", f)
	}
	count := map[string]int{}
	for _, m := range r.emu.Delivered() {
		for i := range n {
			if strings.Contains(string(m.Data), fmt.Sprintf("\r\n%s-%d\r\n", tag, i)) {
				count[fmt.Sprintf("%s-%d", tag, i)]++
			}
		}
	}
	for i := range n {
		k := fmt.Sprintf("%s-%d", tag, i)
		if c := count[k]; c == 0 || (c > 1 && !allowDup) {
			t.Errorf("%s delivered %d times", k, c)
		}
	}
}

func TestFaultMatrix(t *testing.T) {
	for _, tc := range []struct {
		name string
		// inject starts the fault; clear ends it. preStart, if set,
		// starts it on the emulator before the relay starts, for faults
		// the relay's start-up would otherwise dodge (it fetches a token
		// at start, and a cached token outlives a token outage).
		preStart      func(emu *msemu.Emulator)
		inject, clear func(r *testRelay)
		// logLine must appear while the fault lasts.
		logLine string
		// health must hold for the mailbox at some point during the fault.
		health     func(st delivery.MailboxStatus) bool
		healthWant string
		// event, if set, must also hold: a fact the fault leaves behind
		// (a counter), for states too short to catch in a snapshot.
		event    func(r *testRelay) bool
		allowDup bool
	}{
		{
			name:     "token endpoint down",
			preStart: func(emu *msemu.Emulator) { emu.SetTokenOutage(true) },
			inject:   func(r *testRelay) {},
			clear:    func(r *testRelay) { r.emu.SetTokenOutage(false) },
			logLine:  "AADSTS90024",
			// An outage is Microsoft's problem, not a configuration fault:
			// the mail waits for its retry, the mailbox is not paused for
			// the admin.
			health:     func(st delivery.MailboxStatus) bool { return !st.ConfigFault && st.Waiting > 0 },
			healthWant: "mail waiting, no configuration fault",
		},
		{
			name:       "451 on DATA",
			inject:     func(r *testRelay) { r.emu.FailNextData(3, msemu.ReplyTempError) },
			clear:      func(r *testRelay) {},
			logLine:    "reply=\"" + msemu.ReplyTempError + "\"",
			health:     func(st delivery.MailboxStatus) bool { return !st.Paused && !st.ConfigFault && st.Waiting > 0 },
			healthWant: "mail waiting for its retry, mailbox not paused",
		},
		{
			name:       "connection dropped after DATA, before the reply",
			inject:     func(r *testRelay) { r.emu.DropAfterData(3) },
			clear:      func(r *testRelay) {},
			logLine:    "msg=deferred",
			health:     func(st delivery.MailboxStatus) bool { return !st.ConfigFault && st.Waiting > 0 },
			healthWant: "mail waiting for its retry, no configuration fault",
			// The emulator drops without delivering; against Exchange a
			// drop after the data may deliver, and the retry duplicates.
			allowDup: true,
		},
		{
			// The throttle's pause lasts a second (min_retry_delay): a
			// health snapshot could miss it, so the test reads the events
			// the pause leaves, the log line and the throttle counter.
			name:    "432 connection limit",
			inject:  func(r *testRelay) { r.emu.FailNextConnect(2, msemu.ReplyTooManyConns) },
			clear:   func(r *testRelay) {},
			logLine: `msg="Microsoft 365 throttled the mailbox; backing off" mailbox=` + faultMailbox + ` app_wide=false reply="432 4.3.2`,
			health:  func(st delivery.MailboxStatus) bool { return !st.ConfigFault },
			event: func(r *testRelay) bool {
				return counterValue(r.t, r.svc.Metrics().Registry(), "oauthrelay_throttled_total") >= 1 &&
					!strings.Contains(r.logs.String(), "refused the relay's own setup")
			},
			healthWant: "a throttle with the 432 as reason, no configuration fault",
		},
		{
			name: "upstream certificate does not verify",
			inject: func(r *testRelay) {
				r.stopDelivery()
				r.smtpRoots = x509.NewCertPool() // trusts nothing the emulator has
				r.startDelivery()
			},
			clear: func(r *testRelay) {
				// The admin fixes ca_file and restarts delivery.
				r.stopDelivery()
				r.smtpRoots = nil
				r.startDelivery()
			},
			logLine: "certificate",
			health: func(st delivery.MailboxStatus) bool {
				return st.ConfigFault && strings.Contains(st.Reason, "certificate") && strings.Contains(st.Fix, "ca_file")
			},
			healthWant: "configuration fault naming the certificate and ca_file",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := ctxFor(t)
			emu := startEmulator(t, msemu.Options{})
			if tc.preStart != nil {
				tc.preStart(emu)
			}
			r := faultRelay(t, emu, relayOptions{})
			tc.inject(r)
			r.sendTagged(ctx, "fault", 3)
			sawHealth := false
			testkit.WaitFor(ctx, t, "the fault's log line "+tc.logLine+" and health state: "+tc.healthWant, func() bool {
				if tc.health(r.status()) {
					sawHealth = true
				}
				return sawHealth && strings.Contains(r.logs.String(), tc.logLine) && (tc.event == nil || tc.event(r))
			})
			if tc.name == "upstream certificate does not verify" {
				if len(emu.Stats().AuthTokens) != 0 || len(emu.Delivered()) != 0 {
					t.Fatal("the relay authenticated or sent over a connection it could not verify")
				}
			}
			tc.clear(r)
			r.waitAllDelivered(ctx, "fault", 3, tc.allowDup)
			if st := r.status(); st.ConfigFault || st.Paused {
				t.Errorf("health after the fault cleared: %+v", st)
			}
		})
	}
}

// mountTmpfs mounts a small tmpfs for the spool, or skips the test when
// mounting is not possible (not root, no mount namespace rights).
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "spool")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size+",mode=0700", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs (needs root): %v %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v %s", dir, err, out)
		}
	})
	return dir
}

// spoolIntact checks that nothing half-written or unreadable is left.
func (r *testRelay) spoolIntact() {
	r.t.Helper()
	envs, bad, err := r.spool.List()
	if err != nil || len(bad) > 0 {
		r.t.Fatalf("spool: %v, unreadable envelopes %v", err, bad)
	}
	for _, e := range envs {
		body, n, err := r.spool.Body(e.ID)
		if err == nil {
			body.Close()
		}
		if err != nil || n != e.Size {
			r.t.Errorf("envelope %s: body %v (size %d)", e.ID, err, e.Size)
		}
	}
	if ents, _ := os.ReadDir(filepath.Join(r.spool.Dir(), "corrupt")); len(ents) > 0 {
		r.t.Errorf("corrupt/ holds %d files", len(ents))
	}
	if partial, err := r.spool.PartialFiles(); err != nil || len(partial) > 0 {
		r.t.Errorf("tmp/ holds %v (%v)", partial, err)
	}
}

// A full disk during acceptance: 451 with the queue id, nothing
// half-written left behind, and acceptance resumes once space is freed;
// everything acknowledged is delivered.
func TestFullDiskDuringAcceptance(t *testing.T) {
	ctx := ctxFor(t)
	spool := mountTmpfs(t, "2m")
	emu := startEmulator(t, msemu.Options{})
	r := faultRelay(t, emu, relayOptions{SpoolDir: spool, NoDelivery: true})
	// Leave about 200 KB free.
	filler := filepath.Join(spool, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64<<10)
	for {
		var st syscall.Statfs_t
		if err := syscall.Statfs(spool, &st); err != nil {
			t.Fatal(err)
		}
		if st.Bavail*uint64(st.Bsize) < 200<<10 {
			break
		}
		if _, err := f.Write(buf); err != nil {
			break
		}
	}
	f.Close()

	big := strings.Repeat("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\r\n", 600) // ~40 KB
	acked := 0
	var refusal error
	for i := 0; i < 20; i++ {
		err := r.send(ctx, faultMailbox, []string{"someone@example.org"}, fmt.Sprintf("full-%d\r\n%s", acked, big))
		if err != nil {
			refusal = err
			break
		}
		acked++
	}
	if refusal == nil {
		t.Fatal("the disk never filled up")
	}
	var se *smtp.SMTPError
	if !errors.As(refusal, &se) || se.Code != 451 || se.EnhancedCode != (smtp.EnhancedCode{4, 3, 0}) || !strings.Contains(se.Message, "disk is full") {
		t.Errorf("refusal %#v, want 451 4.3.0 ... disk is full", refusal)
	}
	if !strings.Contains(r.logs.String(), "cannot queue message: the spool's disk is full") {
		t.Errorf("no log line for the full disk")
	}
	t.Logf("%d messages acknowledged before the disk filled; refusal: %v", acked, refusal)
	r.spoolIntact()
	if n := len(r.ids(queue.Incoming)); n != acked {
		t.Errorf("%d messages spooled, %d acknowledged", n, acked)
	}

	// Space is freed: accepted again; everything acknowledged is delivered.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if err := r.send(ctx, faultMailbox, []string{"someone@example.org"}, fmt.Sprintf("full-%d", acked)); err != nil {
		t.Fatalf("not accepted after space was freed: %v", err)
	}
	acked++
	r.startDelivery()
	r.waitAllDelivered(ctx, "full", acked, false)
	r.spoolIntact()
}

// A read-only spool: acceptance answers 451 and delivery keeps the mail;
// once writable again, both resume and nothing is lost.
func TestReadOnlySpool(t *testing.T) {
	ctx := ctxFor(t)
	spool := mountTmpfs(t, "16m")
	emu := startEmulator(t, msemu.Options{})
	r := faultRelay(t, emu, relayOptions{SpoolDir: spool, NoDelivery: true})
	r.sendTagged(ctx, "ro", 2)
	remount := func(mode string) {
		t.Helper()
		if out, err := exec.Command("mount", "-o", "remount,"+mode, spool).CombinedOutput(); err != nil {
			t.Fatalf("remount %s: %v %s", mode, err, out)
		}
	}
	remount("ro")
	err := r.send(ctx, faultMailbox, []string{"someone@example.org"}, "refused")
	if err == nil || !strings.Contains(err.Error(), "451") || !strings.Contains(err.Error(), "could not write it to disk") {
		t.Errorf("send to a read-only spool: %v, want 451 ... could not write it to disk", err)
	}
	if !strings.Contains(r.logs.String(), "cannot queue message: spool write failed") {
		t.Errorf("no log line for the read-only spool")
	}
	// Delivery cannot mark mail active: it keeps it and says so, once for
	// the fault however many messages and retries run into it.
	r.startDelivery()
	testkit.WaitFor(ctx, t, "delivery to run into the read-only spool at least 4 times", func() bool {
		_, n := r.sched.SpoolFault()
		return n >= 4
	})
	if n := strings.Count(r.logs.String(), "level=ERROR msg=\"cannot mark message active"); n != 1 {
		t.Errorf("the read-only spool was logged %d times at ERROR, want once per fault:\n%s", n, r.logs.String())
	}
	if len(emu.Delivered()) != 0 {
		t.Errorf("delivered from a spool it could not update")
	}
	remount("rw")
	r.sendTagged(ctx, "ro-after", 1)
	r.waitAllDelivered(ctx, "ro", 2, false)
	r.waitAllDelivered(ctx, "ro-after", 1, false)
	if n := strings.Count(r.logs.String(), "the spool can be written again"); n != 1 {
		t.Errorf("the end of the fault was logged %d times, want once", n)
	}
	r.spoolIntact()
}

// offsetClock is real time plus an offset the test can jump.
type offsetClock struct {
	off   atomic.Int64
	calls atomic.Int64
}

func (c *offsetClock) Now() time.Time {
	c.calls.Add(1)
	return time.Now().Add(time.Duration(c.off.Load()))
}

func (c *offsetClock) jump(d time.Duration) { c.off.Add(int64(d)) }

// Clock jumps: backwards, deferred mail waits (by the relay's clock) but
// the scheduler does not spin; forwards, it becomes due and is delivered.
// Nothing is lost either way.
func TestClockJumps(t *testing.T) {
	ctx := ctxFor(t)
	clk := &offsetClock{}
	emu := startEmulator(t, msemu.Options{Now: clk.Now})
	r := faultRelay(t, emu, relayOptions{Now: clk.Now})
	emu.FailNextData(3, msemu.ReplyTempError)
	r.sendTagged(ctx, "clock", 3)
	testkit.WaitFor(ctx, t, "three deferred messages", func() bool { return len(r.ids(queue.Deferred)) == 3 })

	// An hour back: the retries (1-2 s ahead before the jump) are now an
	// hour away. Count how often the clock is read in a second of real
	// time: the scheduler wakes for its poll (100 ms) and timers, a busy
	// loop would read it thousands of times.
	clk.jump(-time.Hour)
	before := clk.calls.Load()
	select {
	case <-time.After(time.Second):
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	}
	if n := clk.calls.Load() - before; n > 300 {
		t.Errorf("the clock was read %d times in one second after a jump back: a busy loop", n)
	}
	if len(emu.Delivered()) != 0 || len(r.ids(queue.Deferred)) != 3 {
		t.Errorf("after the jump back: %d delivered, %d deferred", len(emu.Delivered()), len(r.ids(queue.Deferred)))
	}

	// Half an hour past where it was (within max_age): due, delivered.
	clk.jump(time.Hour + 30*time.Minute)
	r.waitAllDelivered(ctx, "clock", 3, false)

	// An hour back again, and mail deferred after that jump: its retries
	// are due 1-2 s ahead by the relay's clock, which is now behind the
	// real one. The scheduler must wait for them, not spin.
	clk.jump(-time.Hour)
	emu.FailNextData(3, msemu.ReplyTempError)
	r.sendTagged(ctx, "clock-back", 3)
	testkit.WaitFor(ctx, t, "three deferred messages", func() bool { return len(r.ids(queue.Deferred)) == 3 })
	before = clk.calls.Load()
	select {
	case <-time.After(time.Second):
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	}
	if n := clk.calls.Load() - before; n > 300 {
		t.Errorf("the clock was read %d times in one second while retries were pending: a busy loop", n)
	}
	r.waitAllDelivered(ctx, "clock-back", 3, false)
}

// counterValue sums a counter's series in reg.
func counterValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}
