package msemu

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Message is one message accepted by the SMTP server, the High Volume
// Email server or Graph.
type Message struct {
	// MailFrom is the envelope sender; on Graph, which has no envelope,
	// the message's From address (or the mailbox).
	Mailbox, AppID, MailFrom string
	// Rcpts is the SMTP envelope (RCPT TO); nil on Graph.
	Rcpts []string
	// Data is the message exactly as received (after dot-unstuffing);
	// for a Graph draft, the draft's MIME with its added attachments.
	Data []byte
	// QueueID is the message id quoted in the 250 reply, with brackets;
	// on Graph the Message-ID header or a generated one.
	QueueID string
	At      time.Time
	// ConnID numbers SMTP connections from 1, so tests can tell whether
	// messages shared a connection. Graph numbers its own connections
	// from 1 and gives the one the delivering request came on.
	ConnID int
	// Transport is how the message came: TransportSMTP, TransportGraph
	// or TransportHVE.
	Transport string
	// Recipients are whom Microsoft 365 delivers to: the envelope on
	// SMTP and HVE; on Graph the message's To, Cc and Bcc.
	Recipients []string
	// GraphPath is GraphSendMail or GraphDraft on Graph, "" otherwise.
	GraphPath string
	// Uploads are a draft's attachment upload sessions, in the order
	// they completed.
	Uploads []Upload
}

// Transports a Message can come by.
const (
	TransportSMTP  = "smtp"
	TransportGraph = "graph"
	TransportHVE   = "hve"
)

// Graph paths a Message can take.
const (
	// GraphSendMail is one POST …/sendMail with the MIME.
	GraphSendMail = "sendMail"
	// GraphDraft is a draft, attachments and POST …/messages/{id}/send.
	GraphDraft = "draft"
)

// Upload is one completed attachment upload session.
type Upload struct {
	Name, ContentType string
	Size              int64
	// Chunks are the sizes of the PUTs, in order.
	Chunks []int
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
	// HVEConnections counts connections to the High Volume Email listener
	// (Connections counts the SMTP AUTH listener's).
	HVEConnections int64
	// GraphConnections counts new TCP+TLS connections the Graph server
	// accepted; far fewer than GraphRequests proves keep-alive reuse.
	GraphConnections int64
	// GraphRequests counts every Graph request, upload PUTs included.
	GraphRequests int64
	// GraphRequestsByMailbox counts them by lower-case mailbox.
	GraphRequestsByMailbox map[string]int64
	// GraphStatuses counts Graph answers by HTTP status.
	GraphStatuses map[int]int64
	// MaxConcurrentGraphByMailbox is the most Graph requests ever in
	// progress at once for each lower-case mailbox.
	MaxConcurrentGraphByMailbox map[string]int
	// GraphTokens describes the bearer token of each Graph API request
	// (not upload PUTs); Reply is the refusal's status and code, such as
	// "401 InvalidAuthenticationToken", or "" when it was authorized.
	GraphTokens []AuthRecord
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
	s.TokenRequestsByClient = copyMap(e.stats.TokenRequestsByClient)
	s.MaxConcurrentByMailbox = copyMap(e.stats.MaxConcurrentByMailbox)
	s.AuthTokens = append([]AuthRecord(nil), e.stats.AuthTokens...)
	s.GraphRequestsByMailbox = copyMap(e.stats.GraphRequestsByMailbox)
	s.GraphStatuses = copyMap(e.stats.GraphStatuses)
	s.MaxConcurrentGraphByMailbox = copyMap(e.stats.MaxConcurrentGraphByMailbox)
	s.GraphTokens = append([]AuthRecord(nil), e.stats.GraphTokens...)
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
		TokenRequestsByClient:       map[string]int64{},
		MaxConcurrentByMailbox:      map[string]int{},
		GraphRequestsByMailbox:      map[string]int64{},
		GraphStatuses:               map[int]int64{},
		MaxConcurrentGraphByMailbox: map[string]int{},
	}
	// Keep the high-water marks honest for what is still in progress.
	for m, n := range e.active {
		if n > 0 {
			e.stats.MaxConcurrentByMailbox[m] = n
		}
	}
	for m, n := range e.graph.activeByMailbox {
		if n > 0 {
			e.stats.MaxConcurrentGraphByMailbox[m] = n
		}
	}
}

func copyMap[K comparable, V any](m map[K]V) map[K]V {
	c := make(map[K]V, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

// deliver records m as delivered, wakes WaitDelivered and writes the
// demo's .eml file. m.Data is kept, not copied: callers hand it over.
func (e *Emulator) deliver(m Message) {
	e.mu.Lock()
	n := e.deliverLocked(m)
	e.mu.Unlock()
	e.writeMailFile(n, m)
	e.log.Info("msemu delivered", "transport", m.Transport, "conn", m.ConnID, "mailbox", m.Mailbox,
		"from", m.MailFrom, "rcpts", len(m.Recipients), "size", len(m.Data), "id", m.QueueID)
}

// deliverLocked appends m and returns its number; e.mu is held.
func (e *Emulator) deliverLocked(m Message) int {
	e.delivered = append(e.delivered, m)
	close(e.deliveredCh)
	e.deliveredCh = make(chan struct{})
	return len(e.delivered)
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
