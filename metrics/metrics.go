// Package metrics serves oauthrelay's Prometheus metrics and its health
// endpoints on [metrics] address:
//
//	/metrics  Prometheus text format, every name prefixed oauthrelay_
//	/healthz  200 "ok" while the process runs
//	/readyz   200 when the spool is writable and no mailbox or app is
//	          stopped by a configuration fault; otherwise 503 with a body
//	          naming the mailbox (or app), the error and the fix
//
// Queue gauges are computed from the spool at every scrape, so they are the
// truth rather than counters that drift; token lifetimes and mailbox pauses
// are read from the running token sources and scheduler. Events (accepted,
// refused, attempts, token requests, throttling) are counters fed by the
// hooks of the relay, delivery and oauth packages.
package metrics

import (
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/oauthrelay/oauthrelay/config"
	"github.com/oauthrelay/oauthrelay/delivery"
	"github.com/oauthrelay/oauthrelay/internal/cluster"
	"github.com/oauthrelay/oauthrelay/oauth"
	"github.com/oauthrelay/oauthrelay/queue"
	"github.com/oauthrelay/oauthrelay/relay"
	"github.com/oauthrelay/oauthrelay/tokens"
	"github.com/oauthrelay/oauthrelay/transport"
)

// Metrics is the registry of one running relay.
type Metrics struct {
	reg   *prometheus.Registry
	spool *queue.Spool
	now   func() time.Time

	accepted  *prometheus.CounterVec
	refused   *prometheus.CounterVec
	attempts  *prometheus.CounterVec
	tokenReqs *prometheus.CounterVec
	throttled *prometheus.CounterVec
	conns     *prometheus.GaugeVec
	lockouts  prometheus.Counter
	// tlsSessions counts sessions by TLS version (tls.go).
	tlsSessions *prometheus.CounterVec
	// sharedWaits and cluster: see cluster.go.
	sharedWaits *prometheus.CounterVec
	cluster     *cluster.Cluster

	mu        sync.Mutex
	tokens    func() []tokens.Status
	mailboxes func() []delivery.MailboxStatus
	lockedOut func() int
	config    func() *config.Config
}

// New makes the registry for a relay whose spool is spool. now may be nil
// (time.Now).
func New(spool *queue.Spool, now func() time.Time) *Metrics {
	if now == nil {
		now = time.Now
	}
	m := &Metrics{reg: prometheus.NewRegistry(), spool: spool, now: now, sharedWaits: newSharedWaits()}
	m.accepted = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "oauthrelay_messages_accepted_total", Help: "Messages accepted from applications and queued, by [[client]] name.",
	}, []string{"client"})
	m.refused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "oauthrelay_messages_refused_total", Help: "Messages, logins or connections refused by the listener, by reason.",
	}, []string{"reason"})
	m.attempts = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "oauthrelay_delivery_attempts_total", Help: "Delivery attempts to Microsoft 365, by transport (smtp, graph, hve), result and class of the upstream's reply (2xx, 4xx, 5xx, none).",
	}, []string{"transport", "result", "reply_class"})
	m.tokenReqs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "oauthrelay_token_requests_total", Help: "Requests to the Entra ID token endpoint, by app and result (ok, transient, config_fault).",
	}, []string{"app", "result"})
	m.throttled = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "oauthrelay_throttled_total", Help: "Times Microsoft 365 asked a mailbox to slow down (SMTP 432 or 421 4.4.2, Graph 429).",
	}, []string{"mailbox"})
	m.conns = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "oauthrelay_upstream_connections", Help: "Open authenticated connections to Microsoft 365, by mailbox.",
	}, []string{"mailbox"})
	m.lockouts = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "oauthrelay_auth_lockouts_total", Help: "Times failed logins locked an address out of AUTH (listen.auth_max_failures within listen.auth_lockout).",
	})
	lockedOut := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "oauthrelay_auth_locked_out_addresses", Help: "Addresses locked out of AUTH now; a reload (SIGHUP) lifts every lockout.",
	}, m.lockedOutNow)
	m.tlsSessions = newTLSSessions()
	m.reg.MustRegister(m.tlsSessions)
	m.reg.MustRegister(m.accepted, m.refused, m.attempts, m.tokenReqs, m.throttled, m.conns, m.lockouts, lockedOut,
		&stateCollector{m: m},
		opsCollector{m: m},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Registry is the underlying registry (for tests and extra collectors).
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// SetTokens sets where token lifetimes and errors are read from
// (tokens.Set.Statuses).
func (m *Metrics) SetTokens(f func() []tokens.Status) {
	m.mu.Lock()
	m.tokens = f
	m.mu.Unlock()
}

// SetMailboxes sets where mailbox pauses are read from
// (delivery.Scheduler.Status).
func (m *Metrics) SetMailboxes(f func() []delivery.MailboxStatus) {
	m.mu.Lock()
	m.mailboxes = f
	m.mu.Unlock()
}

// SetLockouts sets where the number of addresses locked out of AUTH is
// read from (relay.Server.LockedOut).
func (m *Metrics) SetLockouts(f func() int) {
	m.mu.Lock()
	m.lockedOut = f
	m.mu.Unlock()
}

func (m *Metrics) lockedOutNow() float64 {
	m.mu.Lock()
	f := m.lockedOut
	m.mu.Unlock()
	if f == nil {
		return 0
	}
	return float64(f())
}

func (m *Metrics) sources() (func() []tokens.Status, func() []delivery.MailboxStatus) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.tokens, m.mailboxes
}

