package relay

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"sync"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"golang.org/x/crypto/bcrypt"

	"github.com/oauthrelay/oauthrelay/config"
)

// limiter slows down and then locks out addresses that keep failing AUTH,
// and keeps password checks from taking the machine: bcrypt is slow on
// purpose, so unchecked parallel guesses would hold every core and keep
// legitimate logins waiting.
//
// An attempt reserves its place in the address's failure count before
// the password is compared, so at most max guesses per lockout period
// come from one address however many connections carry them; one compare
// at a time runs per address, and at most one per core in all.
type limiter struct {
	mu       sync.Mutex
	max      int
	lockout  time.Duration
	now      func() time.Time
	sleep    func(time.Duration)
	failures map[netip.Addr]*failState
	// compares holds a place per password compare running.
	compares chan struct{}
	// compare checks password against hash; tests replace it to watch.
	compare func(hash, password []byte) bool

	dummyMu sync.Mutex
	dummies map[int][]byte // by cost
}

type failState struct {
	n           int // failures (and the attempt running) in this period
	last        time.Time
	lockedUntil time.Time
	// turn is held by the one attempt comparing a password for this
	// address; users counts the attempts holding or waiting for it, so
	// that gc keeps the state while they do.
	turn  chan struct{}
	users int
}

func newLimiter(max int, lockout time.Duration, now func() time.Time) *limiter {
	return &limiter{max: max, lockout: lockout, now: now, sleep: time.Sleep, failures: map[netip.Addr]*failState{},
		compares: make(chan struct{}, runtime.GOMAXPROCS(0)), compare: bcryptMatches, dummies: map[int][]byte{}}
}

func bcryptMatches(hash, password []byte) bool {
	return bcrypt.CompareHashAndPassword(hash, password) == nil
}

// locked returns how long ip is still locked out.
func (l *limiter) locked(ip netip.Addr) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	f := l.failures[ip]
	if f == nil {
		return 0
	}
	if d := f.lockedUntil.Sub(l.now()); d > 0 {
		return d
	}
	return 0
}

// attemptResult is the outcome of one login attempt.
type attemptResult struct {
	ok bool
	// lockedFor is set when the address was locked out before the
	// attempt: no password was compared.
	lockedFor time.Duration
	// nowLocked: this failure locked the address out.
	nowLocked bool
	// delay is how long to wait before answering a failure.
	delay time.Duration
}

// attempt runs check, which compares a password, for a login from ip:
// after the address's earlier attempts, within the global limit, and
// only if the address is not locked out. A failure counts against ip; a
// success clears its count.
func (l *limiter) attempt(ip netip.Addr, check func() bool) attemptResult {
	l.mu.Lock()
	f := l.failures[ip]
	if f == nil {
		l.gc(l.now())
		f = &failState{turn: make(chan struct{}, 1)}
		l.failures[ip] = f
	}
	f.users++
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		f.users--
		l.mu.Unlock()
	}()

	f.turn <- struct{}{}
	defer func() { <-f.turn }()
	l.mu.Lock()
	now := l.now()
	if d := f.lockedUntil.Sub(now); d > 0 {
		l.mu.Unlock()
		return attemptResult{lockedFor: d}
	}
	if now.Sub(f.last) > l.lockout {
		f.n = 0
	}
	// Reserved before the compare: a guess counts whatever happens to
	// the connection that carries it.
	f.n++
	f.last = now
	l.mu.Unlock()

	l.compares <- struct{}{}
	ok := check()
	<-l.compares

	l.mu.Lock()
	defer l.mu.Unlock()
	if ok {
		f.n = 0
		return attemptResult{ok: true}
	}
	if f.n >= l.max {
		f.lockedUntil = l.now().Add(l.lockout)
		f.n = 0
		return attemptResult{nowLocked: true}
	}
	// One second per failure so far: harmless for a person who mistyped,
	// ruinous for a dictionary.
	return attemptResult{delay: time.Duration(f.n) * time.Second}
}

// lockedOut counts the addresses locked out now.
func (l *limiter) lockedOut() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	now, n := l.now(), 0
	for _, f := range l.failures {
		if f.lockedUntil.After(now) {
			n++
		}
	}
	return n
}

// clear lifts every lockout and forgets every failure count, and returns
// how many addresses were locked out. The state of an address with an
// attempt running stays (its turn), with its count cleared.
func (l *limiter) clear() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	now, n := l.now(), 0
	for ip, f := range l.failures {
		if f.lockedUntil.After(now) {
			n++
		}
		f.n, f.lockedUntil = 0, time.Time{}
		if f.users == 0 {
			delete(l.failures, ip)
		}
	}
	return n
}

