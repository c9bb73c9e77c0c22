package delivery

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/msemu"
	"github.com/oauthrelay/oauthrelay/internal/testkit"
	"github.com/oauthrelay/oauthrelay/queue"
)

// noFailures checks that config faults never bounced or failed mail.
func (h *harness) noFailures() {
	h.t.Helper()
	for st, envs := range h.envelopes() {
		for _, e := range envs {
			if st == queue.Failed || e.Bounce {
				h.t.Errorf("a configuration fault failed or bounced mail: %s %s %+v", st, e.ID, e)
			}
		}
	}
}

// A revoked (wrong) client secret keeps mail queued: the mailbox pauses
// with a config fault whose fix names the admin step, the log names
// AADSTS7000215, nothing bounces. Fixing the secret delivers everything.
func TestRevokedSecretKeepsMailQueued(t *testing.T) {
	h := newHarness(t, hopts{secret: "Qx8~revoked.secret"})
	var ids []string
	for i := 0; i < 3; i++ {
		ids = append(ids, h.enqueue(tSendAs, []string{"a@example.org"}, testMessage(tSendAs, "revoked "+string(rune('a'+i)))))
	}
	testkit.Eventually(t, "the mailbox pauses with a config fault", func() bool {
		st := h.status()
		return st.Paused && st.ConfigFault
	})
	st := h.status()
	if !strings.Contains(st.Reason, "AADSTS7000215") || !strings.Contains(st.Fix, "Value") {
		t.Errorf("status does not explain the fault: reason %q fix %q", st.Reason, st.Fix)
	}
	// Let several paused retries pass: still queued, never failed.
	testkit.Eventually(t, "every message was tried and deferred", func() bool {
		n := 0
		for _, e := range h.envelopes()[queue.Deferred] {
			if len(e.Attempts) > 0 {
				n++
			}
		}
		return n == 3
	})
	for _, e := range h.envelopes()[queue.Deferred] {
		for _, a := range e.Attempts {
			if a.Result != "config_fault" {
				t.Errorf("attempt %+v, want config_fault", a)
			}
		}
	}
	h.noFailures()
	if len(h.emu.Delivered()) != 0 || len(h.emu.Stats().AuthTokens) != 0 {
		t.Errorf("mail reached the upstream without a token")
	}
	logs := h.logs.String()
	if !strings.Contains(logs, "refused the relay's own setup") || !strings.Contains(logs, "AADSTS7000215") {
		t.Errorf("log does not name AADSTS7000215:\n%s", logs)
	}
	if strings.Contains(logs, "Qx8~revoked.secret") {
		t.Errorf("the secret is in the log")
	}

	// The admin fixes the secret and reloads.
	cfg := h.config(tSecret)
	if err := h.tokens.Update(cfg); err != nil {
		t.Fatal(err)
	}
	h.sched.SetConfig(cfg)
	h.waitDelivered(3)
	envs := h.waitDone(3)
	for _, e := range envs {
		if a := e.Attempts[len(e.Attempts)-1]; a.Result != "delivered" {
			t.Errorf("%s: last attempt %+v", e.ID, a)
		}
	}
	if st := h.status(); st.Paused || st.ConfigFault {
		t.Errorf("mailbox still paused after the fix: %+v", st)
	}
	testkit.Eventually(t, "the spool is empty", func() bool { return len(h.envelopes()) == 0 })
}

