package delivery

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/oauthrelay/oauthrelay/internal/msemu"
	"github.com/oauthrelay/oauthrelay/relay"
)

// Sixty messages from six concurrent clients through the real listener,
// two envelope recipients each: all delivered with both recipients, each
// body byte-identical to what the client sent (the listener only prepends
// its Received field); never more than 3 connections per mailbox, and
// connections carry more than one message.
func TestSixtyMessagesSixClients(t *testing.T) {
	h := newHarness(t, hopts{})
	srv := relay.NewServer(h.cfg, h.spool, relay.ServerOptions{Logger: slog.New(slog.NewTextHandler(h.logs, nil))})
	plain, _, err := srv.Listeners()
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(plain, nil)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})

	const clients, perClient = 6, 10
	sent := map[string][]byte{} // subject → bytes sent
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			cl, err := smtp.Dial(plain.Addr().String())
			if err != nil {
				errs <- err
				return
			}
			defer cl.Close()
			if err := cl.Hello("app.test"); err != nil {
				errs <- err
				return
			}
			for i := 0; i < perClient; i++ {
				subject := fmt.Sprintf("client %d message %d", c, i)
				body := testMessage(tSendAs, subject)
				// Give each message some bulk so DATA overlaps.
				body = append(body, bytes.Repeat([]byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\r\n"), 200)...)
				if err := cl.Mail(tSendAs, nil); err != nil {
					errs <- err
					return
				}
				for _, r := range []string{fmt.Sprintf("to%d-%d@example.org", c, i), fmt.Sprintf("cc%d-%d@example.net", c, i)} {
					if err := cl.Rcpt(r, nil); err != nil {
						errs <- err
						return
					}
				}
				w, err := cl.Data()
				if err != nil {
					errs <- err
					return
				}
				w.Write(body)
				if err := w.Close(); err != nil {
					errs <- err
					return
				}
				mu.Lock()
				sent[subject] = body
				mu.Unlock()
			}
			cl.Quit()
		}(c)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("client: %v", err)
	}

	msgs := h.waitDelivered(clients * perClient)
	h.waitDone(clients * perClient)
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
		if m.MailFrom != tSendAs {
			t.Errorf("%s: MAIL FROM %s", subject, m.MailFrom)
		}
	}
	if len(seen) != clients*perClient {
		t.Errorf("%d distinct messages delivered, want %d", len(seen), clients*perClient)
	}

	stats := h.emu.Stats()
	if max := stats.MaxConcurrentByMailbox[tMailbox]; max > 3 || max < 1 {
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
	t.Logf("%d messages over %d connections (max %d concurrent), per connection %v", len(msgs), stats.Connections, stats.MaxConcurrentByMailbox[tMailbox], perConn)
}

// With max_per_minute = 20 and 30 messages, no window carries more than
// 20 and all 30 arrive. The window is scaled to 2 s (Options.RateWindow)
// so the test does not take minutes; the emulator's delivery timestamps
// are the judge.
func TestRateLimitSlidingWindow(t *testing.T) {
	const span = 2 * time.Second
	h := newHarness(t, hopts{maxPerMinute: 20, rateWindow: span, noStart: true})
	for i := 0; i < 30; i++ {
		h.enqueue(tSendAs, []string{"a@example.org"}, testMessage(tSendAs, fmt.Sprintf("rate %d", i)))
	}
	h.start()
	msgs := h.waitDelivered(30)
	h.waitDone(30)
	at := make([]time.Time, len(msgs))
	for i, m := range msgs {
		at[i] = m.At
	}
	sort.Slice(at, func(i, j int) bool { return at[i].Before(at[j]) })
	worst := 0
	for i := range at {
		n := 0
		for j := i; j < len(at) && at[j].Sub(at[i]) < span; j++ {
			n++
		}
		worst = max(worst, n)
	}
	if worst > 20 {
		t.Errorf("a %s window carried %d messages, limit 20", span, worst)
	}
	if worst < 20 {
		// Not a failure of the limit, but the test would prove little.
		t.Logf("busiest window carried only %d", worst)
	}
	if len(msgs) != 30 {
		t.Errorf("delivered %d", len(msgs))
	}
	if len(h.throttled) != 0 {
		t.Errorf("throttled: %v", h.throttled)
	}
	t.Logf("busiest %s window: %d messages; first to last %s", span, worst, at[len(at)-1].Sub(at[0]))
	_ = msemu.ReplyRateLimited
}
