package e2e

// Microsoft Graph end to end: the relay's listener, spool, scheduler,
// token sources and Graph transport (internal/service) against the
// emulator's Graph endpoint, checked the way an administrator would
// check a Graph mailbox before trusting it with the company's mail.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"math/rand/v2"
	"mime"
	"mime/multipart"
	"net/http"
	"net/mail"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/delivery"
	"github.com/oauthrelay/oauthrelay/internal/msemu"
	"github.com/oauthrelay/oauthrelay/internal/testkit"
	"github.com/oauthrelay/oauthrelay/oauth"
	"github.com/oauthrelay/oauthrelay/queue"
)

// graphMbx is the mailbox the Graph tests send as.
const graphMbx = "news@contoso.com"

// graphBox is a [[mailbox]] on the Graph transport of app "contoso",
// paced only by Graph's own limits.
func graphBox(addr string) testkit.Mailbox {
	return testkit.Mailbox{Address: addr, App: "contoso", Transport: "graph", MaxPerMinute: 6000}
}

// contosoApp is the relay's [[app]] for the emulator's secretApp.
func contosoApp() []testkit.App {
	return []testkit.App{{Name: "contoso", ClientID: secretApp, ClientSecret: clientSec}}
}

// statusOf is the scheduler's health view of mailbox.
func (r *testRelay) statusOf(mailbox string) delivery.MailboxStatus {
	if r.sched == nil {
		return delivery.MailboxStatus{}
	}
	for _, st := range r.sched.Status() {
		if strings.EqualFold(st.Mailbox, mailbox) {
			return st
		}
	}
	return delivery.MailboxStatus{}
}

// waitQueueEmpty waits until nothing is left to deliver and checks that
// nothing failed.
func (r *testRelay) waitQueueEmpty(ctx context.Context) {
	r.t.Helper()
	testkit.WaitFor(ctx, r.t, "an empty queue", func() bool { return r.queuedCount() == 0 })
	if f := r.ids(queue.Failed); len(f) != 0 {
		r.t.Errorf("messages failed: %v", f)
	}
}

