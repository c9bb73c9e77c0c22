package metrics

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/config"
	"github.com/oauthrelay/oauthrelay/delivery"
	"github.com/oauthrelay/oauthrelay/internal/testkit"
	"github.com/oauthrelay/oauthrelay/oauth"
	"github.com/oauthrelay/oauthrelay/tokens"
	"github.com/oauthrelay/oauthrelay/transport"
)

// TestAlertGauges: the gauges the shipped alerts read follow the running
// parts: readiness, the spool's disk, credential expiry, refused
// credentials and each mailbox's daily recipients against its limit.
func TestAlertGauges(t *testing.T) {
	s := testSpool(t)
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	certEnd := now.Add(20 * 24 * time.Hour)
	secretEnd := time.Date(2027, 6, 30, 0, 0, 0, 0, time.UTC)
	refused := &oauth.Error{App: "fabrikam", AADSTS: 7000215, Cause: "the client secret is wrong", Permanent: true}

	m := New(s, testkit.NewClock(now).Now)
	var toks []tokens.Status
	// A copy each time, as tokens.Set.Statuses gives: Ready sorts it.
	m.SetTokens(func() []tokens.Status { return append([]tokens.Status(nil), toks...) })
	m.SetMailboxes(func() []delivery.MailboxStatus {
		return []delivery.MailboxStatus{
			{Mailbox: "Sales@Contoso.com", RecipientsDay: 8500, RecipientsDayLimit: 10000},
			{Mailbox: "helpdesk@contoso.com", RecipientsDay: 3},
		}
	})
	m.SetConfig(func() *config.Config {
		return &config.Config{Apps: []*config.App{{Name: "contoso", SecretExpires: secretEnd}, {Name: "pem"}}}
	})

	toks = []tokens.Status{
		{Status: oauth.Status{App: "pem", CertNotAfter: certEnd, ExpiresOn: now.Add(time.Hour)}, Resource: transport.Exchange},
		{Status: oauth.Status{App: "pem", CertNotAfter: certEnd, ExpiresOn: now.Add(time.Hour)}, Resource: transport.Graph},
		{Status: oauth.Status{App: "contoso", ExpiresOn: now.Add(time.Hour)}, Resource: transport.Exchange},
	}
	_, body := get(t, m.Handler(), "/metrics")
	for _, want := range []string{
		`oauthrelay_ready 1`,
		`oauthrelay_ready_problems 0`,
		fmt.Sprintf(`oauthrelay_app_certificate_expiry_timestamp_seconds{app="pem"} %g`, float64(certEnd.Unix())),
		fmt.Sprintf(`oauthrelay_app_secret_expiry_timestamp_seconds{app="contoso"} %g`, float64(secretEnd.Unix())),
		`oauthrelay_token_refused{app="contoso",resource="exchange"} 0`,
		`oauthrelay_mailbox_recipients_24h{mailbox="sales@contoso.com"} 8500`,
		`oauthrelay_mailbox_max_recipients_per_day{mailbox="sales@contoso.com"} 10000`,
		`oauthrelay_mailbox_recipients_24h{mailbox="helpdesk@contoso.com"} 3`,
	} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	for _, absent := range []string{
		// One series per app, however many resources it has tokens for.
		`oauthrelay_app_certificate_expiry_timestamp_seconds{app="contoso"}`,
		`oauthrelay_app_secret_expiry_timestamp_seconds{app="pem"}`,
		`oauthrelay_mailbox_max_recipients_per_day{mailbox="helpdesk@contoso.com"}`,
	} {
		if strings.Contains(body, absent) {
			t.Errorf("/metrics has %s", absent)
		}
	}
	if strings.Count(body, "oauthrelay_app_certificate_expiry_timestamp_seconds{") != 1 {
		t.Errorf("certificate expiry not one series per app:\n%s", body)
	}
	fs, err := diskSpace(s.Dir())
	if err != nil {
		t.Fatal(err)
	}
	if fs.size == 0 || fs.avail > fs.size || !strings.Contains(body, "oauthrelay_spool_filesystem_size_bytes ") ||
		!strings.Contains(body, "oauthrelay_spool_filesystem_avail_bytes ") {
		t.Errorf("spool filesystem: %+v\n%s", fs, body)
	}

	// A refused credential turns readiness and the refused gauge over.
	toks[2].LastError = refused
	toks[2].App = "fabrikam"
	_, body = get(t, m.Handler(), "/metrics")
	for _, want := range []string{
		`oauthrelay_ready 0`,
		`oauthrelay_ready_problems 1`,
		`oauthrelay_token_refused{app="fabrikam",resource="exchange"} 1`,
	} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("after a refusal /metrics lacks %s", want)
		}
	}
	if t.Failed() {
		t.Logf("/metrics:\n%s", body)
	}
}
