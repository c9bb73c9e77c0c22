package delivery

import (
	"context"
	"crypto/x509"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/config"
	"github.com/oauthrelay/oauthrelay/internal/msemu"
	"github.com/oauthrelay/oauthrelay/internal/msemu/emutest"
	"github.com/oauthrelay/oauthrelay/internal/testkit"
	"github.com/oauthrelay/oauthrelay/oauth"
	"github.com/oauthrelay/oauthrelay/queue"
	"github.com/oauthrelay/oauthrelay/tokens"
	"github.com/oauthrelay/oauthrelay/transport"
	"github.com/oauthrelay/oauthrelay/transport/submit"
)

// The tenant, app and mailbox every test uses.
const (
	tTenant  = "8d5d2a5b-3f0e-4c1a-9a59-2c1f5e0b7a11"
	tClient  = "3b9f1c2e-7a44-4d0e-b1a2-6f0c9e8d7b55"
	tSecret  = "Qx8~right.secret_value"
	tMailbox = "helpdesk@contoso.com"
	tSendAs  = "noreply@contoso.com"
)

// hopts are the knobs a test turns on the harness.
type hopts struct {
	emu          msemu.Options
	secret       string // the relay's client secret; default tSecret
	maxPerMinute int    // default 600 (the emulator's own limit is off)
	maxConns     int    // default 3
	maxRcptsDay  int    // default 10000
	minRetry     string // default "50ms"
	maxRetry     string // default "200ms"
	maxAge       string // default "1h"
	bounceTo     string
	rateWindow   time.Duration
	grace        time.Duration
	// rootCAs replaces the scheduler's (not the token endpoint's) pool.
	rootCAs *x509.CertPool
	dial    transport.Dialer
	// noStart leaves the scheduler stopped; call h.start.
	noStart bool
	// spoolFrom is a spool tree copied into the spool before it opens.
	spoolFrom string
	// attempt, if set, is the scheduler's Hooks.Attempt.
	attempt func(mailbox, transport, result, replyClass string)
}

// harness is an emulated Microsoft 365, a spool, a token set and a
// scheduler delivering the spool into the emulator.
type harness struct {
	t      *testing.T
	o      hopts
	emu    *msemu.Emulator
	dir    string
	cfg    *config.Config
	spool  *queue.Spool
	roots  *x509.CertPool
	tokens *tokens.Set
	sched  *Scheduler
	logs   *syncBuffer

	mu        sync.Mutex
	done      []*queue.Envelope // final envelopes, from Hooks.Done
	throttled []string
	doneCh    chan struct{}

	cancel  context.CancelFunc
	stopped chan struct{}
}

func newHarness(t *testing.T, o hopts) *harness {
	t.Helper()
	if o.emu.MaxPerMinute == 0 {
		// The emulator counts real minutes; the scheduler's pacing is
		// checked against its delivery timestamps instead.
		o.emu.MaxPerMinute = -1
	}
	emu := emutest.Start(t, o.emu)
	emu.Provision(tTenant, tClient, tSecret, tMailbox)
	emu.AddMailbox(msemu.Mailbox{Address: tMailbox, FullAccess: []string{tClient}, SendAs: []string{tSendAs}})

	h := &harness{t: t, o: o, emu: emu, dir: t.TempDir(), logs: &syncBuffer{}, doneCh: make(chan struct{}, 1000)}
	h.cfg = h.config(o.secret)
	var err error
	h.roots, err = tokens.Roots(h.cfg)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if o.spoolFrom != "" {
		copyTree(t, o.spoolFrom, h.cfg.Spool.Dir)
	}
	h.spool, _, err = queue.Open(h.cfg.Spool.Dir, queue.Options{Logger: log, Recover: true})
	if err != nil {
		t.Fatal(err)
	}
	tctx, tcancel := context.WithCancel(context.Background())
	t.Cleanup(tcancel)
	h.tokens, err = tokens.New(tctx, h.cfg, h.roots, oauth.Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	h.sched = h.newScheduler()
	if !o.noStart {
		h.start()
	}
	t.Cleanup(func() {
		h.stop()
		if t.Failed() {
			t.Logf("relay log:\n%s", h.logs.String())
		}
	})
	return h
}

// config renders the relay's configuration for this harness.
func (h *harness) config(secret string) *config.Config {
	h.t.Helper()
	o := h.o
	def := func(v, d string) string {
		if v == "" {
			return d
		}
		return v
	}
	defi := func(v, d int) int {
		if v == 0 {
			return d
		}
		return v
	}
	kc := testkit.Config{
		Dir:      h.dir,
		Emulator: h.emu,
		Listen:   testkit.Listen{Address: "127.0.0.1:0", Hostname: "relay.test"},
		Spool: testkit.Spool{MinRetryDelay: def(o.minRetry, "50ms"), MaxRetryDelay: def(o.maxRetry, "200ms"),
			MaxAge: def(o.maxAge, "1h"), BounceTo: o.bounceTo},
		Upstream: testkit.Upstream{Timeout: "10s"},
		Apps:     []testkit.App{{Name: "contoso", TenantID: tTenant, ClientID: tClient, ClientSecret: def(secret, tSecret)}},
		Mailboxes: []testkit.Mailbox{{Address: tMailbox, App: "contoso", SendAs: []string{tSendAs},
			MaxPerMinute: defi(o.maxPerMinute, 600), MaxConnections: defi(o.maxConns, 3), MaxRecipientsPerDay: defi(o.maxRcptsDay, 10000)}},
		Clients: []testkit.Client{{Name: "local", Networks: []string{"127.0.0.1/32"}, Senders: []string{"*"}}},
	}
	toml := kc.TOML(h.t)
	cfg, err := config.Parse("test.toml", []byte(toml), func(string) string { return "" })
	if err != nil {
		h.t.Fatalf("config: %v\n%s", err, toml)
	}
	return cfg
}

func (h *harness) newScheduler() *Scheduler {
	roots := h.roots
	if h.o.rootCAs != nil {
		roots = h.o.rootCAs
	}
	log := slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	deps := transport.Deps{Tokens: h.tokens.Get, RootCAs: roots, Dial: h.o.dial, Logger: log}
	return New(Options{
		Spool:         h.spool,
		Config:        h.cfg,
		Transports:    map[string]transport.Transport{"smtp": submit.New(deps), "hve": submit.NewHVE(deps)},
		Logger:        log,
		PollInterval:  100 * time.Millisecond,
		RateWindow:    h.o.rateWindow,
		ShutdownGrace: h.o.grace,
		Hooks: Hooks{
			Done: func(env *queue.Envelope) {
				h.mu.Lock()
				h.done = append(h.done, env)
				h.mu.Unlock()
				h.doneCh <- struct{}{}
			},
			Attempt: h.o.attempt,
			Throttled: func(mailbox string) {
				h.mu.Lock()
				h.throttled = append(h.throttled, mailbox)
				h.mu.Unlock()
			},
		},
	})
}

// start runs the scheduler until stop (or the end of the test).
func (h *harness) start() {
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	h.stopped = make(chan struct{})
	sched, stopped := h.sched, h.stopped
	go func() {
		defer close(stopped)
		if err := sched.Run(ctx); err != nil {
			h.t.Errorf("Run: %v", err)
		}
	}()
}

// stop cancels Run and waits for it to return.
func (h *harness) stop() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	select {
	case <-h.stopped:
	case <-time.After(testkit.WaitLimit + h.o.grace):
		h.t.Errorf("Run did not return after its context ended")
	}
	h.cancel = nil
}

