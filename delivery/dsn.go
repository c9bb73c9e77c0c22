package delivery

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/emersion/go-message"
	"github.com/emersion/go-message/textproto"

	"github.com/oauthrelay/oauthrelay/config"
	"github.com/oauthrelay/oauthrelay/queue"
)

var enhancedRE = regexp.MustCompile(`^\d{3} ([245]\.\d{1,3}\.\d{1,3})\b`)

// statusOf extracts the enhanced status code of a reply for the DSN's
// Status field.
func statusOf(reply string) string {
	if m := enhancedRE.FindStringSubmatch(reply); m != nil && m[1][0] == '5' {
		return m[1]
	}
	return "5.0.0"
}

// notifyFailure tells the envelope sender (and bounce_to) which recipients
// failed for good, with an RFC 3464 delivery status notification queued
// through the same mailbox. A bounce is never bounced.
func (s *Scheduler) notifyFailure(env *queue.Envelope, failed []*queue.Recipient, cfg *config.Config) {
	// A recipient whose failure was already reported (and that an admin
	// requeued with `queue requeue-failed`) is not reported twice.
	fresh := failed[:0:0]
	for _, r := range failed {
		if !slices.Contains(env.Notified, r.Address) {
			fresh = append(fresh, r)
			env.Notified = append(env.Notified, r.Address)
		}
	}
	if failed = fresh; len(failed) == 0 {
		return
	}
	if env.Bounce {
		s.log.Warn("a delivery status notification could not be delivered; not bouncing a bounce", "id", env.ID, "mailbox", env.Mailbox)
		return
	}
	var to []string
	if env.MailFrom != "" {
		to = append(to, env.MailFrom)
	}
	if cfg.Spool.BounceTo != "" && !strings.EqualFold(cfg.Spool.BounceTo, env.MailFrom) {
		to = append(to, cfg.Spool.BounceTo)
	}
	if len(to) == 0 {
		return
	}
	w, err := s.spool.Create()
	if err != nil {
		s.log.Error("cannot queue a delivery status notification", "id", env.ID, "error", err.Error())
		return
	}
	if err := s.writeDSN(w, env, failed, cfg, to); err != nil {
		w.Abort()
		s.log.Error("cannot queue a delivery status notification", "id", env.ID, "error", err.Error())
		return
	}
	dsn := &queue.Envelope{Client: env.Client, Mailbox: env.Mailbox, MailFrom: env.Mailbox, Bounce: true}
	for _, a := range to {
		dsn.Recipients = append(dsn.Recipients, &queue.Recipient{Address: a})
	}
	if err := w.Commit(dsn); err != nil {
		s.log.Error("cannot queue a delivery status notification", "id", env.ID, "error", err.Error())
		return
	}
	s.log.Info("delivery status notification queued", "id", dsn.ID, "for", env.ID, "to", strings.Join(to, ","), "failed_recipients", len(failed))
}

func (s *Scheduler) writeDSN(w io.Writer, env *queue.Envelope, failed []*queue.Recipient, cfg *config.Config, to []string) error {
	host := cfg.Listen.Hostname
	now := s.o.Now()
	var h message.Header
	h.Set("From", fmt.Sprintf("Mail Delivery System <%s>", env.Mailbox))
	h.Set("To", strings.Join(to, ", "))
	h.Set("Subject", "Undelivered Mail Returned to Sender")
	h.Set("Date", now.Format(time.RFC1123Z))
	h.Set("Message-ID", fmt.Sprintf("<%s.dsn@%s>", env.ID, host))
	h.Set("Auto-Submitted", "auto-replied")
	h.Set("MIME-Version", "1.0")
	h.SetContentType("multipart/report", map[string]string{"report-type": "delivery-status"})
	mw, err := message.CreateWriter(w, h)
	if err != nil {
		return err
	}

	var text strings.Builder
	fmt.Fprintf(&text, "This is the oauthrelay mail relay at %s.\r\n\r\n", host)
	fmt.Fprintf(&text, "Your message (queue id %s, received %s) could not be delivered\r\nto the following recipients through Microsoft 365 mailbox %s:\r\n\r\n",
		env.ID, env.Received.UTC().Format(time.RFC1123Z), env.Mailbox)
	for _, r := range failed {
		fmt.Fprintf(&text, "  <%s>\r\n    %s\r\n", r.Address, r.Reply)
	}
	text.WriteString("\r\nThe message's headers are attached. Other recipients, if any, were not affected.\r\n")
	var th message.Header
	th.SetContentType("text/plain", map[string]string{"charset": "utf-8"})
	if err := writePart(mw, th, text.String()); err != nil {
		return err
	}

	var ds strings.Builder
	fmt.Fprintf(&ds, "Reporting-MTA: dns; %s\r\nX-Oauthrelay-Queue-ID: %s\r\nArrival-Date: %s\r\n", host, env.ID, env.Received.UTC().Format(time.RFC1123Z))
	for _, r := range failed {
		fmt.Fprintf(&ds, "\r\nFinal-Recipient: rfc822; %s\r\nAction: failed\r\nStatus: %s\r\nRemote-MTA: dns; %s\r\nDiagnostic-Code: smtp; %s\r\nLast-Attempt-Date: %s\r\n",
			r.Address, statusOf(r.Reply), upstreamHost(cfg, env), oneLine(r.Reply), now.UTC().Format(time.RFC1123Z))
	}
	var dh message.Header
	dh.SetContentType("message/delivery-status", nil)
	if err := writePart(mw, dh, ds.String()); err != nil {
		return err
	}

	var rh message.Header
	rh.SetContentType("text/rfc822-headers", nil)
	orig, err := s.originalHeader(env.ID)
	if err != nil {
		orig = fmt.Sprintf("X-Oauthrelay-Note: the original message could not be read: %v\r\n", err)
	}
	if err := writePart(mw, rh, orig); err != nil {
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

func upstreamHost(cfg *config.Config, env *queue.Envelope) string {
	if mc := cfg.Mailbox(env.Mailbox); mc != nil && mc.AppRef != nil {
		if i := strings.LastIndexByte(mc.AppRef.UpstreamAddress, ':'); i > 0 {
			return mc.AppRef.UpstreamAddress[:i]
		}
	}
	return "smtp.office365.com"
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// originalHeader reads the header block of a spooled message.
func (s *Scheduler) originalHeader(id string) (string, error) {
	f, _, err := s.spool.Body(id)
	if err != nil {
		return "", err
	}
	defer f.Close()
	hdr, err := textproto.ReadHeader(bufio.NewReader(io.LimitReader(f, 256<<10)))
	if err != nil {
		return "", err
	}
	var b bytes.Buffer
	if err := textproto.WriteHeader(&b, hdr); err != nil {
		return "", err
	}
	return b.String(), nil
}