// RelayHooks counts what the listener accepts and refuses, and its
// lockouts.
func (m *Metrics) RelayHooks() relay.Hooks {
	h := relay.Hooks{
		Accepted:  func(client string) { m.accepted.WithLabelValues(client).Inc() },
		Refused:   func(reason string) { m.refused.WithLabelValues(reason).Inc() },
		LockedOut: m.lockouts.Inc,
	}
	h.TLSSession = func(version string) { m.tlsSessions.WithLabelValues(version).Inc() }
	return h
}

// DeliveryHooks counts attempts, throttling and open connections.
func (m *Metrics) DeliveryHooks() delivery.Hooks {
	return delivery.Hooks{
		Attempt: func(_, transport, result, replyClass string) {
			m.attempts.WithLabelValues(transport, result, replyClass).Inc()
		},
		Throttled: func(mailbox string) { m.throttled.WithLabelValues(strings.ToLower(mailbox)).Inc() },
		Conns: func(mailbox string, delta int) {
			m.conns.WithLabelValues(strings.ToLower(mailbox)).Add(float64(delta))
		},
		SharedWait: m.sharedWait,
	}
}

// OnTokenRequest counts a token request; use it as oauth.Options.OnRequest.
func (m *Metrics) OnTokenRequest(app string, err error) {
	result := "ok"
	switch {
	case err == nil:
	case oauth.IsPermanent(err):
		result = "config_fault"
	default:
		result = "transient"
	}
	m.tokenReqs.WithLabelValues(app, result).Inc()
}

// Handler serves /metrics, /healthz and /readyz.
func (m *Metrics) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		problems := m.Ready()
		if len(problems) == 0 {
			fmt.Fprintln(w, "ready")
			m.writeCluster(w)
			return
		}
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, "not ready: %d problem(s)\n", len(problems))
		for _, p := range problems {
			fmt.Fprintln(w, p)
		}
		m.writeCluster(w)
	})
	return mux
}

// A mailbox whose every attempt has failed with a temporary error, at
// least OutageAttempts in a row for at least OutageAfter, makes /readyz
// fail: one failed connection is not an outage, minutes of them are.
const (
	OutageAttempts = 3
	OutageAfter    = 5 * time.Minute
)