// 535 5.7.3: the token is dropped and AUTH retried once with a fresh one;
// then the mailbox pauses with the admin steps, mail stays queued.
func TestAuth535RetriesOnceThenPauses(t *testing.T) {
	h := newHarness(t, hopts{minRetry: "1h", maxRetry: "2h", maxAge: "5d"})
	h.emu.FailAuth(tMailbox, msemu.ReplyAuthFailed)
	id := h.enqueue(tSendAs, []string{"a@example.org"}, testMessage(tSendAs, "535"))
	testkit.Eventually(t, "the mailbox pauses", func() bool { return h.status().ConfigFault })
	st := h.status()
	if !st.Paused || !strings.Contains(st.Reason, "535 5.7.3") ||
		!strings.Contains(st.Fix, "Add-MailboxPermission -Identity "+tMailbox) || !strings.Contains(st.Fix, "New-ServicePrincipal") {
		t.Errorf("status %+v", st)
	}
	stats := h.emu.Stats()
	if len(stats.AuthTokens) != 2 {
		t.Fatalf("%d AUTH attempts, want 2 (one retry with a fresh token)", len(stats.AuthTokens))
	}
	if stats.TokenRequests != 2 {
		t.Errorf("%d token requests, want 2: the refused token must be invalidated", stats.TokenRequests)
	}
	testkit.Eventually(t, "the message is deferred", func() bool {
		_, err := h.spool.Load(queue.Deferred, id)
		return err == nil
	})
	env, _ := h.spool.Load(queue.Deferred, id)
	if len(env.Attempts) != 1 || env.Attempts[0].Result != "config_fault" || env.Recipients[0].State != queue.RcptPending {
		t.Errorf("envelope %+v", env)
	}
	h.noFailures()

	// Fixed in Exchange, and the admin reloads: delivered.
	h.emu.FailAuth(tMailbox, "")
	h.sched.SetConfig(h.cfg)
	h.waitDelivered(1)
}

// 535 5.7.139 (SMTP AUTH disabled for the mailbox): a config fault whose
// fix is Set-CASMailbox for this mailbox; no token retry.
func TestAuthDisabledForMailbox(t *testing.T) {
	h := newHarness(t, hopts{minRetry: "1h", maxRetry: "2h", maxAge: "5d"})
	h.emu.AddMailbox(msemu.Mailbox{Address: tMailbox, FullAccess: []string{tClient}, SendAs: []string{tSendAs}, SMTPAuthDisabled: true})
	h.enqueue(tSendAs, []string{"a@example.org"}, testMessage(tSendAs, "5.7.139"))
	// The pause is set, then logged: wait for both.
	testkit.Eventually(t, "the mailbox pauses and the log says why", func() bool {
		return h.status().ConfigFault && strings.Contains(h.logs.String(), "refused the relay's own setup")
	})
	st := h.status()
	want := "Set-CASMailbox -Identity " + tMailbox + " -SmtpClientAuthenticationDisabled $false"
	if !strings.Contains(st.Fix, want) || !strings.Contains(st.Reason, "5.7.139") {
		t.Errorf("fix %q does not contain %q (reason %q)", st.Fix, want, st.Reason)
	}
	if n := len(h.emu.Stats().AuthTokens); n != 1 {
		t.Errorf("%d AUTH attempts, want 1 (5.7.139 is not a token problem)", n)
	}
	if !strings.Contains(h.logs.String(), "Set-CASMailbox -Identity "+tMailbox) {
		t.Errorf("the log does not name the fix")
	}
	h.noFailures()
}

// Throttling replies back the whole mailbox off; the mail is delivered
// afterwards.
func TestThrottled(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fault func(e *msemu.Emulator)
	}{
		{"432 at AUTH", func(e *msemu.Emulator) { e.FailNextAuth(1, msemu.ReplyTooManyConns) }},
		{"432 at greeting", func(e *msemu.Emulator) { e.FailNextConnect(1, msemu.ReplyTooManyConns) }},
		{"421 4.4.2 after DATA", func(e *msemu.Emulator) { e.FailNextData(1, msemu.ReplyRateLimited) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, hopts{})
			tc.fault(h.emu)
			id := h.enqueue(tSendAs, []string{"a@example.org"}, testMessage(tSendAs, "throttled"))
			h.waitDelivered(1)
			env := h.waitDone(1)[0]
			if env.ID != id || len(env.Attempts) != 2 || env.Attempts[0].Result != "throttled" || env.Attempts[1].Result != "delivered" {
				t.Errorf("attempts %+v, want throttled then delivered", env.Attempts)
			}
			h.mu.Lock()
			thr := append([]string(nil), h.throttled...)
			h.mu.Unlock()
			if len(thr) != 1 || !strings.EqualFold(thr[0], tMailbox) {
				t.Errorf("throttled hook calls %v", thr)
			}
			if !strings.Contains(h.logs.String(), "throttled the mailbox; backing off") {
				t.Errorf("no backoff log line")
			}
		})
	}
}

