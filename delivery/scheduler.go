// Package delivery drains the spool into Microsoft 365: a scheduler per
// mailbox that keeps within Exchange Online's limits (connections, messages
// per minute, recipients per day), pauses a mailbox whose setup Microsoft
// refuses, retries, and queues delivery status notifications. It talks to
// Microsoft only through the transport interface, so SMTP AUTH, HVE and
// Graph mailboxes are paced, retried and reported the same way.
package delivery

import (
	"container/heap"
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/oauthrelay/oauthrelay/config"
	"github.com/oauthrelay/oauthrelay/internal/cluster"
	"github.com/oauthrelay/oauthrelay/queue"
	"github.com/oauthrelay/oauthrelay/transport"
)

// Hooks let the caller count what delivery does (metrics).
type Hooks struct {
	// Attempt is called after every delivery attempt of a message.
	Attempt func(mailbox, transport, result, replyClass string)
	// Throttled is called when Exchange asks a mailbox to slow down.
	Throttled func(mailbox string)
	// Conns is called with the change in open upstream connections.
	Conns func(mailbox string, delta int)
	// SharedWait is called when a mailbox waits for a shared budget
	// ("connection" or "minute") other relays hold.
	SharedWait func(mailbox, budget string)
	// Done is called when a message leaves the queue (every recipient
	// delivered, or moved to failed/), with its final envelope and its
	// whole attempt history.
	Done func(env *queue.Envelope)
}

// Options configure a Scheduler.
type Options struct {
	Spool  *queue.Spool
	Config *config.Config
	// Transports deliver, by [[mailbox]] transport ("smtp", "graph",
	// "hve").
	Transports map[string]transport.Transport
	Logger     *slog.Logger
	Now        func() time.Time
	// Jitter returns a number in [0,1) for retry jitter.
	Jitter func() float64
	Hooks  Hooks
	// IdleTimeout closes an unused upstream connection (default 30 s).
	IdleTimeout time.Duration
	// PollInterval is how often incoming/ is read for mail that queue
	// commands made due (default 1 s).
	PollInterval time.Duration
	// ShutdownGrace is how long in-flight deliveries may finish after
	// the context ends (default 20 s).
	ShutdownGrace time.Duration
	// RateWindow is the span max_per_minute counts over (default one
	// minute, which is what Exchange Online counts). Tests shorten it to
	// check the sliding window without waiting minutes.
	RateWindow time.Duration
	// Shared, if set, keeps the mailboxes' budgets together with the
	// other relays sharing its Redis (shared.go); nil keeps them here.
	Shared *cluster.Cluster
}

// Scheduler delivers the spool.
type Scheduler struct {
	o     Options
	spool *queue.Spool
	log   *slog.Logger

	mu      sync.Mutex
	cfg     *config.Config
	mbx     map[string]*mbox
	tracked map[string]*item
	kick    chan struct{}
	wg      sync.WaitGroup
	// sendCtx is cancelled ShutdownGrace after the run context, to cut
	// off deliveries that do not finish in time.
	sendCtx context.Context
	// spoolErr is set while the spool cannot be written.
	spoolErr *spoolFault
}

// item is one message the scheduler knows about.
type item struct {
	id       string
	mailbox  string
	state    queue.State
	due      time.Time
	fresh    bool
	ready    bool // in mb.fresh or mb.retry
	inflight bool
	seq      int // bumped whenever the item leaves the heap logically
	lastKind transport.Kind
	lifts    int // mbox.lifts when the item was taken for an attempt
}

// mbox is the scheduling state of one mailbox.
type mbox struct {
	addr         string
	fresh, retry []*item
	later        itemHeap
	retryTurn    bool
	workers      int
	idle         int
	wake         chan struct{}
	pausedUntil  time.Time
	pauseKind    transport.Kind
	pauseReason  string
	pauseFix     string
	configFault  bool
	faults       int // consecutive config faults or throttles, for backoff
	pauseSeq     int // pauses begun so far; see unpause
	// senderFaults are senders the mailbox may not send as (SendAs).
	senderFaults map[string]senderFault
	// failing counts attempts in a row that failed for the whole message
	// with a temporary error (Microsoft unreachable, say), since when,
	// and the last reply; a delivery resets it.
	failing      int
	failingSince time.Time
	failingReply string
	sent         window
	inflight     int
	rcpts        window
	// rcptsInflight are the recipients of attempts under way, not yet in
	// rcpts because they may yet fail.
	rcptsInflight int
	conns         int
	warnedNoConf  bool
	// lifts counts the times the mailbox's holds were lifted (a reload,
	// its app getting a token again), so that an attempt that ends after
	// one knows it came too late to release it (see liftIfLifted).
	lifts int
}

