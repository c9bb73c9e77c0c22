package metrics

import (
	"fmt"
	"io"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/oauthrelay/oauthrelay/internal/cluster"
)

// SetCluster shows the relay's place among the relays sharing budgets
// through Redis: its node, the mode (local, shared or fallback), the
// relays seen alive, the connection leases it holds and its round trips
// to Redis. /readyz says so while in fallback (still ready: the relay
// delivers within its share).
func (m *Metrics) SetCluster(c *cluster.Cluster) {
	m.mu.Lock()
	m.cluster = c
	m.mu.Unlock()
	m.reg.MustRegister(&clusterCollector{c: c}, m.sharedWaits)
}

// newSharedWaits counts waits for shared budgets.
func newSharedWaits() *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "oauthrelay_cluster_waits_total", Help: "Times a delivery waited for a budget the relays share, by mailbox and budget: connection (a lease of max_connections), minute (the window of max_per_minute) or rejoin (Redis is back and the relays put their counts back).",
	}, []string{"mailbox", "budget"})
}

var (
	clusterInfo = prometheus.NewDesc("oauthrelay_cluster_info",
		"1, labelled with this relay's node name and cluster mode: local (no Redis), shared, or fallback (Redis unreachable: each relay uses its share).", []string{"node", "mode"}, nil)
	clusterFallback = prometheus.NewDesc("oauthrelay_cluster_fallback",
		"1 while Redis is unreachable and this relay enforces only its share of each budget.", nil, nil)
	clusterNodes = prometheus.NewDesc("oauthrelay_cluster_nodes",
		"Relays last seen alive in Redis, this one included.", nil, nil)
	clusterLeases = prometheus.NewDesc("oauthrelay_cluster_leases",
		"Connection leases (slots of the mailboxes' max_connections) this relay holds.", nil, nil)
	clusterTrips = prometheus.NewDesc("oauthrelay_cluster_redis_round_trips_total",
		"Calls this relay made to Redis.", nil, nil)
)

type clusterCollector struct{ c *cluster.Cluster }

func (cc *clusterCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{clusterInfo, clusterFallback, clusterNodes, clusterLeases, clusterTrips} {
		ch <- d
	}
}

func (cc *clusterCollector) Collect(ch chan<- prometheus.Metric) {
	st := cc.c.Stats()
	fb := 0.0
	if st.Mode == cluster.ModeFallback {
		fb = 1
	}
	ch <- prometheus.MustNewConstMetric(clusterInfo, prometheus.GaugeValue, 1, st.Node, st.Mode)
	ch <- prometheus.MustNewConstMetric(clusterFallback, prometheus.GaugeValue, fb)
	ch <- prometheus.MustNewConstMetric(clusterNodes, prometheus.GaugeValue, float64(st.Nodes))
	ch <- prometheus.MustNewConstMetric(clusterLeases, prometheus.GaugeValue, float64(st.Leases))
	ch <- prometheus.MustNewConstMetric(clusterTrips, prometheus.CounterValue, float64(st.RoundTrips))
}

// sharedWait counts a wait for a shared budget (delivery.Hooks.SharedWait).
func (m *Metrics) sharedWait(mailbox, budget string) {
	m.sharedWaits.WithLabelValues(strings.ToLower(mailbox), budget).Inc()
}

// writeCluster adds the cluster's state to /readyz's body when Redis is
// configured.
func (m *Metrics) writeCluster(w io.Writer) {
	m.mu.Lock()
	c := m.cluster
	m.mu.Unlock()
	if c == nil {
		return
	}
	st := c.Stats()
	switch st.Mode {
	case cluster.ModeShared:
		fmt.Fprintf(w, "cluster: shared (node %s, %d relay(s) alive)\n", st.Node, st.Nodes)
	case cluster.ModeFallback:
		fmt.Fprintf(w, "cluster: fallback (node %s): Redis is unreachable; this relay keeps to its share (1/%d) of each budget until Redis answers\n", st.Node, st.Nodes)
	}
}