// A connection dropped after DATA (no reply): deferred, then delivered
// (at least once).
func TestDropAfterData(t *testing.T) {
	h := newHarness(t, hopts{})
	h.emu.DropAfterData(1)
	id := h.enqueue(tSendAs, []string{"a@example.org"}, testMessage(tSendAs, "dropped"))
	msgs := h.waitDelivered(1)
	env := h.waitDone(1)[0]
	if env.ID != id || len(env.Attempts) != 2 || env.Attempts[0].Result != "deferred" || !strings.Contains(env.Attempts[0].Reply, "data") {
		t.Errorf("attempts %+v, want deferred (connection lost during data) then delivered", env.Attempts)
	}
	if len(msgs) != 1 {
		t.Errorf("delivered %d", len(msgs))
	}
}

// SubmissionQuotaExceeded: deferred about a day, never bounced.
func TestSubmissionQuotaExceeded(t *testing.T) {
	h := newHarness(t, hopts{maxAge: "5d"})
	h.emu.FailNextData(1, msemu.ReplyQuotaExceeded)
	before := time.Now()
	id := h.enqueue(tSendAs, []string{"a@example.org"}, testMessage(tSendAs, "quota"))
	var env *queue.Envelope
	testkit.Eventually(t, "the message is deferred", func() bool {
		e, err := h.spool.Load(queue.Deferred, id)
		env = e
		return err == nil
	})
	if d := env.NextAttempt.Sub(before); d < 23*time.Hour || d > 25*time.Hour {
		t.Errorf("next attempt in %s, want about 24h", d)
	}
	if len(env.Attempts) != 1 || env.Attempts[0].Result != "quota" || env.Recipients[0].State != queue.RcptPending {
		t.Errorf("envelope %+v", env)
	}
	st := h.status()
	if !st.Paused || !strings.Contains(st.Reason, "SubmissionQuotaExceeded") {
		t.Errorf("status %+v", st)
	}
	h.noFailures()
	if len(h.emu.Delivered()) != 0 {
		t.Errorf("something was delivered (a bounce?)")
	}
	// A reload is no reason to try again before the day has rolled.
	h.sched.SetConfig(h.cfg)
	time.Sleep(300 * time.Millisecond) // several retry delays; nothing may happen
	if st := h.status(); !st.Paused || st.Waiting != 1 {
		t.Errorf("after a reload: %+v", st)
	}
	if e, err := h.spool.Load(queue.Deferred, id); err != nil || len(e.Attempts) != 1 {
		t.Errorf("after a reload the message was tried again: %v %+v", err, e)
	}
}

// The relay's own count of recipients per 24 h defers mail instead of
// earning a SubmissionQuotaExceeded.
func TestDailyRecipientLimit(t *testing.T) {
	h := newHarness(t, hopts{maxRcptsDay: 3, maxConns: 1, maxAge: "5d"})
	first := h.enqueue(tSendAs, []string{"a@example.org", "b@example.org"}, testMessage(tSendAs, "day 1"))
	h.waitDone(1)
	second := h.enqueue(tSendAs, []string{"c@example.org", "d@example.org"}, testMessage(tSendAs, "day 2"))
	var env *queue.Envelope
	testkit.Eventually(t, "the second message waits", func() bool {
		e, err := h.spool.Load(queue.Deferred, second)
		env = e
		return err == nil
	})
	if len(env.Attempts) != 0 {
		t.Errorf("an attempt was made over the daily limit: %+v", env.Attempts)
	}
	if d := time.Until(env.NextAttempt); d < 23*time.Hour || d > 25*time.Hour {
		t.Errorf("waits %s, want about 24h", d)
	}
	if msgs := h.emu.Delivered(); len(msgs) != 1 || !strings.Contains(string(msgs[0].Data), "day 1") {
		t.Errorf("delivered %d messages, want only %s", len(msgs), first)
	}
}

