package cluster

import (
	"time"
)

// Budget is one reservation's place in one sliding log: N entries counted
// at At in Key ("mailbox:a@b:minute"), if Key holds fewer than Limit.Max
// in any Limit.Span. A zero Max is no limit and is skipped. An entry
// counted at a future At (a send in flight) counts until it is settled or
// until At+Span.
type Budget struct {
	Key   string
	Limit Limit
	N     int
	At    time.Time
}

// Reservation is what Take answers.
type Reservation struct {
	// Ticket is the reservation to settle; nil unless OK.
	Ticket *Ticket
	OK     bool
	// Retry is, for each budget given, when it has room again; zero for
	// the budgets that had room (or no limit).
	Retry []time.Time
	// PausedUntil is set when the pause key given to Take names a paused
	// mailbox: nothing was reserved, and PauseReason is the reply that
	// caused the pause.
	PausedUntil time.Time
	PauseReason string
	// Rejoin: nothing was reserved because this relay is putting its
	// counts back into Redis (or waits for the others to): try again at
	// Retry, which says nothing about the budgets themselves.
	Rejoin bool
}

// Ticket is a reservation in one or more sliding logs, to settle when the
// outcome is known.
type Ticket struct {
	id   string
	keys []string
	ns   []int
	// idx maps keys back to the budgets given to Take.
	idx []int
	// shared: reserved in Redis; away: reserved alone in fallback (and
	// put back into Redis when it answers again).
	shared, away bool
	// joins is Cluster.joins when the ticket was reserved: a ticket
	// reserved alone is in Redis only after a join since.
	joins uint64
}

// inRedis reports whether Redis may hold the ticket's entries as they
// were reserved. Callers hold c.mu.
func (c *Cluster) inRedis(t *Ticket) bool {
	return t.shared || t.away && c.joins != t.joins
}

// givesBack reports whether keeps leave out some of the ticket's entries.
func (t *Ticket) givesBack(keeps []int) bool {
	for i, k := range keeps {
		if k < t.ns[i] {
			return true
		}
	}
	return false
}

// Take reserves every budget's entries, or none: when one has no room it
// takes nothing and says, per budget, when to try again. With pauseKey
// (a mailbox's pause, as Pause names it) the same round trip reads the
// pause the relays share: a paused mailbox reserves nothing.
func (c *Cluster) Take(bs []Budget, pauseKey string) Reservation {
	t := &Ticket{id: c.o.Node + ":" + newID()}
	var ls []Limit
	var es []logEntry
	for i, b := range bs {
		if b.Limit.Max > 0 {
			t.keys, t.ns, t.idx = append(t.keys, b.Key), append(t.ns, b.N), append(t.idx, i)
			ls, es = append(ls, b.Limit), append(es, logEntry{b.At, t.id, b.N})
		}
	}
	spread := func(retries []time.Time) []time.Time {
		out := make([]time.Time, len(bs))
		for i, r := range retries {
			out[t.idx[i]] = r
		}
		return out
	}
	// At most twice round: a Redis that answered again while this relay
	// waited to count alone is asked instead.
	for range 2 {
		if c.shared() && (len(t.keys) > 0 || pauseKey != "") {
			r, err := c.takeShared(t, ls, es, pauseKey)
			if err == nil {
				r.Retry = spread(r.Retry)
				return r
			}
			c.toFallback(err)
		}
		if len(t.keys) == 0 {
			return Reservation{Ticket: t, OK: true, Retry: make([]time.Time, len(bs))}
		}
		retries, ok, joined := c.takeAlone(t, ls, es)
		if joined {
			continue
		}
		if !ok {
			return Reservation{Retry: spread(retries)}
		}
		return Reservation{Ticket: t, OK: true, Retry: make([]time.Time, len(bs))}
	}
	// Redis went away and came back twice within one call: wait a beat.
	retries := make([]time.Time, len(bs))
	for i := range retries {
		retries[i] = c.o.Now().Add(c.o.Heartbeat)
	}
	return Reservation{Retry: retries, Rejoin: true}
}