// gc forgets addresses idle for longer than the lockout, so a scan from
// many addresses cannot grow the map without bound. Called with l.mu held.
func (l *limiter) gc(now time.Time) {
	if len(l.failures) < 10000 {
		return
	}
	for ip, f := range l.failures {
		if f.users == 0 && now.Sub(f.last) > l.lockout && now.After(f.lockedUntil) {
			delete(l.failures, ip)
		}
	}
}

// failedLogin remembers a session's last failed login: a digest of its
// username and password (the password itself is not kept) and the
// configuration it was judged by.
//
// The rule: on one connection, a login with the same username and
// password as the connection's last failed one, under the same
// configuration, is the same failed login tried over another mechanism.
// It is refused without a compare and without counting again. Any other
// login (another password, another connection, a reloaded configuration)
// is a new attempt and counts. Guessing gains nothing from it: a repeat
// tries no new password.
type failedLogin struct {
	cfg *config.Config // nil: none yet
	sum [sha256.Size]byte
}

func loginSum(username, password string) [sha256.Size]byte {
	h := sha256.New()
	fmt.Fprintf(h, "%d:%s:%s", len(username), username, password)
	var s [sha256.Size]byte
	h.Sum(s[:0])
	return s
}

func (f *failedLogin) set(cfg *config.Config, username, password string) {
	f.cfg, f.sum = cfg, loginSum(username, password)
}

// same reports whether username and password are the last failed login's,
// under cfg.
func (f *failedLogin) same(cfg *config.Config, username, password string) bool {
	return f.cfg != nil && f.cfg == cfg && f.sum == loginSum(username, password)
}

// dummyHash is what a password is compared against when the username is
// unknown: a hash of the same cost as the configured ones, so that a
// wrong username takes as long as a wrong password and cannot be probed.
func (l *limiter) dummyHash(cost int) []byte {
	l.dummyMu.Lock()
	defer l.dummyMu.Unlock()
	h := l.dummies[cost]
	if h == nil {
		h, _ = bcrypt.GenerateFromPassword([]byte("oauthrelay-no-such-user"), cost)
		l.dummies[cost] = h
	}
	return h
}

// hashCost is the bcrypt cost of the configured clients' password hashes
// (the highest, if they differ), or bcrypt's default when none has one.
func hashCost(clients []*config.Client) int {
	cost := 0
	for _, c := range clients {
		if n, err := bcrypt.Cost([]byte(c.PasswordHash)); err == nil && n > cost {
			cost = n
		}
	}
	if cost == 0 {
		return bcrypt.DefaultCost
	}
	return cost
}

// loginServer implements the server side of AUTH LOGIN, which go-sasl
// lacks but which most printers and old ERP systems speak.
type loginServer struct {
	step     int
	username string
	auth     func(username, password string) error
}

// Next implements sasl.Server.
func (a *loginServer) Next(response []byte) (challenge []byte, done bool, err error) {
	switch a.step {
	case 0:
		a.step = 1
		if len(response) > 0 {
			// Initial response carries the username (RFC 4616 style
			// clients such as swaks -a LOGIN with --auth-user).
			a.username = string(response)
			a.step = 2
			return []byte("Password:"), false, nil
		}
		return []byte("Username:"), false, nil
	case 1:
		a.username = string(response)
		a.step = 2
		return []byte("Password:"), false, nil
	case 2:
		a.step = 3
		return nil, true, a.auth(a.username, string(response))
	}
	return nil, false, newRefusal(authLoginSequence)
}

// newPlainServer wraps go-sasl's PLAIN server, refusing an authorization
// identity that differs from the username: a client may only be itself.
func newPlainServer(auth func(username, password string) error) sasl.Server {
	return sasl.NewPlainServer(func(identity, username, password string) error {
		if identity != "" && identity != username {
			return newRefusal(authOtherIdentity)
		}
		return auth(username, password)
	})
}

// sanitize keeps a message printable and short, so no client-supplied byte
// is echoed back raw.
func sanitize(s string) string {
	b := []byte(s)
	if len(b) > 120 {
		b = b[:120]
	}
	return string(bytes.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, b))
}

// saslWrap makes sure every error of a SASL exchange reaches the client
// as a reply from the table, and not as a 454 with internal text.
type saslWrap struct {
	s  sasl.Server
	ss *session
}

// Next implements sasl.Server, converting errors to SMTP replies.
func (w saslWrap) Next(r []byte) ([]byte, bool, error) {
	c, d, err := w.s.Next(r)
	if err == nil {
		return c, d, nil
	}
	var rf *refusal
	switch {
	case errors.As(err, &rf):
		return c, d, w.ss.refuse(rf)
	case isReply(err):
		// Already reported (checkLogin).
		return c, d, err
	}
	// go-sasl's own errors (no password, bad encoding).
	return c, d, w.ss.refuse(newRefusal(authMalformed, sanitize(err.Error())))
}

func isReply(err error) bool {
	_, ok := err.(*smtp.SMTPError)
	return ok
}
