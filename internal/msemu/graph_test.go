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
	status, body := postToken(t, e, testTenant, url.Values{
		"grant_type": {"client_credentials"}, "client_id": {testClient},
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
