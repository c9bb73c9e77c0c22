package service

import (
	"github.com/oauthrelay/oauthrelay/config"
	"github.com/oauthrelay/oauthrelay/internal/cluster"
)

// startCluster connects to [cluster] redis, or counts locally without it.
// A Redis that does not answer at start is not fatal: the relay starts in
// fallback, within its share, and joins when Redis answers.
func startCluster(cfg *config.Config, o Options) (*cluster.Cluster, error) {
	co := o.Cluster
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
