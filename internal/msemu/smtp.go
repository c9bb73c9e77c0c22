package msemu

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/mail"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Host names Exchange Online shows in its replies (reference §3).
const (
	frontendHost = "SY5P282CA0097.outlook.office365.com"
	authHost     = "SN2PR00CA0018.namprd00.prod.outlook.com"
	storeHost    = "SYBP282MB2635.AUSP282.PROD.OUTLOOK.COM"
)

// Reply lines, exactly as Exchange Online sends them.
const (
	ReplyAuthOK             = "235 2.7.0 Authentication successful"
	ReplyAuthFailed         = "535 5.7.3 Authentication unsuccessful [" + authHost + "]"
	ReplyAuthDisabledTenant = "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant. Visit https://aka.ms/smtp_auth_disabled for more information."
	ReplyAuthDisabledMbx    = "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Mailbox. Visit https://aka.ms/smtp_auth_disabled for more information."
	ReplyBasicAuth          = "550 5.7.30 Basic authentication is not supported for Client Submission."
	ReplyNotAuthenticated   = "530 5.7.57 Client not authenticated to send mail."
	ReplyTooManyConns       = "432 4.3.2 Concurrent connections limit exceeded."
	ReplySenderOK           = "250 2.1.0 Sender OK"
	ReplySendAsDenied       = "550 5.7.60 SMTP; Client does not have permissions to send as this sender"
	ReplyRcptOK             = "250 2.1.5 Recipient OK"
	ReplyTooManyRcpts       = "452 4.5.3 Too many recipients"
	ReplyStartData          = "354 Start mail input; end with <CRLF>.<CRLF>"
	ReplyRateLimited        = "421 4.4.2 Message submission rate for this client has exceeded the configured limit"
	ReplyQuotaExceeded      = "554 5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException"
	ReplyTooBig             = "552 5.3.4 Message size exceeds fixed maximum message size"
	ReplyOldTLS             = "421 4.7.66 TLS 1.0 and 1.1 are not supported. Please upgrade/update your client to support TLS 1.2. Visit https://aka.ms/smtp_auth_tls."
	ReplyTempError          = "451 4.7.0 Temporary server error. Please try again later. PRX4"
)

// maxLine bounds a command line; an XOAUTH2 line with a token is ~3 kB.
const maxLine = 64 << 10

var errLineTooLong = errors.New("line too long")

type smtpSession struct {
	e      *Emulator
	id     int
	raw    net.Conn
	conn   net.Conn
	r      *bufio.Reader
	w      *bufio.Writer
	isTLS  bool
	oldTLS bool
	helo   string

	mailbox, appID string
	counted        bool // holds a slot in e.active

	hasFrom bool
	from    string
	rcpts   []string
	bdat    *bytes.Buffer
	bdatBig bool
	closed  bool
}

func (e *Emulator) serveSMTP(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			return
		}
		e.mu.Lock()
		if e.closed {
			e.mu.Unlock()
			c.Close()
			return
		}
		e.connSeq++
		id := e.connSeq
		e.stats.Connections++
		e.conns[c] = struct{}{}
		e.wg.Add(1)
		e.mu.Unlock()
		go func() {
			defer e.wg.Done()
			s := &smtpSession{e: e, id: id, raw: c, conn: c}
			s.r, s.w = bufio.NewReader(c), bufio.NewWriter(c)
			s.serve()
			s.close()
		}()
	}
}

func (s *smtpSession) close() {
	if s.closed {
		return
	}
	s.closed = true
	s.raw.Close()
	e := s.e
	e.mu.Lock()
	delete(e.conns, s.raw)
	if s.counted {
		e.active[strings.ToLower(s.mailbox)]--
		s.counted = false
	}
	e.mu.Unlock()
}

func (s *smtpSession) reply(line string) {
	s.w.WriteString(line)
	s.w.WriteString("\r\n")
	s.w.Flush()
	// A 421 reply means the server is closing the channel.
	if strings.HasPrefix(line, "421") {
		s.close()
	}
}

