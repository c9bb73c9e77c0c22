package relay

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/textproto"
	"reflect"
	"strings"
	"unsafe"

	"github.com/emersion/go-smtp"
)

// replyWriter sits between go-smtp and the client and replaces go-smtp's
// chatty reply texts with the relay's own (ownText in replies.go). go-smtp
// writes each reply line in one Write, which is what it matches; anything
// else passes through unchanged. After a reply that closes the session (a
// 421 of ours) it closes the connection, which go-smtp does not do.
type replyWriter struct {
	w  net.Conn
	ss *session
}

// Write writes p, or the relay's text for it. Once the session is
// closing, nothing more is written.
func (r replyWriter) Write(p []byte) (int, error) {
	if r.ss.rl.hungUp.Load() {
		return len(p), nil
	}
	n, err := r.write(p)
	if r.ss.rl.hangup.Load() {
		r.ss.rl.hungUp.Store(true)
		if cc := connOf(r.w); cc != nil {
			cc.hangUp(r.w)
		} else {
			r.w.Close()
		}
	}
	return n, err
}

func (r replyWriter) write(p []byte) (int, error) {
	line, ok := bytes.CutSuffix(p, []byte("\r\n"))
	if ok && bytes.IndexByte(line, '\n') < 0 {
		ours, ok := ownText(string(line))
		if rf, attrs := r.ss.ownRefusal(string(line)); rf != nil {
			ours, ok = wireText(r.ss.refuse(rf, attrs...)), true
		}
		if ok {
			if _, err := io.WriteString(r.w, ours+"\r\n"); err != nil {
				return 0, err
			}
			return len(p), nil
		}
	}
	return r.w.Write(p)
}

var textprotoConn = reflect.TypeFor[*textproto.Conn]()

// useOwnReplies makes go-smtp write c's replies through replyWriter, and
// reports whether it could.
//
// go-smtp has no hook for its texts: it writes them to an unexported
// *textproto.Conn over the connection. Wrapping the net.Conn instead would
// not do, as after STARTTLS and on the implicit-TLS port go-smtp writes to
// a *tls.Conn (it must be one: that is how go-smtp and the session tell
// TLS) and a wrapper below it only sees ciphertext. go-smtp makes a new
// textproto.Conn when a connection starts and after STARTTLS, and in both
// cases asks for a new session at the next EHLO or HELO, before it
// answers; so NewSession calls this, and every reply from that EHLO on is
// covered. Before it (the greeting, commands sent before EHLO) go-smtp's
// texts stand. TestOwnRepliesOnEveryTransport fails if a go-smtp upgrade
// moves the field.
func useOwnReplies(c *smtp.Conn, ss *session) bool {
	f := reflect.ValueOf(c).Elem().FieldByName("text")
	if !f.IsValid() || f.Type() != textprotoConn {
		return false
	}
	tc := *(**textproto.Conn)(unsafe.Pointer(f.UnsafeAddr()))
	if tc == nil {
		return false
	}
	// The old writer is empty: go-smtp flushes after every line. It wrote
	// to c.Conn() (go-smtp's Server.Debug, which would tee it, is unset).
	tc.Writer.W = bufio.NewWriter(replyWriter{w: c.Conn(), ss: ss})
	// go-smtp's buffered reader may hold input read ahead: the tap reads
	// from it, so nothing is lost.
	tc.Reader.R = bufio.NewReader(&lineTap{r: tc.Reader.R, ss: ss})
	return true
}

// lineTap hands go-smtp its input one line at a time, so that the last
// line the tap read is the command go-smtp is answering, and keeps that
// line in session.lastRcpt when it is a RCPT: go-smtp's reply to a RCPT
// it cannot parse does not say which address it was (ownRefusal). No
// other line (an AUTH response, message data) is kept.
type lineTap struct {
	r   *bufio.Reader
	ss  *session
	mid bool // the last read ended in the middle of a line
}

// maxKeptRcpt bounds the RCPT line kept; the reply shows less of it.
const maxKeptRcpt = 512

// Read implements io.Reader: at most one line, or the part of one that
// fits into p.
func (t *lineTap) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if t.r.Buffered() == 0 {
		if _, err := t.r.Peek(1); err != nil {
			return 0, err
		}
	}
	buf, _ := t.r.Peek(t.r.Buffered())
	n := len(buf)
	if i := bytes.IndexByte(buf, '\n'); i >= 0 {
		n = i + 1
	}
	n = copy(p, buf[:n])
	t.r.Discard(n)
	if !t.mid {
		t.ss.lastRcpt = ""
		if n >= 4 && strings.EqualFold(string(p[:4]), "RCPT") {
			t.ss.lastRcpt = string(bytes.TrimRight(p[:min(n, maxKeptRcpt)], "\r\n"))
		}
	}
	t.mid = p[n-1] != '\n'
	return n, nil
}
