package delivery

import (
	"context"
	"time"

	"github.com/oauthrelay/oauthrelay/config"
	"github.com/oauthrelay/oauthrelay/internal/cluster"
	"github.com/oauthrelay/oauthrelay/transport"
)

// With Options.Shared set, the budgets pacing.go keeps for this relay are
// also kept together with every relay sharing the Redis: a connection
// holds one of the mailbox's max_connections leases, each send takes its
// place in the mailbox's shared per-minute window and its recipients in
// the shared 24-hour count, and a pause one relay earns (a 432, a refused
// setup) makes the others wait too. The local pacing stays as it is, so a
// relay never exceeds a limit on its own either; internal/cluster falls
// back to each relay's share when Redis is away.

// inflightHorizon is how long a send in flight counts in the shared
// window if its relay dies before settling it: long past any send, so a
// dead relay's attempts are never counted short.
const inflightHorizon = 10 * time.Minute

// sharedIdle is how long an idle connection keeps its lease when budgets
// are shared: an idle slot held here is one another relay with mail
// cannot use.
const sharedIdle = time.Second

// leaseRetry is how often a worker asks again for a connection lease the
// other relays hold, and the longest wait between asks for a window slot.
const leaseRetry = 250 * time.Millisecond

// sharedRefusal is why an attempt got no place in the shared budgets, and
// until when it waits.
type sharedRefusal struct {
	until  time.Time
	kind   transport.Kind
	reason string
}

// lease waits for one of the mailbox's connection leases. It returns
// false when delivery is shutting down.
func (w *worker) lease(ctx context.Context, mc *config.Mailbox) bool {
	s := w.s
	if s.o.Shared == nil {
		return true
	}
	if w.leaseHeld != nil {
		if w.leaseHeld.Keep() {
			return true
		}
		// Lost, or more than this relay's share in fallback: this
		// connection closes and the worker waits for a lease again.
		w.closeConn() // and then releases the lease
	}
	for waited := false; ; waited = true {
		if l, ok := s.o.Shared.Lease("mailbox:"+w.mb.addr, mc.MaxConnections); ok {
			w.leaseHeld = l
			return true
		}
		// One wait, however many times it asks again.
		if !waited && s.o.Hooks.SharedWait != nil {
			s.o.Hooks.SharedWait(w.mb.addr, "connection")
		}
		t := time.NewTimer(leaseRetry)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return false
		}
	}
}

// checkLease closes the connection, and gives its lease back, when the
// lease was lost or this relay holds more than its share.
func (w *worker) checkLease() {
	if w.leaseHeld != nil && !w.leaseHeld.Keep() {
		w.closeConn()
	}
}

// releaseLease gives the connection's lease back when it closes.
func (w *worker) releaseLease() {
	if w.leaseHeld != nil {
		w.leaseHeld.Release()
		w.leaseHeld = nil
	}
}