// An upstream certificate that does not verify: refused before anything
// (least of all the token) is sent, no plain-text fallback, config fault.
func TestUntrustedUpstreamCertificate(t *testing.T) {
	wrong := testkit.NewCA(t).Pool() // not the emulator's CA
	var mu sync.Mutex
	var sent []byte
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &recordConn{Conn: c, mu: &mu, out: &sent}, nil
	}
	h := newHarness(t, hopts{rootCAs: wrong, dial: dial, minRetry: "1h", maxRetry: "2h", maxAge: "5d"})
	h.enqueue(tSendAs, []string{"a@example.org"}, testMessage(tSendAs, "tls"))
	testkit.Eventually(t, "the mailbox pauses", func() bool { return h.status().ConfigFault })
	st := h.status()
	if !strings.Contains(st.Reason, "certificate") || !strings.Contains(st.Fix, "ca_file") {
		t.Errorf("status %+v", st)
	}
	stats := h.emu.Stats()
	if len(stats.AuthTokens) != 0 || len(h.emu.Delivered()) != 0 {
		t.Errorf("the relay authenticated or sent over an unverified connection")
	}
	mu.Lock()
	plain := string(sent)
	mu.Unlock()
	// In clear text only EHLO and STARTTLS may ever be seen.
	for _, bad := range []string{"AUTH", "MAIL FROM", "RCPT", "DATA"} {
		if strings.Contains(plain, bad) {
			t.Errorf("%s sent after the certificate failed: %q", bad, plain)
		}
	}
	if !strings.Contains(plain, "STARTTLS") {
		t.Errorf("STARTTLS was never asked for: %q", plain)
	}
	h.noFailures()
}

// recordConn keeps what the client wrote before TLS started (afterwards
// it is ciphertext, which is the point).
type recordConn struct {
	net.Conn
	mu  *sync.Mutex
	out *[]byte
}

func (c *recordConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	*c.out = append(*c.out, p...)
	c.mu.Unlock()
	return c.Conn.Write(p)
}

// TestDailyRecipientLimitSurvivesRestart: the recipients sent today are
// saved in the spool, so a restarted relay still holds back mail that
// would go over the daily limit.
func TestDailyRecipientLimitSurvivesRestart(t *testing.T) {
	h := newHarness(t, hopts{maxRcptsDay: 3, maxConns: 1, maxAge: "5d"})
	h.enqueue(tSendAs, []string{"a@example.org", "b@example.org"}, testMessage(tSendAs, "before restart"))
	h.waitDone(1)
	h.stop() // saves the counts
	h.sched = h.newScheduler()
	second := h.enqueue(tSendAs, []string{"c@example.org", "d@example.org"}, testMessage(tSendAs, "after restart"))
	h.start()
	var env *queue.Envelope
	testkit.Eventually(t, "the second message waits after the restart", func() bool {
		e, err := h.spool.Load(queue.Deferred, second)
		env = e
		return err == nil
	})
	if len(env.Attempts) != 0 {
		t.Errorf("an attempt was made over the daily limit after a restart: %+v", env.Attempts)
	}
	if n := len(h.emu.Delivered()); n != 1 {
		t.Errorf("delivered %d messages, want 1", n)
	}
}

