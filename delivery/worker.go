package delivery

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/oauthrelay/oauthrelay/config"
	"github.com/oauthrelay/oauthrelay/queue"
)

// worker is one upstream connection's worth of a mailbox's deliveries.
type worker struct {
	s    *Scheduler
	mb   *mbox
	conn *conn
}

func (w *worker) closeConn() {
	if w.conn != nil {
		w.conn.close()
		w.conn = nil
		w.s.connDelta(w.mb, -1)
	}
}

func (s *Scheduler) connDelta(mb *mbox, d int) {
	s.mu.Lock()
	mb.conns += d
	s.mu.Unlock()
	if s.o.Hooks.Conns != nil {
		s.o.Hooks.Conns(mb.addr, d)
	}
}

// outcome is the result of one attempt, before it is written down.
type outcome struct {
	// msg is the verdict for the whole message when the attempt failed
	// before per-recipient results (connect, token, AUTH, MAIL, DATA).
	msg   *Verdict
	rcpts map[string]Verdict
	// dataReply is the upstream's 250 text (it carries Microsoft's id).
	dataReply string
}

func (w *worker) process(ctx context.Context, it *item) {
	s := w.s
	s.mu.Lock()
	cfg := s.cfg
	sendCtx := s.sendCtx
	st := it.state
	s.mu.Unlock()
	env, err := s.spool.Load(st, it.id)
	if errors.Is(err, queue.ErrNotFound) {
		// Not where we last saw it: an operator's queue command moved
		// it, or our view was stale. Look everywhere rather than lose it.
		env, err = s.spool.Find(it.id)
	}
	if err != nil {
		if !errors.Is(err, queue.ErrNotFound) {
			s.log.Error("cannot read envelope; recovery at the next start moves it to corrupt/", "id", it.id, "error", err.Error())
		}
		s.forget(it)
		return
	}
	if env.State != queue.Incoming && env.State != queue.Deferred {
		// Held, failed or otherwise taken out of delivery: not ours now.
		s.forget(it)
		return
	}
	mc := cfg.Mailbox(env.Mailbox)
	if mc == nil || mc.AppRef == nil {
		s.reschedule(it, env.State, s.o.Now().Add(cfg.Spool.MaxRetryDelay.Duration), Transient)
		return
	}
	pol := s.policy(cfg)
	start := s.o.Now()
	// Save when to try next before dialing, so that whatever happens to
	// this process the message has a schedule.
	env.NextAttempt, _ = pol.Next(env.Received, start, len(env.Attempts)+1, s.o.Jitter())
	if err := s.spool.Move(env, queue.Active); err != nil {
		if !errors.Is(err, queue.ErrNotFound) {
			s.log.Error("cannot mark message active", "id", env.ID, "error", err.Error())
			s.reschedule(it, env.State, start.Add(pol.Min), Transient)
			return
		}
		s.forget(it)
		return
	}
	// add() reads state under s.mu (it may see this item in a scan).
	s.mu.Lock()
	it.state = queue.Active
	s.mu.Unlock()
	pending := env.PendingAddresses()

	// Waiting for a rate slot ends with the run context: a shutdown should
	// not sit out the per-minute window.
	if wait, ok := s.reserve(ctx, w.mb, mc, len(pending)); !ok {
		// Over the daily recipient quota (or shutting down): wait without
		// an attempt, which would only earn a SubmissionQuotaExceeded.
		s.finishDeferred(it, env, wait, Quota, "")
		return
	}
	out := w.attempt(sendCtx, cfg, mc, env, pending)
	s.release(w.mb, out, len(pending))
	s.record(it, env, mc, cfg, out, start)
}

// reserve waits for a slot in the mailbox's per-minute window and checks
// the daily recipient quota. It returns false with the time to retry when
// the quota is used up or delivery is shutting down.
func (s *Scheduler) reserve(ctx context.Context, mb *mbox, mc *config.Mailbox, rcpts int) (time.Time, bool) {
	for {
		s.mu.Lock()
		now := s.o.Now()
		if mc.MaxRecipientsPerDay > 0 {
			// Recipients of attempts still in flight count as if accepted.
			if at := mb.rcpts.freeAt(now, mc.MaxRecipientsPerDay-mb.rcptsInflight, rcpts); at.After(now) {
				s.mu.Unlock()
				// Pause the whole mailbox, so its other mail waits too
				// instead of each message finding out on its own.
				d := at.Sub(now)
				s.pause(mb, Verdict{Kind: Quota, Reply: "the relay's count of this mailbox's recipients in the last 24 hours reached max_recipients_per_day",
					Fix: "mail waits for the 24-hour window to roll; spread the load over more mailboxes if this repeats"}, d, d)
				s.log.Warn("mailbox reached its daily recipient limit; mail waits for the 24-hour window to roll", "mailbox", mb.addr, "until", at.Format(time.RFC3339))
				return at, false
			}
		}
		var wait time.Time
		if mb.inflight < mc.MaxPerMinute {
			// In-flight sends count too: their upstream time is not known
			// until they finish.
			at := mb.sent.freeAt(now, mc.MaxPerMinute-mb.inflight-1, 0)
			if !at.After(now) {
				mb.inflight++
				mb.rcptsInflight += rcpts
				s.mu.Unlock()
				return time.Time{}, true
			}
			wait = at
		} else {
			wait = now.Add(time.Second)
		}
		wake := mb.wake
		s.mu.Unlock()
		t := time.NewTimer(max(wait.Sub(now), time.Millisecond))
		select {
		case <-t.C:
		case <-wake:
		case <-ctx.Done():
			t.Stop()
			return s.o.Now(), false
		}
		t.Stop()
	}
}

