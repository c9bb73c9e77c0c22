package main

// The crash suite of issue 7: the real binary is SIGKILLed five times at
// random moments while eight senders submit 2,000 messages and delivery
// drains the spool into an emulator that lives in the test process and so
// survives every kill. At the end every acknowledged message has reached
// the emulator, nothing the relay can never have committed has, and the
// duplicates are within what deliveries in flight at a kill can cause.

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"net"
	"net/textproto"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/msemu"
)

const (
	crashTenant  = "2b7c1d9e-4f3a-4e6b-9c8d-7a6b5c4d3e2f"
	crashClient  = "8e9f0a1b-2c3d-4e5f-8a7b-9c0d1e2f3a4b"
	crashSecret  = "Crash~secret.VALUE_9876543210"
	crashMailbox = "helpdesk@contoso.com"

	crashMessages = 2000
	crashSenders  = 8
	crashKills    = 5
	// crashUpstreamConns is max_connections of the one mailbox: the most
	// deliveries that can be in flight at a kill.
	crashUpstreamConns = 3
	// crashWait bounds every wait of the suite.
	crashWait = 90 * time.Second
)

// tokenState is what a sender knows about one message.
type tokenState int

const (
	// started: the transaction began but the final "." was never sent, so
	// the relay cannot have committed the message.
	started tokenState = iota
	// unknown: the final "." was (or may have been) sent and no 250 came
	// back. The relay may have committed it before it died.
	unknown
	// acked: the sender saw "250 ... queued as".
	acked
)

type crashLedger struct {
	mu     sync.Mutex
	next   int
	states map[int]tokenState
	nAcked int
	// inFlight counts transactions begun and not yet acknowledged or
	// abandoned, so that exactly crashMessages are acknowledged.
	inFlight int
	// changed is closed and replaced at every acknowledgement.
	changed chan struct{}
}

func (l *crashLedger) take() (int, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.nAcked+l.inFlight >= crashMessages {
		return 0, false
	}
	l.inFlight++
	l.next++
	l.states[l.next] = started
	return l.next, true
}

func (l *crashLedger) set(tok int, st tokenState) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.states[tok] = st
	if st == acked {
		l.inFlight--
		l.nAcked++
		close(l.changed)
		l.changed = make(chan struct{})
	}
}

// abandon ends a transaction that got no 250.
func (l *crashLedger) abandon(tok int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.states[tok] != acked {
		l.inFlight--
	}
}

func (l *crashLedger) acked() (int, chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.nAcked, l.changed
}

var crashTokenRE = regexp.MustCompile(`crash-token-(\d+)-end`)

// crashConn is one sender's connection; every step has a deadline.
type crashConn struct {
	nc net.Conn
	bw *bufio.Writer
	tp *textproto.Conn
}

func (c *crashConn) expect(code int) (string, error) {
	c.nc.SetDeadline(time.Now().Add(30 * time.Second))
	n, msg, err := c.tp.ReadResponse(code)
	return fmt.Sprintf("%d %s", n, msg), err
}

// write sends s without waiting for a reply.
func (c *crashConn) write(s string) error {
	c.nc.SetDeadline(time.Now().Add(30 * time.Second))
	c.bw.WriteString(s)
	return c.bw.Flush()
}

func (c *crashConn) cmd(code int, line string) (string, error) {
	if err := c.write(line + "\r\n"); err != nil {
		return "", err
	}
	return c.expect(code)
}

// crashSend submits messages over one connection until the ledger is full
// or the connection fails.
func crashSend(addr string, l *crashLedger) error {
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer nc.Close()
	c := &crashConn{nc: nc, bw: bufio.NewWriter(nc), tp: textproto.NewConn(nc)}
	if _, err := c.expect(220); err != nil {
		return err
	}
	if _, err := c.cmd(250, "EHLO crash.test"); err != nil {
		return err
	}
	for {
		tok, ok := l.take()
		if !ok {
			c.cmd(221, "QUIT")
			return nil
		}
		if err := c.transaction(tok, l); err != nil {
			l.abandon(tok)
			return err
		}
	}
}

