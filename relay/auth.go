package relay

import (
	"bytes"
	"errors"
	"net/netip"
	"sync"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"golang.org/x/crypto/bcrypt"
)

// dummyHash is compared against when the username is unknown, so that a
// wrong username takes as long as a wrong password and cannot be probed.
var dummyHash, _ = bcrypt.GenerateFromPassword([]byte("oauthrelay-no-such-user"), bcrypt.DefaultCost)

// checkPassword compares in constant time relative to the hash's cost.
func checkPassword(hash string, password string) bool {
	if hash == "" {
		bcrypt.CompareHashAndPassword(dummyHash, []byte(password))
		return false
	}
	return bcrypt.CompareHashAndPassword([]byte(hash), []byte(password)) == nil
}

// limiter slows down and then locks out addresses that keep failing AUTH.
type limiter struct {
	mu       sync.Mutex
	max      int
	lockout  time.Duration
	now      func() time.Time
	sleep    func(time.Duration)
	failures map[netip.Addr]*failState
}

type failState struct {
	n           int
	last        time.Time
	lockedUntil time.Time
}

func newLimiter(max int, lockout time.Duration, now func() time.Time) *limiter {
	return &limiter{max: max, lockout: lockout, now: now, sleep: time.Sleep, failures: map[netip.Addr]*failState{}}
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

// fail records a failure and returns the delay to apply before answering
// and whether the address is now locked out.
func (l *limiter) fail(ip netip.Addr) (time.Duration, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	l.gc(now)
	f := l.failures[ip]
	if f == nil || now.Sub(f.last) > l.lockout {
		f = &failState{}
		l.failures[ip] = f
	}
	f.n++
	f.last = now
	if f.n >= l.max {
		f.lockedUntil = now.Add(l.lockout)
		f.n = 0
		return 0, true
	}
	// One second per failure so far: harmless for a person who mistyped,
	// ruinous for a dictionary.
	return time.Duration(f.n) * time.Second, false
}

func (l *limiter) succeed(ip netip.Addr) {
	l.mu.Lock()
	delete(l.failures, ip)
	l.mu.Unlock()
}

// gc forgets addresses idle for longer than the lockout, so a scan from
// many addresses cannot grow the map without bound.
func (l *limiter) gc(now time.Time) {
	if len(l.failures) < 10000 {
		return
	}
	for ip, f := range l.failures {
		if now.Sub(f.last) > l.lockout && now.After(f.lockedUntil) {
			delete(l.failures, ip)
		}
	}
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
