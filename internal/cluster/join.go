package cluster

import (
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// A relay's heartbeat in Redis is also its word that what it counts is
// there: a relay beats only while shared, against the Redis data (epoch)
// it knows. Coming back from fallback, or finding Redis restarted empty,
// it joins: in one MULTI it puts back its leases and its sliding logs
// (what it counted alone, and its mirror of what it reserved before) and
// beats. Until every relay it saw alive before has beaten since it
// joined, the others may still count alone, and it keeps to the fallback's
// rules (rejoining).

func (c *Cluster) beat() {
	defer c.stopped.Done()
	t := time.NewTicker(c.o.Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
		}
		c.mu.Lock()
		away := c.fallback
		c.mu.Unlock()
		var err error
		c.upkeep.Add(1)
		if away {
			err = c.join()
		} else {
			err = c.heartbeat()
		}
		if err != nil {
			c.toFallback(err)
		}
	}
}

// alive is how long after its last heartbeat a relay counts as alive.
func (c *Cluster) alive() time.Duration { return 3*c.o.LeaseTTL + 3*c.o.Heartbeat }

// heartbeat says this relay is alive and learns which are; it joins
// instead when Redis's data is not the data this relay knows.
func (c *Cluster) heartbeat() error {
	c.mu.Lock()
	epoch := c.epoch
	keys := []string{prefix + "nodes", prefix + "epoch"}
	var long []string
	args := []any{0, c.o.Node, c.alive().Milliseconds(), epoch}
	for k, span := range c.longSpans {
		long, keys, args = append(long, k), append(keys, prefix+k), append(args, span.Milliseconds())
	}
	c.mu.Unlock()
	ctx, cancel := c.ctx()
	defer cancel()
	now := c.o.Now()
	args[0] = now.UnixMilli()
	res, err := heartbeatScript.Run(ctx, c.rdb, keys, args...).Slice()
	if err != nil {
		return err
	}
	if toInt(res[0]) != 1 {
		return c.joinStale(epoch)
	}
	// Each long budget's count as of now, for the fallback to divide
	// what is left: not as of this relay's last reservation, which may
	// be hours old. Not while rejoining: Redis lacks the others' yet.
	if !c.rejoining().waiting {
		c.mu.Lock()
		for i, k := range long {
			c.lastCount[k] = int(toInt(res[2+i]))
		}
		c.mu.Unlock()
	}
	c.learn(res[2+len(long):], now)
	return nil
}

// joinStale joins because Redis's data was not epoch, unless another call
// has joined since it was: many calls find a restarted Redis at once, and
// one join puts everything back for them all.
func (c *Cluster) joinStale(epoch string) error {
	c.gate.Lock()
	defer c.gate.Unlock()
	c.mu.Lock()
	done := !c.fallback && c.epoch != epoch
	c.mu.Unlock()
	if done {
		return nil
	}
	return c.joinLocked()
}

// join puts back what this relay counts and beats, in one transaction,
// then shares again.
func (c *Cluster) join() error {
	c.gate.Lock()
	defer c.gate.Unlock()
	return c.joinLocked()
}

// joinLocked is join. Callers hold c.gate for writing.
func (c *Cluster) joinLocked() error {
	entries := c.local.snapshot()
	c.mu.Lock()
	var held []*Lease
	for l := range c.held {
		held = append(held, l)
	}
	replays := c.awaySettles
	pauses := c.awayPauses
	c.awayPauses = map[string]awayPause{}
	c.mu.Unlock()
	ctx, cancel := c.ctx()
	defer cancel()
	now := c.o.Now()
	var answer *redis.Cmd
	_, err := c.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		// The connections this relay holds are real: they go back
		// whatever the count, so that no other relay takes their slots.
		for _, l := range held {
			p.ZAdd(ctx, prefix+"lease:"+l.key, redis.Z{Score: float64(now.Add(c.o.LeaseTTL).UnixMilli()), Member: l.member})
			p.PExpire(ctx, prefix+"lease:"+l.key, 2*c.o.LeaseTTL)
		}
		// One command per key: a day of recipients is many members.
		for k, es := range entries {
			var zs []redis.Z
			for _, e := range es {
				for j := 1; j <= e.n; j++ {
					zs = append(zs, redis.Z{Score: float64(ceilMilli(e.at)), Member: fmt.Sprintf("%s:%d", e.id, j)})
				}
			}
			if len(zs) == 0 {
				// A cancelled send can leave a key without entries:
				// a ZADD of none would fail the whole transaction.
				continue
			}
			p.ZAdd(ctx, prefix+k, zs...)
			p.PExpire(ctx, prefix+k, 25*time.Hour)
		}
		// What settlements made while away gave back, Redis may still
		// hold as taken.
		for _, s := range replays {
			for i, k := range s.keys {
				for j := s.keeps[i] + 1; j <= s.ns[i]; j++ {
					p.ZRem(ctx, prefix+k, fmt.Sprintf("%s:%d", s.id, j))
				}
			}
		}
		// A pause earned meanwhile (a 432, a refused setup) makes the
		// others wait too, as it would have with Redis there.
		for k, pz := range pauses {
			if pz.until.After(now) {
				pauseScript.Eval(ctx, p, []string{prefix + "pause:" + k}, pz.until.UnixMilli(), pz.reason)
			}
		}
		answer = joinScript.Eval(ctx, p, []string{prefix + "nodes", prefix + "epoch"}, now.UnixMilli(), c.o.Node, c.alive().Milliseconds(), newID())
		return nil
	})
	if err != nil {
		for k, pz := range pauses {
			c.pauseAway(k, pz.until, pz.reason)
		}
		return err
	}
	res, err := answer.Slice()
	if err != nil {
		return err
	}
	epoch, _ := res[1].(string)
	c.mu.Lock()
	was, first := c.fallback, c.epoch == ""
	if !was && !first {
		// Redis came back empty before this relay noticed it was away:
		// for the long spans, as after a fallback, it counts its share
		// of what was left from now on.
		c.switchedAt = now
	}
	c.epoch, c.fallback, c.awaySettles = epoch, false, c.awaySettles[len(replays):]
	c.joins++
	c.joinedAt = now
	c.waitFor = map[string]bool{}
	for p := range c.peers {
		c.waitFor[p] = true
	}
	c.mu.Unlock()
	c.learn(res[2:], now)
	switch {
	case was:
		c.o.Logger.Info("cluster: Redis answers again; budgets are shared again", "node", c.o.Node, "mode", ModeShared, "nodes", c.Stats().Nodes)
	case !first:
		c.o.Logger.Warn("cluster: Redis lost the shared counts (restarted?); this relay put its own back", "node", c.o.Node)
	}
	return nil
}

