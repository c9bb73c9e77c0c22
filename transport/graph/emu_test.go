package graph

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/mail"
	"net/textproto"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/oauthrelay/oauthrelay/config"
	"github.com/oauthrelay/oauthrelay/internal/msemu"
	"github.com/oauthrelay/oauthrelay/internal/msemu/emutest"
	"github.com/oauthrelay/oauthrelay/internal/testkit"
	"github.com/oauthrelay/oauthrelay/oauth"
	"github.com/oauthrelay/oauthrelay/transport"
)

const (
	tenantID = "8d5d2a5b-3f0e-4c1a-9a59-2c1f5e0b7a11"
	clientID = "3b9f1c2e-7a44-4d0e-b1a2-6f0c9e8d7b55"
	secret   = "Qx8~secret.value_with+chars"
	mbx      = "helpdesk@contoso.com"
)

// rig is the Graph transport wired to an emulator, as internal/service
// wires it to Microsoft: one Transport, tokens from an oauth.Source.
type rig struct {
	emu  *msemu.Emulator
	tr   *Transport
	app  *config.App
	mb   *config.Mailbox
	src  *oauth.Source
	logs *testkit.SyncBuffer
}

func newRig(t testing.TB) *rig {
	t.Helper()
	emu := emutest.Start(t, msemu.Options{})
	emu.ProvisionGraph(tenantID, clientID, secret, mbx)
	log, buf := testkit.DebugLogger(t)
	src, err := oauth.NewSource(oauth.AppSettings{Name: "contoso", TenantID: tenantID, ClientID: clientID, ClientSecret: secret,
		Authority: emu.Authority(), Scope: emu.GraphURL() + "/.default", RootCAs: emu.CertPool()}, oauth.Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	app := &config.App{Name: "contoso", TenantID: tenantID, ClientID: clientID, Authority: emu.Authority(), GraphURL: emu.GraphURL()}
	tokens := func(name string, r transport.Resource) (transport.TokenSource, error) {
		if name != "contoso" || r != transport.Graph {
			return nil, fmt.Errorf("tokens asked for app %q resource %q", name, r)
		}
		return src, nil
	}
	tr := newTransport(transport.Deps{Tokens: tokens, RootCAs: emu.CertPool(), Logger: log})
	return &rig{emu: emu, tr: tr, app: app, src: src, logs: buf,
		mb: &config.Mailbox{Address: mbx, App: "contoso", AppRef: app, Transport: config.TransportGraph}}
}

// deliver makes one attempt of msg (a file in the spool, read in passes).
func (r *rig) deliver(t testing.TB, msg []byte, rcpts ...string) transport.Result {
	t.Helper()
	path := filepath.Join(t.TempDir(), "msg.eml")
	if err := os.WriteFile(path, msg, 0o600); err != nil {
		t.Fatal(err)
	}
	return r.deliverFile(t, path, rcpts...)
}

func (r *rig) deliverFile(t testing.TB, path string, rcpts ...string) transport.Result {
	t.Helper()
	body := func() (io.ReadCloser, int64, error) {
		f, err := os.Open(path)
		if err != nil {
			return nil, 0, err
		}
		fi, err := f.Stat()
		if err != nil {
			f.Close()
			return nil, 0, err
		}
		return f, fi.Size(), nil
	}
	c := r.tr.NewConn(mbx, nil)
	defer c.Close()
	return c.Deliver(context.Background(), &transport.Attempt{Config: config.Defaults(), Mailbox: r.mb, ID: "Q1", From: mbx, Recipients: rcpts, Body: body})
}

func delivered(t *testing.T, res transport.Result, rcpts ...string) {
	t.Helper()
	if res.Msg != nil {
		t.Fatalf("not delivered: %+v", *res.Msg)
	}
	for _, rc := range rcpts {
		if v, ok := res.Rcpts[rc]; !ok || v.Kind != transport.Delivered || !strings.HasPrefix(v.Reply, "202 Accepted (Graph") || !strings.Contains(v.Reply, "request-id ") {
			t.Fatalf("recipient %s: %+v (%v)", rc, v, ok)
		}
	}
}

func only(t *testing.T, emu *msemu.Emulator) msemu.Message {
	t.Helper()
	d := emu.Delivered()
	if len(d) != 1 {
		t.Fatalf("%d messages delivered, want 1", len(d))
	}
	return d[0]
}

func sameSet(a, b []string) bool {
	norm := func(l []string) []string {
		out := make([]string, len(l))
		for i, s := range l {
			out[i] = strings.ToLower(s)
		}
		slices.Sort(out)
		return out
	}
	return slices.Equal(norm(a), norm(b))
}

const small = "From: Help Desk <helpdesk@contoso.com>\r\nTo: Alice <alice@fabrikam.example>\r\nCc: bob@fabrikam.example\r\nSubject: small\r\nMessage-ID: <small-1@contoso.com>\r\n\r\nHello, this goes byte for byte.\r\n"

func TestSmallMessageByteIdentical(t *testing.T) {
	r := newRig(t)
	res := r.deliver(t, []byte(small), "alice@fabrikam.example", "bob@fabrikam.example")
	delivered(t, res, "alice@fabrikam.example", "bob@fabrikam.example")
	m := only(t, r.emu)
	if string(m.Data) != small || m.GraphPath != msemu.GraphSendMail || res.Note != "" {
		t.Fatalf("path %s note %q data:\n%q", m.GraphPath, res.Note, m.Data)
	}
	if !sameSet(m.Recipients, []string{"alice@fabrikam.example", "bob@fabrikam.example"}) {
		t.Fatalf("recipients %q", m.Recipients)
	}
}

// One Transport keeps its TLS connection: ten messages, one handshake.
func TestConnectionReuse(t *testing.T) {
	r := newRig(t)
	for range 10 {
		delivered(t, r.deliver(t, []byte(small), "alice@fabrikam.example", "bob@fabrikam.example"))
	}
	if s := r.emu.Stats(); s.GraphConnections != 1 || s.GraphRequests != 10 {
		t.Fatalf("%d connections for %d requests", s.GraphConnections, s.GraphRequests)
	}
}

func TestEnvelopeDecides(t *testing.T) {
	r := newRig(t)
	// carol is only in the envelope; bob is in Cc but not in this
	// attempt's envelope (delivered by an earlier attempt).
	res := r.deliver(t, []byte(small), "alice@fabrikam.example", "Carol@Fabrikam.example")
	delivered(t, res, "alice@fabrikam.example", "Carol@Fabrikam.example")
	m := only(t, r.emu)
	if !sameSet(m.Recipients, []string{"alice@fabrikam.example", "carol@fabrikam.example"}) {
		t.Fatalf("Graph delivered to %q", m.Recipients)
	}
	msg, err := mail.ReadMessage(bytes.NewReader(m.Data))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(strings.ToLower(msg.Header.Get("To")+msg.Header.Get("Cc")), "carol") || !strings.Contains(msg.Header.Get("Bcc"), "Carol@Fabrikam.example") {
		t.Fatalf("carol must be Bcc only: To %q Cc %q Bcc %q", msg.Header.Get("To"), msg.Header.Get("Cc"), msg.Header.Get("Bcc"))
	}
	if !strings.Contains(res.Note, "Carol@Fabrikam.example") || !strings.Contains(res.Note, "bob@fabrikam.example") {
		t.Fatalf("note %q", res.Note)
	}
	if l := r.logs.String(); !strings.Contains(l, "queue_id=Q1") || !strings.Contains(l, "recipients reconciled") {
		t.Fatalf("no log line of the rewrite:\n%s", l)
	}
	if body, _ := io.ReadAll(msg.Body); string(body) != "Hello, this goes byte for byte.\r\n" {
		t.Fatalf("body %q", body)
	}
}

func TestThrottleWait(t *testing.T) {
	r := newRig(t)
	r.emu.FailNextGraph(1, msemu.GraphFault{Status: 429, Code: "ApplicationThrottled", Message: "Application is over its MailboxConcurrency limit.", RetryAfter: 7})
	res := r.deliver(t, []byte(small), "alice@fabrikam.example")
	if res.Msg == nil || res.Msg.Kind != transport.Throttled || res.Msg.Wait.Seconds() != 7 || res.Msg.AppWide {
		t.Fatalf("%+v", res.Msg)
	}
	if len(r.emu.Delivered()) != 0 {
		t.Fatal("delivered although throttled")
	}
}

// A refused token is replaced once; a second refusal is the admin's.
func TestTokenRefusedOnce(t *testing.T) {
	r := newRig(t)
	r.emu.FailNextGraph(1, msemu.GraphFault{Status: 401, Code: "InvalidAuthenticationToken", Message: "Access token has expired or is not yet valid."})
	delivered(t, r.deliver(t, []byte(small), "alice@fabrikam.example"), "alice@fabrikam.example")
	if n := r.src.Status().Requests; n != 2 {
		t.Fatalf("%d token requests, want 2 (the refused one and its replacement)", n)
	}
	r.emu.FailNextGraph(2, msemu.GraphFault{Status: 401, Code: "InvalidAuthenticationToken", Message: "Access token validation failure. Invalid audience."})
	res := r.deliver(t, []byte(small), "alice@fabrikam.example")
	if res.Msg == nil || res.Msg.Kind != transport.ConfigFault || !strings.Contains(res.Msg.Fix, "graph_scope") {
		t.Fatalf("%+v", res.Msg)
	}
	if n := r.src.Status().Requests; n != 3 {
		t.Fatalf("%d token requests, want 3 (one more, and no second retry)", n)
	}
}

func TestConfigFaults(t *testing.T) {
	consent := "/" + tenantID + "/adminconsent?client_id=" + clientID
	for _, tc := range []struct {
		name  string
		setup func(e *msemu.Emulator)
		msg   string
		fix   []string
		kind  transport.Kind
	}{
		{"no Mail.Send", func(e *msemu.Emulator) {
			e.AddApp(msemu.App{TenantID: tenantID, ClientID: clientID, Secrets: []string{secret}, Consent: true, ServicePrincipal: true})
		}, small, []string{"Mail.Send", consent}, transport.ConfigFault},
		{"send as denied", nil, strings.Replace(small, "helpdesk@contoso.com", "billing@contoso.com", 1),
			[]string{"Add-RecipientPermission -Identity billing@contoso.com -Trustee " + mbx + " -AccessRights SendAs"}, transport.SenderFault},
		{"unlicensed mailbox", func(e *msemu.Emulator) {
			e.AddMailbox(msemu.Mailbox{Address: mbx, FullAccess: []string{clientID}, Unlicensed: true})
		}, small, []string{"license", tenantID}, transport.ConfigFault},
		{"mailbox out of scope", func(e *msemu.Emulator) {
			e.AddApp(msemu.App{TenantID: tenantID, ClientID: clientID, Secrets: []string{secret}, Consent: true, ServicePrincipal: true,
				GraphRoles: []string{msemu.RoleMailSend, msemu.RoleMailReadWrite}, ScopedMailboxes: []string{"other@contoso.com"}})
		}, small, []string{"New-ManagementRoleAssignment -App ", `-Role "Application Mail.Send"`}, transport.ConfigFault},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t)
			if tc.setup != nil {
				tc.setup(r.emu)
			}
			res := r.deliver(t, []byte(tc.msg), "alice@fabrikam.example")
			if res.Msg == nil || res.Msg.Kind != tc.kind {
				t.Fatalf("%+v", res.Msg)
			}
			for _, f := range tc.fix {
				if !strings.Contains(res.Msg.Fix, f) {
					t.Fatalf("fix %q lacks %q", res.Msg.Fix, f)
				}
			}
			if strings.Contains(res.Msg.Fix, "<service principal id>") {
				t.Fatalf("the token's oid should fill the fix: %q", res.Msg.Fix)
			}
		})
	}
}

