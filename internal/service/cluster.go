package service

import (
	"strconv"
	"strings"

	"github.com/oauthrelay/oauthrelay/config"
	"github.com/oauthrelay/oauthrelay/internal/cluster"
	"github.com/oauthrelay/oauthrelay/queue"
)

// clusterNodesState is the spool state file that remembers how many
// relays were last seen alive.
const clusterNodesState = "cluster-nodes"

// startCluster connects to [cluster] redis, or counts locally without it.
// A Redis that does not answer at start is not fatal: the relay starts in
// fallback, within its share, and joins when Redis answers.
//
// The number of relays last seen alive is kept in the spool, so that a
// relay restarted while Redis is away keeps to its share of that many.
func startCluster(cfg *config.Config, o Options, spool *queue.Spool) (*cluster.Cluster, error) {
	co := o.Cluster
	if cfg.Cluster.Redis != "" {
		if b, err := spool.LoadState(clusterNodesState); err == nil {
			co.Nodes, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		}
		co.Remember = func(n int) {
			if err := spool.SaveState(clusterNodesState, []byte(strconv.Itoa(n)+"\n")); err != nil {
				o.Logger.Warn("cluster: cannot remember the number of relays alive in the spool", "error", err.Error(),
					"fix", "check the spool directory's disk; without it a relay restarted while Redis is away uses the whole budgets")
			}
		}
	}
	co.URL, co.Password, co.Node = cfg.Cluster.Redis, cfg.Cluster.RedisPassword.Reveal(), cfg.Cluster.Node
	co.Logger, co.Now = o.Logger, o.Now
	if co.MaxSend == 0 {
		co.MaxSend = cfg.Upstream.Timeout.Duration
	}
	c, err := cluster.New(co)
	if err != nil {
		return nil, err
	}
	if cfg.Cluster.Redis != "" {
		o.Logger.Info("cluster: budgets are shared through Redis", "node", c.Node(), "mode", c.Mode())
	}
	return c, nil
}

// Cluster is the relay's view of the budgets shared with other relays.
func (r *Relay) Cluster() *cluster.Cluster { return r.cluster }