func (s *smtpSession) replyf(format string, a ...any) { s.reply(fmt.Sprintf(format, a...)) }

func (s *smtpSession) readLine() (string, error) {
	var line []byte
	for {
		s.conn.SetReadDeadline(time.Now().Add(10 * time.Minute))
		chunk, err := s.r.ReadSlice('\n')
		line = append(line, chunk...)
		if len(line) > maxLine {
			return "", errLineTooLong
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			return "", err
		}
		return strings.TrimRight(string(line), "\r\n"), nil
	}
}

func (s *smtpSession) serve() {
	e := s.e
	e.mu.Lock()
	failReply, fail := e.failConnect.take()
	e.mu.Unlock()
	if fail {
		s.reply(failReply)
		return
	}
	var tag [8]byte
	rand.Read(tag[:])
	s.replyf("220 %s Microsoft ESMTP MAIL Service ready at %s [%s]", frontendHost,
		e.now().UTC().Format(time.RFC1123Z), strings.ToUpper(hex.EncodeToString(tag[:])))
	for !s.closed {
		line, err := s.readLine()
		if err == errLineTooLong {
			s.reply("500 5.5.2 Line too long")
			return
		}
		if err != nil {
			return
		}
		if s.oldTLS {
			s.reply(ReplyOldTLS)
			return
		}
		verb, arg, _ := strings.Cut(line, " ")
		arg = strings.TrimSpace(arg)
		switch strings.ToUpper(verb) {
		case "EHLO", "HELO":
			s.hello(strings.ToUpper(verb) == "EHLO", arg)
		case "STARTTLS":
			s.startTLS()
		case "AUTH":
			s.auth(arg)
		case "MAIL":
			s.mail(arg)
		case "RCPT":
			s.rcpt(arg)
		case "DATA":
			s.data()
		case "BDAT":
			s.bdatCmd(arg)
		case "RSET":
			s.reset()
			s.reply("250 2.0.0 Resetting")
		case "NOOP":
			s.reply("250 2.0.0 OK")
		case "VRFY":
			s.reply("252 2.1.5 Cannot VRFY user")
		case "QUIT":
			s.reply("221 2.0.0 Service closing transmission channel")
			return
		default:
			s.replyf("500 5.3.3 Unrecognized command '%s'", verb)
		}
	}
}

func (s *smtpSession) reset() {
	s.hasFrom, s.from, s.rcpts, s.bdat, s.bdatBig = false, "", nil, nil, false
}

func (s *smtpSession) remoteIP() string {
	if a, ok := s.raw.RemoteAddr().(*net.TCPAddr); ok {
		return a.IP.String()
	}
	return s.raw.RemoteAddr().String()
}

func (s *smtpSession) hello(ehlo bool, arg string) {
	if arg == "" {
		s.reply("501 5.5.4 Invalid domain name")
		return
	}
	s.helo = arg
	s.reset()
	hi := fmt.Sprintf("%s Hello [%s]", frontendHost, s.remoteIP())
	if !ehlo {
		s.reply("250 " + hi)
		return
	}
	lines := []string{hi, "SIZE " + strconv.Itoa(AdvertisedSize), "PIPELINING", "DSN", "ENHANCEDSTATUSCODES"}
	if s.isTLS {
		// AUTH is offered only after STARTTLS, as Exchange Online does.
		lines = append(lines, "AUTH LOGIN XOAUTH2")
	} else {
		lines = append(lines, "STARTTLS")
	}
	lines = append(lines, "8BITMIME", "BINARYMIME", "CHUNKING", "SMTPUTF8")
	for i, l := range lines {
		sep := "-"
		if i == len(lines)-1 {
			sep = " "
		}
		s.w.WriteString("250" + sep + l + "\r\n")
	}
	s.w.Flush()
}