// bigMessage writes a multipart/mixed message with a text part and an
// attachment of n random bytes (base64 in 76-column lines, as mailers
// write it), and returns the text and the attachment.
func bigMessage(t testing.TB, path string, n int) (text string, att []byte) {
	t.Helper()
	att = make([]byte, n)
	rand.Read(att)
	text = "The report is attached.\r\n"
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	mw := multipart.NewWriter(f)
	fmt.Fprintf(f, "From: helpdesk@contoso.com\r\nTo: alice@fabrikam.example\r\nSubject: big\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=%s\r\n\r\n", mw.Boundary())
	w, _ := mw.CreatePart(textproto.MIMEHeader{"Content-Type": {"text/plain; charset=utf-8"}})
	io.WriteString(w, text)
	w, _ = mw.CreatePart(textproto.MIMEHeader{"Content-Type": {"application/pdf"}, "Content-Transfer-Encoding": {"base64"},
		"Content-Disposition": {mime.FormatMediaType("attachment", map[string]string{"filename": "report.pdf"})}})
	enc := base64.StdEncoding.EncodeToString(att)
	for len(enc) > 76 {
		io.WriteString(w, enc[:76]+"\r\n")
		enc = enc[76:]
	}
	io.WriteString(w, enc+"\r\n")
	if err := mw.Close(); err != nil {
		t.Fatal(err)
	}
	return text, att
}

