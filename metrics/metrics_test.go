package metrics

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/delivery"
	"github.com/oauthrelay/oauthrelay/internal/testkit"
	"github.com/oauthrelay/oauthrelay/oauth"
	"github.com/oauthrelay/oauthrelay/queue"
	"github.com/oauthrelay/oauthrelay/tokens"
	"github.com/oauthrelay/oauthrelay/transport"
)

func testSpool(t *testing.T) *queue.Spool {
	t.Helper()
	logger, _ := testkit.DebugLogger(t)
	s, _, err := queue.Open(t.TempDir(), queue.Options{Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func enqueue(t *testing.T, s *queue.Spool, mailbox string, received time.Time, to queue.State) {
	t.Helper()
	w, err := s.Create()
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, "Subject: x\r\n\r\nx\r\n")
	env := &queue.Envelope{Client: "erp", Mailbox: mailbox, MailFrom: mailbox, Received: received,
		Recipients: []*queue.Recipient{{Address: "a@example.org"}}}
	if err := w.Commit(env); err != nil {
		t.Fatal(err)
	}
	if to != queue.Incoming {
		if err := s.Move(env, to); err != nil {
			t.Fatal(err)
		}
	}
}

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec.Code, rec.Body.String()
}

func TestMetricsFromSpoolAndHooks(t *testing.T) {
	s := testSpool(t)
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	enqueue(t, s, "helpdesk@contoso.com", now.Add(-90*time.Minute), queue.Deferred)
	enqueue(t, s, "helpdesk@contoso.com", now.Add(-10*time.Minute), queue.Deferred)
	enqueue(t, s, "Sales@Contoso.com", now.Add(-5*time.Minute), queue.Incoming)
	// Held and failed mail waits for a person: not in the oldest age.
	enqueue(t, s, "sales@contoso.com", now.Add(-48*time.Hour), queue.Hold)

	m := New(s, testkit.NewClock(now).Now)
	m.SetTokens(func() []tokens.Status {
		return []tokens.Status{{Status: oauth.Status{App: "contoso", ExpiresOn: now.Add(50 * time.Minute)}, Resource: transport.Exchange}}
	})
	m.SetMailboxes(func() []delivery.MailboxStatus {
		return []delivery.MailboxStatus{{Mailbox: "helpdesk@contoso.com"}}
	})
	rh, dh := m.RelayHooks(), m.DeliveryHooks()
	rh.Accepted("erp")
	rh.Accepted("erp")
	rh.Refused("sender_not_allowed")
	dh.Attempt("helpdesk@contoso.com", "smtp", "deferred", "4xx")
	dh.Throttled("helpdesk@contoso.com")
	dh.Conns("helpdesk@contoso.com", 1)
	dh.Conns("helpdesk@contoso.com", 1)
	dh.Conns("helpdesk@contoso.com", -1)
	m.OnTokenRequest("contoso", nil)
	m.OnTokenRequest("contoso", &oauth.Error{App: "contoso", Permanent: true})
	m.OnTokenRequest("contoso", errors.New("network down"))

	code, body := get(t, m.Handler(), "/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	for _, want := range []string{
		`oauthrelay_queue_messages{mailbox="helpdesk@contoso.com",state="deferred"} 2`,
		`oauthrelay_queue_messages{mailbox="sales@contoso.com",state="incoming"} 1`,
		`oauthrelay_queue_messages{mailbox="sales@contoso.com",state="hold"} 1`,
		`oauthrelay_queue_oldest_age_seconds 5400`,
		`oauthrelay_messages_accepted_total{client="erp"} 2`,
		`oauthrelay_messages_refused_total{reason="sender_not_allowed"} 1`,
		`oauthrelay_delivery_attempts_total{reply_class="4xx",result="deferred",transport="smtp"} 1`,
		`oauthrelay_throttled_total{mailbox="helpdesk@contoso.com"} 1`,
		`oauthrelay_upstream_connections{mailbox="helpdesk@contoso.com"} 1`,
		`oauthrelay_token_requests_total{app="contoso",result="ok"} 1`,
		`oauthrelay_token_requests_total{app="contoso",result="config_fault"} 1`,
		`oauthrelay_token_requests_total{app="contoso",result="transient"} 1`,
		`oauthrelay_token_seconds_left{app="contoso",resource="exchange"} 3000`,
		`oauthrelay_mailbox_config_fault{mailbox="helpdesk@contoso.com"} 0`,
	} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if t.Failed() {
		t.Logf("/metrics:\n%s", body)
	}
}

func TestHealthAndReadiness(t *testing.T) {
	s := testSpool(t)
	m := New(s, nil)
	var statuses []delivery.MailboxStatus
	var toks []tokens.Status
	m.SetMailboxes(func() []delivery.MailboxStatus { return statuses })
	m.SetTokens(func() []tokens.Status { return toks })
	h := m.Handler()

	if code, body := get(t, h, "/healthz"); code != 200 || strings.TrimSpace(body) != "ok" {
		t.Fatalf("/healthz = %d %q", code, body)
	}
	if code, body := get(t, h, "/readyz"); code != 200 {
		t.Fatalf("/readyz = %d %q, want 200", code, body)
	}

	statuses = []delivery.MailboxStatus{{Mailbox: "helpdesk@contoso.com", Paused: true, ConfigFault: true,
		Reason: "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Mailbox.",
		Fix:    "SMTP AUTH is disabled for the mailbox: Set-CASMailbox -Identity helpdesk@contoso.com -SmtpClientAuthenticationDisabled $false"}}
	toks = []tokens.Status{{Resource: transport.Graph, Status: oauth.Status{App: "contoso", LastError: &oauth.Error{App: "contoso", AADSTS: 7000215, Cause: "the client secret is wrong",
		Fix: "copy the secret's Value, not its Secret ID", Permanent: true}}}}
	code, body := get(t, h, "/readyz")
	if code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz = %d, want 503", code)
	}
	for _, want := range []string{"helpdesk@contoso.com", "5.7.139", "Set-CASMailbox -Identity helpdesk@contoso.com", "AADSTS7000215", "copy the secret's Value", "app contoso cannot get a token for Microsoft Graph"} {
		if !strings.Contains(body, want) {
			t.Errorf("/readyz body lacks %q:\n%s", want, body)
		}
	}

	// A transient token error is not a configuration fault.
	statuses = nil
	toks = []tokens.Status{{Status: oauth.Status{App: "contoso", LastError: &oauth.Error{App: "contoso", Cause: "timeout"}}}}
	if code, body := get(t, h, "/readyz"); code != 200 {
		t.Fatalf("/readyz with a transient token error = %d %q, want 200", code, body)
	}
}