// learn reads the relays alive from a heartbeat's answer (name, last beat
// in ms, …). A relay this one waits for stops being waited for when it
// has beaten since this relay joined (so has put back what it counted
// alone), or when it is presumed dead: not seen for long enough that
// nothing it counted alone can still count (see rejoining).
func (c *Cluster) learn(alive []any, now time.Time) {
	seen := map[string]int64{}
	for i := 0; i+1 < len(alive); i += 2 {
		name, _ := alive[i].(string)
		var ms int64
		if s, ok := alive[i+1].(string); ok {
			fmt.Sscan(s, &ms)
		}
		seen[name] = ms
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for p := range c.waitFor {
		if ms, ok := seen[p]; ok && ms >= c.joinedAt.UnixMilli() {
			delete(c.waitFor, p)
		}
	}
	if len(c.waitFor) > 0 && now.Before(c.joinedAt.Add(c.rejoinMax())) {
		// The relays seen before still count for the shares.
		c.nodes = max(len(seen), c.nodes, 1)
		return
	}
	c.waitFor = nil
	c.peers = map[string]bool{}
	for p := range seen {
		if p != c.o.Node {
			c.peers[p] = true
		}
	}
	c.nodes = max(len(seen), 1)
	if c.o.Remember != nil && c.nodes != c.remembered {
		c.remembered = c.nodes
		go c.remember()
	}
}

// remember hands the latest count of relays alive to Options.Remember,
// off c.mu (it writes a file) and one call at a time: calls started in
// one order could otherwise end in another and leave a stale count.
func (c *Cluster) remember() {
	c.rememberMu.Lock()
	defer c.rememberMu.Unlock()
	c.mu.Lock()
	n := c.remembered
	c.mu.Unlock()
	c.o.Remember(n)
}

// rejoinMax is the longest a relay waits for the others to rejoin: past
// it, one that has not is presumed dead, and what it counted alone no
// longer counts in any span the relay holds.
func (c *Cluster) rejoinMax() time.Duration { return max(c.alive(), holdCap+c.o.MaxSend) }

// rejoin is what the rules while rejoining need.
type rejoin struct {
	// waiting: some relay seen before may still count alone.
	waiting bool
	// nodes are the relays seen alive before Redis came back.
	nodes int
	// since is when this relay switched to fallback, or joined a Redis
	// that had lost its data: what the others counted alone, or before,
	// can count until one span (and a send) after it.
	since, joined time.Time
}

// rejoining reports whether relays seen before may still count alone.
func (c *Cluster) rejoining() rejoin {
	c.mu.Lock()
	defer c.mu.Unlock()
	return rejoin{waiting: len(c.waitFor) > 0, nodes: c.nodes, since: c.switchedAt, joined: c.joinedAt}
}

// within reports whether the rejoin still matters to something that
// counts for d: past joined+d, the relays that did not rejoin are presumed
// dead for it.
func (r rejoin) within(now time.Time, d time.Duration) bool {
	return r.waiting && now.Before(r.joined.Add(d))
}

// Rejoining reports whether Redis answers again but some relay seen before
// may not have put back what it counted alone: this relay then keeps to
// its share, as in fallback.
func (c *Cluster) Rejoining() bool {
	r := c.rejoining()
	return r.within(c.o.Now(), max(c.alive(), time.Minute+c.o.MaxSend))
}