// TestFailedAttemptsDoNotUseTheDailyLimit: only recipients Exchange took
// count toward max_recipients_per_day; a 451 used none of it.
func TestFailedAttemptsDoNotUseTheDailyLimit(t *testing.T) {
	h := newHarness(t, hopts{maxRcptsDay: 2, maxConns: 1, maxAge: "5d"})
	h.emu.FailNextData(2, "451 4.7.0 Temporary server error. Please try again later. PRX4")
	h.enqueue(tSendAs, []string{"a@example.org", "b@example.org"}, testMessage(tSendAs, "after two 451s"))
	envs := h.waitDone(1)
	if n := len(envs[0].Attempts); n != 3 {
		t.Errorf("%d attempts, want 3 (two 451s, then delivered)", n)
	}
	if msgs := h.emu.Delivered(); len(msgs) != 1 || len(msgs[0].Rcpts) != 2 {
		t.Errorf("delivered %+v, want one message to both recipients", msgs)
	}
}

// After the admin fixes a setup fault and restarts the relay, the mail it
// held is due at once, not at its scheduled retry an hour later; mail
// deferred for another reason keeps its time.
func TestRestartRetriesMailHeldByOurSetup(t *testing.T) {
	h := newHarness(t, hopts{minRetry: "1h", maxRetry: "2h", maxAge: "5d"})
	h.emu.AddMailbox(msemu.Mailbox{Address: tMailbox, FullAccess: []string{tClient}, SendAs: []string{tSendAs}, SMTPAuthDisabled: true})
	held := h.enqueue(tSendAs, []string{"a@example.org"}, testMessage(tSendAs, "held by 5.7.139"))
	testkit.Eventually(t, "the message to wait in deferred/", func() bool {
		_, err := h.spool.Load(queue.Deferred, held)
		return err == nil
	})
	h.stop()
	// A second message deferred by a 451 an hour from now.
	other := h.enqueue(tSendAs, []string{"b@example.org"}, testMessage(tSendAs, "a 451"))
	env, err := h.spool.Load(queue.Incoming, other)
	if err != nil {
		t.Fatal(err)
	}
	env.Attempts = append(env.Attempts, queue.Attempt{At: time.Now(), Result: "deferred", Reply: "451 4.3.0 later"})
	env.NextAttempt = time.Now().Add(time.Hour)
	if err := h.spool.Move(env, queue.Deferred); err != nil {
		t.Fatal(err)
	}
	// The admin enables SMTP AUTH and restarts.
	h.emu.AddMailbox(msemu.Mailbox{Address: tMailbox, FullAccess: []string{tClient}, SendAs: []string{tSendAs}})
	h.sched = h.newScheduler()
	h.start()
	msgs := h.waitDelivered(1)
	if !strings.Contains(string(msgs[0].Data), "Subject: held by 5.7.139") {
		t.Fatalf("delivered %q first", msgs[0].Data[:80])
	}
	if _, err := h.spool.Load(queue.Deferred, other); err != nil {
		t.Errorf("the 451 message did not keep its retry time: %v", err)
	}
}

// TestCredentialRecoveredDuringAttempt: the app gets a token again (the
// secret fixed) while an attempt refused for the old one is being
// recorded. The recovery lifted no pause yet; the pause the attempt then
// sets must not hold the mail for its backoff (an hour here).
func TestCredentialRecoveredDuringAttempt(t *testing.T) {
	var h *harness
	var once sync.Once
	h = newHarness(t, hopts{secret: "Qx8~revoked.secret", minRetry: "1h", maxRetry: "2h", noStart: true,
		attempt: func(string, string, string, string) {
			// Called after the refusal, before the mailbox pauses.
			once.Do(func() {
				if err := h.tokens.Update(h.config(tSecret)); err != nil {
					t.Error(err)
				}
				h.sched.CredentialRecovered("contoso")
			})
		}})
	h.start()
	h.enqueue(tSendAs, []string{"a@example.org"}, testMessage(tSendAs, "token back during the attempt"))
	h.waitDelivered(1)
	if !strings.Contains(h.logs.String(), "AADSTS7000215") {
		t.Errorf("the first attempt was not refused for the secret; the test proves nothing:\n%s", h.logs.String())
	}
}
