package relay

import (
	"encoding/base64"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/oauthrelay/oauthrelay/internal/testkit"
)

// TestParallelGuesses sends 40 wrong passwords at once from one address,
// each on its own connection, then the right one. Only auth_max_failures
// passwords may be compared, one at a time, and the right password must
// then find the address locked out. (The lockout was checked before the
// compare and recorded after it: 32 of 40 guesses were compared, and the
// right password after them was accepted.)
func TestParallelGuesses(t *testing.T) {
	var compares, inFlight, most atomic.Int64
	r := startRelay(t, "auth_max_failures = 5\nmax_connections_per_ip = 100", func(r *testRelay) {
		r.srv.lim.sleep = func(time.Duration) {}
		r.srv.lim.compare = func(hash, pw []byte) bool {
			compares.Add(1)
			n := inFlight.Add(1)
			defer inFlight.Add(-1)
			for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
			}
			return bcryptMatches(hash, pw)
		}
	})
	var wg sync.WaitGroup
	replies := make(chan string, 40)
	for range 40 {
		c := r.dial()
		c.ehlo()
		wg.Add(1)
		go func() {
			defer wg.Done()
			replies <- c.AuthPlain("app", "guess")
		}()
	}
	wg.Wait()
	close(replies)
	codes := map[string]int{}
	for rep := range replies {
		codes[rep[:9]]++
	}
	if codes["535 5.7.8"] != 4 || codes["454 4.7.0"] != 36 {
		t.Errorf("replies %v, want 4 × 535 5.7.8 and 36 × 454 4.7.0", codes)
	}
	c := r.dial()
	c.ehlo()
	c.authPlain("454 4.7.0 Too many failed logins", "app", appPassword)
	if n := compares.Load(); n != 5 {
		t.Errorf("%d passwords compared, want auth_max_failures = 5", n)
	}
	if n := most.Load(); n != 1 {
		t.Errorf("%d compares ran at once for one address, want 1", n)
	}
}

// TestUnknownUserSameCost: an unknown username is compared against a hash
// of the configured hashes' cost, so that it fails no faster than a
// known one with a wrong password (the dummy hash had cost 10 while
// hash-password makes 12).
func TestUnknownUserSameCost(t *testing.T) {
	var costs []int
	var mu sync.Mutex
	r := startRelay(t, "", func(r *testRelay) {
		r.srv.lim.sleep = func(time.Duration) {}
		r.srv.lim.compare = func(hash, pw []byte) bool {
			n, _ := bcrypt.Cost(hash)
			mu.Lock()
			costs = append(costs, n)
			mu.Unlock()
			return bcryptMatches(hash, pw)
		}
	})
	c := r.dial()
	c.ehlo()
	c.authPlain("535 5.7.8", "nobody", "guess")
	c = r.dial()
	c.ehlo()
	c.authPlain("535 5.7.8", "app", "guess")
	a, _ := hashes(t)
	want, _ := bcrypt.Cost([]byte(a))
	mu.Lock()
	defer mu.Unlock()
	if len(costs) != 2 || costs[0] != want || costs[1] != want {
		t.Errorf("compared at costs %v, want %d for both", costs, want)
	}
	if !strings.Contains(r.logs.String(), "username=nobody") {
		t.Errorf("the unknown username is not logged")
	}
}

// BenchmarkLoginUnderAttack measures how long a valid login from one
// address takes while 300 connections from another address send wrong
// passwords at the same time, with bcrypt at cost 12 (what hash-password
// makes). Before the limiter reserved attempts and capped compares, the
// valid login waited 29 s. Run:
//
//	go test -run='^$' -bench=LoginUnderAttack -benchtime=3x ./relay
func BenchmarkLoginUnderAttack(b *testing.B) {
	h, err := bcrypt.GenerateFromPassword([]byte(appPassword), 12)
	if err != nil {
		b.Fatal(err)
	}
	started := make(chan struct{}, 1000)
	r := startRelay(b, "max_connections = 2000\nmax_connections_per_ip = 1000", func(r *testRelay) {
		r.cfg.Client("app").PasswordHash = string(h)
		r.srv.lim.compare = func(hash, pw []byte) bool {
			select {
			case started <- struct{}{}:
			default:
			}
			return bcryptMatches(hash, pw)
		}
	})
	attacker := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
	var total time.Duration
	for i := range b.N {
		b.StopTimer()
		// A fresh attacking address each round, so it is not locked out
		// before it starts.
		attacker.LocalAddr = &net.TCPAddr{IP: net.IPv4(127, 0, 1, byte(i+2))}
		var wg sync.WaitGroup
		for range 300 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				conn, err := attacker.Dial("tcp", r.addr)
				if err != nil {
					b.Error(err)
					return
				}
				c := testkit.NewSMTPClient(b, conn)
				c.Expect("EHLO attacker.test", "250")
				c.AuthPlain("app", "guess")
				conn.Close()
			}()
		}
		<-started // the attack is comparing passwords
		b.StartTimer()
		t0 := time.Now()
		c := r.dial()
		c.ehlo()
		c.authPlain("235", "app", appPassword)
		total += time.Since(t0)
		b.StopTimer()
		c.Conn().Close()
		wg.Wait()
		for len(started) > 0 {
			<-started
		}
	}
	b.ReportMetric(total.Seconds()/float64(b.N), "s/valid-login")
}