// New makes a scheduler; Run starts it.
func New(o Options) *Scheduler {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Jitter == nil {
		o.Jitter = rand.Float64
	}
	if o.IdleTimeout == 0 {
		o.IdleTimeout = 30 * time.Second
	}
	if o.PollInterval == 0 {
		o.PollInterval = time.Second
	}
	if o.ShutdownGrace == 0 {
		o.ShutdownGrace = 20 * time.Second
	}
	if o.RateWindow == 0 {
		o.RateWindow = time.Minute
	}
	return &Scheduler{o: o, spool: o.Spool, log: o.Logger, cfg: o.Config,
		mbx: map[string]*mbox{}, tracked: map[string]*item{}, kick: make(chan struct{}, 1)}
}

func (s *Scheduler) policy(cfg *config.Config) queue.RetryPolicy {
	return queue.RetryPolicy{Min: cfg.Spool.MinRetryDelay.Duration, Max: cfg.Spool.MaxRetryDelay.Duration, MaxAge: cfg.Spool.MaxAge.Duration}
}

// Run delivers until ctx ends, then gives in-flight deliveries
// ShutdownGrace to finish; whatever is unfinished stays spooled.
func (s *Scheduler) Run(ctx context.Context) error {
	sendCtx, cancelSend := context.WithCancel(context.Background())
	defer cancelSend()
	s.mu.Lock()
	s.sendCtx = sendCtx
	s.mu.Unlock()
	s.loadRecipients()
	defer s.saveRecipients()
	saveTick := time.NewTicker(30 * time.Second)
	defer saveTick.Stop()
	// What recovery read is tracked without a second read; the scans
	// below then only read what is not tracked yet.
	for _, env := range s.spool.TakeRecovered() {
		s.track(env, env.State)
	}
	if err := s.scan(queue.Deferred); err != nil {
		return err
	}
	if err := s.scan(queue.Incoming); err != nil {
		return err
	}
	poll := time.NewTicker(s.o.PollInterval)
	defer poll.Stop()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		s.mu.Lock()
		next := s.promote(ctx)
		s.mu.Unlock()
		// next is on the scheduler's clock (Options.Now): measure the wait
		// on that clock too. time.Until would compare it with the real
		// clock and spin whenever the two disagree.
		d := next.Sub(s.o.Now())
		if next.IsZero() || d > time.Minute {
			d = time.Minute
		}
		timer.Reset(max(d, time.Millisecond))
		select {
		case <-ctx.Done():
			s.shutdown(cancelSend)
			return nil
		case env := <-s.spool.Notify():
			s.addEnv(env)
		case <-poll.C:
			if err := s.scan(queue.Incoming); err != nil {
				s.log.Error("cannot read the spool's incoming directory", "error", err.Error())
			}
		case <-s.kick:
		case <-timer.C:
		case <-saveTick.C:
			s.saveRecipients()
		}
	}
}

func (s *Scheduler) shutdown(cancelSend context.CancelFunc) {
	s.mu.Lock()
	for _, mb := range s.mbx {
		s.broadcast(mb)
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(s.o.ShutdownGrace):
		s.log.Warn("shutdown: cutting off deliveries still in flight; they stay queued and are retried after restart")
		cancelSend()
		<-done
	}
}

func (s *Scheduler) poke() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// scan indexes the envelopes of a state directory that the scheduler does
// not know yet, and notices mail an operator made due again.
func (s *Scheduler) scan(st queue.State) error {
	ids, err := s.spool.IDs(st)
	if err != nil {
		return err
	}
	for _, id := range ids {
		s.add(id, st)
	}
	return nil
}

