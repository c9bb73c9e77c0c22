package relay

import (
	"strings"
	"testing"

	"github.com/oauthrelay/oauthrelay/internal/cluster"
	"github.com/oauthrelay/oauthrelay/internal/testkit"
	"github.com/oauthrelay/oauthrelay/queue"
)

// A client over max_per_minute is refused at MAIL FROM with 450 4.7.0
// naming it and when to try again, nothing is spooled, and another client
// is unaffected. A transaction that ends without a message gives its
// place back.
func TestClientRateLimit(t *testing.T) {
	r := startRelay(t, "", func(r *testRelay) {
		r.cfg.Client("scanner").MaxPerMinute = 2
		r.cfg.Client("monitor").MaxPerMinute = 1
	})
	msg := "Subject: hi\r\n\r\nhello\r\n"
	r.setPeer("192.0.2.50")
	c := r.dial()
	c.ehlo()
	c.send("scanner@contoso.com", []string{"a@example.com"}, msg)
	c.send("scanner@contoso.com", []string{"a@example.com"}, msg)
	got := c.cmd("450", "MAIL FROM:<scanner@contoso.com>")
	if !strings.HasPrefix(got, `450 4.7.0 Client "scanner" has handed in its limit of 2 messages in a minute (max_per_minute); try again in `) ||
		!strings.HasSuffix(got, " seconds") {
		t.Fatalf("over the limit: %q", got)
	}
	ids, err := r.spool.IDs(queue.Incoming)
	if err != nil || len(ids) != 2 {
		t.Fatalf("spooled %d messages (%v), want the 2 accepted", len(ids), err)
	}
	if !strings.Contains(r.logs.String(), "refused: the client is over its message rate limit") {
		t.Fatal("the refusal was not logged")
	}

	r.setPeer("192.0.2.60")
	m := r.dial()
	m.ehlo()
	m.cmd("250", "MAIL FROM:<noreply@contoso.com>")
	m.cmd("250", "RSET") // gives the place back
	m.send("noreply@contoso.com", []string{"b@example.com"}, msg)
	m.cmd("450", "MAIL FROM:<noreply@contoso.com>")
}

// With Redis, the limit holds across relays: a client that spreads its
// messages over two relays gets no more through.
func TestClientRateLimitShared(t *testing.T) {
	rd := testkit.StartRedis(t, "")
	shared := func(r *testRelay) {
		r.cfg.Client("scanner").MaxPerMinute = 2
		c, err := cluster.New(cluster.Options{URL: rd.URL(), Node: t.Name()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		r.srv.budgets = c
	}
	msg := "Subject: hi\r\n\r\nhello\r\n"
	var cs []*client
	for range 2 {
		r := startRelay(t, "", shared)
		r.setPeer("192.0.2.50")
		c := r.dial()
		c.ehlo()
		cs = append(cs, c)
	}
	cs[0].send("scanner@contoso.com", []string{"a@example.com"}, msg)
	cs[1].send("scanner@contoso.com", []string{"a@example.com"}, msg)
	cs[0].cmd("450 4.7.0", "MAIL FROM:<scanner@contoso.com>")
	cs[1].cmd("450 4.7.0", "MAIL FROM:<scanner@contoso.com>")
	// Without Redis the relay says why, rather than blame the client.
	rd.Stop()
	got := cs[0].cmd("450 4.7.0", "MAIL FROM:<scanner@contoso.com>")
	if !strings.Contains(got, `Client "scanner" is held to its share of its limits (max_per_minute) while the relays cannot reach their shared counts; try again in `) {
		t.Fatalf("in fallback: %q", got)
	}
}
