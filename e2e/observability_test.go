package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/oauthrelay/oauthrelay/internal/msemu"
	"github.com/oauthrelay/oauthrelay/internal/testkit"
)

// prometheusOwn are names Prometheus itself adds to every target.
var prometheusOwn = map[string]bool{"up": true}

// TestShippedAlertsAndDashboardUseExportedMetrics starts a real relay
// against the emulator, makes it deliver, fail, get throttled and refuse,
// so that the labelled series exist, scrapes /metrics over HTTP, and checks
// that every metric deploy/prometheus/alerts.yml and
// deploy/grafana/oauthrelay.json read is in the scrape.
func TestShippedAlertsAndDashboardUseExportedMetrics(t *testing.T) {
	ctx := ctxFor(t)
	emu := startEmulator(t, msemu.Options{})
	const (
		secretMbx = "helpdesk@contoso.com"
		pemMbx    = "scanner@contoso.com"
		bad       = "nobody@example.org"
	)
	emu.Provision(tenantID, secretApp, clientSec, secretMbx)
	pemFile, uploaded := newCertificate(t, "CN=oauthrelay metrics")
	provisionCertApp(emu, pemApp, uploaded, pemMbx)
	emu.FailRcptAddress(bad, "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup")
	// The first connection is throttled, so the throttle counter has a
	// mailbox label.
	emu.FailNextConnect(1, msemu.ReplyTooManyConns)

	r := startRelay(t, emu, relayOptions{
		Metrics: true,
		Apps: []testkit.App{
			{Name: "secret", ClientID: secretApp, ClientSecret: clientSec, Extra: `client_secret_expires = "2099-06-30"`},
			{Name: "pem", ClientID: pemApp, CertificateFile: pemFile},
		},
		Mailboxes: []testkit.Mailbox{{Address: secretMbx, App: "secret"}, {Address: pemMbx, App: "pem"}},
	})
	r.mustSend(ctx, secretMbx, "someone@example.org", "delivered")
	r.mustSend(ctx, pemMbx, bad, "fails for good")
	// A sender no mailbox may send as: the listener refuses it.
	if err := r.send(ctx, "stranger@fabrikam.example", []string{"someone@example.org"}, "refused"); err == nil {
		t.Fatal("the relay accepted a sender no mailbox may send as")
	}
	// The message from helpdesk arrives (after the throttle, if it was the
	// one throttled); the failure's bounce (a DSN to scanner@) arrives through scanner's mailbox.
	msgs, err := emu.WaitDelivered(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(deliveredTo(msgs, secretMbx)) != 1 || len(deliveredTo(msgs, pemMbx)) != 1 {
		t.Fatalf("delivered %+v, want the message from %s and the bounce through %s", msgs, secretMbx, pemMbx)
	}

	// The failure and the throttle are counted once the relay has dealt
	// with them; wait on the counters, then scrape over HTTP once.
	reg := r.svc.Metrics().Registry()
	testkit.WaitFor(ctx, t, "the throttle, the failure and the refusal to be counted", func() bool {
		return counterValue(t, reg, "oauthrelay_throttled_total") >= 1 &&
			counterValue(t, reg, "oauthrelay_delivery_attempts_total") >= 3 &&
			counterValue(t, reg, "oauthrelay_messages_refused_total") >= 1
	})
	scrape := get(t, "http://"+r.svc.MetricsAddr().String()+"/metrics")
	secretEnd := time.Date(2099, 6, 30, 0, 0, 0, 0, time.UTC)
	for _, want := range []string{
		`result="failed"`, `result="delivered"`,
		// Each delivered recipient counts against the default daily limit
		// (scanner's is the bounce); the refused one used none of it.
		`oauthrelay_mailbox_recipients_24h{mailbox="` + secretMbx + `"} 1`,
		`oauthrelay_mailbox_recipients_24h{mailbox="` + pemMbx + `"} 1`,
		`oauthrelay_mailbox_max_recipients_per_day{mailbox="` + secretMbx + `"} 10000`,
		fmt.Sprintf(`oauthrelay_app_certificate_expiry_timestamp_seconds{app="pem"} %g`, float64(uploaded.NotAfter.Unix())),
		fmt.Sprintf(`oauthrelay_app_secret_expiry_timestamp_seconds{app="secret"} %g`, float64(secretEnd.Unix())),
		`oauthrelay_ready 1`,
	} {
		if !strings.Contains(scrape, want) {
			t.Errorf("the scrape lacks %s", want)
		}
	}
	// The throttled connection is whichever mailbox dialled first.
	if !strings.Contains(scrape, `oauthrelay_throttled_total{mailbox="`+secretMbx+`"} 1`) &&
		!strings.Contains(scrape, `oauthrelay_throttled_total{mailbox="`+pemMbx+`"} 1`) {
		t.Errorf("the scrape counts no throttle for either mailbox")
	}
	have := scrapedNames(scrape)
	names := shippedMetricNames(t)
	var missing []string
	for _, n := range names {
		if !have[n] && !prometheusOwn[n] {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 {
		t.Errorf("metrics the shipped alerts or dashboard use but the relay does not export: %s", strings.Join(missing, ", "))
	}
	if t.Failed() {
		t.Logf("/metrics:\n%s", scrape)
	}
	if len(names) < 20 {
		t.Errorf("only %d metric names found in the shipped files: %v", len(names), names)
	}
}

// get fetches url and returns its body.
func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %v", url, resp.StatusCode, err)
	}
	return string(b)
}

// scrapedNames are the series names of a Prometheus text scrape, as
// written (a histogram's _bucket, _sum and _count included).
func scrapedNames(text string) map[string]bool {
	have := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		if i := strings.IndexAny(line, "{ "); i > 0 {
			have[line[:i]] = true
		}
	}
	return have
}

// shippedMetricNames reads every PromQL expression of the alert rules and
// the dashboard (panel targets and variable queries) and returns the
// metric names they read.
func shippedMetricNames(t *testing.T) []string {
	t.Helper()
	seen := map[string]bool{}
	add := func(where, expr string) {
		names, err := metricNames(expr)
		if err != nil {
			t.Errorf("%s: %v", where, err)
		}
		for _, n := range names {
			seen[n] = true
		}
	}

	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert, Record, Expr string
			}
		}
	}
	b, err := os.ReadFile("../deploy/prometheus/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &rules); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.Record != "" {
				t.Errorf("alerts.yml has recording rule %s: teach this test to accept its name", r.Record)
			}
			add("alerts.yml "+r.Alert, r.Expr)
			n++
		}
	}
	if n < 10 {
		t.Errorf("alerts.yml: only %d rules read", n)
	}

	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
		Templating struct {
			List []struct {
				Name       string
				Definition string
			}
		}
	}
	b, err = os.ReadFile("../deploy/grafana/oauthrelay.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatal(err)
	}
	n = 0
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			add("oauthrelay.json panel "+p.Title, tg.Expr)
			n++
		}
	}
	if n < 20 {
		t.Errorf("oauthrelay.json: only %d panel queries read", n)
	}
	for _, v := range dash.Templating.List {
		if m := labelValuesRE.FindStringSubmatch(v.Definition); m != nil {
			seen[m[1]] = true
		}
	}
	out := make([]string, 0, len(seen))
	for n := range seen {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}
