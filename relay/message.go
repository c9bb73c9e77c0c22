package relay

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-message/mail"
	"github.com/emersion/go-smtp"

	"github.com/oauthrelay/oauthrelay/config"
)

// message applies the sender policy to one message's header and writes the
// message to the spool: our Received first, the app's header as it came
// (without its own From:, Sender: and Resent- fields for rewrite_from),
// any missing Message-ID, Date and From (or the rewritten From and
// Reply-To), then the body. Nothing but the read buffer and the sender
// fields is held in memory.
type message struct {
	client   *config.Client
	cfg      *config.Config // the configuration MAIL was judged by
	from     string         // the envelope sender as the app sent it
	maxSize  int64          // the size limit the listener enforces
	id       string
	now      time.Time
	helo     string
	ip       netip.Addr
	tls      bool
	authed   bool
	hostname string
	rcpts    []string

	headerFrom string // for logs
}

// readBufs recycles the 64 KiB read buffers of message.copy: one per
// message was most of the listener's garbage under load. Nothing read
// through a buffer is kept after copy returns (scanHeader copies what it
// keeps).
var readBufs = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 64<<10) }}

func (m *message) copy(w io.Writer, r io.Reader) error {
	br := readBufs.Get().(*bufio.Reader)
	br.Reset(r)
	defer func() {
		br.Reset(nil)
		readBufs.Put(br)
	}()
	// Everything is written to the spool file as it is read (it is
	// discarded if the message is refused): our Received first, then the
	// app's header, the fields we add, the body.
	if _, err := io.WriteString(w, m.received()); err != nil {
		return err
	}
	var drop map[string]bool
	if m.client.RewriteFrom != "" {
		drop = droppedOnRewrite
	}
	hs, err := scanHeader(w, br, drop)
	if err != nil {
		return m.readErr(err)
	}
	sh := parseSenderHeader(hs.fields)
	d := decideSender(m.cfg, m.client, m.from, sh)
	m.headerFrom = d.HeaderFrom
	if d.Refusal != nil {
		return d.Refusal
	}
	var extra []string
	switch d.Header {
	case rewriteFrom:
		extra = rewritten(sh, hs.has["Reply-To"], d.SendFrom)
	case addFrom:
		extra = append(extra, "From: <"+d.SendFrom+">")
	}
	if !hs.has["Message-Id"] {
		extra = append(extra, fmt.Sprintf("Message-ID: <%s@%s>", m.id, m.hostname))
	}
	if !hs.has["Date"] {
		extra = append(extra, "Date: "+m.now.Format(time.RFC1123Z))
	}
	for _, f := range extra {
		if _, err := io.WriteString(w, f+"\r\n"); err != nil {
			return err
		}
	}
	if _, err := w.Write(hs.sep); err != nil {
		return err
	}
	if _, err := w.Write(hs.bodyStart); err != nil {
		return err
	}
	if _, err := io.Copy(w, br); err != nil {
		return m.readErr(err)
	}
	return nil
}

func (m *message) readErr(err error) error {
	if errors.Is(err, smtp.ErrDataTooLarge) {
		return newRefusal(tooBig, humanSize(m.maxSize))
	}
	return err
}

// rewritten returns the fields that replace a rewrite_from client's
// From:, Sender: and Resent- fields (scanHeader left them out): From: the
// client's rewrite_from address with the display name it gave, and, when
// the header has no Reply-To:, the original From: in Reply-To: so that
// replies still reach it.
func rewritten(sh *senderHeader, hasReplyTo bool, rewriteFrom string) []string {
	var orig []*mail.Address
	if f := sh.first("From"); f != nil {
		orig = f.Addrs
	}
	name := ""
	if len(orig) > 0 {
		name = orig[0].Name
	}
	out := []string{"From: " + (&mail.Address{Name: name, Address: rewriteFrom}).String()}
	if len(orig) > 0 && !hasReplyTo && !strings.EqualFold(orig[0].Address, rewriteFrom) {
		list := make([]string, len(orig))
		for i, a := range orig {
			list[i] = a.String()
		}
		out = append(out, "Reply-To: "+strings.Join(list, ", "))
	}
	return out
}

// received is our trace header (RFC 5321 §4.4).
func (m *message) received() string {
	with := "ESMTP"
	if m.tls {
		with += "S"
	}
	if m.authed {
		with += "A"
	}
	helo := sanitize(m.helo)
	if helo == "" {
		helo = "unknown"
	}
	forClause := ""
	if len(m.rcpts) == 1 {
		forClause = "\r\n\tfor <" + sanitize(m.rcpts[0]) + ">"
	}
	return fmt.Sprintf("Received: from %s ([%s])\r\n\tby %s (oauthrelay) with %s id %s%s;\r\n\t%s\r\n",
		helo, m.ip, m.hostname, with, m.id, forClause, m.now.Format(time.RFC1123Z))
}

func humanSize(n int64) string {
	switch {
	case n >= 1000*1000 && n%(1000*1000) == 0:
		return fmt.Sprintf("%d MB", n/(1000*1000))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1000:
		return fmt.Sprintf("%d KB", n/1000)
	}
	return fmt.Sprintf("%d bytes", n)
}
