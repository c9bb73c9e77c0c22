package delivery

import (
	"strings"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/testkit"
	"github.com/oauthrelay/oauthrelay/queue"
)

// TestBacklogDoesNotStarveNewMail: twenty retries are due at once on a
// mailbox with one connection; a message that arrives with them must not
// wait behind the whole backlog.
func TestBacklogDoesNotStarveNewMail(t *testing.T) {
	h := newHarness(t, hopts{maxConns: 1, noStart: true})
	const backlog = 20
	for i := 0; i < backlog; i++ {
		id := h.enqueue(tMailbox, []string{"old@example.org"}, testMessage(tMailbox, "retry"))
		env, err := h.spool.Load(queue.Incoming, id)
		if err != nil {
			t.Fatal(err)
		}
		// A message that has been tried before and is due again.
		env.Attempts = append(env.Attempts, queue.Attempt{At: time.Now().Add(-time.Hour), Result: "deferred", Reply: "451 4.7.0 Temporary server error. Please try again later. PRX4"})
		env.NextAttempt = time.Now().Add(-time.Minute)
		if err := h.spool.Move(env, queue.Deferred); err != nil {
			t.Fatal(err)
		}
	}
	h.enqueue(tMailbox, []string{"new@example.org"}, testMessage(tMailbox, "fresh"))
	h.start()
	msgs := h.waitDelivered(backlog + 1)
	pos := -1
	for i, m := range msgs {
		if strings.Contains(string(m.Data), "Subject: fresh") {
			pos = i
		}
	}
	// Fresh and retry lists alternate, so new mail goes within the first
	// two deliveries; plain FIFO would have put it last.
	if pos < 0 || pos > 1 {
		t.Fatalf("new mail was delivery number %d of %d: the backlog starved it", pos+1, len(msgs))
	}
}

// TestIdleConnectionClosed: an upstream connection with nothing to send is
// closed after the idle timeout instead of holding one of the mailbox's
// three slots.
func TestIdleConnectionClosed(t *testing.T) {
	h := newHarness(t, hopts{noStart: true})
	h.sched.o.IdleTimeout = 200 * time.Millisecond
	h.start()
	h.enqueue(tMailbox, []string{"a@example.org"}, testMessage(tMailbox, "one"))
	h.waitDelivered(1)
	testkit.Eventually(t, "the idle connection to close", func() bool { return h.status().Connections == 0 })
	// And the mailbox still works: a new message opens a new connection.
	h.enqueue(tMailbox, []string{"a@example.org"}, testMessage(tMailbox, "two"))
	h.waitDelivered(2)
	if got := h.emu.Stats().Connections; got != 2 {
		t.Errorf("connections = %d, want 2 (one per burst)", got)
	}
}
