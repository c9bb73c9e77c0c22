package cluster

import (
	"time"
)

// takeShared reserves in Redis, reading the shared pause in the same round
// trip. While this relay rejoins (Redis answers again, and a relay seen
// before has not yet put back what it counted alone), each short span
// keeps to this relay's share and each long one to what the fallback
// allows it, so that this relay and those still away stay within every
// limit together.
func (c *Cluster) takeShared(t *Ticket, ls []Limit, es []logEntry, pauseKey string) (Reservation, error) {
	now := c.o.Now()
	ls = append([]Limit(nil), ls...)
	r := c.rejoining()
	rejoin := r.within(now, c.alive())
	var long []int
	held := make([]time.Time, len(ls))
	wait := false
	for i, l := range ls {
		switch {
		case l.Span > holdCap:
			if rejoin {
				long = append(long, i)
			}
		case r.within(now, l.Span+c.o.MaxSend):
			rejoin = true
			// Until one span (and a send) after this relay switched,
			// the others may hold more than their share of it (from
			// before): wait for them rather than take a share.
			if hold := r.since.Add(l.Span + c.o.MaxSend); now.Before(hold) {
				held[i], wait = hold, true
				if soon := now.Add(c.o.Heartbeat); soon.Before(hold) {
					held[i] = soon
				}
			}
			ls[i].Max = share(l.Max, r.nodes)
		}
	}
	if wait {
		return Reservation{Retry: held, Rejoin: true}, nil
	}
	if len(long) > 0 {
		// One at a time, from the check to the mirror that counts it.
		c.rejoinMu.Lock()
		defer c.rejoinMu.Unlock()
		if retries, ok := c.checkAlone(t, ls, es, long, now, r); !ok {
			return Reservation{Retry: retries, Rejoin: true}, nil
		}
	}
	c.mu.Lock()
	epoch := c.epoch
	c.mu.Unlock()
	keys := []string{prefix + "epoch", prefix + "pause:" + pauseKey}
	paused := "0"
	if pauseKey != "" {
		paused = "1"
	}
	args := []any{now.UnixMilli(), t.id, epoch, paused}
	for i, k := range t.keys {
		keys = append(keys, prefix+k)
		args = append(args, ls[i].Span.Milliseconds(), ls[i].Max, es[i].n, ceilMilli(es[i].at))
	}
	ctx, cancel := c.ctx()
	defer cancel()
	res, err := reserveScript.Run(ctx, c.rdb, keys, args...).Slice()
	if err != nil {
		return Reservation{}, err
	}
	retries := make([]time.Time, len(t.keys))
	switch toInt(res[0]) {
	case -1:
		// Redis lost its data: the heartbeat joins, putting back what
		// this relay counts; until then, wait.
		if err := c.heartbeat(); err != nil {
			return Reservation{}, err
		}
		for i := range retries {
			retries[i] = now.Add(c.o.Heartbeat)
		}
		return Reservation{Retry: retries, Rejoin: true}, nil
	case 2:
		reason, _ := res[2].(string)
		return Reservation{Retry: retries, PausedUntil: time.UnixMilli(toInt(res[1])), PauseReason: reason}, nil
	}
	ok := toInt(res[0]) == 0
	k := len(t.keys)
	c.mu.Lock()
	for i, key := range t.keys {
		if r := toInt(res[3+i]); r > 0 {
			retries[i] = time.UnixMilli(r)
		}
		if ls[i].Span > holdCap {
			c.longSpans[key] = ls[i].Span
		}
		// While rejoining, Redis does not hold every relay's count yet:
		// the fallback keeps to the count it saw before.
		if !rejoin {
			c.lastCount[key] = int(toInt(res[3+k+i]))
			if ok {
				c.lastCount[key] += es[i].n
			}
		}
	}
	c.mu.Unlock()
	if !ok {
		return Reservation{Retry: retries}, nil
	}
	t.shared = true
	// Mirrored here, to put back into a Redis that lost it.
	c.local.mirror(t.keys, ls, es, now)
	return Reservation{Ticket: t, OK: true, Retry: retries}, nil
}

// checkAlone checks the long spans (indexes long of t.keys) against what
// the fallback allows this relay since it switched: the part of what was
// left that is its share. On refusal, Redis is asked again when the
// rejoin ends at the latest.
func (c *Cluster) checkAlone(t *Ticket, ls []Limit, es []logEntry, long []int, now time.Time, r rejoin) ([]time.Time, bool) {
	var keys []string
	var lims []Limit
	var ents []logEntry
	var since []time.Time
	until := r.joined.Add(c.alive())
	c.mu.Lock()
	for _, i := range long {
		k := t.keys[i]
		keys, ents, since = append(keys, k), append(ents, es[i]), append(since, r.since)
		lims = append(lims, Limit{Span: ls[i].Span, Max: max(0, ls[i].Max-c.lastCount[k]) / max(r.nodes, 1)})
	}
	c.mu.Unlock()
	c.local.mu.Lock()
	rs, ok := c.local.check(keys, lims, ents, now, since)
	c.local.mu.Unlock()
	if ok {
		return nil, true
	}
	retries := make([]time.Time, len(t.keys))
	for j, i := range long {
		if !rs[j].IsZero() {
			retries[i] = rs[j]
			if rs[j].After(until) {
				retries[i] = until
			}
		}
	}
	return retries, false
}

// takeAlone reserves in this relay's own log: without Redis configured,
// the whole limits; in fallback, this relay's share of each, after
// holding each short span once (the others may have used all of it just
// before Redis went away). joined: Redis answered again meanwhile, and
// the caller should ask it instead.
func (c *Cluster) takeAlone(t *Ticket, ls []Limit, es []logEntry) (retries []time.Time, ok, joined bool) {
	now := c.o.Now()
	ls = append([]Limit(nil), ls...)
	since := make([]time.Time, len(ls))
	if c.rdb != nil {
		// A join puts back what the local log holds: none of it may
		// change halfway.
		c.gate.RLock()
		defer c.gate.RUnlock()
		c.mu.Lock()
		if !c.fallback {
			c.mu.Unlock()
			return nil, false, true
		}
		switched, nodes, joins := c.switchedAt, c.nodes, c.joins
		held := false
		retries = make([]time.Time, len(ls))
		for i, l := range ls {
			if l.Span <= holdCap {
				if hold := switched.Add(l.Span + c.o.MaxSend); now.Before(hold) {
					retries[i], held = hold, true
					continue
				}
				ls[i].Max = share(l.Max, nodes)
			} else {
				ls[i].Max = max(0, l.Max-c.lastCount[t.keys[i]]) / max(nodes, 1)
				since[i] = switched
			}
		}
		c.mu.Unlock()
		if held {
			return retries, false, false
		}
		t.away, t.joins = true, joins
	}
	retries, ok = c.local.reserve(t.keys, ls, es, now, since)
	for i := range retries {
		// A share of a day used up says little of the day itself: ask
		// again within a minute, as Redis may be back with more.
		if !since[i].IsZero() && retries[i].After(now.Add(longRecheck)) {
			retries[i] = now.Add(longRecheck)
		}
	}
	return retries, ok, false
}

// longRecheck is the longest a relay in fallback waits before asking again
// for a long budget whose share it has used up.
const longRecheck = time.Minute

// toInt reads an integer from a script's answer.
func toInt(v any) int64 {
	n, _ := v.(int64)
	return n
}
