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
	"slices"
	"strings"
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

// startGraphRelay starts an emulator with graphMbx provisioned for Graph
// and a relay that sends as it over Graph (with noDelivery, only spools).
func startGraphRelay(t *testing.T, emuOpts msemu.Options, noDelivery bool) (*msemu.Emulator, *testRelay) {
	t.Helper()
	emu := startEmulator(t, emuOpts)
	emu.ProvisionGraph(tenantID, secretApp, clientSec, graphMbx)
	r := startRelay(t, emu, relayOptions{Apps: contosoApp(), Mailboxes: []testkit.Mailbox{graphBox(graphMbx)}, NoDelivery: noDelivery})
	return emu, r
}

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
	emu, r := startGraphRelay(t, msemu.Options{}, false)

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
