package msemu

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Message is one message accepted by the SMTP server.
type Message struct {
	Mailbox, AppID, MailFrom string
	Rcpts                    []string
	// Data is the message exactly as received (after dot-unstuffing).
	Data []byte
	// QueueID is the message id quoted in the 250 reply, with brackets.
	QueueID string
	At      time.Time
	// ConnID numbers SMTP connections from 1, so tests can tell whether
	// messages shared a connection.
	ConnID int
}

// AuthRecord describes one AUTH XOAUTH2 attempt.
type AuthRecord struct {
	Mailbox, AppID string
	At             time.Time
	// Expires is the presented token's exp; zero if it did not parse.
	Expires time.Time
	// Remaining is Expires-At: tests assert it never falls below the
	// relay's minimum lifetime.
	Remaining time.Duration
	OK        bool
	// Reply is the server's reply line.
	Reply  string
	ConnID int
}

// Stats counts what the emulator has seen since New or ResetStats.
type Stats struct {
	TokenRequests          int64
	TokenRequestsByClient  map[string]int64
	TokensIssued           int64
	Connections            int64
	MaxConcurrentByMailbox map[string]int
	AuthFailures           int64
	AuthTokens             []AuthRecord
}

// Delivered returns a copy of the messages accepted so far.
func (e *Emulator) Delivered() []Message {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]Message(nil), e.delivered...)
}

// WaitDelivered waits until at least n messages were delivered and
// returns them all, or returns ctx's error with what has arrived.
func (e *Emulator) WaitDelivered(ctx context.Context, n int) ([]Message, error) {
	for {
		e.mu.Lock()
		ch := e.deliveredCh
		if len(e.delivered) >= n {
			msgs := append([]Message(nil), e.delivered...)
			e.mu.Unlock()
			return msgs, nil
		}
		e.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return e.Delivered(), ctx.Err()
		}
	}
}

// Stats returns a copy of the counters.
func (e *Emulator) Stats() Stats {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := e.stats
	s.TokenRequestsByClient = map[string]int64{}
	for k, v := range e.stats.TokenRequestsByClient {
		s.TokenRequestsByClient[k] = v
	}
	s.MaxConcurrentByMailbox = map[string]int{}
	for k, v := range e.stats.MaxConcurrentByMailbox {
		s.MaxConcurrentByMailbox[k] = v
	}
	s.AuthTokens = append([]AuthRecord(nil), e.stats.AuthTokens...)
	return s
}

// ResetStats zeroes the counters (not the delivered messages, nor the
// rate and quota windows).
func (e *Emulator) ResetStats() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.resetStatsLocked()
}

func (e *Emulator) resetStatsLocked() {
	e.stats = Stats{
		TokenRequestsByClient:  map[string]int64{},
		MaxConcurrentByMailbox: map[string]int{},
	}
	// Keep the high-water mark honest for connections still open.
	for m, n := range e.active {
		if n > 0 {
			e.stats.MaxConcurrentByMailbox[m] = n
		}
	}
}

func (e *Emulator) writeMailFile(n int, m Message) {
	if e.opts.Dir == "" {
		return
	}
	if err := os.MkdirAll(e.opts.Dir, 0o700); err != nil {
		e.log.Error("msemu mail dir", "err", err)
		return
	}
	name := strings.Map(func(r rune) rune {
		if r == '/' || r == '\\' || r == 0 || r == ':' {
			return '_'
		}
		return r
	}, m.Mailbox)
	p := filepath.Join(e.opts.Dir, fmt.Sprintf("%d-%s.eml", n, name))
	if err := os.WriteFile(p, m.Data, 0o600); err != nil {
		e.log.Error("msemu mail file", "err", err)
	}
}
