package delivery

import (
	"container/heap"
	"slices"
	"strings"
	"time"

	"github.com/oauthrelay/oauthrelay/config"
	"github.com/oauthrelay/oauthrelay/internal/backoff"
	"github.com/oauthrelay/oauthrelay/transport"
)

// pause stops a mailbox's deliveries until the backoff ends.
func (s *Scheduler) pause(mb *mbox, v transport.Verdict, base, maxDelay time.Duration) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.o.Now()
	if now.Before(mb.pausedUntil) && mb.pauseKind == v.Kind {
		// Another worker's attempt, started before the pause, hit the same
		// kind of fault (Exchange's replies differ by server name, so the
		// text cannot tell): one fault, not a reason to back off further.
		return mb.pausedUntil
	}
	mb.faults++
	mb.pauseSeq++
	d := backoff.Doubling(base, maxDelay, mb.faults)
	// A shorter pause never cuts a longer one (a throttle after the
	// daily quota).
	if until := now.Add(d); until.After(mb.pausedUntil) {
		mb.pausedUntil = until
	}
	mb.pauseKind = v.Kind
	mb.pauseReason = v.Reply
	mb.pauseFix = v.Fix
	mb.configFault = v.Kind == transport.ConfigFault
	s.broadcast(mb)
	return mb.pausedUntil
}

// pauseEpoch is the number of pauses the mailbox has had; an attempt
// notes it when it starts.
func (s *Scheduler) pauseEpoch(mb *mbox) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return mb.pauseSeq
}

// unpause lifts the mailbox's pause after a delivery by an attempt that
// started in epoch. An attempt that started before the pause began (on a
// connection opened before a 432, say) proves nothing about it.
func (s *Scheduler) unpause(mb *mbox, epoch int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if epoch != mb.pauseSeq {
		return
	}
	if mb.faults > 0 || mb.configFault {
		if mb.configFault {
			s.log.Info("mailbox works again", "mailbox", mb.addr)
		}
		mb.faults, mb.configFault, mb.pauseKind, mb.pauseReason, mb.pauseFix = 0, false, transport.Delivered, "", ""
		mb.pausedUntil = time.Time{}
		s.liftSharedPause(mb)
	}
}

// pauseFor pauses a mailbox after an attempt whose kind concerns the whole
// mailbox (a refused setup, a throttle, the daily quota) and says so in the
// log with the fix.
func (s *Scheduler) pauseFor(mb *mbox, mc *config.Mailbox, cfg *config.Config, a applied, from string) {
	minDelay, maxDelay := cfg.Spool.MinRetryDelay.Duration, cfg.Spool.MaxRetryDelay.Duration
	switch a.Kind {
	case transport.ConfigFault:
		until := s.pause(mb, transport.Verdict{Kind: transport.ConfigFault, Reply: a.Reply, Fix: a.Fix}, minDelay, maxDelay)
		s.sharePause(mb, until, a.Reply)
		s.log.Error("Microsoft 365 refused the relay's own setup (credentials, permissions or TLS); mail stays queued and the mailbox pauses until fixed",
			"mailbox", mc.Address, "app", mc.App, "transport", mc.Transport, "reply", a.Reply, "fix", a.Fix, "retry_at", until.Format(time.RFC3339))
	case transport.Throttled:
		// Microsoft's Retry-After is the least wait; repeats double it.
		base := minDelay
		if a.Wait > 0 {
			base = a.Wait
		}
		boxes := []*mbox{mb}
		if a.AppWide {
			boxes = s.mailboxesOfApp(mc, cfg)
		}
		for _, b := range boxes {
			until := s.pause(b, transport.Verdict{Kind: transport.Throttled, Reply: a.Reply}, base, max(maxDelay, a.Wait))
			s.sharePause(b, until, a.Reply)
			if s.o.Hooks.Throttled != nil {
				s.o.Hooks.Throttled(b.addr)
			}
			s.log.Warn("Microsoft 365 throttled the mailbox; backing off", "mailbox", b.addr, "app_wide", a.AppWide, "reply", a.Reply, "until", until.Format(time.RFC3339))
		}
	case transport.SenderFault:
		if s.noteSenderFault(mb, from, a.Reply, a.Fix) {
			s.log.Error("Microsoft 365 refused a sender the mailbox may not send as (a missing SendAs grant); its mail stays queued, the mailbox's other senders go on",
				"mailbox", mc.Address, "sender", from, "transport", mc.Transport, "reply", a.Reply, "fix", a.Fix)
		}
	case transport.Quota:
		s.pause(mb, transport.Verdict{Kind: transport.Quota, Reply: a.Reply, Fix: a.Fix}, time.Hour, time.Hour)
		s.log.Warn("Microsoft 365 daily recipient quota reached; mail waits about a day", "mailbox", mc.Address, "reply", a.Reply, "fix", a.Fix)
	}
}