// Reserve takes n entries, counted at `at`, in every key's sliding log if
// each has room under its limit; otherwise it takes nothing and returns
// when to try again (see Take).
func (c *Cluster) Reserve(keys []string, limits []Limit, n int, at time.Time) (*Ticket, time.Time, bool) {
	bs := make([]Budget, len(keys))
	for i, k := range keys {
		bs[i] = Budget{Key: k, Limit: limits[i], N: n, At: at}
	}
	r := c.Take(bs, "")
	var retry time.Time
	for _, at := range r.Retry {
		if at.After(retry) {
			retry = at
		}
	}
	return r.Ticket, retry, r.OK
}

// Settle records the outcome of a reservation: its first keep entries in
// every key count at `at` (when the upstream took them), the rest are
// given back. Settle(t, at, 0) cancels it.
func (c *Cluster) Settle(t *Ticket, at time.Time, keep int) {
	if t == nil {
		return
	}
	keeps := make([]int, len(t.keys))
	for i := range keeps {
		keeps[i] = keep
	}
	c.settle(t, at, keeps)
}

// SettleEach is Settle with one keep for each budget given to Take.
func (c *Cluster) SettleEach(t *Ticket, at time.Time, keeps []int) {
	if t == nil {
		return
	}
	ks := make([]int, len(t.keys))
	for i, j := range t.idx {
		ks[i] = keeps[j]
	}
	c.settle(t, at, ks)
}

func (c *Cluster) settle(t *Ticket, at time.Time, keeps []int) {
	if len(t.keys) == 0 {
		return
	}
	for i := range keeps {
		keeps[i] = max(0, min(keeps[i], t.ns[i]))
	}
	// Under the gate, a join sees either none or all of this: the local
	// log (or mirror) is what goes back into Redis under the same names.
	c.gate.RLock()
	c.local.settle(t.keys, t.id, at, keeps)
	if !t.shared && !t.away {
		c.gate.RUnlock()
		return
	}
	c.mu.Lock()
	away := c.fallback
	if away && c.inRedis(t) && t.givesBack(keeps) {
		// Redis may still hold the reservation as taken: the join gives
		// back what this settlement does not keep (what it keeps goes
		// back with the local log).
		c.awaySettles = append(c.awaySettles, settled{t.keys, t.id, keeps, t.ns})
	}
	c.mu.Unlock()
	c.gate.RUnlock()
	if away {
		return
	}
	keys := make([]string, len(t.keys))
	args := []any{t.id}
	for i, k := range t.keys {
		keys[i] = prefix + k
		args = append(args, t.ns[i], keeps[i], ceilMilli(at))
	}
	ctx, cancel := c.ctx()
	defer cancel()
	if err := settleScript.Run(ctx, c.rdb, keys, args...).Err(); err != nil {
		c.toFallback(err)
		if t.givesBack(keeps) {
			c.mu.Lock()
			c.awaySettles = append(c.awaySettles, settled{t.keys, t.id, keeps, t.ns})
			c.mu.Unlock()
		}
	}
}

// settled is a settlement Redis has not seen yet.
type settled struct {
	keys      []string
	id        string
	keeps, ns []int
}

// Pause tells the other relays that key (a mailbox) must wait until
// `until`: one relay's 432 makes them all wait.
func (c *Cluster) Pause(key string, until time.Time, reason string) {
	if !c.shared() {
		if c.rdb != nil {
			c.pauseAway(key, until, reason)
		}
		return
	}
	ctx, cancel := c.ctx()
	defer cancel()
	if err := pauseScript.Run(ctx, c.rdb, []string{prefix + "pause:" + key}, until.UnixMilli(), reason).Err(); err != nil {
		c.toFallback(err)
		c.pauseAway(key, until, reason)
	}
}

// pauseAway keeps a pause Redis has not seen: the others learn of it when
// this relay joins again, if it still lasts.
func (c *Cluster) pauseAway(key string, until time.Time, reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p, ok := c.awayPauses[key]; !ok || until.After(p.until) {
		c.awayPauses[key] = awayPause{until, reason}
	}
}

// Unpause lifts a shared pause: mail got through again, or a reload fixed
// the setup that caused it.
func (c *Cluster) Unpause(key string) {
	if !c.shared() {
		c.mu.Lock()
		delete(c.awayPauses, key)
		c.mu.Unlock()
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

// awayPause is a pause earned while Redis was away, shared on the return.
type awayPause struct {
	until  time.Time
	reason string
}