func TestReadinessNeedsWritableSpool(t *testing.T) {
	s := testSpool(t)
	m := New(s, nil)
	if err := s.Probe(); err != nil {
		t.Fatal(err)
	}
	if p := m.Ready(); len(p) != 0 {
		t.Fatalf("Ready() = %v on a writable spool", p)
	}
	// The spool's directories are gone: not ready, and the problem says
	// which spool and what to do.
	if err := os.RemoveAll(s.Dir()); err != nil {
		t.Fatal(err)
	}
	if p := m.Ready(); len(p) != 1 || !strings.Contains(p[0], "spool "+s.Dir()+" is not writable") || !strings.Contains(p[0], "fix:") {
		t.Fatalf("Ready() = %q on a spool that cannot be written", p)
	}
}

// /readyz fails when every delivery attempt of a mailbox has failed for
// minutes (Microsoft unreachable), not at the first failed connection;
// and it names each sender a mailbox may not send as.
func TestReadinessOutageAndSenderFaults(t *testing.T) {
	now := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	m := New(testSpool(t), func() time.Time { return now })
	var statuses []delivery.MailboxStatus
	m.SetMailboxes(func() []delivery.MailboxStatus { return statuses })
	h := m.Handler()
	last := "connect: dial tcp 52.96.0.1:587: i/o timeout"
	for _, tc := range []struct {
		name    string
		failing int
		since   time.Duration
		ready   bool
	}{
		{"one failed connection", 1, 10 * time.Minute, true},
		{"a short outage", 5, time.Minute, true},
		{"minutes of failures", OutageAttempts, OutageAfter, false},
	} {
		statuses = []delivery.MailboxStatus{{Mailbox: "helpdesk@contoso.com", Transport: "smtp", Failing: tc.failing, FailingSince: now.Add(-tc.since), LastError: last}}
		code, body := get(t, h, "/readyz")
		if (code == 200) != tc.ready {
			t.Errorf("%s: /readyz = %d %q", tc.name, code, body)
		}
		if !tc.ready && (!strings.Contains(body, "every delivery attempt for 5m0s has failed (3 in a row); last: "+last) || !strings.Contains(body, "oauthrelay doctor -mailbox helpdesk@contoso.com")) {
			t.Errorf("%s: /readyz body %q", tc.name, body)
		}
	}
	statuses = []delivery.MailboxStatus{{Mailbox: "helpdesk@contoso.com", Transport: "smtp", SenderFaults: []delivery.SenderFault{{
		Sender: "billing@contoso.com", Reply: "550 5.7.60 SMTP; Client does not have permissions to send as this sender",
		Fix: "Add-RecipientPermission -Identity billing@contoso.com -Trustee <service principal id> -AccessRights SendAs"}}}}
	code, body := get(t, h, "/readyz")
	if code != 503 || !strings.Contains(body, "may not send as billing@contoso.com") || !strings.Contains(body, "Add-RecipientPermission -Identity billing@contoso.com") {
		t.Errorf("sender fault: /readyz = %d %q", code, body)
	}
}

