package delivery

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/emersion/go-message/textproto"

	"github.com/oauthrelay/oauthrelay/config"
	"github.com/oauthrelay/oauthrelay/dsn"
	"github.com/oauthrelay/oauthrelay/queue"
)

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
	orig, err := s.originalHeader(env.ID)
	if err != nil {
		orig = fmt.Sprintf("X-Oauthrelay-Note: the original message could not be read: %v\r\n", err)
	}
	r := dsn.Report{Host: cfg.Listen.Hostname, QueueID: env.ID, Received: env.Received, Mailbox: env.Mailbox, To: to,
		RemoteMTA: upstreamHost(cfg, env), Now: s.o.Now(), OriginalHeader: orig}
	for _, f := range failed {
		r.Failed = append(r.Failed, dsn.Failed{Address: f.Address, Reply: f.Reply})
	}
	return dsn.Compose(w, r)
}

func upstreamHost(cfg *config.Config, env *queue.Envelope) string {
	if mc := cfg.Mailbox(env.Mailbox); mc != nil && mc.AppRef != nil {
		if i := strings.LastIndexByte(mc.AppRef.UpstreamAddress, ':'); i > 0 {
			return mc.AppRef.UpstreamAddress[:i]
		}
	}
	return "smtp.office365.com"
}

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