// release ends an in-flight send: it now counts in the per-minute window
// at the time it finished, which is never earlier than when the upstream
// counted it, and only the recipients the upstream took count toward the
// daily limit (a failed attempt used none of Exchange's quota).
func (s *Scheduler) release(mb *mbox, out outcome, rcpts int) {
	taken := 0
	for _, v := range out.rcpts {
		if v.Kind == Delivered {
			taken++
		}
	}
	s.mu.Lock()
	now := s.o.Now()
	mb.inflight--
	mb.rcptsInflight -= rcpts
	mb.sent.add(now, 1)
	if taken > 0 {
		mb.rcpts.add(now, taken)
	}
	s.broadcast(mb)
	s.mu.Unlock()
}

// attempt makes one delivery attempt on this worker's connection, opening
// (and, when a stale token is refused, reopening) it as needed.
func (w *worker) attempt(ctx context.Context, cfg *config.Config, mc *config.Mailbox, env *queue.Envelope, pending []string) outcome {
	s := w.s
	app := mc.AppRef
	if w.conn != nil && w.conn.token.ExpiresOn.Sub(s.o.Now()) < app.MinTokenLifetime.Duration {
		// Never present, or keep using, a token under the minimum.
		w.closeConn()
	}
	retried := false
	for w.conn == nil {
		v, ok := w.open(ctx, cfg, mc, !retried)
		if ok {
			break
		}
		if v.RetryToken && !retried {
			retried = true
			continue
		}
		return outcome{msg: &v}
	}
	body, size, err := s.spool.Body(env.ID)
	if err != nil {
		v := Verdict{Kind: Transient, Reply: "cannot read the message body from the spool: " + err.Error()}
		return outcome{msg: &v}
	}
	defer body.Close()
	// Cut the connection if delivery is shutting down past its grace.
	c := w.conn.c // the callback may run after closeConn cleared w.conn
	stop := context.AfterFunc(ctx, func() { c.Close() })
	results, dataReply, err := w.conn.send(env.MailFrom, env.SMTPUTF8, size, pending, body)
	stop()
	out := outcome{rcpts: map[string]Verdict{}, dataReply: dataReply}
	if err != nil {
		stage, err := splitStage(err, StageData)
		v := Classify(stage, err, mc.Address)
		out.msg = &v
		// After DATA failed the recipients accepted at RCPT share its
		// verdict; those refused at RCPT keep their own.
		for _, r := range results {
			if r.err != nil {
				out.rcpts[r.addr] = Classify(StageRcpt, r.err, mc.Address)
			}
		}
		var se *smtp.SMTPError
		if !errors.As(err, &se) || v.Kind == Throttled || se.Code == 421 {
			// The connection's state is unknown (or the server is
			// closing it): start afresh next time.
			w.closeConn()
		} else if w.conn.reset() != nil {
			w.closeConn()
		}
		return out
	}
	for _, r := range results {
		if r.err != nil {
			out.rcpts[r.addr] = Classify(StageRcpt, r.err, mc.Address)
		} else {
			out.rcpts[r.addr] = Verdict{Kind: Delivered, Reply: "250 " + dataReply}
		}
	}
	if w.conn.reset() != nil {
		w.closeConn()
	}
	return out
}