// parts decodes the parts of a delivered multipart message.
func parts(t *testing.T, data []byte) map[string][]byte {
	t.Helper()
	msg, err := mail.ReadMessage(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	_, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		var r io.Reader = p
		if strings.EqualFold(p.Header.Get("Content-Transfer-Encoding"), "base64") {
			r = base64.NewDecoder(base64.StdEncoding, p)
		}
		b, err := io.ReadAll(r)
		if err != nil {
			t.Fatal(err)
		}
		name := p.FileName()
		if name == "" {
			name = "text"
		}
		out[name] = b
	}
}

func TestLargeMessageUploads(t *testing.T) {
	if testing.Short() {
		t.Skip("40 MB through the upload path")
	}
	r := newRig(t)
	path := filepath.Join(t.TempDir(), "big.eml")
	text, att := bigMessage(t, path, 30_000_000) // 40.5 MB spooled
	res := r.deliverFile(t, path, "alice@fabrikam.example", "carol@fabrikam.example")
	delivered(t, res, "alice@fabrikam.example", "carol@fabrikam.example")
	m := only(t, r.emu)
	if m.GraphPath != msemu.GraphDraft || len(m.Uploads) != 1 {
		t.Fatalf("path %s, %d uploads", m.GraphPath, len(m.Uploads))
	}
	u := m.Uploads[0]
	if u.Name != "report.pdf" || u.ContentType != "application/pdf" || u.Size != int64(len(att)) {
		t.Fatalf("upload %+v", u)
	}
	for i, c := range u.Chunks {
		if c > 4<<20 || (i < len(u.Chunks)-1 && c%(320<<10) != 0) {
			t.Fatalf("chunk %d is %d bytes", i, c)
		}
	}
	got := parts(t, m.Data)
	if string(got["text"]) != text || !bytes.Equal(got["report.pdf"], att) {
		t.Fatalf("text %q, attachment %d bytes (equal %v)", got["text"], len(got["report.pdf"]), bytes.Equal(got["report.pdf"], att))
	}
	if !sameSet(m.Recipients, []string{"alice@fabrikam.example", "carol@fabrikam.example"}) {
		t.Fatalf("recipients %q", m.Recipients)
	}
}