// transaction sends message tok and records how far it got.
func (c *crashConn) transaction(tok int, l *crashLedger) error {
	if _, err := c.cmd(250, "MAIL FROM:<noreply@contoso.com>"); err != nil {
		return err
	}
	if _, err := c.cmd(250, "RCPT TO:<customer@example.com>"); err != nil {
		return err
	}
	if _, err := c.cmd(354, "DATA"); err != nil {
		return err
	}
	body := fmt.Sprintf("From: noreply@contoso.com\r\nTo: customer@example.com\r\nSubject: crash %d\r\n\r\n%s\r\ncrash-token-%d-end\r\n",
		tok, strings.Repeat("filler line of the crash suite\r\n", 8), tok)
	if err := c.write(body); err != nil {
		return err
	}
	// From here the relay may see the end of the message: whatever
	// happens next, the outcome is at best unknown.
	l.set(tok, unknown)
	if err := c.write(".\r\n"); err != nil {
		return err
	}
	reply, err := c.expect(250)
	if err != nil {
		return err
	}
	if !queuedAs.MatchString(reply) {
		return fmt.Errorf("unexpected reply %q", reply)
	}
	l.set(tok, acked)
	return nil
}

func TestCrashDuringAcceptanceAndDelivery(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildBinary(t)
	emu, err := msemu.New(msemu.Options{MaxConnsPerMailbox: -1, MaxPerMinute: -1, MaxRecipientsPerDay: -1})
	if err != nil {
		t.Fatal(err)
	}
	if err := emu.Start(); err != nil {
		t.Fatal(err)
	}
	defer emu.Close()
	emu.Provision(crashTenant, crashClient, crashSecret, crashMailbox)
	emu.AddMailbox(msemu.Mailbox{Address: crashMailbox, FullAccess: []string{crashClient}, SendAs: []string{"noreply@contoso.com"}})

	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, emu.CACertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freePort(t)
	spool := filepath.Join(dir, "spool")
	cfg := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`[listen]
address = %q
hostname = "crash.test"

[spool]
dir = %q
min_retry_delay = "200ms"
max_retry_delay = "1s"

[upstream]
address = %q
ca_file = %q

[log]
level = "info"

[[app]]
name = "contoso"
tenant_id = %q
client_id = %q
client_secret = %q
authority = %q

[[mailbox]]
address = %q
app = "contoso"
send_as = ["noreply@contoso.com"]
max_per_minute = 1000000
max_connections = %d

[[client]]
name = "loadgen"
networks = ["127.0.0.1"]
senders = ["noreply@contoso.com"]
`, addr, spool, emu.SMTPAddr(), caFile, crashTenant, crashClient, crashSecret, emu.Authority(), crashMailbox, crashUpstreamConns)), 0o600); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "relay.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	defer func() {
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			if len(b) > 20000 {
				b = b[len(b)-20000:]
			}
			t.Logf("relay log (tail):\n%s", b)
		}
	}()

	// Kill points: four at random acknowledgement counts during the
	// load, each also waiting for deliveries since the last start (so the
	// kill hits both sides), and a fifth once the load has stopped and
	// only delivery runs, if a backlog is left.
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, seed>>7))
	var kills []int
	for range crashKills - 1 {
		kills = append(kills, 100+rng.IntN(crashMessages-300))
	}
	sort.Ints(kills)
	t.Logf("seed %d, kills after %v acknowledged", seed, kills)

	ledger := &crashLedger{states: map[int]tokenState{}, changed: make(chan struct{})}
	proc, gone := startServe(t, bin, cfg, addr, logf)

	// Senders reconnect until the ledger is full; failed connections
	// (the relay is down) are retried after a short pause.
	loadDone := make(chan struct{})
	var wg sync.WaitGroup
	for range crashSenders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				if n, _ := ledger.acked(); n >= crashMessages {
					return
				}
				if err := crashSend(addr, ledger); err != nil {
					time.Sleep(20 * time.Millisecond)
				}
			}
		}()
	}
	go func() { wg.Wait(); close(loadDone) }()

	deadline := time.After(crashWait)
	restart := func() {
		proc.Process.Signal(syscall.SIGKILL)
		// The dead process holds its socket until it is reaped.
		select {
		case <-gone:
		case <-deadline:
			t.Fatal("the killed relay was not reaped")
		}
		proc, gone = startServe(t, bin, cfg, addr, logf)
	}
	killsDone := 0
	for _, at := range kills {
		base := len(emu.Delivered())
		for {
			n, ch := ledger.acked()
			if n >= at && len(emu.Delivered()) > base {
				break
			}
			select {
			case <-ch:
			case <-time.After(10 * time.Millisecond):
			case <-deadline:
				t.Fatalf("load stalled at %d acknowledged, %d delivered", n, len(emu.Delivered()))
			}
		}
		restart()
		killsDone++
	}
	select {
	case <-loadDone:
	case <-deadline:
		n, _ := ledger.acked()
		t.Fatalf("only %d of %d messages acknowledged", n, crashMessages)
	}
	// The last kill: during delivery of the backlog when there is one,
	// else right away (the spool may still hold mail in flight).
	ackedN, _ := ledger.acked()
	if left := ackedN - len(emu.Delivered()); left > 10 {
		target := len(emu.Delivered()) + 1 + rng.IntN(left/2)
		for len(emu.Delivered()) < target {
			select {
			case <-time.After(5 * time.Millisecond):
			case <-deadline:
				t.Fatalf("delivery stalled at %d", len(emu.Delivered()))
			}
		}
		t.Logf("last kill during delivery: %d delivered, %d acknowledged", len(emu.Delivered()), ackedN)
	} else {
		t.Logf("last kill after the load: delivery had kept up (%d delivered, %d acknowledged)", len(emu.Delivered()), ackedN)
	}
	restart()
	killsDone++

	// Wait until the spool has nothing left to deliver.
	pending := func() int {
		n := 0
		for _, st := range []string{"incoming", "active", "deferred"} {
			ents, _ := os.ReadDir(filepath.Join(spool, st))
			n += len(ents)
		}
		return n
	}
	for pending() > 0 {
		select {
		case <-time.After(20 * time.Millisecond):
		case <-deadline:
			t.Fatalf("%d messages still queued", pending())
		}
	}

	// Tally.
	got := map[int]int{}
	for _, m := range emu.Delivered() {
		sm := crashTokenRE.FindSubmatch(m.Data)
		if sm == nil {
			t.Errorf("delivered message without a token:\n%.300s", m.Data)
			continue
		}
		var tok int
		fmt.Sscan(string(sm[1]), &tok)
		got[tok]++
	}
	ledger.mu.Lock()
	states := ledger.states
	ledger.mu.Unlock()
	var nAcked, nUnknown, nUnknownDelivered, nStarted, lost, dups int
	for tok, st := range states {
		n := got[tok]
		if n > 1 {
			dups += n - 1
		}
		switch st {
		case acked:
			nAcked++
			if n == 0 {
				lost++
				t.Errorf("acknowledged message %d never reached the emulator", tok)
			}
		case unknown:
			nUnknown++
			if n > 0 {
				nUnknownDelivered++
			}
		case started:
			nStarted++
			if n > 0 {
				t.Errorf("message %d reached the emulator although its DATA never ended", tok)
			}
		}
	}
	for tok := range got {
		if _, ok := states[tok]; !ok {
			t.Errorf("the emulator received message %d that was never sent", tok)
		}
	}
	if ents, _ := os.ReadDir(filepath.Join(spool, "corrupt")); len(ents) > 0 {
		t.Errorf("corrupt/ holds %d envelopes", len(ents))
	}
	if ents, _ := os.ReadDir(filepath.Join(spool, "failed")); len(ents) > 0 {
		t.Errorf("failed/ holds %d envelopes", len(ents))
	}
	if max := killsDone * crashUpstreamConns; dups > max {
		t.Errorf("%d duplicates, more than kills × connections = %d", dups, max)
	}
	t.Logf("crash suite: %d kills; %d acknowledged, %d delivered (%d distinct), %d duplicates, %d lost; "+
		"%d without reply (DATA ended, 250 lost in the kill; %d of them delivered), %d cut off before the end of DATA (none delivered)",
		killsDone, nAcked, len(emu.Delivered()), len(got), dups, lost, nUnknown, nUnknownDelivered, nStarted)
}
