package msemu

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

const graphScope = "https://graph.microsoft.com/.default"

// graphEmu starts an emulator with the standard app provisioned for
// every transport on testMbx.
func graphEmu(t *testing.T, o Options) *Emulator {
	e := startEmu(t, o)
	e.ProvisionGraph(testTenant, testClient, testSecret, testMbx)
	return e
}

// tokenFor gets a token for scope with the standard secret, by hand.
func tokenFor(t *testing.T, e *Emulator, scope string) string {
	t.Helper()
	return tokenForClient(t, e, testClient, scope)
}

// tokenForClient gets a token for scope as client, whose secret is testSecret.
func tokenForClient(t *testing.T, e *Emulator, client, scope string) string {
	t.Helper()
	status, body := postToken(t, e, testTenant, url.Values{
		"grant_type": {"client_credentials"}, "client_id": {client},
		"client_secret": {testSecret}, "scope": {scope},
	})
	tok, _ := body["access_token"].(string)
	if status != http.StatusOK || tok == "" {
		t.Fatalf("token for %s: %d %v", scope, status, body)
	}
	return tok
}

// graphResp is a Graph answer with its JSON error, if any.
type graphResp struct {
	status int
	header http.Header
	body   []byte
	code   string
	msg    string
}

// graphDo sends one request to the emulator's Graph with a bearer
// token (none if tok is "").
func graphDo(t *testing.T, c *http.Client, method, u, tok, ctype string, body []byte) graphResp {
	t.Helper()
	req, err := http.NewRequest(method, u, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	return graphSend(t, c, req)
}

// graphSend sends req and reads the answer.
func graphSend(t *testing.T, c *http.Client, req *http.Request) graphResp {
	t.Helper()
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	r := graphResp{status: res.StatusCode, header: res.Header, body: b}
	var eb struct {
		Error struct{ Code, Message string }
	}
	if json.Unmarshal(b, &eb) == nil {
		r.code, r.msg = eb.Error.Code, eb.Error.Message
	}
	return r
}

// sendMIME posts msg to sendMail as base64 MIME.
func sendMIME(t *testing.T, e *Emulator, c *http.Client, tok, mailbox, msg string) graphResp {
	t.Helper()
	return graphDo(t, c, "POST", e.GraphURL()+"/v1.0/users/"+mailbox+"/sendMail", tok, "text/plain",
		[]byte(base64.StdEncoding.EncodeToString([]byte(msg))))
}

func TestGraphSendMailHappyPath(t *testing.T) {
	e := graphEmu(t, Options{})
	c := e.HTTPClient()
	// The relay asks for its configured graph_url's scope; the real
	// Graph's scope works too.
	for i, scope := range []string{e.GraphURL() + "/.default", graphScope} {
		tok := tokenFor(t, e, scope)
		msg := "From: Help Desk <" + testMbx + ">\r\nTo: a@example.org, B <b@example.net>\r\nCc: c@example.org\r\nBcc: d@example.org\r\n" +
			"Subject: graph\r\nMessage-ID: <graph" + string(rune('0'+i)) + "@app.example>\r\n\r\nHello.\r\n"
		r := sendMIME(t, e, c, tok, testMbx, msg)
		if r.status != http.StatusAccepted || len(r.body) != 0 || r.header.Get("request-id") == "" {
			t.Fatalf("%s: %d %q request-id %q", scope, r.status, r.body, r.header.Get("request-id"))
		}
		got, err := e.WaitDelivered(context.Background(), i+1)
		if err != nil {
			t.Fatal(err)
		}
		m := got[i]
		if !bytes.Equal(m.Data, []byte(msg)) {
			t.Errorf("data not byte-exact:\n%q\n%q", m.Data, msg)
		}
		if m.Transport != TransportGraph || m.GraphPath != GraphSendMail || m.Mailbox != testMbx || m.AppID != testClient ||
			m.MailFrom != testMbx || m.Rcpts != nil || m.ConnID == 0 {
			t.Errorf("message %+v", m)
		}
		if got := strings.Join(m.Recipients, ","); got != "a@example.org,b@example.net,c@example.org,d@example.org" {
			t.Errorf("recipients %s", got)
		}
	}
	s := e.Stats()
	if s.GraphRequests != 2 || s.GraphRequestsByMailbox[testMbx] != 2 || s.GraphStatuses[202] != 2 || len(s.GraphTokens) != 2 || !s.GraphTokens[0].OK {
		t.Errorf("stats %+v", s)
	}
	if s.GraphConnections != 1 {
		t.Errorf("%d Graph connections for two requests on one client, want 1 (keep-alive)", s.GraphConnections)
	}
}

func TestGraphRefusals(t *testing.T) {
	e := graphEmu(t, Options{})
	c := e.HTTPClient()
	tok := tokenFor(t, e, graphScope)
	exoTok := tokenFor(t, e, exoScope)
	e.SetTokenLifetime(-time.Minute)
	expired := tokenFor(t, e, graphScope)
	e.SetTokenLifetime(DefaultTokenLifetime)

	// An app with SMTP only: its Graph token has no roles.
	const smtpOnly = "6a1d0e4f-2b3c-4d5e-8f90-a1b2c3d4e5f6"
	e.Provision(testTenant, smtpOnly, testSecret, testMbx)
	noRoles := tokenForClient(t, e, smtpOnly, graphScope)

	// An app confined by RBAC for Applications to another mailbox.
	const scoped = "7b2e1f50-3c4d-4e6f-9a01-b2c3d4e5f607"
	e.AddApp(App{TenantID: testTenant, ClientID: scoped, Secrets: []string{testSecret}, GraphRoles: []string{RoleMailSend},
		ScopedMailboxes: []string{"other@contoso.com"}})
	scopedTok := tokenForClient(t, e, scoped, graphScope)

	e.AddMailbox(Mailbox{Address: "nolicense@contoso.com", Unlicensed: true})
	e.AddMailbox(Mailbox{Address: "shared@contoso.com"})
	e.AddMailbox(Mailbox{Address: testMbx, SendAs: []string{"shared@contoso.com"}})

	good := "From: " + testMbx + "\r\nTo: a@example.org\r\nSubject: x\r\n\r\nHi.\r\n"
	big := good + strings.Repeat("x", 3<<20)
	for _, tc := range []struct {
		name, tok, mailbox, body string
		status                   int
		code, msg                string
	}{
		{"no token", "", testMbx, good, 401, "InvalidAuthenticationToken", "Access token is empty."},
		{"expired", expired, testMbx, good, 401, "InvalidAuthenticationToken", "Lifetime validation failed, the token is expired."},
		{"exchange audience", exoTok, testMbx, good, 401, "InvalidAuthenticationToken", "Access token validation failure. Invalid audience."},
		{"tampered", tok + "x", testMbx, good, 401, "InvalidAuthenticationToken", "Access token validation failure."},
		{"no Mail.Send", noRoles, testMbx, good, 403, "ErrorAccessDenied", "Access is denied. Check credentials and try again."},
		{"RBAC scope", scopedTok, testMbx, good, 403, "ErrorAccessDenied", "Access is denied. Check credentials and try again."},
		{"unknown mailbox", tok, "nobody@contoso.com", good, 404, "ErrorInvalidUser", "The requested user 'nobody@contoso.com' is invalid."},
		{"unlicensed", tok, "nolicense@contoso.com", good, 404, "MailboxNotEnabledForRESTAPI", ""},
		{"send as", tok, testMbx, strings.Replace(good, "From: "+testMbx, "From: Boss <boss@contoso.com>", 1), 403, "ErrorSendAsDenied",
			"The user account which was used to submit this request does not have the right to send mail on behalf of the specified sending account., Cannot submit message."},
		{"no recipients", tok, testMbx, "From: " + testMbx + "\r\nSubject: x\r\n\r\nHi.\r\n", 400, "ErrorInvalidRecipients", graphNoRecipients},
		{"bad MIME", tok, testMbx, "not a message at all", 400, "ErrorMimeContentInvalidBase64String", ""},
		{"too big", tok, testMbx, big, 413, "RequestEntityTooLarge", ""},
	} {
		r := sendMIME(t, e, c, tc.tok, tc.mailbox, tc.body)
		if r.status != tc.status || r.code != tc.code || (tc.msg != "" && r.msg != tc.msg) || r.header.Get("request-id") == "" {
			t.Errorf("%s: %d %s %q", tc.name, r.status, r.code, r.msg)
		}
		if tc.status == 401 && !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer ") {
			t.Errorf("%s: WWW-Authenticate %q", tc.name, r.header.Get("WWW-Authenticate"))
		}
	}
	r := graphDo(t, c, "POST", e.GraphURL()+"/v1.0/users/"+testMbx+"/sendMail", tok, "text/plain", []byte("!!not base64!!"))
	if r.status != 400 || r.code != "ErrorMimeContentInvalidBase64String" {
		t.Errorf("bad base64: %d %s", r.status, r.code)
	}
	if got := e.Delivered(); len(got) != 0 {
		t.Fatalf("refused requests delivered %d messages", len(got))
	}
	// SendAs granted on the SMTP side counts on Graph too.
	if r := sendMIME(t, e, c, tok, testMbx, strings.Replace(good, "From: "+testMbx, "From: shared@contoso.com", 1)); r.status != 202 {
		t.Errorf("granted send as: %d %s %s", r.status, r.code, r.msg)
	}
	if s := e.Stats(); s.GraphStatuses[413] != 1 || s.GraphStatuses[401] != 4 {
		t.Errorf("statuses %v", s.GraphStatuses)
	}
}

