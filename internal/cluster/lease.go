package cluster

import (
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// Lease is one of a mailbox's connection slots, held while a connection
// is open. A live relay renews it; a dead relay's lapse after the TTL.
type Lease struct {
	c      *Cluster
	key    string
	member string
	limit  int
	// leaving: Keep said no; counted in Cluster.leaving until released.
	leaving bool
	mu      sync.Mutex
	lost    bool
	done    chan struct{}
	once    sync.Once
	// others is how many other relays waited for a slot of key at the
	// last take or renewal; since is when the lease was taken.
	others atomic.Int32
	since  time.Time
}

// wantTTL is how long a relay refused a lease counts as waiting for
// one: it asks again every quarter second while it has mail.
const wantTTL = time.Second

// leaseTurn is how long a connection keeps a slot that other relays
// wait for when there are fewer slots than relays wanting one (a
// one-connection mailbox): then each gets a turn.
const leaseTurn = 30 * time.Second

// Lease takes one of key's max slots, or returns false when all are
// held (by this relay or, with Redis, by any). In fallback, and while
// rejoining, a relay holds at most its share; in fallback it takes none
// until the others can have noticed that Redis is away and closed what
// they held beyond their own share (see fallbackHold).
func (c *Cluster) Lease(key string, limit int) (*Lease, bool) {
	l := &Lease{c: c, key: key, member: c.o.Node + ":" + newID(), limit: limit, done: make(chan struct{})}
	for range 2 {
		if c.shared() {
			ok, err := l.takeShared()
			if err == nil {
				if ok {
					go l.renew()
				}
				return l, ok
			}
			c.toFallback(err)
		}
		if ok, joined := l.takeAlone(); !joined {
			if !ok {
				return nil, false
			}
			return l, true
		}
	}
	return nil, false
}

// takeShared takes the lease in Redis; while rejoining, only within this
// relay's share, counted here before asking so that two callers cannot
// both pass.
func (l *Lease) takeShared() (bool, error) {
	c := l.c
	r := c.rejoining()
	now := c.o.Now()
	c.mu.Lock()
	if r.within(now, c.alive()) && (now.Before(r.since.Add(c.fallbackHold())) || c.leases[l.key] >= share(l.limit, r.nodes)) {
		// Relays still away may hold their share, or (within the hold)
		// more, without Redis knowing.
		c.mu.Unlock()
		return false, nil
	}
	if now.Before(c.yielded[l.key]) {
		// This relay just gave a slot up for a relay that waits: let
		// that one take it.
		c.mu.Unlock()
		return false, nil
	}
	c.leases[l.key]++
	c.mu.Unlock()
	l.since = now
	ok, err := l.take()
	c.mu.Lock()
	if err != nil || !ok {
		c.drop(l)
	} else {
		// Held from here: a join puts it back. Not before, as a join
		// puts back held leases whatever the count.
		c.held[l] = true
	}
	c.mu.Unlock()
	return ok, err
}

// takeAlone takes the lease on this relay's own count: the whole limit
// without Redis, its share in fallback. joined: Redis answered again
// meanwhile, and the caller should ask it instead.
func (l *Lease) takeAlone() (ok, joined bool) {
	c := l.c
	limit := l.limit
	if c.rdb != nil {
		c.gate.RLock()
		defer c.gate.RUnlock()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.rdb != nil {
		if !c.fallback {
			return false, true
		}
		if c.o.Now().Before(c.switchedAt.Add(c.fallbackHold())) {
			return false, false
		}
		limit = share(limit, c.nodes)
	}
	if c.leases[l.key] >= limit {
		return false, false
	}
	c.leases[l.key]++
	if c.rdb != nil {
		c.held[l] = true
		go l.renew()
	}
	return true, false
}

// fallbackHold is how long after its switch to fallback a relay takes no
// new lease: another relay may notice that Redis is away up to a
// heartbeat (and a timeout) later, and a connection it holds beyond its
// share closes only once its send in flight ends.
func (c *Cluster) fallbackHold() time.Duration {
	return c.o.Heartbeat + c.o.Timeout + c.o.MaxSend
}

// drop forgets l. Callers hold c.mu.
func (c *Cluster) drop(l *Lease) {
	c.leases[l.key]--
	if l.leaving {
		c.leaving[l.key]--
	}
	delete(c.held, l)
	if c.leases[l.key] <= 0 {
		delete(c.leases, l.key)
	}
}

// take takes or renews the lease in Redis. A Redis that lost its data
// (a new epoch) is joined first, which puts this relay's held leases
// back; the lease is then asked for again at the next call.
func (l *Lease) take() (bool, error) {
	c := l.c
	c.mu.Lock()
	epoch := c.epoch
	c.mu.Unlock()
	ctx, cancel := c.ctx()
	defer cancel()
	res, err := leaseScript.Run(ctx, c.rdb, []string{prefix + "lease:" + l.key, prefix + "epoch", prefix + "want:" + l.key},
		c.o.Now().UnixMilli(), c.o.LeaseTTL.Milliseconds(), l.limit, l.member, epoch, c.o.Node, wantTTL.Milliseconds()).Int64Slice()
	if err != nil {
		return false, err
	}
	n := res[0]
	if len(res) > 1 {
		l.others.Store(int32(res[1]))
	}
	if n == -1 {
		// The join puts back the leases this relay holds (this one, if
		// it is a renewal).
		if err := c.heartbeat(); err != nil {
			return false, err
		}
		c.mu.Lock()
		held := c.held[l]
		c.mu.Unlock()
		return held, nil
	}
	return n == 1, nil
}

// renew keeps the lease alive in Redis until it is released. A lease
// that could not be renewed in time (Redis away, or it lapsed and the
// slot was taken) is lost: its connection closes after its message.
func (l *Lease) renew() {
	t := time.NewTicker(l.c.o.LeaseTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-l.done:
			return
		case <-l.c.stop:
			return
		case <-t.C:
		}
		if !l.c.shared() {
			continue
		}
		l.c.upkeep.Add(1)
		ok, err := l.take()
		if err != nil {
			l.c.toFallback(err)
			continue
		}
		if !ok {
			l.mu.Lock()
			l.lost = true
			l.mu.Unlock()
		}
	}
}

// Keep reports whether the connection may carry on: false when the lease
// was lost; in fallback or while rejoining, when this relay holds more
// than its share; and when other relays wait for a slot and this one
// holds more than its fair part (or, with fewer slots than relays
// wanting, has had its turn). The caller then closes the connection and
// releases the lease, in that order, so that the slot is never free while
// the connection still counts.
func (l *Lease) Keep() bool {
	l.mu.Lock()
	lost := l.lost
	l.mu.Unlock()
	if lost {
		return false
	}
	c := l.c
	r := c.rejoining()
	c.mu.Lock()
	defer c.mu.Unlock()
	away := c.fallback || r.within(c.o.Now(), c.alive())
	if c.rdb != nil && away && c.leases[l.key]-c.leaving[l.key] > share(l.limit, c.nodes) {
		// Counted as leaving at once, so that only the excess closes.
		c.leaving[l.key]++
		l.leaving = true
		return false
	}
	if others := int(l.others.Load()); c.rdb != nil && !away && others > 0 {
		fair := int(math.Ceil(float64(l.limit) / float64(others+1)))
		mine := c.leases[l.key] - c.leaving[l.key]
		turn := l.limit < others+1 && mine >= fair && c.o.Now().Sub(l.since) > leaseTurn
		if mine > fair || turn {
			c.leaving[l.key]++
			l.leaving = true
			// Not straight back: the waiting relay asks within a
			// quarter second.
			c.yielded[l.key] = c.o.Now().Add(wantTTL)
			return false
		}
	}
	return true
}

// Release gives the slot back.
func (l *Lease) Release() {
	l.once.Do(func() {
		close(l.done)
		c := l.c
		// Under the gate, a join either still lists the lease (and is
		// over before the check below, which then finds Redis shared)
		// or no longer does: a join never puts back a released lease.
		c.gate.RLock()
		c.mu.Lock()
		c.drop(l)
		c.mu.Unlock()
		shared := c.shared()
		c.gate.RUnlock()
		select {
		case <-c.stop:
			return
		default:
		}
		if shared {
			ctx, cancel := c.ctx()
			defer cancel()
			c.rdb.ZRem(ctx, prefix+"lease:"+l.key, l.member)
		}
	})
}
