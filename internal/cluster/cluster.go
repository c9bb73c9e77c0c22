// Package cluster shares budgets between relays through Redis (or Valkey):
// each mailbox's connections as leases, its messages per minute and
// recipients per day as sliding logs, pauses after throttling, and each
// client's acceptance limits. Every check-and-take is one atomic Lua
// script, never a read followed by a write.
//
// When Redis cannot be reached in time, each relay falls back to its
// share of every limit (the limit divided by the relays last seen alive)
// and returns to the shared budgets on its own when Redis answers again.
// Without [cluster] redis, the same calls count locally.
package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Modes, as /readyz, metrics and doctor show them.
const (
	ModeLocal    = "local"
	ModeShared   = "shared"
	ModeFallback = "fallback"
)

// prefix starts every key the relays write.
const prefix = "oauthrelay:"

// holdCap: spans up to this long are held for one span (and MaxSend, for
// sends in flight at the switch) after a switch to fallback, since
// other relays may have used the whole span already; longer ones (the
// 24-hour count) get the share of what was left instead. For as long
// after Redis comes back, each relay also keeps to its share there, until
// every relay has put back what it counted alone.
const holdCap = 10 * time.Minute

// Options configure a Cluster.
type Options struct {
	// URL is "redis://host:port/db" or "rediss://…"; empty counts locally.
	URL string
	// Password is Redis's AUTH password, if not in the URL.
	Password string
	// Node names this relay.
	Node   string
	Logger *slog.Logger
	Now    func() time.Time
	// Timeout bounds each Redis call (default 300 ms): a slow Redis is
	// treated as an unreachable one.
	Timeout time.Duration
	// LeaseTTL is how long a connection lease outlives its last renewal
	// (default 5 s): a dead relay's slots come free within it.
	LeaseTTL time.Duration
	// Heartbeat is how often the relay says it is alive and, in
	// fallback, tries Redis again (default 1 s).
	Heartbeat time.Duration
	// MaxSend is the longest a send may be in flight ([upstream]
	// timeout): one in flight when Redis went away may reach Microsoft
	// that much later, so the fallback's hold covers it (default
	// LeaseTTL).
	MaxSend time.Duration
}

// Cluster is this relay's view of the shared budgets.
type Cluster struct {
	o     Options
	rdb   *redis.Client
	local *localLog

	mu         sync.Mutex
	fallback   bool
	switchedAt time.Time
	// recoveredAt is when Redis last came back: for a while after, the
	// other relays may not have put back what they counted alone, so
	// each keeps to its share a little longer (see rejoining).
	recoveredAt time.Time
	nodes       int
	lastCount   map[string]int
	leases      map[string]int
	leaving     map[string]int
	// epoch names the Redis data this relay knows: a new one means
	// Redis lost what the relays had counted.
	epoch string
	// held are the live leases, to put back into a Redis that lost them.
	held map[*Lease]bool

	roundTrips atomic.Uint64
	stop       chan struct{}
	stopOnce   sync.Once
	stopped    sync.WaitGroup
}

// New connects to Redis (when o.URL is set) and starts the heartbeat. A
// Redis that does not answer now is not an error: the relay starts in
// fallback and joins the shared budgets when it answers.
func New(o Options) (*Cluster, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Timeout == 0 {
		o.Timeout = 300 * time.Millisecond
	}
	if o.LeaseTTL == 0 {
		o.LeaseTTL = 5 * time.Second
	}
	if o.Heartbeat == 0 {
		o.Heartbeat = time.Second
	}
	o.MaxSend = max(o.MaxSend, o.LeaseTTL)
	c := &Cluster{o: o, local: newLocalLog(), nodes: 1, lastCount: map[string]int{}, leases: map[string]int{}, leaving: map[string]int{}, held: map[*Lease]bool{}, stop: make(chan struct{})}
	if o.URL == "" {
		return c, nil
	}
	opt, err := redis.ParseURL(o.URL)
	if err != nil {
		// The URL may hold a password: name the problem, not the URL.
		return nil, fmt.Errorf("cluster.redis is not a Redis URL (redis://host:6379/0 or rediss://…)")
	}
	if o.Password != "" {
		opt.Password = o.Password
	}
	opt.DialTimeout, opt.ReadTimeout, opt.WriteTimeout = o.Timeout, o.Timeout, o.Timeout
	opt.MaxRetries = -1 // fail fast: the fallback is the retry
	opt.DialerRetries = 1
	quietOnce.Do(func() { redis.SetLogger(quiet{}) })
	opt.ContextTimeoutEnabled = true
	c.rdb = redis.NewClient(opt)
	if err := c.heartbeat(); err != nil {
		c.toFallback(err)
	}
	c.stopped.Add(1)
	go c.beat()
	return c, nil
}

