package relay

import (
	"fmt"
	"time"

	"github.com/oauthrelay/oauthrelay/config"
	"github.com/oauthrelay/oauthrelay/internal/cluster"
)

// Each [[client]]'s max_per_minute and max_per_day count the messages it
// has had accepted (a 250 after DATA), in any 60 seconds and any 24 hours.
// The place is taken at MAIL FROM, so that a client over its limit is
// refused before it sends anything and nothing is spooled; it is given
// back when the transaction does not end in an accepted message. With
// [cluster] redis the counts are shared by every relay.

// reserveRate takes the transaction's place in cl's limits, or refuses
// with 450 4.7.0 and when to try again.
func (ss *session) reserveRate(cl *config.Client) error {
	if cl.MaxPerMinute <= 0 && cl.MaxPerDay <= 0 {
		return nil
	}
	now := ss.s.now()
	keys := []string{"client:" + cl.Name + ":minute", "client:" + cl.Name + ":day"}
	limits := []cluster.Limit{{Span: time.Minute, Max: cl.MaxPerMinute}, {Span: 24 * time.Hour, Max: cl.MaxPerDay}}
	t, retry, ok := ss.s.budgets.Reserve(keys, limits, 1, now)
	if ok {
		ss.ticket = t
		return nil
	}
	wait := retry.Sub(now)
	n, span, key := cl.MaxPerMinute, "in a minute", "max_per_minute"
	if cl.MaxPerDay > 0 && (cl.MaxPerMinute <= 0 || wait > time.Minute) {
		n, span, key = cl.MaxPerDay, "in 24 hours", "max_per_day"
	}
	r := newRefusal(clientRate, cl.Name, n, span, key, waitText(wait))
	if ss.s.budgets.Mode() == cluster.ModeFallback || ss.s.budgets.Rejoining() {
		r = newRefusal(clientRateFallback, cl.Name, key, waitText(wait))
	}
	return ss.refuse(r, "client", cl.Name, "limit", key, "retry_in", wait.Round(time.Second).String())
}

// cancelRate gives back a place the transaction did not use.
func (ss *session) cancelRate() {
	if ss.ticket != nil {
		ss.s.budgets.Settle(ss.ticket, ss.s.now(), 0)
		ss.ticket = nil
	}
}

// waitText says how long to wait in the unit a person would use.
func waitText(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%d seconds", max(1, int((d+time.Second-1)/time.Second)))
	case d < 2*time.Hour:
		return roundUp(d)
	default:
		return fmt.Sprintf("%d hours", int((d+time.Hour-1)/time.Hour))
	}
}