// enqueue puts a message straight into the spool, as the listener would.
func (h *harness) enqueue(from string, rcpts []string, body []byte) string {
	h.t.Helper()
	w, err := h.spool.Create()
	if err != nil {
		h.t.Fatal(err)
	}
	if _, err := w.Write(body); err != nil {
		h.t.Fatal(err)
	}
	env := &queue.Envelope{Client: "local", Mailbox: tMailbox, MailFrom: from}
	for _, r := range rcpts {
		env.Recipients = append(env.Recipients, &queue.Recipient{Address: r})
	}
	if err := w.Commit(env); err != nil {
		h.t.Fatal(err)
	}
	return env.ID
}

// waitDelivered waits for n messages at the emulator.
func (h *harness) waitDelivered(n int) []msemu.Message {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testkit.WaitLimit)
	defer cancel()
	msgs, err := h.emu.WaitDelivered(ctx, n)
	if err != nil {
		h.t.Fatalf("waiting for %d delivered messages: %v (got %d)", n, err, len(msgs))
	}
	return msgs
}

// waitDone waits until n messages have left the queue and returns their
// final envelopes.
func (h *harness) waitDone(n int) []*queue.Envelope {
	h.t.Helper()
	deadline := time.After(testkit.WaitLimit)
	for {
		h.mu.Lock()
		if len(h.done) >= n {
			out := append([]*queue.Envelope(nil), h.done...)
			h.mu.Unlock()
			return out
		}
		got := len(h.done)
		h.mu.Unlock()
		select {
		case <-h.doneCh:
		case <-deadline:
			h.t.Fatalf("waiting for %d messages to leave the queue: only %d did", n, got)
		}
	}
}

// status returns the scheduler's view of the test mailbox.
func (h *harness) status() MailboxStatus {
	for _, st := range h.sched.Status() {
		if strings.EqualFold(st.Mailbox, tMailbox) {
			return st
		}
	}
	return MailboxStatus{}
}

// envelopes lists the spool by state.
func (h *harness) envelopes() map[queue.State][]*queue.Envelope {
	h.t.Helper()
	envs, bad, err := h.spool.List()
	if err != nil {
		h.t.Fatal(err)
	}
	if len(bad) > 0 {
		h.t.Fatalf("unreadable envelopes: %v", bad)
	}
	out := map[queue.State][]*queue.Envelope{}
	for _, e := range envs {
		out[e.State] = append(out[e.State], e)
	}
	return out
}

// testMessage is a small message with a unique subject.
func testMessage(from, subject string) []byte {
	return []byte("From: " + from + "\r\nTo: someone@example.org\r\nSubject: " + subject +
		"\r\nMessage-ID: <" + strings.ReplaceAll(subject, " ", "-") + "@test>\r\nDate: Mon, 24 Nov 2025 10:00:00 +0000\r\n\r\nHello.\r\n.leading dot\r\n..two dots\r\nlast line\r\n")
}

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer = testkit.SyncBuffer