// Close stops the heartbeat and the leases' renewals and closes the
// connections to Redis. Leases not released lapse after their TTL, as a
// dead relay's do.
func (c *Cluster) Close() {
	if c.rdb == nil {
		return
	}
	c.stopOnce.Do(func() {
		close(c.stop)
		c.stopped.Wait()
		c.rdb.Close()
	})
}

// Node is this relay's name.
func (c *Cluster) Node() string { return c.o.Node }

// Mode is "local" (no Redis), "shared" or "fallback".
func (c *Cluster) Mode() string {
	if c.rdb == nil {
		return ModeLocal
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fallback {
		return ModeFallback
	}
	return ModeShared
}

// Stats is what metrics and doctor show.
type Stats struct {
	Node, Mode string
	// Nodes are the relays last seen alive, this one included.
	Nodes int
	// Leases are the connection leases this relay holds.
	Leases int
	// RoundTrips counts calls to Redis.
	RoundTrips uint64
}

// Stats reports the cluster's state.
func (c *Cluster) Stats() Stats {
	mode := c.Mode()
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, v := range c.leases {
		n += v
	}
	return Stats{Node: c.o.Node, Mode: mode, Nodes: c.nodes, Leases: n, RoundTrips: c.roundTrips.Load()}
}

func (c *Cluster) ctx() (context.Context, context.CancelFunc) {
	c.roundTrips.Add(1)
	return context.WithTimeout(context.Background(), c.o.Timeout)
}

func (c *Cluster) shared() bool {
	if c.rdb == nil {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.fallback
}

// toFallback switches to each relay's share, logging it once.
func (c *Cluster) toFallback(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fallback {
		return
	}
	c.fallback, c.switchedAt = true, c.o.Now()
	c.o.Logger.Warn("cluster: Redis is unreachable or slow; budgets fallback to this relay's share until it answers again",
		"node", c.o.Node, "mode", ModeFallback, "nodes", c.nodes, "error", c.redactErr(err),
		"fix", "check that Redis runs and this relay reaches it (`oauthrelay doctor` tests [cluster] redis); meanwhile mail flows within this relay's share")
}

// redactErr keeps an error's text but never a password: go-redis does not
// put one in its errors, and this is where we make sure.
func (c *Cluster) redactErr(err error) string {
	if err == nil {
		return ""
	}
	msg := err.Error()
	if c.rdb != nil && c.rdb.Options().Password != "" {
		msg = strings.ReplaceAll(msg, c.rdb.Options().Password, "***")
	}
	return msg
}

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
		if err := c.heartbeat(); err != nil {
			c.toFallback(err)
			continue
		}
		c.mu.Lock()
		back := c.fallback
		c.mu.Unlock()
		if back {
			c.recover()
		}
	}
}