// A failure half-way leaves no draft behind, and the message goes whole
// on the next attempt.
func TestLargeMessageFailureDeletesDraft(t *testing.T) {
	r := newRig(t)
	path := filepath.Join(t.TempDir(), "big.eml")
	_, att := bigMessage(t, path, 5_000_000)
	// The draft and the upload session go through; the first chunk
	// meets a 503.
	plain := r.tr.client.Transport
	r.tr.client.Transport = &afterN{next: plain, n: 2, fail: func() {
		r.emu.FailNextGraph(1, msemu.GraphFault{Status: 503, Code: "serviceNotAvailable"})
	}}
	res := r.deliverFile(t, path, "alice@fabrikam.example")
	r.tr.client.Transport = plain
	if res.Msg == nil || res.Msg.Kind != transport.Transient || !strings.HasPrefix(res.Msg.Reply, "503 serviceNotAvailable") {
		t.Fatalf("%+v", res.Msg)
	}
	if s := r.emu.Stats(); s.GraphStatuses[204] != 1 || s.GraphStatuses[503] != 1 || s.GraphRequests != 4 {
		t.Fatalf("%d requests, statuses %v: want draft, session, failed chunk, and the draft deleted (204)", s.GraphRequests, s.GraphStatuses)
	}
	delivered(t, r.deliverFile(t, path, "alice@fabrikam.example"), "alice@fabrikam.example")
	if got := parts(t, only(t, r.emu).Data); !bytes.Equal(got["report.pdf"], att) {
		t.Fatal("attachment differs after the retry")
	}
}

// An upload URL carries its credential in the query: a failed PUT must
// not put it into the reply that goes into logs and the spool.
func TestUploadURLNotInErrors(t *testing.T) {
	r := newRig(t)
	path := filepath.Join(t.TempDir(), "big.eml")
	bigMessage(t, path, 4_000_000)
	plain := r.tr.client.Transport
	r.tr.client.Transport = &afterN{next: plain, n: 2, fail: func() {
		r.emu.FailNextGraph(1, msemu.GraphFault{Status: 0}) // the connection drops
	}}
	res := r.deliverFile(t, path, "alice@fabrikam.example")
	r.tr.client.Transport = plain
	if res.Msg == nil || res.Msg.Kind != transport.Transient {
		t.Fatalf("%+v", res.Msg)
	}
	if !strings.Contains(res.Msg.Reply, "AttachmentSessions") || strings.Contains(res.Msg.Reply, "authtoken") {
		t.Fatalf("reply %q", res.Msg.Reply)
	}
}