// sameAddrs compares address lists as sets, ignoring case.
func sameAddrs(a, b []string) bool {
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

// afterReceived checks that data is sent with only the relay's Received
// field in front of it.
func afterReceived(t *testing.T, data, sent []byte) {
	t.Helper()
	i := bytes.Index(data, sent)
	if i < 0 || i+len(sent) != len(data) {
		t.Fatalf("the delivered bytes do not end with the bytes sent:\n%.600q", data)
	}
	if prefix := string(data[:i]); !strings.HasPrefix(prefix, "Received: ") || strings.Contains(prefix, "\r\n\r\n") || !strings.HasSuffix(prefix, "\r\n") {
		t.Errorf("unexpected prefix %q", prefix)
	}
}

// bigAttachment is a multipart/mixed message from from to to: a text part
// and an attachment of n pseudo-random bytes, base64 in 76-column lines.
func bigAttachment(from, to, text, name string, n int) (msg, att []byte) {
	att = make([]byte, n)
	rng := rand.NewChaCha8([32]byte{7})
	rng.Read(att)
	var b bytes.Buffer
	b.Grow(n*4/3 + n/38 + 4096)
	const boundary = "e2e-boundary-42"
	fmt.Fprintf(&b, "From: <%s>\r\nTo: <%s>\r\nSubject: big attachment\r\nMessage-ID: <big-%d@app.e2e.test>\r\nDate: Mon, 24 Nov 2025 10:00:00 +0000\r\nMIME-Version: 1.0\r\n", from, to, time.Now().UnixNano())
	fmt.Fprintf(&b, "Content-Type: multipart/mixed; boundary=\"%s\"\r\n\r\nThis is a multi-part message in MIME format.\r\n", boundary)
	fmt.Fprintf(&b, "--%s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n%s", boundary, text)
	fmt.Fprintf(&b, "\r\n--%s\r\nContent-Type: application/octet-stream; name=\"%s\"\r\nContent-Disposition: attachment; filename=\"%s\"\r\nContent-Transfer-Encoding: base64\r\n\r\n", boundary, name, name)
	line := make([]byte, 76)
	for rest := att; len(rest) > 0; {
		k := min(len(rest), 57)
		base64.StdEncoding.Encode(line, rest[:k])
		b.Write(line[:base64.StdEncoding.EncodedLen(k)])
		b.WriteString("\r\n")
		rest = rest[k:]
	}
	fmt.Fprintf(&b, "--%s--\r\n", boundary)
	return b.Bytes(), att
}

// textPart returns the raw content of the first text/plain part of a
// multipart message.
func textPart(t *testing.T, data []byte) []byte {
	t.Helper()
	msg, err := mail.ReadMessage(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	_, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil {
		t.Fatal(err)
	}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	for {
		p, err := mr.NextRawPart()
		if err != nil {
			t.Fatalf("no text/plain part: %v", err)
		}
		if mt, _, _ := mime.ParseMediaType(p.Header.Get("Content-Type")); mt == "text/plain" {
			b, err := io.ReadAll(p)
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
	}
}

// TestGraphDeliversSmallAndLarge: a Graph mailbox delivers a small message
// in one sendMail, byte for byte after the relay's Received field, and a
// ~41 MB multipart/mixed message (a 30 MB attachment, 40 MB of base64)
// through a draft whose attachment goes up in an upload session with
// Graph's chunk rules; the text and the attachment arrive byte-identical.
func TestGraphDeliversSmallAndLarge(t *testing.T) {
	ctx := ctxFor(t)
	emu := startEmulator(t, msemu.Options{})
	emu.ProvisionGraph(tenantID, secretApp, clientSec, graphMbx)
	r := startRelay(t, emu, relayOptions{
		Apps:      contosoApp(),
		Mailboxes: []testkit.Mailbox{graphBox(graphMbx)},
		Listen:    "max_message_size = 60000000",
	})

	small := []byte("From: News <" + graphMbx + ">\r\nTo: Alice <alice@fabrikam.example>\r\nSubject: small\r\nMessage-ID: <small-1@contoso.com>\r\n" +
		"Date: Mon, 24 Nov 2025 10:00:00 +0000\r\n\r\nHello, this goes byte for byte.\r\n.a leading dot\r\n\r\n")
	if err := r.sendRaw(ctx, graphMbx, []string{"alice@fabrikam.example"}, small); err != nil {
		t.Fatal(err)
	}
	msgs, err := emu.WaitDelivered(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	m := msgs[0]
	if m.Transport != msemu.TransportGraph || m.GraphPath != msemu.GraphSendMail || !strings.EqualFold(m.Mailbox, graphMbx) || m.AppID != secretApp {
		t.Errorf("small message came by %s/%s as %s (app %s), want graph sendMail as %s", m.Transport, m.GraphPath, m.Mailbox, m.AppID, graphMbx)
	}
	afterReceived(t, m.Data, small)
	if !sameAddrs(m.Recipients, []string{"alice@fabrikam.example"}) {
		t.Errorf("small message went to %v", m.Recipients)
	}

	const text = "The quarterly figures are attached.\r\n-- \r\nNews desk\r\n"
	big, att := bigAttachment(graphMbx, "bob@fabrikam.example", text, "figures.bin", 30<<20)
	t.Logf("large message: %d bytes, attachment %d bytes", len(big), len(att))
	if err := r.sendRaw(ctx, graphMbx, []string{"bob@fabrikam.example"}, big); err != nil {
		t.Fatalf("the relay refused the large message: %v", err)
	}
	msgs, err = emu.WaitDelivered(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	m = msgs[1]
	if m.Transport != msemu.TransportGraph || m.GraphPath != msemu.GraphDraft {
		t.Fatalf("large message came by %s/%s, want a Graph draft", m.Transport, m.GraphPath)
	}
	if !sameAddrs(m.Recipients, []string{"bob@fabrikam.example"}) {
		t.Errorf("large message went to %v", m.Recipients)
	}
	if got := textPart(t, m.Data); string(got) != text {
		t.Errorf("text part %q, want %q", got, text)
	}
	atts, err := m.Attachments()
	if err != nil {
		t.Fatal(err)
	}
	if got := atts["figures.bin"]; sha256.Sum256(got) != sha256.Sum256(att) {
		t.Errorf("attachment arrived as %d bytes that differ from the %d sent", len(got), len(att))
	}
	var up *msemu.Upload
	for i := range m.Uploads {
		if m.Uploads[i].Name == "figures.bin" {
			up = &m.Uploads[i]
		}
	}
	if up == nil {
		t.Fatalf("the attachment was not uploaded in a session: uploads %+v", m.Uploads)
	}
	total := 0
	for i, c := range up.Chunks {
		last := i == len(up.Chunks)-1
		if c <= 0 || c > msemu.GraphMaxChunk || (!last && c%msemu.GraphChunkUnit != 0) {
			t.Errorf("chunk %d of %d is %d bytes: want at most 4 MiB and, but for the last, a multiple of 320 KiB", i, len(up.Chunks), c)
		}
		total += c
	}
	if int64(total) != up.Size || up.Size != int64(len(att)) {
		t.Errorf("chunks add up to %d, session size %d, attachment %d", total, up.Size, len(att))
	}
	if n := emu.Stats().GraphStatuses[http.StatusRequestEntityTooLarge]; n != 0 {
		t.Errorf("%d requests were too large for Graph", n)
	}
	t.Logf("uploaded in %d chunks: %v", len(up.Chunks), up.Chunks)
	r.waitQueueEmpty(ctx)
}

// TestGraphEnvelopeDecides: Graph sends to the message's header, the
// relay to the SMTP envelope. An envelope-only recipient (RCPT TO, not in
// To or Cc, as with a Bcc) gets the message without showing up in the
// headers others see; an address in To that is not in the envelope gets
// nothing.
func TestGraphEnvelopeDecides(t *testing.T) {
	ctx := ctxFor(t)
	emu := startEmulator(t, msemu.Options{})
	emu.ProvisionGraph(tenantID, secretApp, clientSec, graphMbx)
	r := startRelay(t, emu, relayOptions{Apps: contosoApp(), Mailboxes: []testkit.Mailbox{graphBox(graphMbx)}})

	const body = "Minutes of the meeting.\r\n"
	msg := []byte("From: <" + graphMbx + ">\r\nTo: Alice <alice@fabrikam.example>, Ghost <ghost@fabrikam.example>\r\nCc: bob@fabrikam.example\r\n" +
		"Subject: minutes\r\nMessage-ID: <minutes@contoso.com>\r\n\r\n" + body)
	envelope := []string{"alice@fabrikam.example", "bob@fabrikam.example", "carol@fabrikam.example"}
	if err := r.sendRaw(ctx, graphMbx, envelope, msg); err != nil {
		t.Fatal(err)
	}
	msgs, err := emu.WaitDelivered(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	m := msgs[0]
	if !sameAddrs(m.Recipients, envelope) {
		t.Errorf("Graph delivered to %v, want exactly the envelope %v", m.Recipients, envelope)
	}
	if slices.ContainsFunc(m.Recipients, func(a string) bool { return strings.EqualFold(a, "ghost@fabrikam.example") }) {
		t.Errorf("ghost@, in To but not in the envelope, received the message")
	}
	parsed, err := mail.ReadMessage(bytes.NewReader(m.Data))
	if err != nil {
		t.Fatal(err)
	}
	// Exchange strips Bcc from the copies it delivers; every other field
	// is seen by the recipients.
	for k, vs := range parsed.Header {
		if strings.EqualFold(k, "Bcc") {
			continue
		}
		for _, v := range vs {
			if strings.Contains(strings.ToLower(v), "carol") {
				t.Errorf("the envelope-only recipient shows in %s: %q", k, v)
			}
		}
	}
	if bcc := parsed.Header.Get("Bcc"); !strings.Contains(strings.ToLower(bcc), "carol@fabrikam.example") {
		t.Errorf("carol@ should go as Bcc; Bcc is %q", bcc)
	}
	if got, _ := io.ReadAll(parsed.Body); string(got) != body {
		t.Errorf("body %q, want %q", got, body)
	}
	r.waitQueueEmpty(ctx)
}

// graphCall is one HTTP request the relay made to Graph.
type graphCall struct {
	path          string
	status        int
	start, answer time.Time
}

// graphWatch is the relay's HTTP transport, recording when each Graph
// request left and when its answer came back.
type graphWatch struct {
	base  http.RoundTripper
	graph string // Graph's host:port

	mu    sync.Mutex
	calls []graphCall
}

func (g *graphWatch) RoundTrip(req *http.Request) (*http.Response, error) {
	start := time.Now()
	resp, err := g.base.RoundTrip(req)
	if req.URL.Host == g.graph {
		c := graphCall{path: req.URL.Path, start: start, answer: time.Now()}
		if err == nil {
			c.status = resp.StatusCode
		}
		g.mu.Lock()
		g.calls = append(g.calls, c)
		g.mu.Unlock()
	}
	return resp, err
}

func (g *graphWatch) all() []graphCall {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.calls)
}

// TestGraphRetryAfterHonoured: a 429 with Retry-After: 5 holds the
// mailbox: the emulator sees no request for it until five seconds after
// the relay got the 429, and the message is delivered afterwards.
func TestGraphRetryAfterHonoured(t *testing.T) {
	ctx := ctxFor(t)
	emu := startEmulator(t, msemu.Options{})
	emu.ProvisionGraph(tenantID, secretApp, clientSec, graphMbx)
	gu, err := url.Parse(emu.GraphURL())
	if err != nil {
		t.Fatal(err)
	}
	watch := &graphWatch{base: emu.HTTPClient().Transport, graph: gu.Host}
	r := startRelay(t, emu, relayOptions{Apps: contosoApp(), Mailboxes: []testkit.Mailbox{graphBox(graphMbx)},
		HTTPClient: &http.Client{Transport: watch}})
	const wait = 5 * time.Second
	emu.FailNextGraph(1, msemu.GraphFault{Status: http.StatusTooManyRequests, Code: "ApplicationThrottled",
		Message: "Application is over its MailboxConcurrency limit.", RetryAfter: int(wait / time.Second)})
	r.mustSend(ctx, graphMbx, "alice@fabrikam.example", "throttled once")
	msgs, err := emu.WaitDelivered(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}

	// When the relay had the 429 in hand.
	var throttledAt time.Time
	for _, c := range watch.all() {
		if c.status == http.StatusTooManyRequests {
			throttledAt = c.answer
			break
		}
	}
	if throttledAt.IsZero() {
		t.Fatalf("the relay never got the 429: %+v", watch.all())
	}
	// Every request the emulator saw for the mailbox after the 429 (the
	// 429 itself is answered before authentication and is not listed)
	// came at least Retry-After later.
	st := emu.Stats()
	after := 0
	for _, g := range st.GraphTokens {
		if !strings.EqualFold(g.Mailbox, graphMbx) {
			continue
		}
		after++
		if gap := g.At.Sub(throttledAt); gap < wait {
			t.Errorf("a Graph request for %s arrived %s after the 429 with Retry-After: 5", graphMbx, gap)
		}
	}
	if after == 0 {
		t.Error("the emulator recorded no request after the 429")
	}
	if !msgs[0].At.After(throttledAt.Add(wait)) {
		t.Errorf("delivered %s after the 429", msgs[0].At.Sub(throttledAt))
	}
	if n := st.GraphStatuses[http.StatusTooManyRequests]; n != 1 {
		t.Errorf("%d answers of 429, want the one scripted", n)
	}
	if !strings.Contains(r.logs.String(), "throttled the mailbox; backing off") {
		t.Error("the throttle was not logged")
	}
	r.waitQueueEmpty(ctx)
}

// TestGraphAtMostFourConcurrent: forty messages at once for one Graph
// mailbox never have more than four Graph requests in flight (Graph's
// MailboxConcurrency), and do use all four. The emulator lets any number
// through, so that only the relay is what keeps to four.
func TestGraphAtMostFourConcurrent(t *testing.T) {
	ctx := ctxFor(t)
	emu := startEmulator(t, msemu.Options{MaxGraphConcurrency: -1})
	emu.ProvisionGraph(tenantID, secretApp, clientSec, graphMbx)
	r := startRelay(t, emu, relayOptions{Apps: contosoApp(), Mailboxes: []testkit.Mailbox{graphBox(graphMbx)}, NoDelivery: true})
	const n = 40
	for i := range n {
		r.mustSend(ctx, graphMbx, "alice@fabrikam.example", fmt.Sprintf("load %d", i))
	}
	// Hold every request until all the deliveries the relay has started
	// are parked in the emulator, so that the relay's limit, not its
	// speed, decides how many are in flight.
	arrived, release := emu.HoldGraph()
	defer release()
	r.startDelivery()
	held := 0
	testkit.WaitFor(ctx, t, "four Graph requests held, and all the relay's deliveries among them", func() bool {
		for {
			select {
			case <-arrived:
				held++
				continue
			default:
			}
			break
		}
		return held >= 4 && r.statusOf(graphMbx).Connections == held
	})
	release()
	if msgs, err := emu.WaitDelivered(ctx, n); err != nil {
		t.Fatalf("delivered %d of %d: %v", len(msgs), n, err)
	}
	checkGraphCapHeld(t, emu, graphMbx)
	r.waitQueueEmpty(ctx)
}

// TestGraphConnectionsReused: a hundred messages over one Graph mailbox
// ride a handful of TLS connections (at most one per concurrent request),
// not one each.
func TestGraphConnectionsReused(t *testing.T) {
	ctx := ctxFor(t)
	emu := startEmulator(t, msemu.Options{})
	emu.ProvisionGraph(tenantID, secretApp, clientSec, graphMbx)
	r := startRelay(t, emu, relayOptions{Apps: contosoApp(), Mailboxes: []testkit.Mailbox{graphBox(graphMbx)}})
	const n = 100
	for i := range n {
		r.mustSend(ctx, graphMbx, "alice@fabrikam.example", fmt.Sprintf("reuse %d", i))
	}
	if msgs, err := emu.WaitDelivered(ctx, n); err != nil {
		t.Fatalf("delivered %d of %d: %v", len(msgs), n, err)
	}
	st := emu.Stats()
	if st.GraphRequests < n {
		t.Errorf("%d Graph requests for %d messages", st.GraphRequests, n)
	}
	if st.GraphConnections < 1 || st.GraphConnections > 4 {
		t.Errorf("%d TLS connections to Graph for %d messages, want 1 to 4 (one per concurrent request at most)", st.GraphConnections, n)
	}
	t.Logf("%d messages, %d Graph requests, %d connections", n, st.GraphRequests, st.GraphConnections)
	r.waitQueueEmpty(ctx)
}

// readyz fetches /readyz.
func (r *testRelay) readyz(ctx context.Context) (int, string) {
	r.t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+r.svc.MetricsAddr().String()+"/readyz", nil)
	if err != nil {
		r.t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestGraphConfigFaultsKeepMailQueued: Graph refusing the relay's own
// setup keeps the mail queued without a DSN and says what to do: 403
// ErrorAccessDenied (no Mail.Send, or an RBAC scope that leaves the
// mailbox out) pauses the mailbox with a fix naming the grant; 403
// ErrorSendAsDenied (From not granted) holds that sender's mail with a fix
// naming Add-RecipientPermission while the mailbox's own mail goes on.
// /readyz answers 503 with the fix. Once the grant is made in Microsoft
// 365 and the relay reloaded, the mail goes.
func TestGraphConfigFaultsKeepMailQueued(t *testing.T) {
	const sendAs = "noreply@contoso.com"
	graphRoles := []string{msemu.RoleMailSend, msemu.RoleMailReadWrite}
	app := func(roles, scope []string) msemu.App {
		return msemu.App{TenantID: tenantID, ClientID: secretApp, Secrets: []string{clientSec}, Consent: true,
			ServicePrincipal: true, GraphRoles: roles, ScopedMailboxes: scope}
	}
	for _, tc := range []struct {
		name string
		// from is the message's sender (MAIL FROM and From:).
		from string
		// setup provisions the emulator with the fault; grant fixes it.
		setup, grant func(e *msemu.Emulator)
		code         string
		fix          []string
		// sender: the fault is the sender's (SendAs), not the mailbox's.
		sender bool
	}{
		{
			name: "app lacks Mail.Send",
			from: graphMbx,
			setup: func(e *msemu.Emulator) {
				e.Provision(tenantID, secretApp, clientSec, graphMbx) // SMTP only: no Graph permission
			},
			grant: func(e *msemu.Emulator) { e.AddApp(app(graphRoles, nil)) },
			code:  "ErrorAccessDenied",
			fix:   []string{"Mail.Send", "admin consent", "adminconsent?client_id=" + secretApp, "New-ManagementRoleAssignment"},
		},
		{
			name: "RBAC scope leaves the mailbox out",
			from: graphMbx,
			setup: func(e *msemu.Emulator) {
				e.ProvisionGraph(tenantID, secretApp, clientSec, graphMbx)
				e.AddApp(app(graphRoles, []string{"someone-else@contoso.com"}))
			},
			grant: func(e *msemu.Emulator) { e.AddApp(app(graphRoles, []string{"someone-else@contoso.com", graphMbx})) },
			code:  "ErrorAccessDenied",
			fix:   []string{"Mail.Send", "New-ManagementRoleAssignment -App", "-CustomResourceScope"},
		},
		{
			name:  "From not granted SendAs",
			from:  sendAs,
			setup: func(e *msemu.Emulator) { e.ProvisionGraph(tenantID, secretApp, clientSec, graphMbx) },
			grant: func(e *msemu.Emulator) {
				e.AddMailbox(msemu.Mailbox{Address: graphMbx, FullAccess: []string{secretApp}, SendAs: []string{sendAs}})
			},
			code:   "ErrorSendAsDenied",
			fix:    []string{"Add-RecipientPermission -Identity " + sendAs + " -Trustee " + graphMbx + " -AccessRights SendAs"},
			sender: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := ctxFor(t)
			emu := startEmulator(t, msemu.Options{})
			tc.setup(emu)
			box := graphBox(graphMbx)
			box.SendAs = []string{sendAs}
			r := startRelay(t, emu, relayOptions{Apps: contosoApp(), Mailboxes: []testkit.Mailbox{box}, Metrics: true})
			r.mustSend(ctx, tc.from, "alice@fabrikam.example", tc.name)

			var reason, fix string
			testkit.WaitFor(ctx, t, "the fault in the mailbox's status", func() bool {
				st := r.statusOf(graphMbx)
				if !tc.sender {
					reason, fix = st.Reason, st.Fix
					return st.ConfigFault && st.Paused
				}
				for _, f := range st.SenderFaults {
					if strings.EqualFold(f.Sender, tc.from) {
						reason, fix = f.Reply, f.Fix
						return true
					}
				}
				return false
			})
			if !strings.Contains(reason, "403") || !strings.Contains(reason, tc.code) {
				t.Errorf("reason %q, want Graph's 403 %s", reason, tc.code)
			}
			for _, want := range tc.fix {
				if !strings.Contains(fix, want) {
					t.Errorf("fix %q does not name %q", fix, want)
				}
			}
			testkit.WaitFor(ctx, t, "the message deferred", func() bool { return len(r.ids(queue.Deferred)) == 1 })
			code, body := r.readyz(ctx)
			if code != http.StatusServiceUnavailable || !strings.Contains(body, graphMbx) || !strings.Contains(body, fix) {
				t.Errorf("/readyz = %d %q, want 503 naming %s and the fix", code, body, graphMbx)
			}
			envs, _, err := r.spool.List(queue.Deferred)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range envs {
				for _, rc := range e.Recipients {
					if rc.State != queue.RcptPending {
						t.Errorf("recipient %s is %s, want pending", rc.Address, rc.State)
					}
				}
			}
			if len(emu.Delivered()) != 0 || len(r.ids(queue.Failed)) != 0 || len(r.ids(queue.Incoming))+len(r.ids(queue.Active)) != 0 {
				t.Fatalf("a configuration fault delivered, failed or bounced mail: %d delivered, failed %v", len(emu.Delivered()), r.ids(queue.Failed))
			}
			want := 1
			if tc.sender {
				// The mailbox itself is fine: its own mail goes on.
				if st := r.statusOf(graphMbx); st.Paused || st.ConfigFault {
					t.Errorf("a sender's missing SendAs paused the whole mailbox: %+v", st)
				}
				r.mustSend(ctx, graphMbx, "bob@fabrikam.example", "the mailbox's own mail")
				msgs, err := emu.WaitDelivered(ctx, 1)
				if err != nil || !strings.EqualFold(msgs[0].MailFrom, graphMbx) {
					t.Fatalf("the mailbox's own mail was not delivered during the sender's fault: %v %+v", err, msgs)
				}
				want = 2
			}

			// The admin makes the grant and reloads.
			tc.grant(emu)
			refused := emu.Stats().GraphStatuses[http.StatusForbidden]
			if !r.svc.Reload(r.path) {
				t.Fatal("reload refused")
			}
			testkit.WaitFor(ctx, t, "delivery after the grant and a reload", func() bool {
				if n := emu.Stats().GraphStatuses[http.StatusForbidden] - refused; n >= 3 {
					t.Fatalf("Graph still answered 403 %d times after the grant and a reload (%d token requests in all); the relay's status: %+v",
						n, emu.Stats().TokenRequests, r.statusOf(graphMbx))
				}
				return len(emu.Delivered()) == want
			})
			m := emu.Delivered()[want-1]
			if !sameAddrs(m.Recipients, []string{"alice@fabrikam.example"}) || !strings.EqualFold(m.MailFrom, tc.from) {
				t.Errorf("delivered %+v", m)
			}
			r.waitQueueEmpty(ctx)
			if st := r.statusOf(graphMbx); st.ConfigFault || st.Paused || len(st.SenderFaults) != 0 {
				t.Errorf("mailbox still faulted after the fix: %+v", st)
			}
			if code, body := r.readyz(ctx); code != http.StatusOK {
				t.Errorf("/readyz after the fix = %d %q", code, body)
			}
		})
	}
}

// TestOneTokenPerResource: an app serving an SMTP AUTH mailbox and a
// Graph mailbox at once asks the token endpoint once for Exchange and once
// for Graph, however many messages go (fifty each, all due at once).
func TestOneTokenPerResource(t *testing.T) {
	ctx := ctxFor(t)
	const smtpMbx = "helpdesk@contoso.com"
	emu := startEmulator(t, msemu.Options{MaxPerMinute: -1})
	emu.ProvisionGraph(tenantID, secretApp, clientSec, smtpMbx, graphMbx)
	r := startRelay(t, emu, relayOptions{Apps: contosoApp(), NoDelivery: true,
		Mailboxes: []testkit.Mailbox{{Address: smtpMbx, App: "contoso", MaxPerMinute: 6000}, graphBox(graphMbx)}})
	const n = 50
	for i := range n {
		r.mustSend(ctx, smtpMbx, "alice@fabrikam.example", fmt.Sprintf("smtp %d", i))
		r.mustSend(ctx, graphMbx, "alice@fabrikam.example", fmt.Sprintf("graph %d", i))
	}
	r.startDelivery()
	msgs, err := emu.WaitDelivered(ctx, 2*n)
	if err != nil {
		t.Fatalf("delivered %d of %d: %v", len(msgs), 2*n, err)
	}
	by := map[string]int{}
	for _, m := range msgs {
		by[m.Transport]++
	}
	if by[msemu.TransportSMTP] != n || by[msemu.TransportGraph] != n {
		t.Errorf("delivered by transport %v, want %d each", by, n)
	}
	st := emu.Stats()
	if got := st.TokenRequestsByClient[secretApp]; got != 2 {
		t.Errorf("%d token requests for 2×%d messages, want 2 (one for Exchange, one for Graph)", got, n)
	}
	// Which resource each token was for: exactly one of each.
	auds := map[string]int{}
	for _, tok := range r.rec.Tokens() {
		cl, err := oauth.ParseClaims(tok)
		if err != nil {
			t.Fatal(err)
		}
		auds[cl.Aud]++
	}
	if len(auds) != 2 || auds[strings.TrimSuffix(emu.GraphURL(), "/")] != 1 {
		t.Errorf("tokens handed out by audience %v, want one for Exchange and one for Graph (%s)", auds, emu.GraphURL())
	}
	for _, a := range append(st.AuthTokens, st.GraphTokens...) {
		if !a.OK {
			t.Errorf("token refused for %s: %s", a.Mailbox, a.Reply)
		}
	}
	r.waitQueueEmpty(ctx)
}
