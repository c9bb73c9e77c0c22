package metrics

import (
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/oauthrelay/oauthrelay/config"
	"github.com/oauthrelay/oauthrelay/oauth"
)

// The gauges the shipped alerts (deploy/prometheus/alerts.yml) watch that
// the queue and token gauges do not already give: readiness as a number,
// the spool's free disk, credential expiry dates, refused credentials and
// each mailbox's use of its daily recipient limit. All are computed at
// scrape time from the running parts, like the queue gauges.
var (
	readyDesc = prometheus.NewDesc("oauthrelay_ready",
		"1 when /readyz answers 200 (the spool is writable and nothing is stopped by a configuration fault), 0 when it answers 503; its body says why and the fix.", nil, nil)
	readyProblemsDesc = prometheus.NewDesc("oauthrelay_ready_problems",
		"Problems /readyz lists now (0 when ready).", nil, nil)
	spoolAvailDesc = prometheus.NewDesc("oauthrelay_spool_filesystem_avail_bytes",
		"Bytes the relay's user may still write on the spool's filesystem.", nil, nil)
	spoolSizeDesc = prometheus.NewDesc("oauthrelay_spool_filesystem_size_bytes",
		"Size of the spool's filesystem in bytes.", nil, nil)
	spoolFilesFreeDesc = prometheus.NewDesc("oauthrelay_spool_filesystem_files_free",
		"Inodes still free on the spool's filesystem (every queued message takes one file); absent where the system does not count inodes.", nil, nil)
	spoolFilesDesc = prometheus.NewDesc("oauthrelay_spool_filesystem_files",
		"Inodes of the spool's filesystem; absent where the system does not count inodes.", nil, nil)
	certExpiryDesc = prometheus.NewDesc("oauthrelay_app_certificate_expiry_timestamp_seconds",
		"When each app's certificate credential (certificate_file, as loaded at start or the last reload) expires, in Unix seconds.", []string{"app"}, nil)
	secretExpiryDesc = prometheus.NewDesc("oauthrelay_app_secret_expiry_timestamp_seconds",
		"When each app's client secret expires, in Unix seconds, from [[app]] client_secret_expires (the date the Entra portal shows); absent when it is not set.", []string{"app"}, nil)
	tokenRefusedDesc = prometheus.NewDesc("oauthrelay_token_refused",
		"1 when Entra ID refused the app's last token request for good (a wrong secret, certificate, tenant or app id, or consent missing: see /readyz), 0 otherwise.", []string{"app", "resource"}, nil)
	rcptsDayDesc = prometheus.NewDesc("oauthrelay_mailbox_recipients_24h",
		"Recipients Microsoft 365 accepted from the mailbox in the last 24 hours (plus those in flight), as the relay counts them for max_recipients_per_day.", []string{"mailbox"}, nil)
	rcptsLimitDesc = prometheus.NewDesc("oauthrelay_mailbox_max_recipients_per_day",
		"The mailbox's max_recipients_per_day: the relay holds its mail once the last 24 hours reach it; absent when there is no limit.", []string{"mailbox"}, nil)
)

// SetConfig sets where the configuration in force is read from (for
// client_secret_expires); a reload changes what it returns.
func (m *Metrics) SetConfig(f func() *config.Config) {
	m.mu.Lock()
	m.config = f
	m.mu.Unlock()
}

// opsCollector computes the gauges above at scrape time.
type opsCollector struct{ m *Metrics }

func (c opsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{readyDesc, readyProblemsDesc, spoolAvailDesc, spoolSizeDesc, spoolFilesFreeDesc, spoolFilesDesc,
		certExpiryDesc, secretExpiryDesc, tokenRefusedDesc, rcptsDayDesc, rcptsLimitDesc} {
		ch <- d
	}
}

func (c opsCollector) Collect(ch chan<- prometheus.Metric) {
	m := c.m
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	problems := len(m.Ready())
	gauge(readyDesc, boolGauge(problems == 0))
	gauge(readyProblemsDesc, float64(problems))

	if fs, err := diskSpace(m.spool.Dir()); err == nil {
		gauge(spoolAvailDesc, float64(fs.avail))
		gauge(spoolSizeDesc, float64(fs.size))
		if fs.files > 0 {
			gauge(spoolFilesFreeDesc, float64(fs.filesFree))
			gauge(spoolFilesDesc, float64(fs.files))
		}
	}

	tokens, mailboxes := m.sources()
	if tokens != nil {
		certs := map[string]time.Time{}
		for _, st := range tokens() {
			gauge(tokenRefusedDesc, boolGauge(st.LastError != nil && oauth.IsPermanent(st.LastError)), st.App, string(st.Resource))
			if !st.CertNotAfter.IsZero() {
				certs[st.App] = st.CertNotAfter
			}
		}
		for app, at := range certs {
			gauge(certExpiryDesc, float64(at.Unix()), app)
		}
	}
	m.mu.Lock()
	cfgf := m.config
	m.mu.Unlock()
	if cfgf != nil {
		if cfg := cfgf(); cfg != nil {
			for _, a := range cfg.Apps {
				if !a.SecretExpires.IsZero() {
					gauge(secretExpiryDesc, float64(a.SecretExpires.Unix()), a.Name)
				}
			}
		}
	}
	if mailboxes != nil {
		for _, st := range mailboxes() {
			mb := strings.ToLower(st.Mailbox)
			gauge(rcptsDayDesc, float64(st.RecipientsDay), mb)
			if st.RecipientsDayLimit > 0 {
				gauge(rcptsLimitDesc, float64(st.RecipientsDayLimit), mb)
			}
		}
	}
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// fsSpace is what the spool's filesystem has left.
type fsSpace struct {
	avail, size      uint64
	filesFree, files uint64 // 0 where the system does not count inodes
}
