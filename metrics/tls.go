package metrics

import "github.com/prometheus/client_golang/prometheus"

// newTLSSessions makes oauthrelay_tls_sessions_total, with every version
// present from the start (at 0), so that a dashboard shows "no TLS 1.0
// since ..." rather than no series.
func newTLSSessions() *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "oauthrelay_tls_sessions_total",
		Help: "SMTP sessions from applications over TLS (STARTTLS or the implicit-TLS port), by negotiated version (1.0, 1.1, 1.2, 1.3); 1.0 and 1.1 need listen.min_tls_version.",
	}, []string{"version"})
	for _, v := range []string{"1.0", "1.1", "1.2", "1.3"} {
		c.WithLabelValues(v)
	}
	return c
}
