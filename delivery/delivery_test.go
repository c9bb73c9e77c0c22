package delivery

import (
	"bytes"
	"mime"
	"mime/multipart"
	"net/mail"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/msemu"
	"github.com/oauthrelay/oauthrelay/internal/testkit"
	"github.com/oauthrelay/oauthrelay/queue"
)

// A message put into the spool arrives byte for byte, for every recipient,
// sent MAIL FROM the envelope sender, and leaves the spool.
func TestDeliverBytesIdentical(t *testing.T) {
	h := newHarness(t, hopts{})
	// Bytes that trip careless SMTP code: dots at line starts, a line of
	// only a dot, 8-bit text, a bare LF, no final CRLF.
	body := []byte("From: noreply@contoso.com\r\nSubject: edge\r\n\r\n.\r\n..\r\n.x\r\nnaïve café\r\nbare\nlf\r\n\r\n.\r\nend without newline")
	id := h.enqueue(tSendAs, []string{"a@example.org", "b@example.org"}, body)
	msgs := h.waitDelivered(1)
	m := msgs[0]
	// SMTP lines end in CRLF: a bare LF goes out as CRLF, and a message
	// that does not end in CRLF gets one before the terminating dot.
	want := append(bytes.ReplaceAll(body, []byte("bare\nlf"), []byte("bare\r\nlf")), "\r\n"...)
	if !bytes.Equal(m.Data, want) {
		t.Errorf("delivered bytes differ from the spool:\n got %q\nwant %q", m.Data, want)
	}
	if m.MailFrom != tSendAs || strings.Join(m.Rcpts, ",") != "a@example.org,b@example.org" || !strings.EqualFold(m.Mailbox, tMailbox) {
		t.Errorf("envelope upstream: from %q rcpts %v mailbox %q", m.MailFrom, m.Rcpts, m.Mailbox)
	}
	envs := h.waitDone(1)
	if envs[0].ID != id || len(envs[0].Attempts) != 1 || envs[0].Attempts[0].Result != "delivered" ||
		!strings.Contains(envs[0].Attempts[0].Reply, "250 ") || !strings.Contains(envs[0].Attempts[0].Reply, "Hostname=") {
		t.Errorf("final envelope: %+v", envs[0])
	}
	testkit.Eventually(t, "the spool is empty", func() bool { return len(h.envelopes()) == 0 })
	if _, err := h.spool.OpenBody(id); err == nil {
		t.Errorf("body of a delivered message is still in the spool")
	}
	if !strings.Contains(h.logs.String(), "msg=delivered id="+id) {
		t.Errorf("no delivery log line for %s", id)
	}
}

// 451 three times, then success: delivered, with the retries in the
// envelope's history.
func TestRetryAfter451(t *testing.T) {
	h := newHarness(t, hopts{})
	h.emu.FailNextData(3, msemu.ReplyTempError)
	id := h.enqueue(tSendAs, []string{"a@example.org"}, testMessage(tSendAs, "retry 451"))
	h.waitDelivered(1)
	env := h.waitDone(1)[0]
	if env.ID != id {
		t.Fatalf("done %s, want %s", env.ID, id)
	}
	if len(env.Attempts) != 4 {
		t.Fatalf("attempts = %d, want 4: %+v", len(env.Attempts), env.Attempts)
	}
	for i, a := range env.Attempts[:3] {
		if a.Result != "deferred" || a.Reply != msemu.ReplyTempError {
			t.Errorf("attempt %d = %+v, want deferred with %q", i+1, a, msemu.ReplyTempError)
		}
		if i > 0 && !a.At.After(env.Attempts[i-1].At) {
			t.Errorf("attempt %d is not after attempt %d", i+1, i)
		}
	}
	if last := env.Attempts[3]; last.Result != "delivered" || !strings.HasPrefix(last.Reply, "250 2.0.0 OK") {
		t.Errorf("last attempt = %+v", last)
	}
	if n := len(h.emu.Delivered()); n != 1 {
		t.Errorf("delivered %d copies, want 1", n)
	}
	if n := strings.Count(h.logs.String(), "msg=deferred id="+id); n != 3 {
		t.Errorf("%d deferred log lines, want 3", n)
	}
}