// A fixed secret that comes from ${VAR} takes a restart: /readyz says so
// instead of "reload", which would not re-read the environment.
func TestReadinessSaysRestartForEnvironmentSecrets(t *testing.T) {
	m := New(testSpool(t), nil)
	var toks []tokens.Status
	m.SetTokens(func() []tokens.Status { return toks })
	h := m.Handler()
	wrong := &oauth.Error{App: "contoso", AADSTS: 7000215, Cause: "the client secret is wrong", Fix: "copy the secret's Value", Permanent: true}
	for _, fromEnv := range []bool{false, true} {
		toks = []tokens.Status{{Status: oauth.Status{App: "contoso", LastError: wrong}, Resource: transport.Exchange, SecretFromEnv: fromEnv}}
		_, body := get(t, h, "/readyz")
		restart, reload := strings.Contains(body, "then restart the relay"), strings.Contains(body, "then reload the relay (SIGHUP)")
		if restart != fromEnv || reload == fromEnv {
			t.Errorf("secret from the environment %v: /readyz says %q", fromEnv, body)
		}
	}
	statuses := []delivery.MailboxStatus{{Mailbox: "helpdesk@contoso.com", Transport: "smtp", ConfigFault: true, Reason: "token: AADSTS7000215", RestartToFix: true}}
	m.SetMailboxes(func() []delivery.MailboxStatus { return statuses })
	toks = nil
	if _, body := get(t, h, "/readyz"); !strings.Contains(body, "then restart the relay") {
		t.Errorf("mailbox paused by an environment secret: %q", body)
	}
}

// TestAuthLockouts: the addresses locked out now are read at scrape time
// (0 before the relay is wired in), and lockouts are counted.
func TestAuthLockouts(t *testing.T) {
	m := New(testSpool(t), nil)
	if _, body := get(t, m.Handler(), "/metrics"); !strings.Contains(body, "\noauthrelay_auth_locked_out_addresses 0\n") {
		t.Errorf("/metrics without a relay lacks oauthrelay_auth_locked_out_addresses 0:\n%s", body)
	}
	locked := 2
	m.SetLockouts(func() int { return locked })
	m.RelayHooks().LockedOut()
	m.RelayHooks().LockedOut()
	m.RelayHooks().LockedOut()
	_, body := get(t, m.Handler(), "/metrics")
	for _, want := range []string{"oauthrelay_auth_locked_out_addresses 2", "oauthrelay_auth_lockouts_total 3"} {
		if !strings.Contains(body, "\n"+want+"\n") {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	locked = 0
	if _, body := get(t, m.Handler(), "/metrics"); !strings.Contains(body, "\noauthrelay_auth_locked_out_addresses 0\n") {
		t.Errorf("/metrics after the lockouts were lifted lacks oauthrelay_auth_locked_out_addresses 0")
	}
}