func (s *smtpSession) startTLS() {
	if s.isTLS {
		s.reply("503 5.5.1 Bad sequence of commands")
		return
	}
	if s.r.Buffered() > 0 {
		// Plaintext pipelined after STARTTLS would be an injection.
		s.reply("501 5.5.4 Pipelining not allowed with STARTTLS")
		return
	}
	s.reply("220 2.0.0 SMTP server ready")
	// Old versions may negotiate so that the client gets the explicit
	// 421 4.7.66 Exchange sends, instead of an opaque handshake failure.
	cfg := &tls.Config{Certificates: []tls.Certificate{s.e.tlsCert}, MinVersion: tls.VersionTLS10}
	s.e.mu.Lock()
	cfg.MaxVersion = s.e.tlsMax
	s.e.mu.Unlock()
	tc := tls.Server(s.raw, cfg)
	tc.SetDeadline(time.Now().Add(time.Minute))
	if err := tc.Handshake(); err != nil {
		s.e.log.Info("msemu smtp tls handshake failed", "conn", s.id, "err", err)
		s.close()
		return
	}
	tc.SetDeadline(time.Time{})
	s.conn, s.isTLS = tc, true
	s.r, s.w = bufio.NewReader(tc), bufio.NewWriter(tc)
	s.helo = ""
	s.reset()
	s.e.mu.Lock()
	s.oldTLS = tc.ConnectionState().Version < s.e.tlsMin
	s.e.mu.Unlock()
}

func (s *smtpSession) auth(arg string) {
	if s.helo == "" {
		s.reply("503 5.5.2 Send hello first")
		return
	}
	if s.mailbox != "" {
		s.reply("503 5.5.2 Already Authenticated")
		return
	}
	mech, ir, _ := strings.Cut(arg, " ")
	mech = strings.ToUpper(mech)
	if !s.isTLS || (mech != "XOAUTH2" && mech != "LOGIN") {
		// Before STARTTLS no mechanism is offered at all.
		s.reply("504 5.7.4 Unrecognized authentication type")
		return
	}
	if mech == "LOGIN" {
		// Go through the exchange so clients see the real refusal.
		if ir == "" {
			s.reply("334 VXNlcm5hbWU6")
			if l, err := s.readLine(); err != nil || l == "*" {
				s.reply("501 5.0.0 Authentication cancelled")
				return
			}
		}
		s.reply("334 UGFzc3dvcmQ6")
		if l, err := s.readLine(); err != nil || l == "*" {
			s.reply("501 5.0.0 Authentication cancelled")
			return
		}
		s.e.mu.Lock()
		s.e.stats.AuthFailures++
		s.e.mu.Unlock()
		s.reply(ReplyBasicAuth)
		return
	}
	if ir == "" {
		s.reply("334 ")
		l, err := s.readLine()
		if err != nil {
			return
		}
		if l == "*" {
			s.reply("501 5.0.0 Authentication cancelled")
			return
		}
		ir = l
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(ir))
	if err != nil {
		s.reply("501 5.5.2 Cannot Decode response")
		return
	}
	user, token := parseXOAUTH2(raw)
	reply := s.e.checkAuth(s, user, token)
	s.reply(reply)
	if strings.HasPrefix(reply, "432") {
		// The connection limit reply ends the session.
		s.close()
	}
}

// parseXOAUTH2 splits "user=<mbx>\x01auth=Bearer <jwt>\x01\x01".
func parseXOAUTH2(b []byte) (user, token string) {
	for _, f := range strings.Split(string(b), "\x01") {
		if v, ok := strings.CutPrefix(f, "user="); ok {
			user = v
		} else if v, ok := strings.CutPrefix(f, "auth="); ok {
			if t, ok := cutPrefixFold(v, "Bearer "); ok {
				token = strings.TrimSpace(t)
			}
		}
	}
	return user, token
}

func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix) {
		return s[len(prefix):], true
	}
	return s, false
}

