package msemu

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
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
	hve            bool // on the High Volume Email listener

	hasFrom bool
	from    string
	rcpts   []string
	bdat    *bytes.Buffer
	bdatBig bool
	closed  bool
}

// serveSMTP accepts SMTP AUTH connections, or High Volume Email ones
// when hve is set.
func (e *Emulator) serveSMTP(ln net.Listener, hve bool) {
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
		if hve {
			e.stats.HVEConnections++
		} else {
			e.stats.Connections++
		}
		e.conns[c] = struct{}{}
		e.wg.Add(1)
		e.mu.Unlock()
		go func() {
			defer e.wg.Done()
			s := &smtpSession{e: e, id: id, raw: c, conn: c, hve: hve}
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
