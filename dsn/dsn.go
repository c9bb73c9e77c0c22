// Package dsn composes delivery status notifications (RFC 3464): the
// message that tells a sender which recipients could not be reached and
// why. Compose is a pure function of its Report, so the same failure always
// gives the same bytes.
package dsn

import (
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"

	"github.com/emersion/go-message"
)

// Failed is one recipient that failed for good.
type Failed struct {
	Address string
	// Reply is the upstream's reply, or why the relay gave up.
	Reply string
}

// Report is everything a notification says.
type Report struct {
	// Host is the relay's host name (Reporting-MTA, Message-ID).
	Host string
	// QueueID and Received identify the original message.
	QueueID  string
	Received time.Time
	// Mailbox is the Microsoft 365 mailbox the message went through; the
	// notification comes from it.
	Mailbox string
	// To are the notification's recipients.
	To []string
	// RemoteMTA is the upstream host that refused.
	RemoteMTA string
	Failed    []Failed
	// Now is when the notification is made.
	Now time.Time
	// OriginalHeader is the original message's header block, attached as
	// text/rfc822-headers.
	OriginalHeader string
}

var enhancedRE = regexp.MustCompile(`^\d{3} ([245]\.\d{1,3}\.\d{1,3})\b`)

// Status extracts the enhanced status code of a permanent reply for the
// Status field; a reply without one gives 5.0.0.
func Status(reply string) string {
	if m := enhancedRE.FindStringSubmatch(reply); m != nil && m[1][0] == '5' {
		return m[1]
	}
	return "5.0.0"
}

// Compose writes the notification as a multipart/report message.
func Compose(w io.Writer, r Report) error {
	var h message.Header
	h.Set("From", fmt.Sprintf("Mail Delivery System <%s>", r.Mailbox))
	h.Set("To", strings.Join(r.To, ", "))
	h.Set("Subject", "Undelivered Mail Returned to Sender")
	h.Set("Date", r.Now.Format(time.RFC1123Z))
	h.Set("Message-ID", fmt.Sprintf("<%s.dsn@%s>", r.QueueID, r.Host))
	h.Set("Auto-Submitted", "auto-replied")
	h.Set("MIME-Version", "1.0")
	// A boundary from the queue id keeps the output a function of the
	// report alone.
	h.SetContentType("multipart/report", map[string]string{"report-type": "delivery-status", "boundary": "oauthrelay-dsn-" + r.QueueID})
	mw, err := message.CreateWriter(w, h)
	if err != nil {
		return err
	}

	var text strings.Builder
	fmt.Fprintf(&text, "This is the oauthrelay mail relay at %s.\r\n\r\n", r.Host)
	fmt.Fprintf(&text, "Your message (queue id %s, received %s) could not be delivered\r\nto the following recipients through Microsoft 365 mailbox %s:\r\n\r\n",
		r.QueueID, r.Received.UTC().Format(time.RFC1123Z), r.Mailbox)
	for _, f := range r.Failed {
		fmt.Fprintf(&text, "  <%s>\r\n    %s\r\n", f.Address, f.Reply)
	}
	text.WriteString("\r\nThe message's headers are attached. Other recipients, if any, were not affected.\r\n")
	var th message.Header
	th.SetContentType("text/plain", map[string]string{"charset": "utf-8"})
	if err := writePart(mw, th, text.String()); err != nil {
		return err
	}

	var ds strings.Builder
	fmt.Fprintf(&ds, "Reporting-MTA: dns; %s\r\nX-Oauthrelay-Queue-ID: %s\r\nArrival-Date: %s\r\n", r.Host, r.QueueID, r.Received.UTC().Format(time.RFC1123Z))
	for _, f := range r.Failed {
		fmt.Fprintf(&ds, "\r\nFinal-Recipient: rfc822; %s\r\nAction: failed\r\nStatus: %s\r\nRemote-MTA: dns; %s\r\nDiagnostic-Code: smtp; %s\r\nLast-Attempt-Date: %s\r\n",
			f.Address, Status(f.Reply), r.RemoteMTA, oneLine(f.Reply), r.Now.UTC().Format(time.RFC1123Z))
	}
	var dh message.Header
	dh.SetContentType("message/delivery-status", nil)
	if err := writePart(mw, dh, ds.String()); err != nil {
		return err
	}

	var rh message.Header
	rh.SetContentType("text/rfc822-headers", nil)
	if err := writePart(mw, rh, r.OriginalHeader); err != nil {
		return err
	}
	return mw.Close()
}

func writePart(mw *message.Writer, h message.Header, body string) error {
	pw, err := mw.CreatePart(h)
	if err != nil {
		return err
	}
	if _, err := io.WriteString(pw, body); err != nil {
		return err
	}
	return pw.Close()
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