func TestGraphDoctorProbeAndJSON(t *testing.T) {
	e := graphEmu(t, Options{})
	c := e.HTTPClient()
	tok := tokenFor(t, e, e.GraphURL()+"/.default")
	u := e.GraphURL() + "/v1.0/users/" + testMbx + "/sendMail"
	r := graphDo(t, c, "POST", u, tok, "application/json", []byte(`{"message":{"subject":"x"},"saveToSentItems":false}`))
	if r.status != 400 || r.code != "ErrorInvalidRecipients" || r.msg != graphNoRecipients {
		t.Fatalf("doctor probe: %d %s %q", r.status, r.code, r.msg)
	}
	// The probe passes the access checks first: a bad token says so.
	if r := graphDo(t, c, "POST", u, "", "application/json", []byte(`{"message":{"subject":"x"}}`)); r.status != 401 {
		t.Errorf("probe without token: %d", r.status)
	}
	r = graphDo(t, c, "POST", u, tok, "application/json", []byte(`{"message":{"subject":"json","body":{"contentType":"Text","content":"Hi."},`+
		`"toRecipients":[{"emailAddress":{"address":"a@example.org"}}],"bccRecipients":[{"emailAddress":{"address":"b@example.org"}}]}}`))
	if r.status != 202 {
		t.Fatalf("JSON sendMail: %d %s", r.status, r.msg)
	}
	got := e.Delivered()
	if len(got) != 1 || strings.Join(got[0].Recipients, ",") != "a@example.org,b@example.org" || !bytes.Contains(got[0].Data, []byte("Subject: json")) {
		t.Fatalf("delivered %+v", got)
	}
}

