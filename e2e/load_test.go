package e2e

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/oauthrelay/oauthrelay/internal/msemu"
	"github.com/oauthrelay/oauthrelay/internal/testkit"
	"github.com/oauthrelay/oauthrelay/queue"
)

// loadMessage is a small message with a unique subject and lines that
// need dot-stuffing on every hop.
func loadMessage(from, subject string) []byte {
	return []byte("From: " + from + "\r\nTo: someone@example.org\r\nSubject: " + subject +
		"\r\nMessage-ID: <" + strings.ReplaceAll(subject, " ", "-") + "@test>\r\nDate: Mon, 24 Nov 2025 10:00:00 +0000\r\n\r\nHello.\r\n.leading dot\r\n..two dots\r\nlast line\r\n")
}

// TestSixtyMessagesSixClients: sixty messages from six concurrent clients
// through the relay's listener, two envelope recipients each, sent as an
// address the mailbox may send as: all delivered with both recipients,
// each body byte-identical to what the client sent (the listener only
// prepends its Received field); never more than 3 connections per
// mailbox, connections carry more than one message, and one token
// request serves them all.
func TestSixtyMessagesSixClients(t *testing.T) {
	ctx := ctxFor(t)
	const (
		mailbox = "helpdesk@contoso.com"
		sendAs  = "noreply@contoso.com"
	)
	// The emulator counts real minutes; the relay's own pacing is not
	// what this test is about.
	emu := startEmulator(t, msemu.Options{MaxPerMinute: -1})
	emu.Provision(tenantID, secretApp, clientSec, mailbox)
	emu.AddMailbox(msemu.Mailbox{Address: mailbox, FullAccess: []string{secretApp}, SendAs: []string{sendAs}})
	r := startRelay(t, emu, relayOptions{
		Apps: []testkit.App{{Name: "contoso", ClientID: secretApp, ClientSecret: clientSec}},
		Mailboxes: []testkit.Mailbox{{Address: mailbox, App: "contoso", SendAs: []string{sendAs},
			MaxPerMinute: 600, MaxConnections: 3}},
	})

	const clients, perClient = 6, 10
	sent := map[string][]byte{} // subject → bytes sent
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl, err := smtp.Dial(r.addr)
			if err != nil {
				errs <- err
				return
			}
			defer cl.Close()
			if err := cl.Hello("app.test"); err != nil {
				errs <- err
				return
			}
			for i := range perClient {
				subject := fmt.Sprintf("client %d message %d", c, i)
				body := loadMessage(sendAs, subject)
				// Give each message some bulk so DATA overlaps.
				body = append(body, bytes.Repeat([]byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\r\n"), 200)...)
				if err := cl.Mail(sendAs, nil); err != nil {
					errs <- err
					return
				}
				for _, rc := range []string{fmt.Sprintf("to%d-%d@example.org", c, i), fmt.Sprintf("cc%d-%d@example.net", c, i)} {
					if err := cl.Rcpt(rc, nil); err != nil {
						errs <- err
						return
					}
				}
				w, err := cl.Data()
				if err != nil {
					errs <- err
					return
				}
				if _, err := w.Write(body); err != nil {
					errs <- err
					return
				}
				if err := w.Close(); err != nil {
					errs <- err
					return
				}
				mu.Lock()
				sent[subject] = body
				mu.Unlock()
			}
			cl.Quit()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("client: %v", err)
	}

	msgs, err := emu.WaitDelivered(ctx, clients*perClient)
	if err != nil {
		t.Fatalf("delivered %d of %d: %v", len(msgs), clients*perClient, err)
	}
	testkit.WaitFor(ctx, t, "an empty spool", func() bool { return r.queuedCount() == 0 })
	seen := map[string]bool{}
	perConn := map[int]int{}
	for _, m := range msgs {
		perConn[m.ConnID]++
		var subject string
		for s := range sent {
			if bytes.Contains(m.Data, []byte("Subject: "+s+"\r\n")) {
				subject = s
			}
		}
		if subject == "" || seen[subject] {
			t.Errorf("unknown or duplicate message delivered: %.200q", m.Data)
			continue
		}
		seen[subject] = true
		want := sent[subject]
		i := bytes.Index(m.Data, want)
		if i < 0 || i+len(want) != len(m.Data) {
			t.Errorf("%s: delivered bytes do not end with the bytes sent", subject)
			continue
		}
		// Only our Received field may precede them.
		prefix := string(m.Data[:i])
		if !strings.HasPrefix(prefix, "Received: ") || strings.Contains(prefix, "\r\n\r\n") || !strings.HasSuffix(prefix, "\r\n") {
			t.Errorf("%s: unexpected prefix %q", subject, prefix)
		}
		var c, n int
		fmt.Sscanf(subject, "client %d message %d", &c, &n)
		if got, wantR := strings.Join(m.Rcpts, ","), fmt.Sprintf("to%d-%d@example.org,cc%d-%d@example.net", c, n, c, n); got != wantR {
			t.Errorf("%s: recipients %s, want %s", subject, got, wantR)
		}
		if m.MailFrom != sendAs {
			t.Errorf("%s: MAIL FROM %s", subject, m.MailFrom)
		}
		if !strings.EqualFold(m.Mailbox, mailbox) {
			t.Errorf("%s: sent as mailbox %s, want %s", subject, m.Mailbox, mailbox)
		}
	}
	if len(seen) != clients*perClient {
		t.Errorf("%d distinct messages delivered, want %d", len(seen), clients*perClient)
	}
	if f := r.ids(queue.Failed); len(f) != 0 {
		t.Errorf("messages failed: %v", f)
	}

	stats := emu.Stats()
	if max := stats.MaxConcurrentByMailbox[mailbox]; max > 3 || max < 1 {
		t.Errorf("at most %d concurrent connections for the mailbox, want 1..3", max)
	}
	if stats.Connections >= int64(len(msgs)) {
		t.Errorf("%d connections for %d messages: connections are not reused", stats.Connections, len(msgs))
	}
	for _, a := range stats.AuthTokens {
		if !a.OK {
			t.Errorf("AUTH refused: %+v", a)
		}
		if a.Remaining < 10*time.Minute {
			t.Errorf("token presented with %s left", a.Remaining)
		}
	}
	if stats.TokenRequests != 1 {
		t.Errorf("%d token requests, want 1", stats.TokenRequests)
	}
	multi := 0
	for _, n := range perConn {
		if n > 1 {
			multi++
		}
	}
	if multi == 0 {
		t.Errorf("no connection carried more than one message: %v", perConn)
	}
	t.Logf("%d messages over %d connections (max %d concurrent), per connection %v", len(msgs), stats.Connections, stats.MaxConcurrentByMailbox[mailbox], perConn)
}