// The envelope on disk carries the history between attempts and the next
// attempt time, saved before the next dial.
func TestDeferredEnvelopeOnDisk(t *testing.T) {
	h := newHarness(t, hopts{minRetry: "1h", maxRetry: "2h", maxAge: "5d"})
	h.emu.FailNextData(1, msemu.ReplyTempError)
	before := time.Now()
	id := h.enqueue(tSendAs, []string{"a@example.org"}, testMessage(tSendAs, "on disk"))
	var env *queue.Envelope
	testkit.Eventually(t, "the message is deferred", func() bool {
		e, err := h.spool.Load(queue.Deferred, id)
		env = e
		return err == nil
	})
	if len(env.Attempts) != 1 || env.Attempts[0].Result != "deferred" || env.LastError != msemu.ReplyTempError {
		t.Errorf("deferred envelope: attempts %+v last_error %q", env.Attempts, env.LastError)
	}
	// min_retry_delay 1h with ±10% jitter.
	if d := env.NextAttempt.Sub(before); d < 50*time.Minute || d > 70*time.Minute {
		t.Errorf("next attempt in %s, want about 1h", d)
	}
	if env.Recipients[0].State != queue.RcptPending || env.Recipients[0].Reply != msemu.ReplyTempError {
		t.Errorf("recipient: %+v", env.Recipients[0])
	}
}

// One recipient refused with 550, one accepted: the accepted one is
// delivered; a DSN reaches the sender through the same mailbox, sent from
// the mailbox address, and bounce_to gets a copy; the original ends in
// failed/ with its reason.
func TestPartialFailureDSN(t *testing.T) {
	h := newHarness(t, hopts{bounceTo: "postmaster@contoso.com"})
	const refused = "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup"
	h.emu.FailRcptAddress("bad@example.org", refused)
	orig := testMessage(tSendAs, "partial")
	id := h.enqueue(tSendAs, []string{"good@example.org", "bad@example.org"}, orig)
	msgs := h.waitDelivered(2)

	var delivered, dsn *msemu.Message
	for i := range msgs {
		if msgs[i].MailFrom == tSendAs {
			delivered = &msgs[i]
		} else {
			dsn = &msgs[i]
		}
	}
	if delivered == nil || strings.Join(delivered.Rcpts, ",") != "good@example.org" || !bytes.Equal(delivered.Data, orig) {
		t.Fatalf("original delivery: %+v", delivered)
	}
	if dsn == nil {
		t.Fatal("no DSN delivered")
	}
	if dsn.MailFrom != tMailbox || !strings.EqualFold(dsn.Mailbox, tMailbox) {
		t.Errorf("DSN sent MAIL FROM %q through %q, want the mailbox %s", dsn.MailFrom, dsn.Mailbox, tMailbox)
	}
	if strings.Join(dsn.Rcpts, ",") != tSendAs+",postmaster@contoso.com" {
		t.Errorf("DSN recipients %v, want the sender and bounce_to", dsn.Rcpts)
	}
	checkDSN(t, dsn.Data, "bad@example.org", "5.1.10", refused, "Subject: partial")

	// The original: in failed/ with the reason, good delivered, bad failed.
	var env *queue.Envelope
	testkit.Eventually(t, "the original is in failed/", func() bool {
		e, err := h.spool.Load(queue.Failed, id)
		env = e
		return err == nil
	})
	if !strings.Contains(env.FailReason, "bad@example.org") || !strings.Contains(env.FailReason, "550 5.1.10") {
		t.Errorf("fail_reason %q", env.FailReason)
	}
	for _, r := range env.Recipients {
		want := map[string]string{"good@example.org": queue.RcptDelivered, "bad@example.org": queue.RcptFailed}[r.Address]
		if r.State != want {
			t.Errorf("recipient %s is %s, want %s", r.Address, r.State, want)
		}
	}
	if a := env.Attempts; len(a) != 1 || a[0].Result != "partial" {
		t.Errorf("attempts %+v, want one partial", a)
	}
	if strings.Join(env.Notified, ",") != "bad@example.org" {
		t.Errorf("notified %v", env.Notified)
	}
}