// reserveShared takes the attempt's places in the shared per-minute window
// and 24-hour recipient count, waiting for the window. One round trip
// takes both and reads the pause the relays share: another relay's pause
// applies here too. It returns false with the refusal when the mailbox is
// paused elsewhere, its daily count is used up, or delivery is shutting
// down.
//
// check runs while it waits: a connection over this relay's share (Redis
// went away meanwhile) closes at once rather than stay open idle.
func (s *Scheduler) reserveShared(ctx context.Context, mb *mbox, mc *config.Mailbox, rcpts int, check func()) (*cluster.Ticket, sharedRefusal, bool) {
	sh := s.o.Shared
	if sh == nil {
		return nil, sharedRefusal{}, true
	}
	waited := ""
	for {
		now := s.o.Now()
		r := sh.Take([]cluster.Budget{
			{Key: "mailbox:" + mb.addr + ":minute", Limit: cluster.Limit{Span: s.o.RateWindow, Max: mc.MaxPerMinute}, N: 1, At: now.Add(inflightHorizon)},
			{Key: "mailbox:" + mb.addr + ":rcpts", Limit: cluster.Limit{Span: 24 * time.Hour, Max: mc.MaxRecipientsPerDay}, N: rcpts, At: now},
		}, "mailbox:"+mb.addr)
		if r.OK {
			return r.Ticket, sharedRefusal{}, true
		}
		if !r.PausedUntil.IsZero() {
			s.pausedElsewhere(mb, r.PausedUntil, r.PauseReason)
			return nil, sharedRefusal{r.PausedUntil, transport.Throttled, r.PauseReason}, false
		}
		if retry := r.Retry[1]; !r.Rejoin && !retry.IsZero() {
			d := retry.Sub(now)
			v := transport.Verdict{Kind: transport.Quota, Reply: "the relays' shared count of this mailbox's recipients in the last 24 hours reached max_recipients_per_day",
				Fix: "mail waits for the 24-hour window to roll; spread the load over more mailboxes if this repeats"}
			msg := "mailbox reached its daily recipient limit across the relays; mail waits for the 24-hour window to roll"
			if sh.Mode() == cluster.ModeFallback {
				// Only this relay's share is used up, and Redis is
				// asked again within a minute: not the whole day.
				v.Reply = "Redis is away and this relay used its share of what was left of max_recipients_per_day in the last 24 hours"
				v.Fix = "mail waits until Redis answers again or the 24-hour window rolls; check that Redis runs and this relay reaches it (`oauthrelay doctor` tests [cluster] redis)"
				msg = "mailbox used this relay's share of its daily recipient limit while Redis is away; mail waits until Redis answers again or the 24-hour window rolls"
			}
			s.pause(mb, v, d, d)
			s.log.Warn(msg, "mailbox", mb.addr, "until", retry.Format(time.RFC3339))
			return nil, sharedRefusal{retry, transport.Quota, ""}, false
		}
		// One wait per reason, however many times it asks again: the
		// window, or the relays' return to Redis (rejoin).
		why := "minute"
		if r.Rejoin {
			why = "rejoin"
		}
		if why != waited && s.o.Hooks.SharedWait != nil {
			s.o.Hooks.SharedWait(mb.addr, why)
		}
		waited = why
		check()
		// A send in flight elsewhere counts until it settles: ask again
		// soon rather than at its horizon.
		retry := r.Retry[0]
		if r.Retry[1].After(retry) {
			retry = r.Retry[1]
		}
		d := min(max(retry.Sub(now), time.Millisecond), leaseRetry)
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			// Shutting down, not over a quota: filed as the other
			// shutdown paths file it.
			return nil, sharedRefusal{s.o.Now(), transport.Transient, ""}, false
		}
	}
}

// settleShared records what the attempt used, in one round trip: the send
// counts in the window from when it finished, and only the recipients
// Microsoft took count toward the day (res nil: the attempt did not
// happen).
func (s *Scheduler) settleShared(tk *cluster.Ticket, res *transport.Result) {
	if tk == nil {
		return
	}
	now := s.o.Now()
	if res == nil {
		s.o.Shared.Settle(tk, now, 0)
		return
	}
	taken := 0
	for _, v := range res.Rcpts {
		if v.Kind == transport.Delivered {
			taken++
		}
	}
	s.o.Shared.SettleEach(tk, now, []int{1, taken})
}

// sharePause tells the other relays about a pause this one earned.
func (s *Scheduler) sharePause(mb *mbox, until time.Time, reply string) {
	if s.o.Shared != nil {
		s.o.Shared.Pause("mailbox:"+mb.addr, until, reply)
	}
}

// pausedElsewhere applies another relay's pause of the mailbox here.
func (s *Scheduler) pausedElsewhere(mb *mbox, until time.Time, reason string) {
	if !until.After(s.o.Now()) {
		return
	}
	s.mu.Lock()
	fresh := until.After(mb.pausedUntil)
	if fresh {
		mb.pausedUntil, mb.pauseKind, mb.pauseReason = until, transport.Throttled, reason
		s.broadcast(mb)
	}
	s.mu.Unlock()
	if fresh {
		s.log.Warn("another relay paused the mailbox; this one waits too", "mailbox", mb.addr, "reply", reason, "until", until.Format(time.RFC3339))
	}
}

// liftSharedPause lifts the mailbox's shared pause, off the caller's lock
// (it is a round trip to Redis).
func (s *Scheduler) liftSharedPause(mb *mbox) {
	if s.o.Shared != nil {
		go s.o.Shared.Unpause("mailbox:" + mb.addr)
	}
}