// heartbeat says this relay is alive and learns how many are.
func (c *Cluster) heartbeat() error {
	ctx, cancel := c.ctx()
	defer cancel()
	alive := 3*c.o.LeaseTTL + 3*c.o.Heartbeat
	res, err := heartbeatScript.Run(ctx, c.rdb, []string{prefix + "nodes", prefix + "epoch"}, c.o.Now().UnixMilli(), c.o.Node, alive.Milliseconds(), newID()).Slice()
	if err != nil {
		return err
	}
	n64, _ := res[0].(int64)
	epoch, _ := res[1].(string)
	n := int(n64)
	c.mu.Lock()
	lost := c.epoch != "" && epoch != c.epoch && !c.fallback
	// A Redis that restarted empty, or one this relay is coming back to,
	// knows only the relays that have beaten since: until the others
	// have, keep counting the ones seen before (the share must not grow
	// while they still count on theirs).
	keep := c.fallback || (c.epoch != "" && epoch != c.epoch)
	c.epoch = epoch
	c.mu.Unlock()
	if lost {
		// Redis came back empty before this relay noticed it was away:
		// what it counts must go back in, as after a fallback.
		c.o.Logger.Warn("cluster: Redis lost the shared counts (restarted?); putting back this relay's", "node", c.o.Node)
		c.recover()
	}
	c.mu.Lock()
	if keep || c.o.Now().Before(c.recoveredAt.Add(alive)) {
		n = max(n, c.nodes)
	}
	c.nodes = max(n, 1)
	c.mu.Unlock()
	return nil
}

// rejoining reports whether Redis came back less than d ago, with the
// relays last seen alive.
func (c *Cluster) rejoining(d time.Duration) (bool, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.recoveredAt.IsZero() && c.o.Now().Before(c.recoveredAt.Add(d)), c.nodes
}

// recover returns to the shared budgets: what this relay counts (its own
// mirror of what it reserved while shared, and what it counted alone while
// Redis was away) goes into Redis first, so that the others see it. The
// entries keep their names, so what Redis still has is not doubled.
func (c *Cluster) recover() {
	c.local.mu.Lock()
	type add struct {
		key string
		e   logEntry
	}
	var adds []add
	for k, es := range c.local.keys {
		for _, e := range es {
			adds = append(adds, add{k, e})
		}
	}
	c.local.mu.Unlock()
	c.mu.Lock()
	var held []*Lease
	for l := range c.held {
		held = append(held, l)
	}
	c.mu.Unlock()
	ctx, cancel := c.ctx()
	defer cancel()
	now := c.o.Now()
	_, err := c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		// The connections this relay holds are real: they go in first,
		// so that no other relay takes their slots before they renew.
		for _, l := range held {
			p.ZAdd(ctx, prefix+"lease:"+l.key, redis.Z{Score: float64(now.Add(c.o.LeaseTTL).UnixMilli()), Member: l.member})
			p.PExpire(ctx, prefix+"lease:"+l.key, 2*c.o.LeaseTTL)
		}
		for _, a := range adds {
			for j := 1; j <= a.e.n; j++ {
				p.ZAdd(ctx, prefix+a.key, redis.Z{Score: float64(ceilMilli(a.e.at)), Member: fmt.Sprintf("%s:%d", a.e.id, j)})
			}
			p.PExpire(ctx, prefix+a.key, 25*time.Hour)
		}
		return nil
	})
	if err != nil {
		return
	}
	c.mu.Lock()
	c.fallback = false
	c.recoveredAt = c.o.Now()
	c.o.Logger.Info("cluster: Redis answers again; budgets are shared again", "node", c.o.Node, "mode", ModeShared, "nodes", c.nodes)
	c.mu.Unlock()
}

// share is this relay's part of limit in fallback: the limit divided by
// the relays last seen alive, rounded down, at least 1 where the limit
// allows any.
func share(limit, nodes int) int {
	if limit <= 0 {
		return 0
	}
	return max(1, limit/max(nodes, 1))
}

func newID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

var quietOnce sync.Once

// quiet drops go-redis's own log lines ("failed to dial after 5
// attempts", once a second while Redis is away): the relay logs the
// switch to fallback and back once each.
type quiet struct{}

func (quiet) Printf(context.Context, string, ...any) {}