// Ready checks that the spool is writable and that no mailbox is paused,
// and no app's token refused, by a configuration fault. It returns one
// human-readable problem per failing check (error and fix); none means
// ready.
func (m *Metrics) Ready() []string {
	var problems []string
	now := m.now()
	if err := m.spool.Probe(); err != nil {
		problems = append(problems, fmt.Sprintf("spool %s is not writable: %v\n  fix: free disk space and check that the relay's user owns %s (mode 0700)", m.spool.Dir(), err, m.spool.Dir()))
	}
	tokens, mailboxes := m.sources()
	if mailboxes != nil {
		sts := mailboxes()
		sort.Slice(sts, func(i, j int) bool { return sts[i].Mailbox < sts[j].Mailbox })
		for _, st := range sts {
			for _, f := range st.SenderFaults {
				p := fmt.Sprintf("mailbox %s (transport %s) may not send as %s: %s", st.Mailbox, st.Transport, f.Sender, f.Reply)
				if f.Fix != "" {
					p += "\n  fix: " + f.Fix
				}
				p += "\n  mail from " + f.Sender + " stays queued until then (at most [spool] max_age); reload the relay (SIGHUP) to retry at once"
				problems = append(problems, p)
			}
			if st.Failing >= OutageAttempts && now.Sub(st.FailingSince) >= OutageAfter {
				problems = append(problems, fmt.Sprintf("mailbox %s (transport %s): every delivery attempt for %s has failed (%d in a row); last: %s\n"+
					"  fix: check that this host can reach Microsoft 365 (DNS, firewall, proxy; `oauthrelay doctor -mailbox %s` checks each step); mail stays queued meanwhile",
					st.Mailbox, st.Transport, now.Sub(st.FailingSince).Round(time.Second), st.Failing, st.LastError, st.Mailbox))
			}
			if !st.ConfigFault {
				continue
			}
			p := fmt.Sprintf("mailbox %s (transport %s) is paused by a configuration fault: %s", st.Mailbox, st.Transport, st.Reason)
			if st.Fix != "" {
				p += "\n  fix: " + st.Fix
			}
			p += "\n  then " + applyFix(st.RestartToFix) + "; mail stays queued meanwhile"
			problems = append(problems, p)
		}
	}
	if tokens != nil {
		sts := tokens()
		sort.Slice(sts, func(i, j int) bool {
			if sts[i].App != sts[j].App {
				return sts[i].App < sts[j].App
			}
			return sts[i].Resource < sts[j].Resource
		})
		for _, st := range sts {
			if st.LastError == nil || !oauth.IsPermanent(st.LastError) {
				continue
			}
			// oauth.Error's text is built from decoded fields only and
			// carries its own fix; it never contains the secret.
			problems = append(problems, fmt.Sprintf("app %s cannot get a token for %s: %v\n  then %s", st.App, resourceName(st.Resource), st.LastError, applyFix(st.SecretFromEnv)))
		}
	}
	return problems
}

// stateCollector computes the queue and token gauges at scrape time.
type stateCollector struct {
	m *Metrics

	// facts caches what never changes about a message (its mailbox and
	// when it was received), so a scrape lists directories and reads only
	// envelopes it has not seen before, however long failed/ grows.
	mu    sync.Mutex
	facts map[string]envFacts
}

type envFacts struct {
	mailbox  string
	received time.Time
}

