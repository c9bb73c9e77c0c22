package msemu

import (
	"bufio"
	"bytes"
	"io"
	"net/mail"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// parsePath parses "<addr> params" after FROM: or TO:.
func parsePath(arg, prefix string) (addr string, params []string, ok bool) {
	rest, ok := cutPrefixFold(arg, prefix)
	if !ok {
		return "", nil, false
	}
	rest = strings.TrimSpace(rest)
	if strings.HasPrefix(rest, "<") {
		end := strings.IndexByte(rest, '>')
		if end < 0 {
			return "", nil, false
		}
		return rest[1:end], strings.Fields(rest[end+1:]), true
	}
	f := strings.Fields(rest)
	if len(f) == 0 {
		return "", nil, false
	}
	return f[0], f[1:], true
}

func (s *smtpSession) mail(arg string) {
	switch {
	case s.helo == "":
		s.reply("503 5.5.2 Send hello first")
		return
	case s.mailbox == "":
		s.reply(ReplyNotAuthenticated)
		return
	case s.hasFrom:
		s.reply("503 5.5.2 Sender already specified")
		return
	}
	from, params, ok := parsePath(arg, "FROM:")
	if !ok {
		s.reply("501 5.5.4 Invalid arguments")
		return
	}
	for _, p := range params {
		if v, ok := cutPrefixFold(p, "SIZE="); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				s.reply("501 5.5.4 Invalid arguments")
				return
			}
			if max := s.e.opts.MaxMessageSize; max >= 0 && n > max {
				s.reply(ReplyTooBig)
				return
			}
		}
	}
	if from != "" && !s.e.maySendAs(s.mailbox, from) {
		s.reply(ReplySendAsDenied)
		return
	}
	s.hasFrom, s.from = true, from
	s.reply(ReplySenderOK)
}