// checkDSN parses an RFC 3464 report and checks its three parts.
func checkDSN(t *testing.T, data []byte, rcpt, status, diag, origHeader string) {
	t.Helper()
	m, err := mail.ReadMessage(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("DSN does not parse: %v\n%s", err, data)
	}
	if from, err := mail.ParseAddress(m.Header.Get("From")); err != nil || from.Address != tMailbox {
		t.Errorf("DSN From: %q, want the mailbox %s (Exchange enforces SendAs)", m.Header.Get("From"), tMailbox)
	}
	if m.Header.Get("Auto-Submitted") == "" {
		t.Errorf("DSN has no Auto-Submitted header")
	}
	mt, params, err := mime.ParseMediaType(m.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/report" || params["report-type"] != "delivery-status" {
		t.Fatalf("DSN Content-Type %q", m.Header.Get("Content-Type"))
	}
	mr := multipart.NewReader(m.Body, params["boundary"])
	var types []string
	var parts [][]byte
	for {
		p, err := mr.NextRawPart()
		if err != nil {
			break
		}
		ct, _, _ := mime.ParseMediaType(p.Header.Get("Content-Type"))
		b := new(bytes.Buffer)
		b.ReadFrom(p)
		types = append(types, ct)
		parts = append(parts, b.Bytes())
	}
	if strings.Join(types, ",") != "text/plain,message/delivery-status,text/rfc822-headers" {
		t.Fatalf("DSN parts %v", types)
	}
	ds := string(parts[1])
	for _, want := range []string{"Reporting-MTA: dns; relay.test", "Final-Recipient: rfc822; " + rcpt, "Action: failed", "Status: " + status, "Diagnostic-Code: smtp; ", diag} {
		if !strings.Contains(ds, want) {
			t.Errorf("delivery-status lacks %q:\n%s", want, ds)
		}
	}
	if !strings.Contains(string(parts[2]), origHeader) {
		t.Errorf("text/rfc822-headers lacks %q:\n%s", origHeader, parts[2])
	}
	if bytes.Contains(parts[2], []byte("Hello.")) {
		t.Errorf("text/rfc822-headers carries the body")
	}
}

// A DSN that cannot be delivered is never bounced.
func TestNoBounceOfBounce(t *testing.T) {
	h := newHarness(t, hopts{})
	h.emu.FailRcptAddress("bad@example.org", "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup")
	h.emu.FailRcptAddress(tSendAs, "550 5.1.1 RESOLVER.ADR.ExRecipNotFound; not found")
	id := h.enqueue(tSendAs, []string{"bad@example.org"}, testMessage(tSendAs, "bounce of bounce"))
	envs := h.waitDone(2)
	var dsn *queue.Envelope
	for _, e := range envs {
		if e.ID != id {
			dsn = e
		}
	}
	if dsn == nil || !dsn.Bounce || dsn.MailFrom != tMailbox {
		t.Fatalf("second message to leave the queue is not the DSN: %+v", dsn)
	}
	// notifyFailure runs before an envelope reaches failed/: once both
	// are there, a bounce of the bounce would already be queued.
	testkit.Eventually(t, "both envelopes are in failed/", func() bool { return len(h.envelopes()[queue.Failed]) == 2 })
	all := h.envelopes()
	total := 0
	for _, l := range all {
		total += len(l)
	}
	if total != 2 {
		t.Errorf("spool holds %d envelopes, want exactly the original and its DSN: %v", total, all)
	}
	if n := len(h.emu.Delivered()); n != 0 {
		t.Errorf("%d messages delivered, want none", n)
	}
	if !strings.Contains(h.logs.String(), "not bouncing a bounce") {
		t.Errorf("log does not say the bounce was not bounced")
	}
}

// SendAs refused at MAIL FROM (550 5.7.60) or after DATA (554 5.2.252) is
// our configuration, not the sender's mistake: the message stays queued
// with no DSN, health names the sender and the fix, the mailbox's other
// senders go on, and once the grant is added a reload delivers it.
func TestSendAsDenied(t *testing.T) {
	for _, tc := range []struct {
		name, mailFrom, headerFrom string
	}{
		{"5.7.60 at MAIL FROM", "other@contoso.com", "other@contoso.com"},
		{"5.2.252 after DATA", "other@contoso.com", "other@contoso.com"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, hopts{minRetry: "1h", maxRetry: "2h"})
			h.emu.AddMailbox(msemu.Mailbox{Address: tMailbox, FullAccess: []string{tClient}, SendAs: []string{tSendAs}})
			if tc.name == "5.2.252 after DATA" {
				// Exchange decides on the header at DATA.
				h.emu.FailNextData(1, "554 5.2.252 SendAsDenied; helpdesk@contoso.com not allowed to send as other@contoso.com; STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied; Failed to process message")
				h.emu.AddMailbox(msemu.Mailbox{Address: tMailbox, FullAccess: []string{tClient}, SendAs: []string{tSendAs, "other@contoso.com"}})
			}
			id := h.enqueue(tc.mailFrom, []string{"a@example.org"}, testMessage(tc.headerFrom, "sendas"))
			var st MailboxStatus
			testkit.Eventually(t, "health to name the sender the mailbox may not send as", func() bool {
				st = h.status()
				return len(st.SenderFaults) == 1
			})
			f := st.SenderFaults[0]
			if f.Sender != "other@contoso.com" || !strings.Contains(f.Fix, "Add-RecipientPermission -Identity other@contoso.com") {
				t.Errorf("sender fault %+v", f)
			}
			if st.ConfigFault || st.Paused {
				t.Errorf("a SendAs refusal paused the whole mailbox: %+v", st)
			}
			testkit.Eventually(t, "the message to wait in deferred/", func() bool {
				env, err := h.spool.Load(queue.Deferred, id)
				return err == nil && len(env.Pending()) == 1
			})
			// The mailbox's own sender is not held back.
			h.enqueue(tSendAs, []string{"b@example.org"}, testMessage(tSendAs, "granted"))
			msgs := h.waitDelivered(1)
			if msgs[0].MailFrom != tSendAs {
				t.Fatalf("delivered from %s, want %s (and no DSN)", msgs[0].MailFrom, tSendAs)
			}
			// The grant, then a reload: delivered at once, though the retry
			// was an hour away.
			h.emu.AddMailbox(msemu.Mailbox{Address: tMailbox, FullAccess: []string{tClient}, SendAs: []string{tSendAs, "other@contoso.com"}})
			h.sched.SetConfig(h.cfg)
			msgs = h.waitDelivered(2)
			if msgs[1].MailFrom != "other@contoso.com" {
				t.Fatalf("second delivery from %s", msgs[1].MailFrom)
			}
			for _, m := range msgs {
				if m.MailFrom == tMailbox {
					t.Errorf("a DSN was sent for a SendAs refusal")
				}
			}
			if n := strings.Count(h.logs.String(), "may not send as (a missing SendAs grant)"); n != 1 {
				t.Errorf("the refusal was logged %d times, want once", n)
			}
			if len(h.status().SenderFaults) != 0 {
				t.Errorf("the sender fault outlived the delivery")
			}
		})
	}
}

