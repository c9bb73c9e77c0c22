package delivery

import (
	"bytes"
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/testkit"
	"github.com/oauthrelay/oauthrelay/queue"
)

// stallConn lets the first limit bytes through, then blocks every write
// until the connection is closed: a delivery stuck in DATA.
type stallConn struct {
	net.Conn
	mu      sync.Mutex
	written int
	limit   int
	stalled chan struct{} // closed when a write first blocks
	once    sync.Once
	closed  chan struct{}
	cOnce   sync.Once
}

func (c *stallConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	over := c.written+len(p) > c.limit
	if !over {
		c.written += len(p)
	}
	c.mu.Unlock()
	if !over {
		return c.Conn.Write(p)
	}
	c.once.Do(func() { close(c.stalled) })
	<-c.closed
	return 0, net.ErrClosed
}

func (c *stallConn) Close() error {
	c.cOnce.Do(func() { close(c.closed) })
	return c.Conn.Close()
}

// Cancelling Run while a delivery is in flight: Run returns after the
// grace period, the message stays spooled, and a new scheduler delivers it.
func TestShutdownKeepsInFlightMail(t *testing.T) {
	stalled := make(chan struct{})
	var first sync.Once
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		sc := &stallConn{Conn: c, limit: 64 << 10, stalled: make(chan struct{}), closed: make(chan struct{})}
		first.Do(func() {
			go func() {
				<-sc.stalled
				close(stalled)
			}()
		})
		return sc, nil
	}
	h := newHarness(t, hopts{dial: dial, grace: 300 * time.Millisecond})
	body := append(testMessage(tSendAs, "in flight"), bytes.Repeat([]byte("z"), 1<<20)...)
	body = append(body, "\r\n"...)
	id := h.enqueue(tSendAs, []string{"a@example.org"}, body)
	select {
	case <-stalled:
	case <-time.After(testkit.WaitLimit):
		t.Fatal("the delivery never got into DATA")
	}
	h.stop()

	if n := len(h.emu.Delivered()); n != 0 {
		t.Fatalf("%d delivered while stalled", n)
	}
	env, err := h.spool.Find(id)
	if err != nil {
		t.Fatalf("the in-flight message is gone from the spool: %v", err)
	}
	if env.State != queue.Deferred && env.State != queue.Incoming {
		t.Errorf("in-flight message left in %s, want deferred or incoming", env.State)
	}
	if env.Recipients[0].State != queue.RcptPending {
		t.Errorf("recipient %+v", env.Recipients[0])
	}

	// Restart: a new scheduler on the same spool, with a normal dialer.
	h.o.dial = nil
	h.sched = h.newScheduler()
	h.start()
	msgs := h.waitDelivered(1)
	if !bytes.Equal(msgs[0].Data, body) {
		t.Errorf("delivered body differs after the restart")
	}
	testkit.Eventually(t, "the spool is empty", func() bool { return len(h.envelopes()) == 0 })
}

// A spool left by a crash (an envelope in active/) is recovered to
// incoming/ by Open, and delivered.
func TestCrashRecoveryDelivers(t *testing.T) {
	h := newHarness(t, hopts{noStart: true})
	id := h.enqueue(tSendAs, []string{"a@example.org"}, testMessage(tSendAs, "crashed"))
	env, err := h.spool.Load(queue.Incoming, id)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.spool.Move(env, queue.Active); err != nil {
		t.Fatal(err)
	}
	sp, rep, err := queue.Open(h.cfg.Spool.Dir, queue.Options{Recover: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Requeued) != 1 {
		t.Fatalf("recovery %+v", rep)
	}
	h.spool = sp
	h.sched = h.newScheduler()
	h.start()
	h.waitDelivered(1)
	if done := h.waitDone(1); done[0].ID != id {
		t.Errorf("done %s, want %s", done[0].ID, id)
	}
	if _, err := h.spool.Find(id); !errors.Is(err, queue.ErrNotFound) {
		t.Errorf("still in the spool: %v", err)
	}
}

// A stale sighting of a message in incoming/ (a notification still in the
// channel, or a directory listing made before the message was tried and
// deferred) must not lose track of it.
func TestStaleIncomingSighting(t *testing.T) {
	h := newHarness(t, hopts{minRetry: "300ms", maxRetry: "300ms"})
	h.emu.FailNextData(1, "451 4.7.0 Temporary server error. Please try again later. PRX4")
	id := h.enqueue(tSendAs, []string{"a@example.org"}, testMessage(tSendAs, "stale"))
	testkit.Eventually(t, "the message waits for its retry", func() bool {
		_, err := h.spool.Load(queue.Deferred, id)
		return err == nil && h.status().Waiting == 1
	})
	// What Run does with a late notification or listing.
	h.sched.add(id, queue.Incoming)
	h.waitDelivered(1)
	h.waitDone(1)
}
