// Package queue is oauthrelay's durable spool.
//
// The layout is meant to be read with ls, cat and tail:
//
//	incoming/<id>.eml    messages due now
//	active/<id>.eml      messages being delivered
//	deferred/<id>.eml    messages waiting for their next attempt
//	hold/<id>.eml        messages an operator put on hold
//	failed/<id>.eml      messages that failed permanently (kept for requeue)
//	corrupt/<id>.eml     messages that could not be read, kept for a person
//	history/<id>.json    the envelope as changed since acceptance (attempts,
//	                     recipients' states); only for messages that have
//	                     had a failed or partial attempt or an operator's
//	                     action
//	tmp/                 files being written
//	state/<name>         small files the relay keeps beside the mail (SaveState)
//
// One file per message: the body exactly as it will be sent, then the
// envelope as accepted, then a footer with a checksum (see msgfile.go). The
// directory a message file lives in is its state, and every state change
// is a rename, so a crash leaves each message in exactly one state. A
// message is acknowledged once its file is written whole and synced: one
// sync, shared by concurrent commits; see Commit.
package queue

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"
)

// State is the directory an envelope lives in.
type State string

// The states, one directory each.
const (
	Incoming State = "incoming"
	Active   State = "active"
	Deferred State = "deferred"
	Hold     State = "hold"
	Failed   State = "failed"
	Corrupt  State = "corrupt"
)

// States lists every envelope state in the order operators read them.
var States = []State{Incoming, Active, Deferred, Hold, Failed, Corrupt}

// ParseState accepts a state name as typed on a command line.
func ParseState(s string) (State, error) {
	for _, st := range States {
		if strings.EqualFold(s, string(st)) {
			return st, nil
		}
	}
	names := make([]string, len(States))
	for i, st := range States {
		names[i] = string(st)
	}
	return "", fmt.Errorf("unknown state %q (one of %s)", s, strings.Join(names, ", "))
}

// Recipient states.
const (
	RcptPending   = "pending"
	RcptDelivered = "delivered"
	RcptFailed    = "failed"
)

// Recipient is one envelope recipient and how far it got.
type Recipient struct {
	Address string    `json:"address"`
	State   string    `json:"state"`
	Reply   string    `json:"reply,omitempty"`
	Updated time.Time `json:"updated,omitzero"`
}

// Attempt is one delivery attempt, kept in the envelope's history.
type Attempt struct {
	At       time.Time `json:"at"`
	Duration Millis    `json:"duration_ms"`
	// Result is "delivered", "partial", "deferred", "failed" or
	// "config_fault".
	Result string `json:"result"`
	// Reply is the upstream's reply, or what went wrong before it answered.
	Reply string `json:"reply"`
	// Recipients are the recipients this attempt was for.
	Recipients []string `json:"recipients,omitempty"`
	// Transport is the door the attempt went through: "smtp", "graph"
	// or "hve" (empty in envelopes written before transports existed).
	Transport string `json:"transport,omitempty"`
}

// Millis is a duration stored as whole milliseconds, so the JSON stays
// readable.
type Millis int64

// Envelope is everything about a message except its body.
type Envelope struct {
	ID       string    `json:"id"`
	Received time.Time `json:"received"`
	// Client is the [[client]] name that sent it; RemoteAddr its address.
	Client     string `json:"client"`
	RemoteAddr string `json:"remote_addr,omitempty"`
	// Mailbox is the mailbox that will sign in to Microsoft 365 for it.
	Mailbox    string       `json:"mailbox"`
	MailFrom   string       `json:"mail_from"`
	Recipients []*Recipient `json:"recipients"`
	Size       int64        `json:"size"`
	// Bounce marks a delivery status notification the relay made, so that a
	// failure to deliver it never causes another one.
	Bounce      bool      `json:"bounce,omitempty"`
	Attempts    []Attempt `json:"attempts,omitempty"`
	NextAttempt time.Time `json:"next_attempt"`
	LastError   string    `json:"last_error,omitempty"`
	// FailReason says why a message in failed/ failed.
	FailReason string `json:"fail_reason,omitempty"`
	// Notified records that the sender was told of failed recipients, so
	// requeueing never bounces twice.
	Notified []string `json:"notified,omitempty"`
	// SMTPUTF8 is set when the client sent the message with SMTPUTF8, so
	// it is sent upstream the same way.
	SMTPUTF8 bool `json:"smtputf8,omitempty"`

	// State is the directory the message was read from or last moved to.
	State State `json:"-"`
	// hist is set when the envelope has been written to history/ (it
	// changed after the message was accepted), so Remove removes it too.
	hist bool
	// file is the message file a delivery worker claimed, kept open from
	// Claim, where its envelope was read, to the Return, Move or Remove
	// that ends the claim, so the body is read without opening the file
	// again; bodyLen is the length of the body in it.
	file    *os.File
	bodyLen int64
}

// Pending returns the recipients still to be delivered.
func (e *Envelope) Pending() []*Recipient {
	var out []*Recipient
	for _, r := range e.Recipients {
		if r.State == RcptPending || r.State == "" {
			out = append(out, r)
		}
	}
	return out
}

// PendingAddresses returns the addresses of Pending.
func (e *Envelope) PendingAddresses() []string {
	var out []string
	for _, r := range e.Pending() {
		out = append(out, r.Address)
	}
	return out
}

// Encode renders an envelope as the indented JSON written to disk.
func Encode(e *Envelope) ([]byte, error) {
	b, err := json.MarshalIndent(e, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// Decode parses an envelope and checks that it can be delivered.
func Decode(b []byte) (*Envelope, error) {
	var e Envelope
	if err := json.Unmarshal(b, &e); err != nil {
		return nil, err
	}
	if !ValidID(e.ID) {
		return nil, fmt.Errorf("envelope has no valid id")
	}
	if e.Mailbox == "" {
		return nil, fmt.Errorf("envelope %s names no mailbox", e.ID)
	}
	if len(e.Recipients) == 0 {
		return nil, fmt.Errorf("envelope %s has no recipients", e.ID)
	}
	for _, r := range e.Recipients {
		if r == nil || r.Address == "" {
			return nil, fmt.Errorf("envelope %s has an empty recipient", e.ID)
		}
	}
	return &e, nil
}