// mailboxesOfApp are the mailboxes that reach Microsoft through the same
// app and transport as mc, mc's own first: an app-wide throttle holds them
// all.
func (s *Scheduler) mailboxesOfApp(mc *config.Mailbox, cfg *config.Config) []*mbox {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []*mbox{s.mailbox(strings.ToLower(mc.Address))}
	for _, other := range cfg.Mailboxes {
		if other.App == mc.App && other.Transport == mc.Transport && !strings.EqualFold(other.Address, mc.Address) {
			out = append(out, s.mailbox(strings.ToLower(other.Address)))
		}
	}
	return out
}

// SetConfig applies a reloaded configuration. Pauses caused by
// configuration faults are lifted and their mail made due at once, because
// the admin has presumably fixed what was wrong.
func (s *Scheduler) SetConfig(cfg *config.Config) {
	s.mu.Lock()
	s.cfg = cfg
	now := s.o.Now()
	for _, mb := range s.mbx {
		mb.warnedNoConf = false
		mb.lifts++
		// Only configuration faults (our setup, a SendAs grant) are
		// lifted: a reload does not make Exchange's throttling or daily
		// quota go away.
		if mb.configFault || len(mb.senderFaults) > 0 {
			if mb.configFault {
				s.liftConfigPause(mb)
			}
			mb.senderFaults = nil
			// Mail held back by the fault is due now; mail deferred for
			// other reasons (a 451, the daily quota) keeps its time.
			s.releaseHeld(mb, now, transport.ConfigFault, transport.SenderFault)
		}
		s.broadcast(mb)
	}
	s.mu.Unlock()
	s.poke()
}

// liftIfLifted lifts the hold a configuration or SendAs fault has just
// put on mb when a reload (or its app getting a token again) came during
// the attempt: that lifted such holds before this attempt reported, and
// may be the fix, so the mail is tried again at once rather than after
// the backoff (a fault still there pauses again then).
func (s *Scheduler) liftIfLifted(it *item, mb *mbox, kind transport.Kind, from string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if it.lifts == mb.lifts {
		return
	}
	switch kind {
	case transport.ConfigFault:
		if mb.configFault {
			s.liftConfigPause(mb)
			s.broadcast(mb)
		}
	case transport.SenderFault:
		delete(mb.senderFaults, strings.ToLower(from))
	}
}

// liftConfigPause ends the mailbox's configuration-fault pause here and
// in the other relays' shared view (or this relay's own worker would find
// its shared pause again and wait it out after all). Callers hold s.mu.
func (s *Scheduler) liftConfigPause(mb *mbox) {
	mb.pausedUntil, mb.configFault, mb.pauseKind, mb.pauseReason, mb.pauseFix, mb.faults = time.Time{}, false, transport.Delivered, "", "", 0
	s.liftSharedPause(mb)
}

// releaseHeld makes the mailbox's deferred mail whose last attempt failed
// with one of kinds due now; mail deferred for other reasons keeps its
// time, and stale heap entries are dropped. Callers hold s.mu.
func (s *Scheduler) releaseHeld(mb *mbox, now time.Time, kinds ...transport.Kind) {
	var keep itemHeap
	for mb.later.Len() > 0 {
		e := heap.Pop(&mb.later).(*heapEntry)
		switch {
		case e.seq != e.it.seq:
		case slices.Contains(kinds, e.it.lastKind):
			s.makeReady(mb, e.it, now)
		default:
			keep = append(keep, e)
		}
	}
	mb.later = keep
	heap.Init(&mb.later)
}