// TestReloadDuringSendAsAttempt: the admin grants SendAs and reloads while
// a message refused for the missing grant is being written back. The
// reload cannot release a message it does not see in the queue yet; the
// message must not then sit out its retry (an hour here).
func TestReloadDuringSendAsAttempt(t *testing.T) {
	var h *harness
	var once sync.Once
	h = newHarness(t, hopts{minRetry: "1h", maxRetry: "2h", noStart: true,
		attempt: func(string, string, string, string) {
			// Called after the refusal, before the envelope goes back.
			once.Do(func() {
				h.emu.AddMailbox(msemu.Mailbox{Address: tMailbox, FullAccess: []string{tClient}, SendAs: []string{tSendAs, "other@contoso.com"}})
				h.sched.SetConfig(h.cfg)
			})
		}})
	h.emu.AddMailbox(msemu.Mailbox{Address: tMailbox, FullAccess: []string{tClient}, SendAs: []string{tSendAs}})
	h.start()
	h.enqueue("other@contoso.com", []string{"a@example.org"}, testMessage("other@contoso.com", "granted during the attempt"))
	msgs := h.waitDelivered(1)
	if msgs[0].MailFrom != "other@contoso.com" {
		t.Fatalf("delivered from %s", msgs[0].MailFrom)
	}
	if !strings.Contains(h.logs.String(), "may not send as (a missing SendAs grant)") {
		t.Errorf("the first attempt was not refused for the grant; the test proves nothing:\n%s", h.logs.String())
	}
}

// TestReloadDuringConfigFaultAttempt: the admin fixes the mailbox and
// reloads while an attempt is being refused for the relay's own setup
// (SMTP AUTH disabled). The reload lifted no pause yet; the pause the
// attempt then sets is from the old setup and must not hold the mail
// for its backoff (an hour here).
func TestReloadDuringConfigFaultAttempt(t *testing.T) {
	var h *harness
	var once sync.Once
	h = newHarness(t, hopts{minRetry: "1h", maxRetry: "2h", noStart: true,
		attempt: func(string, string, string, string) {
			// Called after the refusal, before the mailbox pauses.
			once.Do(func() {
				h.emu.AddMailbox(msemu.Mailbox{Address: tMailbox, FullAccess: []string{tClient}, SendAs: []string{tSendAs}})
				h.sched.SetConfig(h.cfg)
			})
		}})
	h.emu.AddMailbox(msemu.Mailbox{Address: tMailbox, FullAccess: []string{tClient}, SendAs: []string{tSendAs}, SMTPAuthDisabled: true})
	h.start()
	h.enqueue(tSendAs, []string{"a@example.org"}, testMessage(tSendAs, "fixed during the attempt"))
	h.waitDelivered(1)
	if !strings.Contains(h.logs.String(), "refused the relay's own setup") {
		t.Errorf("the first attempt was not refused for the setup; the test proves nothing:\n%s", h.logs.String())
	}
}
