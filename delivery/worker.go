package delivery

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/oauthrelay/oauthrelay/config"
	"github.com/oauthrelay/oauthrelay/internal/cluster"
	"github.com/oauthrelay/oauthrelay/queue"
	"github.com/oauthrelay/oauthrelay/transport"
)

// worker is one upstream connection's worth of a mailbox's deliveries.
type worker struct {
	s    *Scheduler
	mb   *mbox
	conn transport.Conn
	// kind is the transport conn belongs to ("smtp", "graph", "hve").
	kind string
	// leaseHeld is the connection's slot in the shared budgets.
	leaseHeld *cluster.Lease
}

// closeConn closes the connection and then gives its lease back.
func (w *worker) closeConn() {
	w.dropConn()
	w.releaseLease()
}

// dropConn closes the connection only (a new one replaces it under the
// same lease).
func (w *worker) dropConn() {
	if w.conn != nil {
		w.conn.Close()
		w.conn = nil
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

// conn returns the worker's connection for the mailbox's transport, a new
// one when a reload changed the transport.
func (w *worker) connFor(mc *config.Mailbox) (transport.Conn, bool) {
	kind := mc.Transport
	if w.conn != nil && w.kind == kind {
		return w.conn, true
	}
	w.dropConn()
	t := w.s.o.Transports[kind]
	if t == nil {
		return nil, false
	}
	mb := w.mb
	w.conn, w.kind = t.NewConn(mb.addr, func(d int) { w.s.connDelta(mb, d) }), kind
	return w.conn, true
}

// unclaim puts a claimed message back where it was, unchanged, to be
// tried at due.
func (s *Scheduler) unclaim(it *item, env *queue.Envelope, to queue.State, due time.Time) {
	if err := s.spool.Return(env, to); err != nil {
		s.log.Error("cannot put the message back; it stays in active/ until the next start", "id", env.ID, "error", err.Error())
		s.forget(it)
		return
	}
	s.reschedule(it, to, due, transport.Transient)
}

func (w *worker) process(ctx context.Context, it *item) {
	s := w.s
	s.mu.Lock()
	cfg := s.cfg
	sendCtx := s.sendCtx
	st := it.state
	s.mu.Unlock()
	if st != queue.Incoming && st != queue.Deferred {
		s.forget(it)
		return
	}
	// Claim by a rename into active/: an operator's queue command that
	// moved the message first wins, and we look where it went.
	env, err := s.spool.Claim(st, it.id)
	if errors.Is(err, queue.ErrNotFound) {
		if e, ferr := s.spool.Find(it.id); ferr == nil && (e.State == queue.Incoming || e.State == queue.Deferred) {
			env, err = s.spool.Claim(e.State, it.id)
		}
	}
	var we *queue.WriteError
	if errors.As(err, &we) {
		pol := s.policy(cfg)
		d := s.spoolWriteFailed("cannot mark message active", it.id, err, pol.Min, pol.Max)
		s.reschedule(it, st, s.o.Now().Add(d), transport.Transient)
		return
	}
	if err != nil {
		if !errors.Is(err, queue.ErrNotFound) {
			s.log.Error("cannot read the message; it stays in active/ and recovery at the next start moves it to corrupt/", "id", it.id, "error", err.Error())
		}
		s.forget(it)
		return
	}
	// add() reads state under s.mu (it may see this item in a scan).
	s.mu.Lock()
	it.state = queue.Active
	s.mu.Unlock()
	mc := cfg.Mailbox(env.Mailbox)
	if mc == nil || mc.AppRef == nil {
		s.unclaim(it, env, st, s.o.Now().Add(cfg.Spool.MaxRetryDelay.Duration))
		return
	}
	pol := s.policy(cfg)
	start := s.o.Now()
	// When to try next if this attempt fails (a crash instead puts the
	// message back in incoming/, due at once).
	env.NextAttempt, _ = pol.Next(env.Received, start, len(env.Attempts)+1, s.o.Jitter())
	pending := env.PendingAddresses()

	if !w.lease(ctx, mc) {
		s.finishDeferred(it, env, s.o.Now(), transport.Transient, "", "")
		return
	}
	tk, refused, ok := s.reserveShared(ctx, w.mb, mc, len(pending), w.checkLease)
	if !ok {
		s.finishDeferred(it, env, refused.until, refused.kind, refused.reason, "")
		return
	}
	// The wait may have cost the connection its lease (see checkLease).
	if !w.lease(ctx, mc) {
		s.settleShared(tk, nil)
		s.finishDeferred(it, env, s.o.Now(), transport.Transient, "", "")
		return
	}
	// Waiting for a rate slot ends with the run context: a shutdown should
	// not sit out the per-minute window.
	if wait, ok := s.reserve(ctx, w.mb, mc, len(pending)); !ok {
		// Over the daily recipient quota (or shutting down): wait without
		// an attempt, which would only earn a SubmissionQuotaExceeded.
		s.settleShared(tk, nil)
		s.finishDeferred(it, env, wait, transport.Quota, "", "")
		return
	}
	epoch := s.pauseEpoch(w.mb)
	out := w.attempt(sendCtx, cfg, mc, env, pending)
	s.release(w.mb, out, len(pending))
	s.settleShared(tk, &out)
	s.record(it, env, mc, cfg, out, start, epoch)
}

// attempt hands one message to the mailbox's transport.
func (w *worker) attempt(ctx context.Context, cfg *config.Config, mc *config.Mailbox, env *queue.Envelope, pending []string) transport.Result {
	conn, ok := w.connFor(mc)
	if !ok {
		v := transport.Verdict{Kind: transport.ConfigFault, Reply: fmt.Sprintf("no transport %q is available", mc.Transport),
			Fix: fmt.Sprintf(`set transport = "smtp", "graph" or "hve" for mailbox %s`, mc.Address)}
		return transport.Result{Msg: &v}
	}
	spool := w.s.spool
	return conn.Deliver(ctx, &transport.Attempt{
		Config: cfg, Mailbox: mc, ID: env.ID, From: env.MailFrom, SMTPUTF8: env.SMTPUTF8, Recipients: pending,
		Body: func() (io.ReadCloser, int64, error) { return spool.BodyOf(env) },
	})
}

// record writes the attempt into the envelope and moves it on: removed when
// done, to failed/ with a DSN when recipients failed for good, or back to
// deferred/ with its next attempt.
// epoch is the mailbox's pause epoch when the attempt started.
func (s *Scheduler) record(it *item, env *queue.Envelope, mc *config.Mailbox, cfg *config.Config, res transport.Result, start time.Time, epoch int) {
	now := s.o.Now()
	pending := env.PendingAddresses()
	a := applyResult(env, res, now)
	env.Attempts = append(env.Attempts, queue.Attempt{At: start, Duration: queue.Millis(now.Sub(start).Milliseconds()), Result: a.Result, Reply: a.Reply, Recipients: pending, Transport: mc.Transport})
	if s.o.Hooks.Attempt != nil {
		s.o.Hooks.Attempt(mc.Address, mc.Transport, a.Result, (&transport.Verdict{Reply: a.Reply}).ReplyClass())
	}
	if res.Note != "" {
		s.log.Info("recipients adjusted for the upstream", "id", env.ID, "mailbox", mc.Address, "change", res.Note)
	}
	mb := s.mailboxFor(mc.Address)
	s.noteFailing(mb, res, a, now)
	// The fix for a missing SendAs grant names the sender.
	a.Fix = strings.ReplaceAll(a.Fix, "<from address>", env.MailFrom)
	s.pauseFor(mb, mc, cfg, a, env.MailFrom)
	s.liftIfLifted(it, mb, a.Kind, env.MailFrom)
	if a.Delivered > 0 {
		// Only mail getting through proves the mailbox works again; a 451
		// or a refused recipient on another connection says nothing about
		// the pause this one is under.
		s.unpause(mb, epoch)
		s.clearSenderFault(mb, env.MailFrom)
	}
	for _, r := range a.NewlyFailed {
		v, ok := res.Rcpts[r.Address]
		if !ok && res.Msg != nil {
			v = *res.Msg
		}
		if v.Fix != "" {
			s.log.Warn("recipient refused for good; the sender gets a delivery status notification", "id", env.ID, "mailbox", mc.Address,
				"recipient", r.Address, "reply", v.Reply, "fix", v.Fix)
		}
	}
	if len(a.NewlyFailed) > 0 {
		s.notifyFailure(env, a.NewlyFailed, cfg)
	}
	if len(env.Pending()) == 0 {
		s.complete(it, env, start)
		return
	}
	s.mu.Lock()
	pausedUntil := mb.pausedUntil
	s.mu.Unlock()
	next, expired := nextAttempt(a.Kind, env, s.policy(cfg), now, pausedUntil, s.o.Jitter())
	if next.IsZero() {
		next = now // a configuration fault whose pause was lifted since
	}
	if expired {
		s.notifyFailure(env, giveUp(env, cfg.Spool.MaxAge.Duration), cfg)
		s.complete(it, env, start)
		return
	}
	env.LastError = a.Reply
	s.finishDeferred(it, env, next, a.Kind, a.Reply, a.Fix)
}

// noteFailing keeps count of attempts in a row that failed for the whole
// message with a temporary error, so health can tell an outage (every
// attempt failing for minutes) from one failed connection.
func (s *Scheduler) noteFailing(mb *mbox, res transport.Result, a applied, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case a.Delivered > 0:
		mb.failing, mb.failingSince, mb.failingReply = 0, time.Time{}, ""
	case res.Msg != nil && res.Msg.Kind == transport.Transient:
		if mb.failing == 0 {
			mb.failingSince = now
		}
		mb.failing++
		mb.failingReply = res.Msg.Reply
	}
}

func (s *Scheduler) mailboxFor(addr string) *mbox {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mailbox(strings.ToLower(addr))
}

// finishDeferred moves an envelope to deferred/ with its next attempt; the
// log line carries the fix of a temporary fault that has one (a proxy
// refusing the way).
func (s *Scheduler) finishDeferred(it *item, env *queue.Envelope, next time.Time, kind transport.Kind, reply, fix string) {
	env.NextAttempt = next
	if err := s.spool.Move(env, queue.Deferred); err != nil {
		if errors.Is(err, queue.ErrNotFound) {
			s.forget(it)
			return
		}
		s.spoolWriteFailed("cannot write the envelope back to deferred/; the message stays in active/ and is retried after restart", env.ID, err, 0, 0)
		s.forget(it)
		return
	}
	s.spoolWriteOK()
	if reply != "" {
		attrs := []any{"id", env.ID, "mailbox", env.Mailbox, "pending", len(env.Pending()), "reply", reply, "next_attempt", next.Format(time.RFC3339)}
		if fix != "" {
			attrs = append(attrs, "fix", fix)
		}
		s.log.Info("deferred", attrs...)
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
			s.spoolWriteFailed("delivered, but cannot remove the message from the spool; it is delivered again after restart", env.ID, err, 0, 0)
		} else {
			s.spoolWriteOK()
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
		s.spoolWriteFailed("cannot move the message to failed/", env.ID, err, 0, 0)
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