var (
	queueDesc = prometheus.NewDesc("oauthrelay_queue_messages",
		"Messages in the spool, by state (incoming, active, deferred, hold, failed, corrupt) and mailbox, counted from the spool at scrape time.",
		[]string{"state", "mailbox"}, nil)
	oldestDesc = prometheus.NewDesc("oauthrelay_queue_oldest_age_seconds",
		"Age of the oldest message still awaiting delivery (incoming, active or deferred); 0 when there is none.", nil, nil)
	tokenLeftDesc = prometheus.NewDesc("oauthrelay_token_seconds_left",
		"Seconds left on each app's cached access token, per resource (exchange for SMTP AUTH and HVE, graph); 0 when it has none.", []string{"app", "resource"}, nil)
	pausedDesc = prometheus.NewDesc("oauthrelay_mailbox_config_fault",
		"1 when a mailbox is paused because Microsoft 365 refused the relay's own credentials or setup (see /readyz for the fix).", []string{"mailbox"}, nil)
	scrapeErrDesc = prometheus.NewDesc("oauthrelay_queue_scrape_errors",
		"1 when the spool could not be listed at this scrape.", nil, nil)
)

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- queueDesc
	ch <- oldestDesc
	ch <- tokenLeftDesc
	ch <- pausedDesc
	ch <- scrapeErrDesc
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	m := c.m
	now := m.now()
	type key struct{ state, mailbox string }
	counts := map[key]int{}
	var oldest time.Time
	scrapeErr := 0.0
	c.mu.Lock()
	if c.facts == nil {
		c.facts = map[string]envFacts{}
	}
	seen := map[string]bool{}
	for _, st := range queue.States {
		ids, err := m.spool.IDs(st)
		if err != nil {
			scrapeErr = 1
			continue
		}
		for _, id := range ids {
			f, ok := c.facts[id]
			if !ok {
				e, err := m.spool.Load(st, id)
				switch {
				case errors.Is(err, queue.ErrNotFound):
					continue // moved or delivered since the listing
				case err != nil:
					counts[key{string(st), "unknown"}]++
					continue
				}
				f = envFacts{mailbox: strings.ToLower(e.Mailbox), received: e.Received}
				c.facts[id] = f
			}
			seen[id] = true
			counts[key{string(st), f.mailbox}]++
			switch st {
			case queue.Incoming, queue.Active, queue.Deferred:
				if oldest.IsZero() || f.received.Before(oldest) {
					oldest = f.received
				}
			}
		}
	}
	for id := range c.facts {
		if !seen[id] {
			delete(c.facts, id)
		}
	}
	c.mu.Unlock()
	for k, n := range counts {
		ch <- prometheus.MustNewConstMetric(queueDesc, prometheus.GaugeValue, float64(n), k.state, k.mailbox)
	}
	age := 0.0
	if !oldest.IsZero() {
		age = max(now.Sub(oldest).Seconds(), 0)
	}
	ch <- prometheus.MustNewConstMetric(oldestDesc, prometheus.GaugeValue, age)
	ch <- prometheus.MustNewConstMetric(scrapeErrDesc, prometheus.GaugeValue, scrapeErr)

	tokens, mailboxes := m.sources()
	if tokens != nil {
		for _, st := range tokens() {
			left := 0.0
			if !st.ExpiresOn.IsZero() {
				left = max(st.ExpiresOn.Sub(now).Seconds(), 0)
			}
			ch <- prometheus.MustNewConstMetric(tokenLeftDesc, prometheus.GaugeValue, left, st.App, string(st.Resource))
		}
	}
	if mailboxes != nil {
		for _, st := range mailboxes() {
			v := 0.0
			if st.ConfigFault {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(pausedDesc, prometheus.GaugeValue, v, strings.ToLower(st.Mailbox))
		}
	}
}

// resourceName is how /readyz names a token's resource to an admin.
func resourceName(r transport.Resource) string {
	if r == transport.Graph {
		return "Microsoft Graph"
	}
	return "Exchange Online (SMTP AUTH)"
}

// applyFix says how a fixed credential takes effect.
func applyFix(restart bool) string {
	if restart {
		return "restart the relay (systemctl restart oauthrelay): its client_secret (or AZURE_CLIENT_ID, AZURE_TENANT_ID, AZURE_FEDERATED_TOKEN_FILE) comes from an environment variable, which a running process cannot re-read"
	}
	return "reload the relay (SIGHUP) to retry at once"
}
