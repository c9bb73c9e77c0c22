package delivery

import (
	"fmt"
	"time"

	"github.com/oauthrelay/oauthrelay/queue"
	"github.com/oauthrelay/oauthrelay/transport"
)

// applied is what one attempt's result did to a message, worked out by
// applyResult without touching anything but the envelope.
type applied struct {
	// Kind is the attempt's overall kind: the whole-message verdict, or
	// else the worst per-recipient one.
	Kind transport.Kind
	// Reply and Fix describe it: the whole-message reply, or the first
	// recipient's trouble, or the upstream's success reply.
	Reply, Fix string
	// Wait is the least pause the upstream asked for.
	Wait time.Duration
	// AppWide says a throttle concerns the whole app.
	AppWide bool
	// Result labels the attempt in the history and the metrics:
	// delivered, deferred, failed, config_fault, throttled, quota, or
	// partial when some recipients made it and others did not (yet).
	Result string
	// Delivered counts the recipients this attempt delivered.
	Delivered int
	// NewlyFailed are the recipients this attempt failed for good.
	NewlyFailed []*queue.Recipient
}

// applyResult merges an attempt's result into the envelope's pending
// recipients (state, reply, time) and sums it up. Recipients without an
// answer of their own share the whole-message verdict.
func applyResult(env *queue.Envelope, res transport.Result, now time.Time) applied {
	pending := 0
	a := applied{Kind: transport.Delivered, Reply: "250 " + res.Reply}
	if res.Msg != nil {
		a.Kind, a.Reply, a.Fix, a.Wait, a.AppWide = res.Msg.Kind, res.Msg.Reply, res.Msg.Fix, res.Msg.Wait, res.Msg.AppWide
	}
	worst := transport.Delivered
	var first *transport.Verdict
	for _, r := range env.Recipients {
		if r.State != queue.RcptPending {
			continue
		}
		pending++
		v, ok := res.Rcpts[r.Address]
		if !ok && res.Msg != nil {
			v = *res.Msg
		}
		r.Reply, r.Updated = v.Reply, now
		switch v.Kind {
		case transport.Delivered:
			r.State = queue.RcptDelivered
			a.Delivered++
		case transport.Permanent:
			r.State = queue.RcptFailed
			a.NewlyFailed = append(a.NewlyFailed, r)
		}
		if v.Kind > worst {
			worst = v.Kind
		}
		if ok && v.Kind != transport.Delivered && first == nil {
			first = &v
		}
	}
	if res.Msg == nil {
		a.Kind = worst
		if first != nil {
			// Per-recipient trouble only: report the first such reply.
			a.Reply, a.Fix, a.Wait, a.AppWide = first.Reply, first.Fix, first.Wait, first.AppWide
		}
	}
	a.Result = a.Kind.String()
	if a.Delivered > 0 && a.Delivered < pending {
		a.Result = "partial"
	}
	return a
}

// nextAttempt is when a message that still has pending recipients is tried
// again after an attempt of this kind, and whether it has been queued too
// long instead. pausedUntil is the end of the mailbox's pause, which a
// configuration fault or a throttle has just set. Our own configuration
// never expires mail; throttling and the daily quota count toward max_age
// like any other temporary failure.
func nextAttempt(kind transport.Kind, env *queue.Envelope, pol queue.RetryPolicy, now, pausedUntil time.Time, jitter float64) (time.Time, bool) {
	switch kind {
	case transport.ConfigFault:
		return pausedUntil, false
	case transport.Throttled:
		_, expired := pol.Next(env.Received, now, len(env.Attempts), jitter)
		return pausedUntil, expired
	case transport.Quota:
		next := now.Add(24 * time.Hour)
		if d := env.Received.Add(pol.MaxAge); next.After(d) {
			next = d
		}
		_, expired := pol.Next(env.Received, now, len(env.Attempts), jitter)
		return next, expired
	default:
		return pol.Next(env.Received, now, len(env.Attempts), jitter)
	}
}

// giveUp fails every recipient still pending of a message that has been
// queued longer than maxAge, and returns them.
func giveUp(env *queue.Envelope, maxAge time.Duration) []*queue.Recipient {
	var out []*queue.Recipient
	for _, r := range env.Recipients {
		if r.State == queue.RcptPending {
			r.State = queue.RcptFailed
			r.Reply = fmt.Sprintf("gave up after %s in the queue; last reply: %s", maxAge, r.Reply)
			out = append(out, r)
		}
	}
	return out
}