func (s *Scheduler) add(id string, st queue.State) {
	s.mu.Lock()
	it := s.tracked[id]
	if it != nil {
		moved := st == queue.Incoming && !it.inflight && it.state != queue.Incoming
		s.mu.Unlock()
		if !moved {
			return
		}
		// Known: a queue command may have moved it from deferred to
		// incoming (retry, release): make it due now. But the sighting
		// may be stale (a notification still in the channel, or a
		// listing made before our own attempt deferred it): only an
		// envelope that is in incoming/ now counts.
		if _, err := s.spool.Load(queue.Incoming, id); err != nil {
			return
		}
		s.mu.Lock()
		if s.tracked[id] == it && !it.inflight && it.state != queue.Incoming {
			it.state = queue.Incoming
			s.makeReady(s.mailbox(it.mailbox), it, s.o.Now())
		}
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	env, err := s.spool.Load(st, id)
	if err != nil {
		if !errors.Is(err, queue.ErrNotFound) {
			s.log.Error("cannot read envelope; it stays where it is and recovery at the next start moves it to corrupt/", "id", id, "state", st, "error", err.Error())
		}
		return
	}
	s.track(env, st)
}

// addEnv indexes a message just committed, from the envelope the spool
// handed over: nothing is read back from disk.
// (track itself skips a message already tracked.)
func (s *Scheduler) addEnv(env *queue.Envelope) {
	s.track(env, queue.Incoming)
}

// track starts scheduling a message read in state st.
func (s *Scheduler) track(env *queue.Envelope, st queue.State) {
	id := env.ID
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tracked[id] != nil {
		return
	}
	it := &item{id: id, mailbox: strings.ToLower(env.Mailbox), state: st, fresh: len(env.Attempts) == 0, due: env.NextAttempt}
	s.tracked[id] = it
	mb := s.mailbox(it.mailbox)
	now := s.o.Now()
	if st == queue.Incoming || !it.due.After(now) || heldByOurSetup(env) {
		s.makeReady(mb, it, now)
	} else {
		heap.Push(&mb.later, &heapEntry{it: it, seq: it.seq, due: it.due})
	}
	s.poke()
}

// heldByOurSetup reports whether a message's last attempt was refused for
// the relay's own setup (credentials, permissions, a SendAs grant). Such
// mail is due as soon as delivery starts: the admin has most likely
// restarted the relay after fixing it, and it should not sit out a retry
// delay of up to an hour.
func heldByOurSetup(env *queue.Envelope) bool {
	n := len(env.Attempts)
	if n == 0 {
		return false
	}
	r := env.Attempts[n-1].Result
	return r == transport.ConfigFault.String() || r == transport.SenderFault.String()
}

func (s *Scheduler) mailbox(addr string) *mbox {
	mb := s.mbx[addr]
	if mb == nil {
		mb = &mbox{addr: addr, wake: make(chan struct{}), sent: window{span: s.o.RateWindow}, rcpts: window{span: 24 * time.Hour}}
		s.mbx[addr] = mb
	}
	return mb
}

// makeReady puts an item in its mailbox's ready list. Mail never tried
// goes to the fresh list so a backlog of retries cannot starve it.
func (s *Scheduler) makeReady(mb *mbox, it *item, now time.Time) {
	it.seq++
	it.due = now
	if it.ready {
		// Already in a ready list: a second entry would hand it to two
		// workers at once.
		s.broadcast(mb)
		return
	}
	it.ready = true
	if it.fresh {
		mb.fresh = append(mb.fresh, it)
	} else {
		mb.retry = append(mb.retry, it)
	}
	s.broadcast(mb)
}

func (s *Scheduler) broadcast(mb *mbox) {
	close(mb.wake)
	mb.wake = make(chan struct{})
}

// promote moves due items to the ready lists and starts workers where
// there is work. It returns when it next needs to run.
func (s *Scheduler) promote(ctx context.Context) time.Time {
	now := s.o.Now()
	var next time.Time
	soonest := func(t time.Time) {
		if !t.IsZero() && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	for _, mb := range s.mbx {
		for mb.later.Len() > 0 {
			e := mb.later[0]
			if e.seq != e.it.seq {
				heap.Pop(&mb.later)
				continue
			}
			if e.due.After(now) {
				soonest(e.due)
				break
			}
			heap.Pop(&mb.later)
			s.makeReady(mb, e.it, now)
		}
		if now.Before(mb.pausedUntil) {
			soonest(mb.pausedUntil)
			continue
		}
		ready := len(mb.fresh) + len(mb.retry)
		if ready == 0 || ctx.Err() != nil {
			continue
		}
		mc := s.cfg.Mailbox(mb.addr)
		if mc == nil {
			if !mb.warnedNoConf {
				mb.warnedNoConf = true
				s.log.Error("mail is waiting for a mailbox that is not in the configuration", "mailbox", mb.addr, "messages", ready,
					"fix", "add a [[mailbox]] for "+mb.addr+" and reload (SIGHUP), or remove the mail with `oauthrelay queue delete`")
			}
			continue
		}
		for mb.workers < mc.MaxConnections && ready > mb.idle {
			mb.workers++
			ready--
			s.wg.Add(1)
			go s.worker(ctx, mb)
		}
	}
	return next
}

// take gives a worker its next item, waiting up to the idle timeout. It
// returns nil when the worker should close its connection and stop.
func (s *Scheduler) take(ctx context.Context, mb *mbox) *item {
	idle := s.o.IdleTimeout
	if s.o.Shared != nil {
		idle = min(idle, sharedIdle)
	}
	idleUntil := time.Now().Add(idle)
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		mc := s.cfg.Mailbox(mb.addr)
		if ctx.Err() != nil || mc == nil || s.o.Now().Before(mb.pausedUntil) || mb.workers > mc.MaxConnections {
			mb.workers--
			return nil
		}
		var it *item
		switch {
		case len(mb.fresh) > 0 && (len(mb.retry) == 0 || !mb.retryTurn):
			it, mb.fresh = mb.fresh[0], mb.fresh[1:]
			mb.retryTurn = true
		case len(mb.retry) > 0:
			it, mb.retry = mb.retry[0], mb.retry[1:]
			mb.retryTurn = false
		}
		if it != nil {
			it.ready = false
			it.inflight = true
			it.lifts = mb.lifts
			return it
		}
		wait := time.Until(idleUntil)
		if wait <= 0 {
			mb.workers--
			return nil
		}
		wake := mb.wake
		mb.idle++
		s.mu.Unlock()
		t := time.NewTimer(wait)
		select {
		case <-wake:
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
		s.mu.Lock()
		mb.idle--
	}
}

func (s *Scheduler) worker(ctx context.Context, mb *mbox) {
	defer s.wg.Done()
	w := &worker{s: s, mb: mb}
	defer w.closeConn()
	for {
		it := s.take(ctx, mb)
		if it == nil {
			return
		}
		w.process(ctx, it)
		if w.leaseHeld != nil && !w.leaseHeld.Keep() {
			// The lease lapsed, or in fallback this relay holds more
			// than its share: this connection closes (then the lease
			// is released).
			w.closeConn()
			s.mu.Lock()
			mb.workers--
			s.mu.Unlock()
			s.poke()
			return
		}
	}
}

// forget drops an item the spool no longer has where we expected it.
func (s *Scheduler) forget(it *item) {
	s.mu.Lock()
	delete(s.tracked, it.id)
	s.mu.Unlock()
}

// reschedule puts an item back after an attempt.
func (s *Scheduler) reschedule(it *item, st queue.State, due time.Time, kind transport.Kind) {
	s.mu.Lock()
	defer s.mu.Unlock()
	it.inflight = false
	it.fresh = false
	it.state = st
	it.lastKind = kind
	mb := s.mailbox(it.mailbox)
	switch {
	case kind == transport.ConfigFault && !mb.configFault,
		kind == transport.SenderFault && it.lifts != mb.lifts:
		// The fault this attempt met was lifted since (a reload with
		// the fix, or another connection got through): the lift's
		// releaseHeld could not see this message in flight, so do not
		// sit out the old retry time. A lift ends a config pause, so
		// the first case covers it.
		due = s.o.Now()
	}
	it.seq++
	it.due = due
	heap.Push(&mb.later, &heapEntry{it: it, seq: it.seq, due: it.due})
	s.poke()
}