func (e *Emulator) maySendAs(mailbox, addr string) bool {
	if strings.EqualFold(mailbox, addr) {
		return true
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	mb, ok := e.mailboxes[strings.ToLower(mailbox)]
	return ok && contains(mb.SendAs, addr)
}

func (s *smtpSession) rcpt(arg string) {
	if !s.hasFrom {
		s.reply("503 5.5.2 Need mail command")
		return
	}
	to, _, ok := parsePath(arg, "TO:")
	if !ok || to == "" {
		s.reply("501 5.1.3 Invalid address")
		return
	}
	e := s.e
	if s.hve && !e.internalRecipient(to) {
		s.replyf(replyHVEExternal, to)
		return
	}
	e.mu.Lock()
	r, fail := e.failRcptAddr[strings.ToLower(to)]
	if !fail {
		r, fail = e.failRcpt.take()
	}
	e.mu.Unlock()
	switch {
	case fail:
		s.reply(r)
	case len(s.rcpts) >= MaxRecipientsPerMessage:
		s.reply(ReplyTooManyRcpts)
	default:
		s.rcpts = append(s.rcpts, to)
		s.reply(ReplyRcptOK)
	}
}

func (s *smtpSession) data() {
	if !s.hasFrom {
		s.reply("503 5.5.2 Need mail command")
		return
	}
	if len(s.rcpts) == 0 {
		s.reply("503 5.5.2 Need rcpt command")
		return
	}
	s.reply(ReplyStartData)
	data, tooBig, err := s.readData()
	if err != nil {
		s.close()
		return
	}
	s.finish(data, tooBig)
}

// readData reads a dot-terminated body, undoing dot-stuffing and keeping
// every other byte as sent. Beyond the size limit it only counts.
func (s *smtpSession) readData() ([]byte, bool, error) {
	var buf bytes.Buffer
	max := s.e.opts.MaxMessageSize
	tooBig := false
	atStart := true
	for {
		s.conn.SetReadDeadline(time.Now().Add(10 * time.Minute))
		chunk, err := s.r.ReadSlice('\n')
		if err != nil && err != bufio.ErrBufferFull {
			return nil, false, err
		}
		if atStart {
			if string(chunk) == ".\r\n" || string(chunk) == ".\n" {
				return buf.Bytes(), tooBig, nil
			}
			if len(chunk) > 0 && chunk[0] == '.' {
				chunk = chunk[1:]
			}
		}
		atStart = err == nil
		if max >= 0 && int64(buf.Len()+len(chunk)) > max {
			tooBig = true
		}
		if !tooBig {
			buf.Write(chunk)
		}
	}
}

func (s *smtpSession) bdatCmd(arg string) {
	f := strings.Fields(arg)
	size, err := strconv.ParseInt(first(f), 10, 64)
	if len(f) == 0 || len(f) > 2 || err != nil || size < 0 || (len(f) == 2 && !strings.EqualFold(f[1], "LAST")) {
		s.reply("501 5.5.4 Invalid arguments")
		return
	}
	last := len(f) == 2
	if !s.hasFrom || len(s.rcpts) == 0 {
		// The chunk follows the command even when it is refused.
		io.CopyN(io.Discard, s.r, size)
		s.reply("503 5.5.2 Need rcpt command")
		return
	}
	if s.bdat == nil {
		s.bdat = &bytes.Buffer{}
	}
	max := s.e.opts.MaxMessageSize
	if max >= 0 && int64(s.bdat.Len())+size > max {
		s.bdatBig = true
	}
	s.conn.SetReadDeadline(time.Now().Add(10 * time.Minute))
	var err2 error
	if s.bdatBig {
		_, err2 = io.CopyN(io.Discard, s.r, size)
	} else {
		_, err2 = io.CopyN(s.bdat, s.r, size)
	}
	if err2 != nil {
		s.close()
		return
	}
	if !last {
		s.replyf("250 2.0.0 BDAT command completed (%d bytes)", size)
		return
	}
	s.finish(s.bdat.Bytes(), s.bdatBig)
}

func first(f []string) string {
	if len(f) == 0 {
		return ""
	}
	return f[0]
}

// finish decides the fate of a complete message and replies.
func (s *smtpSession) finish(data []byte, tooBig bool) {
	defer s.reset()
	e := s.e
	now := e.now()
	msgID, headerFrom := inspectHeader(data)

	e.mu.Lock()
	if e.dropData > 0 {
		e.dropData--
		e.mu.Unlock()
		e.log.Info("msemu smtp dropping connection after DATA", "conn", s.id)
		s.close()
		return
	}
	if r, ok := e.failData.take(); ok {
		e.mu.Unlock()
		s.reply(r)
		return
	}
	e.mu.Unlock()

	if tooBig {
		s.reply(ReplyTooBig)
		return
	}
	for _, f := range headerFrom {
		if !e.maySendAs(s.mailbox, f) {
			s.replyf("554 5.2.252 SendAsDenied; %s not allowed to send as %s; STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied; Failed to process message due to a permanent exception with message [BeginDiagnosticData]Cannot submit message. 0.35250:0A00C184, 1.36674:0A000000, 1.61250:00000000[EndDiagnosticData] [Hostname=%s]",
				s.mailbox, f, storeHost)
			return
		}
	}

	// High Volume Email's limits are preview figures: not emulated.
	if !s.hve {
		e.mu.Lock()
		r := e.admitLocked(strings.ToLower(s.mailbox), now, len(s.rcpts))
		e.mu.Unlock()
		if r != "" {
			s.reply(r)
			return
		}
	}
	if msgID == "" {
		msgID = "<" + newGUID() + "@" + storeHost + ">"
	}
	rcpts := append([]string(nil), s.rcpts...)
	m := Message{
		Mailbox: s.mailbox, AppID: s.appID, MailFrom: s.from, Rcpts: rcpts,
		Data: append([]byte(nil), data...), QueueID: msgID, At: now, ConnID: s.id,
		Transport: TransportSMTP, Recipients: rcpts,
	}
	if s.hve {
		m.Transport = TransportHVE
	}
	e.deliver(m)
	s.replyf("250 2.0.0 OK %s [Hostname=%s]", msgID, storeHost)
}

// admitLocked applies the per-mailbox minute and day windows to a
// message for n recipients and counts it; it returns the refusal, or ""
// when admitted. e.mu is held.
func (e *Emulator) admitLocked(key string, now time.Time, n int) string {
	sent := prune(e.sent[key], now.Add(-time.Minute))
	e.sent[key] = sent
	if max := e.opts.MaxPerMinute; max >= 0 && len(sent) >= max {
		return ReplyRateLimited
	}
	var day int
	log := e.rcptLog[key][:0:0]
	for _, r := range e.rcptLog[key] {
		if r.at.After(now.Add(-24 * time.Hour)) {
			log = append(log, r)
			day += r.n
		}
	}
	e.rcptLog[key] = log
	if max := e.opts.MaxRecipientsPerDay; max >= 0 && day+n > max {
		return ReplyQuotaExceeded
	}
	e.sent[key] = append(e.sent[key], now)
	e.rcptLog[key] = append(e.rcptLog[key], rcptEntry{now, n})
	return ""
}

func prune(ts []time.Time, after time.Time) []time.Time {
	out := ts[:0]
	for _, t := range ts {
		if t.After(after) {
			out = append(out, t)
		}
	}
	return out
}

var addrRE = regexp.MustCompile(`[^\s<>,;:"()\[\]]+@[^\s<>,;:"()\[\]]+`)

// inspectHeader returns the Message-ID (with brackets) and the From
// addresses of a message. Unparsable From headers fall back to a scan
// for anything that looks like an address, so odd encodings are still checked.
func inspectHeader(data []byte) (msgID string, from []string) {
	msg, err := mail.ReadMessage(bytes.NewReader(data))
	if err != nil {
		return "", nil
	}
	if id := strings.TrimSpace(msg.Header.Get("Message-ID")); id != "" {
		if !strings.HasPrefix(id, "<") {
			id = "<" + id + ">"
		}
		msgID = id
	}
	raw := msg.Header.Get("From")
	if raw == "" {
		return msgID, nil
	}
	if list, err := msg.Header.AddressList("From"); err == nil {
		for _, a := range list {
			from = append(from, a.Address)
		}
		return msgID, from
	}
	return msgID, addrRE.FindAllString(raw, -1)
}