// afterN lets n requests through, then calls fail before the next.
type afterN struct {
	next http.RoundTripper
	n    int
	fail func()
}

func (a *afterN) RoundTrip(req *http.Request) (*http.Response, error) {
	if a.n == 0 {
		a.fail()
	}
	a.n--
	return a.next.RoundTrip(req)
}

// Drafts need Mail.ReadWrite: without it, the fix says so.
func TestLargeMessageWithoutReadWrite(t *testing.T) {
	r := newRig(t)
	r.emu.AddApp(msemu.App{TenantID: tenantID, ClientID: clientID, Secrets: []string{secret}, Consent: true, ServicePrincipal: true,
		GraphRoles: []string{msemu.RoleMailSend}})
	path := filepath.Join(t.TempDir(), "big.eml")
	bigMessage(t, path, 4_000_000)
	res := r.deliverFile(t, path, "alice@fabrikam.example")
	if res.Msg == nil || res.Msg.Kind != transport.ConfigFault || !strings.Contains(res.Msg.Fix, "Mail.ReadWrite") {
		t.Fatalf("%+v", res.Msg)
	}
}

func TestProbe(t *testing.T) {
	r := newRig(t)
	deps := r.tr.deps
	v, claims, err := Probe(context.Background(), deps, r.app, mbx)
	if err != nil || v.Kind != transport.Delivered || !strings.Contains(v.Reply, "ErrorInvalidRecipients") || !claims.HasRole(RoleMailSend) {
		t.Fatalf("%v %+v roles %q", err, v, claims.Roles)
	}
	if len(r.emu.Delivered()) != 0 {
		t.Fatal("the probe sent a message")
	}
	r.emu.AddApp(msemu.App{TenantID: tenantID, ClientID: clientID, Secrets: []string{secret}, Consent: true, ServicePrincipal: true})
	r.src.Invalidate(mustToken(t, r.src))
	v, claims, err = Probe(context.Background(), deps, r.app, mbx)
	if err == nil || v.Kind != transport.ConfigFault || !strings.Contains(v.Fix, "adminconsent?client_id="+clientID) || claims.HasRole(RoleMailSend) {
		t.Fatalf("%v %+v roles %q", err, v, claims.Roles)
	}
}

func mustToken(t *testing.T, src *oauth.Source) string {
	t.Helper()
	tok, err := src.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return tok.AccessToken
}

// A 413 on sendMail sends the message again through a draft.
func TestTooLargeFallsBackToDraft(t *testing.T) {
	r := newRig(t)
	path := filepath.Join(t.TempDir(), "mid.eml")
	_, att := bigMessage(t, path, 1_000_000)
	r.emu.FailNextGraph(1, msemu.GraphFault{Status: 413, Code: "RequestEntityTooLarge", Message: "The maximum request length supported is 4MB."})
	delivered(t, r.deliverFile(t, path, "alice@fabrikam.example"), "alice@fabrikam.example")
	m := only(t, r.emu)
	if m.GraphPath != msemu.GraphDraft || len(m.Uploads) != 1 || !bytes.Equal(parts(t, m.Data)["report.pdf"], att) {
		t.Fatalf("path %s, %d uploads", m.GraphPath, len(m.Uploads))
	}
}

// A big message with nothing to split off cannot go, now or later.
func TestTooLargeSinglePart(t *testing.T) {
	r := newRig(t)
	msg := "From: helpdesk@contoso.com\r\nTo: alice@fabrikam.example\r\nSubject: huge\r\n\r\n" + strings.Repeat("x", MaxSimple)
	res := r.deliver(t, []byte(msg), "alice@fabrikam.example")
	if res.Msg == nil || res.Msg.Kind != transport.Permanent || !strings.Contains(res.Msg.Reply, "multipart/mixed") {
		t.Fatalf("%+v", res.Msg)
	}
	if s := r.emu.Stats(); s.GraphRequests != 0 {
		t.Fatalf("%d requests for a message that cannot go", s.GraphRequests)
	}
}