func TestGraphConcurrencyLimit(t *testing.T) {
	e := graphEmu(t, Options{})
	c := e.HTTPClient()
	tok := tokenFor(t, e, graphScope)
	msg := "From: " + testMbx + "\r\nTo: a@example.org\r\nSubject: x\r\n\r\nHi.\r\n"
	arrived, release := e.HoldGraph()
	defer release()
	results := make(chan int, DefaultMaxGraphConcurrency)
	for range DefaultMaxGraphConcurrency {
		go func() {
			req, _ := http.NewRequest("POST", e.GraphURL()+"/v1.0/users/"+testMbx+"/sendMail",
				strings.NewReader(base64.StdEncoding.EncodeToString([]byte(msg))))
			req.Header.Set("Authorization", "Bearer "+tok)
			req.Header.Set("Content-Type", "text/plain")
			res, err := c.Do(req)
			if err != nil {
				results <- 0
				return
			}
			res.Body.Close()
			results <- res.StatusCode
		}()
	}
	for range DefaultMaxGraphConcurrency {
		if mb := <-arrived; mb != testMbx {
			t.Fatalf("held request for %q", mb)
		}
	}
	r := sendMIME(t, e, c, tok, testMbx, msg)
	if r.status != 429 || r.code != "ApplicationThrottled" || !strings.Contains(r.msg, "MailboxConcurrency") || r.header.Get("Retry-After") == "" {
		t.Fatalf("fifth concurrent request: %d %s %q Retry-After %q", r.status, r.code, r.msg, r.header.Get("Retry-After"))
	}
	release()
	for range DefaultMaxGraphConcurrency {
		if s := <-results; s != 202 {
			t.Errorf("held request answered %d", s)
		}
	}
	s := e.Stats()
	if s.MaxConcurrentGraphByMailbox[testMbx] != DefaultMaxGraphConcurrency {
		t.Errorf("max concurrent %v", s.MaxConcurrentGraphByMailbox)
	}
	if len(e.Delivered()) != DefaultMaxGraphConcurrency {
		t.Errorf("%d delivered", len(e.Delivered()))
	}
	// The slots are free again.
	if r := sendMIME(t, e, c, tok, testMbx, msg); r.status != 202 {
		t.Errorf("after release: %d", r.status)
	}
}

func TestGraphScriptedFaults(t *testing.T) {
	e := graphEmu(t, Options{})
	c := e.HTTPClient()
	tok := tokenFor(t, e, graphScope)
	msg := "From: " + testMbx + "\r\nTo: a@example.org\r\nSubject: x\r\n\r\nHi.\r\n"
	e.FailNextGraph(2, GraphFault{Status: 503, Code: "ServiceUnavailable", RetryAfter: 7})
	for i := range 2 {
		r := sendMIME(t, e, c, tok, testMbx, msg)
		if r.status != 503 || r.code != "ServiceUnavailable" || r.header.Get("Retry-After") != "7" {
			t.Fatalf("fault %d: %d %s %q", i, r.status, r.code, r.header.Get("Retry-After"))
		}
	}
	if r := sendMIME(t, e, c, tok, testMbx, msg); r.status != 202 {
		t.Fatalf("after the faults: %d", r.status)
	}
	e.FailNextGraph(1, GraphFault{})
	req, _ := http.NewRequest("POST", e.GraphURL()+"/v1.0/users/"+testMbx+"/sendMail", strings.NewReader("eA=="))
	if res, err := c.Do(req); err == nil {
		res.Body.Close()
		t.Fatalf("aborted request answered %d", res.StatusCode)
	}
	if s := e.Stats(); s.GraphStatuses[0] != 1 || s.GraphStatuses[503] != 2 || len(e.Delivered()) != 1 {
		t.Errorf("statuses %v, %d delivered", s.GraphStatuses, len(e.Delivered()))
	}
}
