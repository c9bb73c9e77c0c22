package cluster

import (
	"sync"
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
}

// Lease takes one of key's max slots, or returns false when all are
// held (by this relay or, with Redis, by any). In fallback a relay holds
// at most its share, and takes none until the others' leases have lapsed.
func (c *Cluster) Lease(key string, limit int) (*Lease, bool) {
	l := &Lease{c: c, key: key, member: c.o.Node + ":" + newID(), limit: limit, done: make(chan struct{})}
	if c.shared() {
		ok, err := l.take(l.limit)
		if err == nil {
			if !ok {
				return nil, false
			}
			c.mu.Lock()
			c.leases[key]++
			c.held[l] = true
			c.mu.Unlock()
			go l.renew()
			return l, true
		}
		c.toFallback(err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.rdb != nil {
		if c.o.Now().Before(c.switchedAt.Add(c.o.LeaseTTL + c.o.Timeout)) {
			return nil, false
		}
		limit = share(limit, c.nodes)
	}
	if c.leases[key] >= limit {
		return nil, false
	}
	c.leases[key]++
	if c.rdb != nil {
		c.held[l] = true
		go l.renew()
	}
	return l, true
}

func (l *Lease) take(limit int) (bool, error) {
	c := l.c
	ctx, cancel := c.ctx()
	defer cancel()
	n, err := leaseScript.Run(ctx, c.rdb, []string{prefix + "lease:" + l.key}, c.o.Now().UnixMilli(), c.o.LeaseTTL.Milliseconds(), limit, l.member).Int()
	return n == 1, err
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
		ok, err := l.take(l.limit)
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
// was lost or, in fallback, when this relay holds more than its share. The
// caller then closes the connection and releases the lease, in that order,
// so that the slot is never free while the connection still counts.
func (l *Lease) Keep() bool {
	l.mu.Lock()
	lost := l.lost
	l.mu.Unlock()
	if lost {
		return false
	}
	c := l.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.rdb != nil && c.fallback && c.leases[l.key]-c.leaving[l.key] > share(l.limit, c.nodes) {
		// Counted as leaving at once, so that only the excess closes.
		c.leaving[l.key]++
		l.leaving = true
		return false
	}
	return true
}

// Release gives the slot back.
func (l *Lease) Release() {
	l.once.Do(func() {
		close(l.done)
		c := l.c
		c.mu.Lock()
		c.leases[l.key]--
		if l.leaving {
			c.leaving[l.key]--
		}
		delete(c.held, l)
		if c.leases[l.key] <= 0 {
			delete(c.leases, l.key)
		}
		c.mu.Unlock()
		select {
		case <-c.stop:
			return
		default:
		}
		if c.shared() {
			ctx, cancel := c.ctx()
			defer cancel()
			c.rdb.ZRem(ctx, prefix+"lease:"+l.key, l.member)
		}
	})
}
