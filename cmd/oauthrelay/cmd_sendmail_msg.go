package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	netmail "net/mail"
	"os"
	"os/user"
	"strings"
	"time"

	"github.com/emersion/go-message"
	"github.com/emersion/go-message/mail"
	"github.com/emersion/go-message/textproto"
)

// outgoing is a message read from standard input, ready to submit: its
// envelope, its header (completed) and the rest of the input as the body.
type outgoing struct {
	from   string
	rcpts  []string
	header textproto.Header
	body   io.Reader
}

// dotStop ends its input at a line holding a single dot, as sendmail does
// without -i.
type dotStop struct {
	r    *bufio.Reader
	buf  []byte
	done bool
	// mid is set while the rest of a line longer than r's buffer is
	// read: that rest is not a line of its own, so never a lone dot.
	mid bool
}

func (d *dotStop) Read(p []byte) (int, error) {
	for len(d.buf) == 0 {
		if d.done {
			return 0, io.EOF
		}
		line, err := d.r.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			// A long line cannot be a lone dot: pass it on as it is.
			d.buf = append(d.buf[:0], line...)
			d.mid = true
			break
		}
		wasMid := d.mid
		d.mid = false
		if t := bytes.TrimRight(line, "\r\n"); !wasMid && string(t) == "." {
			d.done = true
			return 0, io.EOF
		}
		d.buf = append(d.buf[:0], line...)
		if err != nil {
			d.done = true
			if err != io.EOF {
				return 0, err
			}
		}
	}
	n := copy(p, d.buf)
	d.buf = d.buf[n:]
	return n, nil
}

// headerLine reports whether line looks like the first line of a header
// field ("Name: value"), as opposed to the first line of a body.
func headerLine(line []byte) bool {
	i := bytes.IndexByte(line, ':')
	if i <= 0 {
		return false
	}
	for _, c := range line[:i] {
		if c <= ' ' || c > '~' {
			return false
		}
	}
	return true
}

// dataError is a message the relay could not be given as it is (EX_DATAERR).
type dataError struct{ msg string }

func (e *dataError) Error() string { return e.msg }

// osError is the system failing the command, not the input (EX_OSERR).
type osError struct{ err error }

func (e *osError) Error() string { return e.err.Error() }

// readOutgoing reads the message from in and completes it as sendmail
// does: recipients from the header with -t, Bcc: removed, and Date:,
// Message-ID: and From: added when missing.
func readOutgoing(in io.Reader, o *sendmailOpts) (*outgoing, error) {
	var src io.Reader = in
	if !o.ignoreDots {
		src = &dotStop{r: bufio.NewReader(in)}
	}
	br := bufio.NewReaderSize(src, 64<<10)
	// An mbox "From " line is not part of the message.
	if first, _ := br.Peek(5); string(first) == "From " {
		if _, err := br.ReadSlice('\n'); err != nil && err != io.EOF && err != bufio.ErrBufferFull {
			return nil, err
		}
	}
	var h textproto.Header
	// Up to a header line's longest (RFC 5322), or the whole input.
	firstLine, _ := br.Peek(998)
	if i := bytes.IndexByte(firstLine, '\n'); i >= 0 {
		firstLine = firstLine[:i]
	}
	switch {
	case len(bytes.TrimRight(firstLine, "\r")) == 0 && len(firstLine) < br.Buffered():
		// An empty line first: no header at all, the body follows it.
		br.ReadSlice('\n')
	case headerLine(firstLine):
		var err error
		h, err = textproto.ReadHeader(br)
		if err != nil && err != io.EOF {
			return nil, &dataError{fmt.Sprintf("the message header is malformed: %v; write it as Name: value lines, then an empty line, then the body", err)}
		}
	}
	// Anything else is a body without a header.
	mh := mail.Header{Header: message.Header{Header: h}}
	m := &outgoing{body: br}
	for _, r := range o.recipients {
		m.rcpts = append(m.rcpts, splitRecipients(r)...)
	}
	if o.extract {
		for _, k := range []string{"To", "Cc", "Bcc"} {
			list, err := mh.AddressList(k)
			if err != nil {
				return nil, &dataError{fmt.Sprintf("the %s: field is not a list of addresses (%v): %q", k, err, mh.Get(k))}
			}
			for _, a := range list {
				m.rcpts = append(m.rcpts, a.Address)
			}
		}
	}
	// Bcc: names recipients the others must not see; sendmail never
	// passes it on.
	mh.Del("Bcc")
	m.rcpts = dedupe(m.rcpts)

	var fromHdr string
	if list, err := mh.AddressList("From"); err == nil && len(list) == 1 && strings.Contains(list[0].Address, "@") {
		fromHdr = list[0].Address
	}
	switch {
	case o.fromSet:
		m.from = o.from
	case fromHdr != "":
		m.from = fromHdr
	default:
		m.from = loginAddress()
	}
	if !mh.Has("From") {
		name := o.fullName
		addr := m.from
		if addr == "" { // -f "<>": the header still needs someone
			addr = loginAddress()
		}
		mh.SetAddressList("From", []*mail.Address{{Name: name, Address: addr}})
	}
	if !mh.Has("Message-Id") {
		domain := m.from[strings.LastIndexByte(m.from, '@')+1:]
		if domain == "" || !strings.Contains(m.from, "@") {
			domain, _ = os.Hostname()
		}
		if err := mh.GenerateMessageIDWithHostname(domain); err != nil {
			return nil, &osError{err}
		}
	}
	if !mh.Has("Date") {
		mh.SetDate(time.Now())
	}
	m.header = mh.Header.Header
	return m, nil
}

// splitRecipients turns one recipient argument into addresses: sendmail
// takes "a@x, b@y" and "Name <a@x>" as well as bare addresses.
func splitRecipients(arg string) []string {
	if list, err := netmail.ParseAddressList(arg); err == nil {
		out := make([]string, len(list))
		for i, a := range list {
			out[i] = a.Address
		}
		return out
	}
	var out []string
	for _, p := range strings.Split(arg, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func dedupe(addrs []string) []string {
	seen := map[string]bool{}
	out := addrs[:0]
	for _, a := range addrs {
		if k := strings.ToLower(a); !seen[k] {
			seen[k] = true
			out = append(out, a)
		}
	}
	return out
}

// loginAddress is the invoking user as LOGIN@HOSTNAME, sendmail's default
// sender; only a [[client]] with rewrite_from accepts it as it is.
func loginAddress() string {
	name := os.Getenv("LOGNAME")
	if u, err := user.Current(); err == nil && u.Username != "" {
		name = u.Username
	}
	if name == "" {
		name = "unknown"
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	return name + "@" + host
}

// writeOutgoing writes the completed header, then the rest of the input.
func writeOutgoing(w io.Writer, m *outgoing) error {
	if err := textproto.WriteHeader(w, m.header); err != nil {
		return err
	}
	_, err := io.Copy(w, m.body)
	return err
}