// open dials and authenticates. On failure it returns the verdict; when
// first is set, a refused token is invalidated so the retry gets a fresh
// one. A token refused on the retry stays cached: dropping it too would
// only cost another token request for a fault a new token does not fix.
func (w *worker) open(ctx context.Context, cfg *config.Config, mc *config.Mailbox, first bool) (Verdict, bool) {
	s := w.s
	app := mc.AppRef
	src, err := s.o.Tokens(app.Name)
	if err != nil {
		return Verdict{Kind: ConfigFault, Reply: "token source: " + err.Error(), Fix: "check the [[app]] " + app.Name + " credential settings"}, false
	}
	tctx, cancel := context.WithTimeout(ctx, cfg.Upstream.Timeout.Duration)
	tok, err := src.Token(tctx)
	cancel()
	if err != nil {
		return Classify(StageToken, err, mc.Address), false
	}
	c, err := dial(ctx, s.o.Dial, app.UpstreamAddress, cfg.Listen.Hostname, s.o.RootCAs, cfg.Upstream.Timeout.Duration, mc.Address, tok)
	if err != nil {
		stage, err := splitStage(err, StageConnect)
		v := Classify(stage, err, mc.Address)
		if v.RetryToken && first {
			src.Invalidate(tok.AccessToken)
		}
		return v, false
	}
	w.conn = c
	s.connDelta(w.mb, 1)
	return Verdict{}, true
}

// record writes the attempt into the envelope and moves it on: removed when
// done, to failed/ with a DSN when recipients failed for good, or back to
// deferred/ with its next attempt.
func (s *Scheduler) record(it *item, env *queue.Envelope, mc *config.Mailbox, cfg *config.Config, out outcome, start time.Time) {
	now := s.o.Now()
	pending := env.PendingAddresses()
	kind := Delivered
	reply := "250 " + out.dataReply
	var fix string
	if out.msg != nil {
		kind, reply, fix = out.msg.Kind, out.msg.Reply, out.msg.Fix
	}
	var newlyFailed []*queue.Recipient
	delivered := 0
	worst := Delivered
	for _, r := range env.Recipients {
		if r.State != queue.RcptPending {
			continue
		}
		v, ok := out.rcpts[r.Address]
		if !ok && out.msg != nil {
			v = *out.msg
		}
		r.Reply, r.Updated = v.Reply, now
		switch v.Kind {
		case Delivered:
			r.State = queue.RcptDelivered
			delivered++
		case Permanent:
			r.State = queue.RcptFailed
			newlyFailed = append(newlyFailed, r)
		}
		if v.Kind > worst {
			worst = v.Kind
		}
	}
	if out.msg == nil {
		kind = worst
		if kind != Delivered {
			// Per-recipient trouble only: report the first such reply.
			for _, r := range env.Recipients {
				if v, ok := out.rcpts[r.Address]; ok && v.Kind != Delivered {
					reply, fix = v.Reply, v.Fix
					break
				}
			}
		}
	}
	result := kind.String()
	if delivered > 0 && delivered < len(pending) {
		// Some recipients of this attempt made it, others did not (yet).
		result = "partial"
	}
	env.Attempts = append(env.Attempts, queue.Attempt{At: start, Duration: queue.Millis(now.Sub(start).Milliseconds()), Result: result, Reply: reply, Recipients: pending})
	if s.o.Hooks.Attempt != nil {
		s.o.Hooks.Attempt(mc.Address, result, (&Verdict{Reply: reply}).ReplyClass())
	}
	mb := s.mailboxFor(mc.Address)
	switch kind {
	case ConfigFault:
		until := s.pause(mb, Verdict{Kind: ConfigFault, Reply: reply, Fix: fix}, cfg.Spool.MinRetryDelay.Duration, cfg.Spool.MaxRetryDelay.Duration)
		s.log.Error("Microsoft 365 refused the relay's own setup (credentials, permissions or TLS); mail stays queued and the mailbox pauses until fixed",
			"mailbox", mc.Address, "app", mc.App, "reply", reply, "fix", fix, "retry_at", until.Format(time.RFC3339))
	case Throttled:
		until := s.pause(mb, Verdict{Kind: Throttled, Reply: reply}, cfg.Spool.MinRetryDelay.Duration, cfg.Spool.MaxRetryDelay.Duration)
		if s.o.Hooks.Throttled != nil {
			s.o.Hooks.Throttled(mc.Address)
		}
		s.log.Warn("Microsoft 365 throttled the mailbox; backing off", "mailbox", mc.Address, "reply", reply, "until", until.Format(time.RFC3339))
	case Quota:
		s.pause(mb, Verdict{Kind: Quota, Reply: reply, Fix: fix}, time.Hour, time.Hour)
		s.log.Warn("Microsoft 365 daily recipient quota reached; mail waits about a day", "mailbox", mc.Address, "reply", reply, "fix", fix)
	}

	if delivered > 0 {
		// Only mail getting through proves the mailbox works again; a 451
		// or a refused recipient on another connection says nothing about
		// the pause this one is under.
		s.unpause(mb)
	}
	if len(newlyFailed) > 0 {
		s.notifyFailure(env, newlyFailed, cfg)
	}
	if len(env.Pending()) == 0 {
		s.complete(it, env, start)
		return
	}
	var next time.Time
	expired := false
	switch kind {
	case ConfigFault, Throttled:
		s.mu.Lock()
		next = mb.pausedUntil
		s.mu.Unlock()
		// Our own configuration never bounces mail; throttling counts
		// toward max_age like any other temporary failure.
		if kind == Throttled {
			_, expired = s.policy(cfg).Next(env.Received, now, len(env.Attempts), s.o.Jitter())
		}
	case Quota:
		next = now.Add(24 * time.Hour)
		if d := env.Received.Add(cfg.Spool.MaxAge.Duration); next.After(d) {
			next = d
		}
		_, expired = s.policy(cfg).Next(env.Received, now, len(env.Attempts), s.o.Jitter())
	default:
		next, expired = s.policy(cfg).Next(env.Received, now, len(env.Attempts), s.o.Jitter())
	}
	if expired {
		var gaveUp []*queue.Recipient
		for _, r := range env.Recipients {
			if r.State == queue.RcptPending {
				r.State = queue.RcptFailed
				r.Reply = fmt.Sprintf("gave up after %s in the queue; last reply: %s", cfg.Spool.MaxAge.Duration, r.Reply)
				gaveUp = append(gaveUp, r)
			}
		}
		s.notifyFailure(env, gaveUp, cfg)
		s.complete(it, env, start)
		return
	}
	env.LastError = reply
	s.finishDeferred(it, env, next, kind, reply)
}

