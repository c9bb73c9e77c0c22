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
// 24-hour count) get the share of what was left instead. After Redis
// comes back, each relay keeps to the same rules until every relay seen
// before has put back what it counted alone (see rejoining).
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
	// Nodes is how many relays were last seen alive, remembered from an
	// earlier run: a relay that starts while Redis is away uses its
	// share of that many, not the whole budgets.
	Nodes int
	// Remember, if set, is told the number of relays seen alive each time
	// it changes, to be kept for Nodes at the next start.
	Remember func(nodes int)
}

// Cluster is this relay's view of the shared budgets.
type Cluster struct {
	o     Options
	rdb   *redis.Client
	local *localLog

	// gate is held for writing while this relay joins (puts back what it
	// counts), and for reading by whatever changes the local log or the
	// leases in fallback: a join puts back all of it or none.
	gate sync.RWMutex
	// rejoinMu makes the long spans' check while rejoining and the
	// reservation it allows one step.
	rejoinMu sync.Mutex

	mu         sync.Mutex
	fallback   bool
	switchedAt time.Time
	// joinedAt is when this relay last joined; until every relay of
	// waitFor has beaten since, they may still count alone (see
	// rejoining).
	joinedAt time.Time
	waitFor  map[string]bool
	// peers are the other relays last seen alive.
	peers     map[string]bool
	nodes     int
	lastCount map[string]int
	// longSpans are the budgets longer than holdCap this relay has used,
	// with their spans: the heartbeat keeps their lastCount fresh.
	longSpans map[string]time.Duration
	leases    map[string]int
	leaving   map[string]int
	// remembered is the count of relays last handed to Options.Remember.
	remembered int
	// rememberMu keeps calls of Options.Remember one at a time.
	rememberMu sync.Mutex
	// yielded: until when this relay takes no new lease of a key after
	// giving one up for a relay that waits.
	yielded map[string]time.Time
	// epoch names the Redis data this relay knows: a new one means
	// Redis lost what the relays had counted.
	epoch string
	// held are the live leases, to put back into a Redis that lost them.
	held map[*Lease]bool
	// awaySettles are settlements Redis has not seen, to replay on join;
	// joins counts the joins.
	awaySettles []settled
	// awayPauses are pauses earned while Redis was away, shared on join.
	awayPauses map[string]awayPause
	joins      uint64

	roundTrips atomic.Uint64
	upkeep     atomic.Uint64
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
	c := &Cluster{o: o, local: newLocalLog(), nodes: max(o.Nodes, 1), remembered: max(o.Nodes, 1), lastCount: map[string]int{}, longSpans: map[string]time.Duration{}, leases: map[string]int{}, leaving: map[string]int{}, yielded: map[string]time.Time{}, awayPauses: map[string]awayPause{}, held: map[*Lease]bool{}, stop: make(chan struct{})}
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
	if err := c.join(); err != nil {
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
	// Upkeep counts the calls of RoundTrips that keep the relay's place
	// whatever the traffic: heartbeats, joins and lease renewals.
	Upkeep uint64
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
	return Stats{Node: c.o.Node, Mode: mode, Nodes: c.nodes, Leases: n, RoundTrips: c.roundTrips.Load(), Upkeep: c.upkeep.Load()}
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