// countCompares makes r's limiter skip its delays and count the
// passwords it compares.
func countCompares(r *testRelay, n *atomic.Int64) {
	r.srv.lim.sleep = func(time.Duration) {}
	r.srv.lim.compare = func(hash, pw []byte) bool {
		n.Add(1)
		return bcryptMatches(hash, pw)
	}
}

// authLogin logs in with AUTH LOGIN and returns the final reply.
func (c *client) authLogin(want, user, pass string) string {
	c.t.Helper()
	b64 := base64.StdEncoding.EncodeToString
	c.cmd("334", "AUTH LOGIN")
	c.cmd("334", "%s", b64([]byte(user)))
	return c.cmd(want, "%s", b64([]byte(pass)))
}

// TestSameLoginOverAnotherMechanism: a client that tries its wrong
// password over LOGIN and then PLAIN on one connection (swaks, some
// libraries) made one failed login and counts once; three such runs
// locked the address out with auth_max_failures = 5. A new password, or
// the same one on a new connection, still counts.
func TestSameLoginOverAnotherMechanism(t *testing.T) {
	var compares atomic.Int64
	r := startRelay(t, "auth_max_failures = 3", func(r *testRelay) { countCompares(r, &compares) })
	for range 2 {
		c := r.dial()
		c.ehlo()
		c.authLogin("535 5.7.8", "app", "wrong")
		c.authPlain("535 5.7.8", "app", "wrong")
		c.authLogin("535 5.7.8", "app", "wrong")
	}
	if n := compares.Load(); n != 2 {
		t.Errorf("%d passwords compared for 2 connections each repeating one password, want 2", n)
	}
	c := r.dial()
	c.ehlo()
	c.authPlain("235", "app", appPassword) // 2 failures of 3: not locked out

	// Only a repeat of the last failed login is free: another password
	// in between makes the first one count again.
	c = r.dial()
	c.ehlo()
	c.authPlain("535 5.7.8", "app", "guess1")
	c.authPlain("535 5.7.8", "app", "guess2")
	c.authPlain("454 4.7.0 Too many failed logins", "app", "guess1")
	if n := compares.Load(); n != 6 {
		t.Errorf("%d passwords compared in all, want 6", n)
	}
}

// TestLockoutsReportedAndCleared: a lockout is counted by the LockedOut
// hook and in LockedOut, and ClearLockouts (a reload) lifts it and the
// failure counts with it.
func TestLockoutsReportedAndCleared(t *testing.T) {
	var compares, hooked atomic.Int64
	r := startRelay(t, "auth_max_failures = 2", func(r *testRelay) {
		countCompares(r, &compares)
		r.srv.hooks.LockedOut = func() { hooked.Add(1) }
	})
	c := r.dial()
	c.ehlo()
	c.authPlain("535 5.7.8", "app", "guess1")
	if n := r.srv.LockedOut(); n != 0 {
		t.Errorf("LockedOut = %d after one failure, want 0", n)
	}
	c.authPlain("454 4.7.0", "app", "guess2")
	if n, h := r.srv.LockedOut(), hooked.Load(); n != 1 || h != 1 {
		t.Errorf("LockedOut = %d, hook called %d times; want 1 and 1", n, h)
	}
	c = r.dial()
	c.ehlo()
	c.authPlain("454 4.7.0", "app", appPassword)
	if n := r.srv.ClearLockouts(); n != 1 {
		t.Errorf("ClearLockouts = %d, want 1", n)
	}
	if n := r.srv.LockedOut(); n != 0 {
		t.Errorf("LockedOut = %d after ClearLockouts, want 0", n)
	}
	c = r.dial()
	c.ehlo()
	c.authPlain("235", "app", appPassword)
	// The counts went with it: one failure now is the first.
	c = r.dial()
	c.ehlo()
	c.authPlain("535 5.7.8", "app", "guess3")
	if n := r.srv.ClearLockouts(); n != 0 {
		t.Errorf("ClearLockouts = %d with nobody locked out, want 0", n)
	}
}
