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

// sharedTickets are one attempt's places in the shared budgets.
type sharedTickets struct {
	minute, rcpts *cluster.Ticket
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
	for {
		if l, ok := s.o.Shared.Lease("mailbox:"+w.mb.addr, mc.MaxConnections); ok {
			w.leaseHeld = l
			return true
		}
		if s.o.Hooks.SharedWait != nil {
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
// and 24-hour recipient count, waiting for the window. It returns false
// with when to try again when the daily count is used up or delivery is
// shutting down.
//
// check runs while it waits: a connection over this relay's share (Redis
// went away meanwhile) closes at once rather than stay open idle.
func (s *Scheduler) reserveShared(ctx context.Context, mb *mbox, mc *config.Mailbox, rcpts int, check func()) (*sharedTickets, time.Time, bool) {
	sh := s.o.Shared
	if sh == nil {
		return nil, time.Time{}, true
	}
	tk := &sharedTickets{}
	for {
		now := s.o.Now()
		if tk.minute == nil {
			t, retry, ok := sh.Reserve([]string{"mailbox:" + mb.addr + ":minute"}, []cluster.Limit{{Span: s.o.RateWindow, Max: mc.MaxPerMinute}}, 1, now.Add(inflightHorizon))
			if ok {
				tk.minute = t
			} else {
				if s.o.Hooks.SharedWait != nil {
					s.o.Hooks.SharedWait(mb.addr, "minute")
				}
				check()
				// A send in flight elsewhere counts until it settles:
				// ask again soon rather than at its horizon.
				d := min(max(retry.Sub(now), time.Millisecond), leaseRetry)
				t := time.NewTimer(d)
				select {
				case <-t.C:
					continue
				case <-ctx.Done():
					t.Stop()
					return nil, s.o.Now(), false
				}
			}
		}
		t, retry, ok := sh.Reserve([]string{"mailbox:" + mb.addr + ":rcpts"}, []cluster.Limit{{Span: 24 * time.Hour, Max: mc.MaxRecipientsPerDay}}, rcpts, now)
		if ok {
			tk.rcpts = t
			return tk, time.Time{}, true
		}
		sh.Settle(tk.minute, now, 0)
		d := retry.Sub(now)
		s.pause(mb, transport.Verdict{Kind: transport.Quota, Reply: "the relays' shared count of this mailbox's recipients in the last 24 hours reached max_recipients_per_day",
			Fix: "mail waits for the 24-hour window to roll; spread the load over more mailboxes if this repeats"}, d, d)
		s.log.Warn("mailbox reached its daily recipient limit across the relays; mail waits for the 24-hour window to roll", "mailbox", mb.addr, "until", retry.Format(time.RFC3339))
		return nil, retry, false
	}
}

// settleShared records what the attempt used: the send counts in the
// window from when it finished, and only the recipients Microsoft took
// count toward the day (res nil: the attempt did not happen).
func (s *Scheduler) settleShared(tk *sharedTickets, res *transport.Result) {
	if tk == nil {
		return
	}
	now := s.o.Now()
	if res == nil {
		s.o.Shared.Settle(tk.minute, now, 0)
		s.o.Shared.Settle(tk.rcpts, now, 0)
		return
	}
	taken := 0
	for _, v := range res.Rcpts {
		if v.Kind == transport.Delivered {
			taken++
		}
	}
	s.o.Shared.Settle(tk.minute, now, 1)
	s.o.Shared.Settle(tk.rcpts, now, taken)
}

// sharePause tells the other relays about a pause this one earned.
func (s *Scheduler) sharePause(mb *mbox, until time.Time, reply string) {
	if s.o.Shared != nil {
		s.o.Shared.Pause("mailbox:"+mb.addr, until, reply)
	}
}

// pausedElsewhere applies another relay's pause of the mailbox here, and
// returns until when, or zero.
func (s *Scheduler) pausedElsewhere(mb *mbox) (time.Time, string) {
	if s.o.Shared == nil {
		return time.Time{}, ""
	}
	until, reason := s.o.Shared.PausedUntil("mailbox:" + mb.addr)
	now := s.o.Now()
	if !until.After(now) {
		return time.Time{}, ""
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
	return until, reason
}

// liftSharedPause lifts the mailbox's shared pause, off the caller's lock
// (it is a round trip to Redis).
func (s *Scheduler) liftSharedPause(mb *mbox) {
	if s.o.Shared != nil {
		go s.o.Shared.Unpause("mailbox:" + mb.addr)
	}
}