func (s *Scheduler) mailboxFor(addr string) *mbox {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mailbox(strings.ToLower(addr))
}

// finishDeferred moves an envelope to deferred/ with its next attempt.
func (s *Scheduler) finishDeferred(it *item, env *queue.Envelope, next time.Time, kind Kind, reply string) {
	env.NextAttempt = next
	if err := s.spool.Move(env, queue.Deferred); err != nil {
		if errors.Is(err, queue.ErrNotFound) {
			s.forget(it)
			return
		}
		s.log.Error("cannot write the envelope back to the spool; the message stays in active/ and is retried after restart", "id", env.ID, "error", err.Error())
		s.forget(it)
		return
	}
	if reply != "" {
		s.log.Info("deferred", "id", env.ID, "mailbox", env.Mailbox, "pending", len(env.Pending()), "reply", reply, "next_attempt", next.Format(time.RFC3339))
	}
	s.reschedule(it, queue.Deferred, next, kind)
}

// complete ends a message that has no pending recipients: removed when all
// were delivered, kept in failed/ when some failed.
func (s *Scheduler) complete(it *item, env *queue.Envelope, start time.Time) {
	var delivered, failed []string
	reply := ""
	for _, r := range env.Recipients {
		switch r.State {
		case queue.RcptDelivered:
			delivered = append(delivered, r.Address)
			reply = r.Reply
		case queue.RcptFailed:
			failed = append(failed, r.Address)
		}
	}
	dur := s.o.Now().Sub(start).Round(time.Millisecond).String()
	if len(failed) == 0 {
		if err := s.spool.Remove(env); err != nil {
			s.log.Error("delivered, but cannot remove the message from the spool", "id", env.ID, "error", err.Error())
		}
		s.log.Info("delivered", "id", env.ID, "mailbox", env.Mailbox, "from", env.MailFrom, "recipients", strings.Join(delivered, ","), "reply", reply, "duration", dur, "attempts", len(env.Attempts))
		s.forget(it)
		s.done(env)
		return
	}
	var reasons []string
	for _, r := range env.Recipients {
		if r.State == queue.RcptFailed {
			reasons = append(reasons, r.Address+": "+r.Reply)
		}
	}
	env.FailReason = strings.Join(reasons, "; ")
	if err := s.spool.Move(env, queue.Failed); err != nil && !errors.Is(err, queue.ErrNotFound) {
		s.log.Error("cannot move the message to failed/", "id", env.ID, "error", err.Error())
	}
	if len(delivered) > 0 {
		s.log.Info("delivered", "id", env.ID, "mailbox", env.Mailbox, "from", env.MailFrom, "recipients", strings.Join(delivered, ","), "reply", reply, "duration", dur)
	}
	s.log.Warn("failed", "id", env.ID, "mailbox", env.Mailbox, "from", env.MailFrom, "recipients", strings.Join(failed, ","), "reason", env.FailReason)
	s.forget(it)
	s.done(env)
}

func (s *Scheduler) done(env *queue.Envelope) {
	if s.o.Hooks.Done != nil {
		s.o.Hooks.Done(env)
	}
}
