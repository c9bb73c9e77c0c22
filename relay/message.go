package relay

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"sync"
	"time"

	gomessage "github.com/emersion/go-message"
	"github.com/emersion/go-message/mail"
	"github.com/emersion/go-message/textproto"
	"github.com/emersion/go-smtp"

	"github.com/oauthrelay/oauthrelay/config"
)

// maxHeaderBytes bounds the header block held in memory for the policy
// check; the body is streamed and never held whole.
const maxHeaderBytes = 1 << 20

// message applies the sender policy to one message's header and writes the
// message to the spool: our Received first, the app's header as it came
// (or rewritten for rewrite_from), any missing Message-ID, Date and From,
// then the body byte for byte.
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
// through a buffer is kept after copy returns (readHeaderBlock copies what
// it returns).
var readBufs = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 64<<10) }}

func (m *message) copy(w io.Writer, r io.Reader) error {
	br := readBufs.Get().(*bufio.Reader)
	br.Reset(r)
	defer func() {
		br.Reset(nil)
		readBufs.Put(br)
	}()
	raw, sep, bodyStart, err := readHeaderBlock(br)
	if err != nil {
		return m.readErr(err)
	}
	var h textproto.Header
	if len(raw) > 0 {
		h, err = textproto.ReadHeader(bufio.NewReader(io.MultiReader(bytes.NewReader(raw), strings.NewReader("\r\n"))))
		if err != nil {
			return newRefusal(headerUnreadable, sanitize(err.Error()))
		}
	}
	mh := mail.Header{Header: gomessage.Header{Header: h}}
	d := decideSender(m.cfg, m.client, m.from, parseSenderHeader(fieldsOf(mh)))
	m.headerFrom = d.HeaderFrom
	if d.Refusal != nil {
		return d.Refusal
	}
	var extra []string
	switch d.Header {
	case rewriteFrom:
		rewrite(&mh, d.SendFrom)
	case addFrom:
		extra = append(extra, "From: <"+d.SendFrom+">")
	}
	if !mh.Has("Message-Id") {
		extra = append(extra, fmt.Sprintf("Message-ID: <%s@%s>", m.id, m.hostname))
	}
	if !mh.Has("Date") {
		extra = append(extra, "Date: "+m.now.Format(time.RFC1123Z))
	}

	if _, err := io.WriteString(w, m.received()); err != nil {
		return err
	}
	if d.Header == rewriteFrom {
		var hb bytes.Buffer
		if err := textproto.WriteHeader(&hb, mh.Header.Header); err != nil {
			return err
		}
		// WriteHeader ends with the blank line; ours comes after the
		// added fields.
		if _, err := w.Write(bytes.TrimSuffix(hb.Bytes(), []byte("\r\n"))); err != nil {
			return err
		}
	} else if _, err := w.Write(raw); err != nil {
		return err
	}
	for _, f := range extra {
		if _, err := io.WriteString(w, f+"\r\n"); err != nil {
			return err
		}
	}
	if _, err := w.Write(sep); err != nil {
		return err
	}
	if _, err := w.Write(bodyStart); err != nil {
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

// rewrite replaces From: with the client's rewrite_from address, keeps the
// display name, and keeps the original address reachable in Reply-To:.
func rewrite(h *mail.Header, rewriteFrom string) {
	orig, _ := h.AddressList("From")
	name := ""
	if len(orig) > 0 {
		name = orig[0].Name
		if !h.Has("Reply-To") && !strings.EqualFold(orig[0].Address, rewriteFrom) {
			h.SetAddressList("Reply-To", orig)
		}
	}
	h.SetAddressList("From", []*mail.Address{{Name: name, Address: rewriteFrom}})
	// A device's own Sender: and Resent- fields would contradict the
	// rewritten From.
	h.Del("Sender")
	h.Del("Resent-From")
	h.Del("Resent-Sender")
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

// readHeaderBlock reads the header up to the empty line that ends it. It
// returns the header bytes exactly as sent, the separator line ("\r\n" or
// "\n"; nothing when the message ends inside the header) and, when the
// header ended at a line that is not a header field, that line: it is the
// first line of the body, and sep is then a CRLF we add, as Postfix does, so
// that what we check as the header is what Microsoft 365 reads as the header.
// A message without any header therefore is all body.
func readHeaderBlock(br *bufio.Reader) (raw, sep, bodyStart []byte, err error) {
	var buf bytes.Buffer
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			if string(line) == "\r\n" || string(line) == "\n" {
				return buf.Bytes(), append([]byte(nil), line...), nil, nil
			}
			if !isHeaderLine(line, buf.Len() > 0) {
				return buf.Bytes(), []byte("\r\n"), append([]byte(nil), line...), nil
			}
			buf.Write(line)
			// A line longer than the buffer: keep reading it.
			for err == bufio.ErrBufferFull && buf.Len() <= maxHeaderBytes {
				line, err = br.ReadSlice('\n')
				buf.Write(line)
			}
			if buf.Len() > maxHeaderBytes {
				return nil, nil, nil, newRefusal(headerTooBig, humanSize(maxHeaderBytes))
			}
		}
		if err == io.EOF {
			b := buf.Bytes()
			if len(b) > 0 && !endsWithNL(b) {
				b = append(b, '\r', '\n')
			}
			return b, nil, nil, nil
		}
		if err != nil {
			return nil, nil, nil, err
		}
	}
}

// isHeaderLine reports whether line (its first bytes at least) is a header
// field ("Name: value", RFC 5322 §2.2, allowing the obsolete blanks before
// the colon) or, after a field, a folded continuation.
func isHeaderLine(line []byte, afterField bool) bool {
	if line[0] == ' ' || line[0] == '\t' {
		return afterField
	}
	i := bytes.IndexByte(line, ':')
	if i <= 0 {
		return false
	}
	name := bytes.TrimRight(line[:i], " \t")
	if len(name) == 0 {
		return false
	}
	for _, c := range name {
		if c < 33 || c > 126 {
			return false
		}
	}
	return true
}

func endsWithNL(b []byte) bool { return len(b) > 0 && b[len(b)-1] == '\n' }

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
