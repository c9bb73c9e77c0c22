package relay

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/testkit"
)

// TestConnectionsPerAddress: one address cannot hold more than its share
// of the connections, while others still get in. (One untrusted address
// could hold all 1,000 slots.)
func TestConnectionsPerAddress(t *testing.T) {
	r := startRelay(t, "max_connections_per_ip = 3\nmax_connections_per_trusted_ip = 5", nil)
	open := func(ip string, n int) []*testkit.SMTPClient {
		r.setPeer(ip)
		var cs []*testkit.SMTPClient
		for range n {
			c := testkit.DialSMTP(t, r.addr)
			if !strings.HasPrefix(c.Greeting, "220 ") {
				t.Fatalf("connection %d from %s: greeting %q", len(cs)+1, ip, c.Greeting)
			}
			cs = append(cs, c)
		}
		return cs
	}
	refused := func(ip string) {
		r.setPeer(ip)
		c := testkit.DialSMTP(t, r.addr)
		want := "421 4.7.0 relay.test Too many connections from " + ip + "; close some of them or try again shortly"
		if c.Greeting != want {
			t.Errorf("greeting %q, want %q", c.Greeting, want)
		}
	}
	stranger := open("198.51.100.7", 3)
	refused("198.51.100.7")
	open("198.51.100.8", 3) // another address is not affected
	open("192.0.2.60", 5)   // a client's network has its own limit
	refused("192.0.2.60")
	stranger[0].Conn().Close()
	testkit.Eventually(t, "the closed connection to free its place", func() bool { return r.srv.conns.Load() == 10 })
	open("198.51.100.7", 1)
}

// TestLoginTimeout: a peer that neither logs in nor has a sender accepted
// is closed after login_timeout however busy it keeps the connection
// (the idle timeout restarted with every command); one that logs in is
// not.
func TestLoginTimeout(t *testing.T) {
	r := startRelay(t, "login_timeout = \"1s\"\nidle_timeout = \"1m\"", nil)
	r.setPeer("198.51.100.7")
	c := r.dial()
	c.ehlo()
	got := ""
	for range 200 {
		got = c.Cmd("NOOP")
		if !strings.HasPrefix(got, "250") {
			break
		}
		time.Sleep(50 * time.Millisecond) // a busy, patient peer
	}
	if want := "421 4.7.0 relay.test Not logged in within 1s; closing the connection"; got != want {
		t.Fatalf("after NOOPs: %q, want %q", got, want)
	}
	if got := c.Read(); got != "" {
		t.Errorf("the connection is still open: %q", got)
	}

	// Logged in: only the idle timeout applies.
	r.setPeer("127.0.0.1")
	c = r.dial()
	c.ehlo()
	c.authPlain("235", "app", appPassword)
	done := make(chan struct{})
	time.AfterFunc(1500*time.Millisecond, func() { close(done) })
	for open := true; open; {
		select {
		case <-done:
			open = false
		default:
			c.cmd("250", "NOOP")
			time.Sleep(50 * time.Millisecond)
		}
	}
	c.cmd("250", "NOOP")
}

// TestRefusalFlood: a peer that pipelines refused commands gets one log
// line per reason and a count at the end, and is closed after
// max_refused_commands; too many recipients are logged once and do not
// close the session. (50,000 pipelined MAIL FROM wrote 50,000 lines.)
func TestRefusalFlood(t *testing.T) {
	var mu sync.Mutex
	counted := map[string]int{}
	r := startRelay(t, "max_refused_commands = 50", func(r *testRelay) {
		r.srv.hooks.Refused = func(reason string) { mu.Lock(); counted[reason]++; mu.Unlock() }
	})
	r.setPeer("198.51.100.7")
	s := r.raw()
	s.write("EHLO flood.test\r\n")
	s.expect("250 ")
	go s.Conn().Write([]byte(strings.Repeat("MAIL FROM:<x@example.com>\r\n", 1000)))
	for range 49 {
		s.expect("530 5.7.0")
	}
	s.expect("421 4.7.0 relay.test Too many refused commands (50) on this connection; closing it")
	s.closed()
	testkit.Eventually(t, "the session to end", func() bool { return r.srv.conns.Load() == 0 })
	logs := r.logs.String()
	if n := strings.Count(logs, `msg="refused: unauthenticated peer outside every trusted network"`); n != 1 {
		t.Errorf("%d log lines for the refused MAIL, want 1:\n%s", n, logs)
	}
	if !strings.Contains(logs, `msg="refused: unauthenticated peer outside every trusted network (repeated; logged once per session)" reason=auth_required count=50`) {
		t.Errorf("no summary line with the count:\n%s", logs)
	}
	mu.Lock()
	if counted["auth_required"] != 50 || counted["too_many_refusals"] != 1 {
		t.Errorf("metric counts %v, want 50 auth_required and 1 too_many_refusals", counted)
	}
	mu.Unlock()

	r.setPeer("127.0.0.1")
	s = r.raw()
	s.login()
	var b strings.Builder
	b.WriteString("MAIL FROM:<noreply@contoso.com>\r\n")
	for i := range 1000 {
		fmt.Fprintf(&b, "RCPT TO:<r%d@example.com>\r\n", i)
	}
	go s.Conn().Write([]byte(b.String() + "QUIT\r\n"))
	s.expect("250 ")
	for i := range 1000 {
		if i < 500 {
			s.expect("250 ")
		} else {
			s.expect("452 4.5.3")
		}
	}
	s.expect("221 ")
	testkit.Eventually(t, "the session to end", func() bool { return r.srv.conns.Load() == 0 })
	logs = r.logs.String()
	if n := strings.Count(logs, `msg="refused recipient: too many recipients"`); n != 1 {
		t.Errorf("%d log lines for too many recipients, want 1", n)
	}
	if !strings.Contains(logs, `msg="refused recipient: too many recipients (repeated; logged once per session)" reason=too_many_recipients count=500 remote=127.0.0.1 client=app`) {
		t.Errorf("no summary line for the recipients:\n%s", logs)
	}
}
