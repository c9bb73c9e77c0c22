package cluster

import (
	"context"
	"fmt"
	"time"
)

// Ticket is a reservation in one or more sliding logs, to settle when the
// outcome is known.
type Ticket struct {
	id     string
	keys   []string
	n      int
	shared bool
}

// Reserve takes n entries, counted at `at`, in every key's sliding log if
// each has room under its limit; otherwise it takes nothing and returns
// when to try again. Keys name budgets ("mailbox:a@b:minute"); a zero Max
// is no limit and is skipped. An entry counted at a future `at` (a send in
// flight) counts until it is settled or until at+span.
func (c *Cluster) Reserve(keys []string, limits []Limit, n int, at time.Time) (*Ticket, time.Time, bool) {
	var ks []string
	var ls []Limit
	for i, k := range keys {
		if limits[i].Max > 0 {
			ks, ls = append(ks, k), append(ls, limits[i])
		}
	}
	t := &Ticket{id: c.o.Node + ":" + newID(), keys: ks, n: n}
	if len(ks) == 0 {
		return t, time.Time{}, true
	}
	now := c.o.Now()
	if c.shared() {
		for i, l := range ls {
			if back, nodes := c.rejoining(l.Span + c.o.MaxSend); back && l.Span <= holdCap {
				ls[i].Max = share(l.Max, nodes)
			}
		}
		retry, ok, err := c.reserveShared(t, ls, at, now)
		if err == nil {
			return t, retry, ok
		}
		c.toFallback(err)
	}
	since := time.Time{}
	if c.rdb != nil {
		// Fallback: this relay's share.
		c.mu.Lock()
		switched, nodes := c.switchedAt, c.nodes
		for i, k := range ks {
			l := ls[i]
			if l.Span <= holdCap {
				// The others may have used the whole span before Redis
				// went away: wait it out once, then use the share.
				if hold := switched.Add(l.Span + c.o.MaxSend); now.Before(hold) {
					c.mu.Unlock()
					return t, hold, false
				}
				ls[i].Max = share(l.Max, nodes)
			} else {
				ls[i].Max = max(0, l.Max-c.lastCount[k]) / max(nodes, 1)
				since = switched
			}
		}
		c.mu.Unlock()
	}
	retry, ok := c.local.reserve(ks, ls, t.id, n, now, at, since)
	return t, retry, ok
}

func (c *Cluster) reserveShared(t *Ticket, ls []Limit, at, now time.Time) (time.Time, bool, error) {
	c.mu.Lock()
	epoch := c.epoch
	c.mu.Unlock()
	keys := []string{prefix + "epoch"}
	args := []any{now.UnixMilli(), t.id, t.n, ceilMilli(at), epoch}
	for i, k := range t.keys {
		keys = append(keys, prefix+k)
		args = append(args, ls[i].Span.Milliseconds(), ls[i].Max)
	}
	ctx, cancel := c.ctx()
	defer cancel()
	res, err := reserveScript.Run(ctx, c.rdb, keys, args...).Int64Slice()
	if err != nil {
		return time.Time{}, false, err
	}
	if res[0] == -1 {
		// Redis lost its data: the heartbeat puts back what this relay
		// counts and learns the new epoch; until then, wait.
		if err := c.heartbeat(); err != nil {
			return time.Time{}, false, err
		}
		return now.Add(c.o.Heartbeat), false, nil
	}
	c.mu.Lock()
	for i, k := range t.keys {
		if i+1 < len(res) {
			c.lastCount[k] = int(res[i+1])
			if res[0] == 0 {
				c.lastCount[k] += t.n
			}
		}
	}
	c.mu.Unlock()
	if res[0] != 0 {
		return time.UnixMilli(res[0]), false, nil
	}
	t.shared = true
	// Mirrored here, to put back into a Redis that lost it.
	c.local.mirror(t.keys, ls, logEntry{at, t.id, t.n}, now)
	return time.Time{}, true, nil
}

// Settle records the outcome of a reservation: its first keep entries
// count at `at` (when the upstream took them), the rest are given back.
// Settle(t, at, 0) cancels it.
func (c *Cluster) Settle(t *Ticket, at time.Time, keep int) {
	if t == nil || len(t.keys) == 0 {
		return
	}
	// The local log (or mirror) is settled first: it is what goes back
	// into Redis after a fallback, under the same names.
	c.local.settle(t.keys, t.id, at, keep)
	if t.shared {
		if !c.shared() {
			// Redis is away: its entries stay at their reserved time,
			// which only counts them longer, until the return puts this
			// settlement back.
			return
		}
		keys := make([]string, len(t.keys))
		for i, k := range t.keys {
			keys[i] = prefix + k
		}
		ctx, cancel := c.ctx()
		defer cancel()
		if err := settleScript.Run(ctx, c.rdb, keys, t.id, ceilMilli(at), keep, t.n).Err(); err != nil {
			c.toFallback(err)
		}
	}
}

// Pause tells the other relays that key (a mailbox) must wait until
// `until`: one relay's 432 makes them all wait.
func (c *Cluster) Pause(key string, until time.Time, reason string) {
	if !c.shared() {
		return
	}
	ctx, cancel := c.ctx()
	defer cancel()
	if err := pauseScript.Run(ctx, c.rdb, []string{prefix + "pause:" + key}, until.UnixMilli(), reason).Err(); err != nil {
		c.toFallback(err)
	}
}

// PausedUntil is when another relay's pause of key ends (zero if none),
// with the reply that caused it.
func (c *Cluster) PausedUntil(key string) (time.Time, string) {
	if !c.shared() {
		return time.Time{}, ""
	}
	ctx, cancel := c.ctx()
	defer cancel()
	v, err := c.rdb.HMGet(ctx, prefix+"pause:"+key, "until", "reason").Result()
	if err != nil {
		c.toFallback(err)
		return time.Time{}, ""
	}
	s, _ := v[0].(string)
	reason, _ := v[1].(string)
	var ms int64
	fmt.Sscan(s, &ms)
	if ms == 0 {
		return time.Time{}, ""
	}
	return time.UnixMilli(ms), reason
}

// Ping runs a round-trip script (doctor's check): it proves the
// connection, the password and that scripts run.
func (c *Cluster) Ping(ctx context.Context) error {
	if c.rdb == nil {
		return nil
	}
	c.roundTrips.Add(1)
	got, err := pingScript.Run(ctx, c.rdb, nil, "oauthrelay").Text()
	if err != nil {
		return err
	}
	if got != "oauthrelay" {
		return fmt.Errorf("the round-trip script answered %q", got)
	}
	return nil
}

// Unpause lifts a shared pause: mail got through again, or a reload fixed
// the setup that caused it.
func (c *Cluster) Unpause(key string) {
	if !c.shared() {
		return
	}
	ctx, cancel := c.ctx()
	defer cancel()
	if err := c.rdb.Del(ctx, prefix+"pause:"+key).Err(); err != nil {
		c.toFallback(err)
	}
}

// ceilMilli is t in Unix milliseconds, rounded up: an entry never counts
// from earlier than it happened, so a window never ends a fraction of a
// millisecond too soon.
func ceilMilli(t time.Time) int64 {
	return (t.UnixNano() + int64(time.Millisecond) - 1) / int64(time.Millisecond)
}