// checkAuth decides an AUTH XOAUTH2 the way Exchange Online does and
// returns the reply line. On success the session holds a connection slot.
func (e *Emulator) checkAuth(s *smtpSession, user, token string) string {
	rec := AuthRecord{Mailbox: user, At: e.now(), ConnID: s.id}
	claims, perr := e.parseAccessToken(token)
	if perr == nil || errors.Is(perr, jwt.ErrTokenExpired) || errors.Is(perr, jwt.ErrTokenNotValidYet) || errors.Is(perr, jwt.ErrTokenUsedBeforeIssued) {
		rec.AppID = claims.AppID
		if claims.Exp != 0 {
			rec.Expires = time.Unix(claims.Exp, 0)
			rec.Remaining = rec.Expires.Sub(rec.At)
		}
	}

	e.mu.Lock()
	defer e.mu.Unlock()
	reply := func() string {
		if r, ok := e.failAuthNext.take(); ok {
			return r
		}
		if r, ok := e.failAuth[strings.ToLower(user)]; ok {
			return r
		}
		// Expired, foreign or tampered tokens all look alike to the client.
		if perr != nil || !exchangeAudiences[claims.Aud] {
			return ReplyAuthFailed
		}
		app, ok := e.apps[strings.ToLower(claims.AppID)]
		if !ok || !strings.EqualFold(app.TenantID, claims.Tid) ||
			claims.Iss != "https://sts.windows.net/"+app.TenantID+"/" {
			return ReplyAuthFailed
		}
		if e.tenantOff {
			return ReplyAuthDisabledTenant
		}
		mb, ok := e.mailboxes[strings.ToLower(user)]
		if !ok {
			return ReplyAuthFailed
		}
		if mb.SMTPAuthDisabled {
			return ReplyAuthDisabledMbx
		}
		if !app.ServicePrincipal || !contains(claims.Roles, RoleSendAsApp) || !contains(mb.FullAccess, app.ClientID) {
			return ReplyAuthFailed
		}
		key := strings.ToLower(mb.Address)
		if max := e.opts.MaxConnsPerMailbox; max >= 0 && e.active[key] >= max {
			return ReplyTooManyConns
		}
		e.active[key]++
		if e.active[key] > e.stats.MaxConcurrentByMailbox[key] {
			e.stats.MaxConcurrentByMailbox[key] = e.active[key]
		}
		s.mailbox, s.appID, s.counted = mb.Address, app.ClientID, true
		return ReplyAuthOK
	}()
	rec.OK = reply == ReplyAuthOK
	rec.Reply = reply
	if !rec.OK {
		e.stats.AuthFailures++
	}
	e.stats.AuthTokens = append(e.stats.AuthTokens, rec)
	e.log.Info("msemu smtp auth", "conn", s.id, "mailbox", user, "app", rec.AppID, "remaining", rec.Remaining.Round(time.Second), "reply", reply)
	return reply
}

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

	key := strings.ToLower(s.mailbox)
	e.mu.Lock()
	sent := prune(e.sent[key], now.Add(-time.Minute))
	e.sent[key] = sent
	if max := e.opts.MaxPerMinute; max >= 0 && len(sent) >= max {
		e.mu.Unlock()
		s.reply(ReplyRateLimited)
		return
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
	if max := e.opts.MaxRecipientsPerDay; max >= 0 && day+len(s.rcpts) > max {
		e.mu.Unlock()
		s.reply(ReplyQuotaExceeded)
		return
	}
	if msgID == "" {
		msgID = "<" + newGUID() + "@" + storeHost + ">"
	}
	m := Message{
		Mailbox: s.mailbox, AppID: s.appID, MailFrom: s.from,
		Rcpts: append([]string(nil), s.rcpts...),
		Data:  append([]byte(nil), data...), QueueID: msgID, At: now, ConnID: s.id,
	}
	e.sent[key] = append(e.sent[key], now)
	e.rcptLog[key] = append(e.rcptLog[key], rcptEntry{now, len(s.rcpts)})
	e.delivered = append(e.delivered, m)
	n := len(e.delivered)
	close(e.deliveredCh)
	e.deliveredCh = make(chan struct{})
	e.mu.Unlock()

	e.writeMailFile(n, m)
	e.log.Info("msemu smtp delivered", "conn", s.id, "mailbox", m.Mailbox, "from", m.MailFrom, "rcpts", len(m.Rcpts), "size", len(m.Data), "id", msgID)
	s.replyf("250 2.0.0 OK %s [Hostname=%s]", msgID, storeHost)
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
