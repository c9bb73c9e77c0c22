package relay

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/oauthrelay/oauthrelay/config"
	"github.com/oauthrelay/oauthrelay/queue"
)

// session is one SMTP conversation with a legacy application.
type session struct {
	s      *Server
	conn   *smtp.Conn
	ip     netip.Addr
	tls    bool
	helo   string
	authed string // client name after a successful AUTH

	// The current transaction. cfg is the configuration MAIL was judged
	// by; RCPT and DATA use the same one, so a reload in between cannot
	// pull the mailbox from under the transaction.
	cfg      *config.Config
	client   *config.Client
	mailbox  *config.Mailbox
	from     string // envelope sender as the app sent it
	sendFrom string // envelope sender to use upstream (after rewrite_from)
	utf8     bool
	rcpts    []string
}

func newSession(s *Server, c *smtp.Conn) *session {
	_, isTLS := c.TLSConnectionState()
	return &session{s: s, conn: c, ip: s.peerIP(c.Conn()), tls: isTLS, helo: c.Hostname()}
}

// authAllowed: over TLS always; in clear text only from loopback (the relay
// usually sits next to the application) or when the admin allowed it.
func (ss *session) authAllowed() bool {
	return ss.tls || ss.ip.IsLoopback() || ss.s.Config().Listen.AllowInsecureAuth
}

// AuthMechanisms implements smtp.AuthSession: none where AUTH is refused.
func (ss *session) AuthMechanisms() []string {
	if !ss.authAllowed() {
		return nil
	}
	return []string{sasl.Plain, sasl.Login}
}

// Auth implements smtp.AuthSession.
func (ss *session) Auth(mech string) (sasl.Server, error) {
	if !ss.authAllowed() {
		ss.s.refused(ReasonTLSRequired)
		ss.s.log.Info("refused: AUTH in clear text from a non-loopback peer", "remote", ss.ip.String(),
			"fix", "configure the application to use STARTTLS or implicit TLS, or set listen.allow_insecure_auth on a trusted network")
		return nil, reply(538, 5, 7, 11, "Encryption required: issue STARTTLS before AUTH (passwords are not accepted in clear text from %s)", ss.ip)
	}
	if d := ss.s.lim.locked(ss.ip); d > 0 {
		ss.s.refused(ReasonAuthLocked)
		ss.s.log.Warn("auth refused: address locked out after repeated failures", "remote", ss.ip.String(), "remaining", d.Round(time.Second).String())
		return nil, reply(454, 4, 7, 0, "Too many failed logins from %s; try again in %s", ss.ip, roundUp(d))
	}
	check := func(username, password string) error { return ss.checkLogin(username, password) }
	switch strings.ToUpper(mech) {
	case sasl.Plain:
		return saslWrap{newPlainServer(check)}, nil
	case sasl.Login:
		return saslWrap{&loginServer{auth: check}}, nil
	}
	return nil, reply(504, 5, 7, 4, "Unsupported authentication mechanism %s; use PLAIN or LOGIN", sanitize(mech))
}

func roundUp(d time.Duration) string {
	m := int((d + time.Minute - 1) / time.Minute)
	if m <= 1 {
		return "1 minute"
	}
	return fmt.Sprintf("%d minutes", m)
}

func (ss *session) checkLogin(username, password string) error {
	cfg := ss.s.Config()
	cl := cfg.ClientByUsername(username)
	hash := ""
	if cl != nil {
		hash = cl.PasswordHash
	}
	ok := checkPassword(hash, password)
	if ok && len(cl.Prefixes) > 0 && !cl.Trusts(ss.ip) {
		ss.s.log.Warn("auth refused: client logged in from outside its networks", "client", cl.Name, "remote", ss.ip.String(), "networks", strings.Join(cl.Networks, ","),
			"fix", "add the address to the client's networks if it is legitimate")
		ok = false
	}
	if !ok {
		delay, locked := ss.s.lim.fail(ss.ip)
		ss.s.refused(ReasonAuthFailed)
		// Never log the password; the username helps the admin and is not
		// a secret.
		ss.s.log.Warn("auth failed", "username", sanitize(username), "remote", ss.ip.String(), "locked_out", locked)
		ss.s.lim.sleep(delay)
		if locked {
			return reply(454, 4, 7, 0, "Too many failed logins from %s; try again in %s", ss.ip, roundUp(ss.s.lim.lockout))
		}
		return reply(535, 5, 7, 8, "Authentication credentials invalid: wrong username or password")
	}
	ss.s.lim.succeed(ss.ip)
	ss.authed = cl.Name
	ss.s.log.Debug("auth ok", "client", cl.Name, "remote", ss.ip.String(), "tls", ss.tls)
	return nil
}

// currentClient is who this connection is: the authenticated client, or a
// username-less client trusting the peer's network.
func (ss *session) currentClient(cfg *config.Config) *config.Client {
	if ss.authed != "" {
		// Looked up by name so a reload that changes the client applies to
		// open connections too.
		return cfg.Client(ss.authed)
	}
	return cfg.TrustedClient(ss.ip)
}

// Mail decides who the connection is and whether it may use from.
func (ss *session) Mail(from string, opts *smtp.MailOptions) error {
	ss.Reset()
	cfg := ss.s.Config()
	if cfg.Listen.RequireTLS && !ss.tls {
		ss.s.refused(ReasonTLSRequired)
		ss.s.log.Info("refused: MAIL FROM before STARTTLS while listen.require_tls is set", "remote", ss.ip.String())
		return reply(530, 5, 7, 0, "Must issue a STARTTLS command first: this relay requires TLS")
	}
	cl := ss.currentClient(cfg)
	if cl == nil {
		ss.s.refused(ReasonAuthRequired)
		if ss.authed != "" {
			// go-smtp allows one AUTH per connection, so the client must
			// reconnect to log in again.
			ss.s.log.Warn("refused: the logged-in client was removed from the configuration", "client", ss.authed, "remote", ss.ip.String())
			return reply(421, 4, 7, 0, "Client %q was removed from the relay's configuration; reconnect and log in again", ss.authed)
		}
		ss.s.log.Info("refused: unauthenticated peer outside every trusted network", "remote", ss.ip.String(), "from", sanitize(from))
		return reply(530, 5, 7, 0, "Authentication required: %s is not a trusted network; log in with AUTH", ss.ip)
	}
	sendFrom := from
	if cl.RewriteFrom != "" {
		sendFrom = cl.RewriteFrom
	} else {
		if from == "" {
			// A null sender (a bounce or a read receipt) has no mailbox to
			// sign in as; only a client with rewrite_from can use it.
			ss.s.refused(ReasonSenderDenied)
			ss.s.log.Warn("refused sender", "client", cl.Name, "from", "<>", "remote", ss.ip.String(),
				"fix", "set rewrite_from for this client if the device sends with an empty sender")
			return reply(550, 5, 7, 1, "Sender <> (a bounce) is not allowed for client %q: Microsoft 365 needs a real mailbox as sender; use one of the client's senders", cl.Name)
		}
		if !cl.MaySend(from) || cfg.MailboxFor(from) == nil {
			ss.s.refused(ReasonSenderDenied)
			ss.s.log.Warn("refused sender", "client", cl.Name, "from", sanitize(from), "remote", ss.ip.String(),
				"fix", "add the address to this client's senders (and to a mailbox's send_as) if it should be allowed")
			return reply(550, 5, 7, 1, "Sender <%s> is not allowed for client %q; the relay's administrator can add it to the client's senders", sanitize(from), cl.Name)
		}
	}
	ss.cfg, ss.client, ss.mailbox = cfg, cl, cfg.MailboxFor(sendFrom)
	ss.from, ss.sendFrom = from, sendFrom
	ss.utf8 = opts != nil && opts.UTF8
	return nil
}

// Rcpt accepts a recipient within listen.max_recipients.
func (ss *session) Rcpt(to string, opts *smtp.RcptOptions) error {
	if ss.client == nil {
		return reply(503, 5, 5, 1, "Send MAIL FROM first")
	}
	max := ss.cfg.Listen.MaxRecipients
	if len(ss.rcpts) >= max {
		ss.s.refused(ReasonTooManyRcpts)
		ss.s.log.Info("refused recipient: too many recipients", "client", ss.client.Name, "max", max, "remote", ss.ip.String())
		return reply(452, 4, 5, 3, "Too many recipients: at most %d per message; send the rest in another message", max)
	}
	if !validRecipient(to) {
		ss.s.refused(ReasonBadRecipient)
		ss.s.log.Info("refused recipient: not a valid address", "to", sanitize(to), "remote", ss.ip.String())
		return reply(501, 5, 1, 3, "Recipient <%s> is not a valid address", sanitize(to))
	}
	if !ss.utf8 && !isASCII(to) {
		// RFC 6531: an internationalised address needs SMTPUTF8 on MAIL;
		// without it Exchange would refuse it after the 250.
		ss.s.refused(ReasonBadRecipient)
		ss.s.log.Info("refused recipient: non-ASCII address without SMTPUTF8", "to", sanitize(to), "remote", ss.ip.String())
		return reply(553, 5, 6, 7, "Recipient <%s> is not ASCII: send MAIL FROM with the SMTPUTF8 parameter", sanitize(to))
	}
	ss.rcpts = append(ss.rcpts, to)
	return nil
}

// validRecipient accepts what can be sent on as an RCPT TO: an "@", valid
// UTF-8, and no spaces, angle brackets or control characters (a NUL or a
// bare CR would otherwise reach the upstream and turn into a bounce).
func validRecipient(to string) bool {
	if !strings.Contains(to, "@") || !utf8.ValidString(to) {
		return false
	}
	for _, r := range to {
		if r <= ' ' || r == 0x7f || r == '<' || r == '>' {
			return false
		}
	}
	return true
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// Data checks the header against the sender policy and spools the
// message; it answers 250 only once the message is durable.
func (ss *session) Data(r io.Reader) error {
	if ss.client == nil {
		return reply(503, 5, 5, 1, "Send MAIL FROM and RCPT TO first")
	}
	start := ss.s.now()
	cfg, l := ss.cfg, ss.s.listen
	w, err := ss.s.spool.Create()
	if err != nil {
		ss.s.refused(ReasonSpoolError)
		id := "-"
		var we *queue.WriteError
		if errors.As(err, &we) {
			id = we.ID
		}
		return spoolFailure(ss.s.log, id, err)
	}
	// The read deadline grows with progress but never past data_timeout,
	// so a slow 35 MB upload works and a stalled client is cut off.
	dr := &deadlineReader{r: r, conn: ss.conn, idle: l.IdleTimeout.Duration, end: time.Now().Add(l.DataTimeout.Duration)}
	msg := &message{
		client: ss.client, cfg: cfg, mailbox: ss.mailbox, maxSize: int64(l.MaxMessageSize), id: w.ID(), now: start,
		helo: ss.helo, ip: ss.ip, tls: ss.tls, authed: ss.authed != "",
		hostname: l.Hostname, rcpts: ss.rcpts, envFrom: ss.sendFrom,
	}
	if err := msg.copy(w, dr); err != nil {
		w.Abort()
		var se *smtp.SMTPError
		if errors.As(err, &se) {
			ss.refuseData(se, msg)
			return spoolFailure(ss.s.log, w.ID(), err)
		}
		if dr.timedOut {
			ss.s.refused(ReasonClientTimeout)
			ss.s.log.Warn("client stalled during DATA; message discarded", "client", ss.client.Name, "remote", ss.ip.String())
			return reply(421, 4, 4, 2, "Timeout waiting for message data; nothing was accepted")
		}
		if errors.Is(err, smtp.ErrTooLongLine) {
			se := reply(554, 5, 6, 0, "A line of the message is too long (RFC 5322 allows 998 characters); nothing was accepted")
			ss.refuseData(se, msg)
			return se
		}
		if dr.err != nil {
			// The client's side failed (connection reset): not a spool
			// problem, and nobody is left to read a reply.
			ss.s.refused(ReasonClientTimeout)
			ss.s.log.Warn("connection failed during DATA; message discarded", "client", ss.client.Name, "remote", ss.ip.String(), "error", dr.err.Error())
			return reply(421, 4, 4, 0, "Connection error during DATA; nothing was accepted")
		}
		ss.s.refused(ReasonSpoolError)
		return spoolFailure(ss.s.log, w.ID(), err)
	}
	env := &queue.Envelope{
		Received:   start,
		Client:     ss.client.Name,
		RemoteAddr: ss.ip.String(),
		Mailbox:    ss.mailbox.Address,
		MailFrom:   ss.sendFrom,
		SMTPUTF8:   ss.utf8,
	}
	for _, rc := range ss.rcpts {
		env.Recipients = append(env.Recipients, &queue.Recipient{Address: rc})
	}
	if err := w.Commit(env); err != nil {
		ss.s.refused(ReasonSpoolError)
		return spoolFailure(ss.s.log, w.ID(), err)
	}
	if ss.s.hooks.Accepted != nil {
		ss.s.hooks.Accepted(ss.client.Name)
	}
	ss.s.log.Info("accepted", "id", env.ID, "client", ss.client.Name, "from", ss.sendFrom, "mailbox", env.Mailbox,
		"recipients", len(env.Recipients), "size", env.Size, "remote", ss.ip.String())
	// A 250 with the queue id, so the app's log can be matched with ours.
	return &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: "OK: queued as " + env.ID}
}

func (ss *session) refuseData(se *smtp.SMTPError, msg *message) {
	reason := ReasonFromDenied
	switch {
	case se.Code == 552:
		reason = ReasonTooLarge
	case se.EnhancedCode == smtp.EnhancedCode{5, 6, 0}:
		reason = ReasonBadHeader
	}
	ss.s.refused(reason)
	ss.s.log.Warn("refused message", "reason", reason, "client", ss.client.Name, "from", ss.sendFrom, "header_from", sanitize(msg.headerFrom), "remote", ss.ip.String(), "reply", se.Message)
}

// Reset forgets the current transaction.
func (ss *session) Reset() {
	ss.cfg, ss.client, ss.mailbox, ss.from, ss.sendFrom, ss.rcpts, ss.utf8 = nil, nil, nil, "", "", nil, false
}

// Logout implements smtp.Session.
func (ss *session) Logout() error { return nil }

// deadlineReader extends the connection's read deadline as data arrives.
type deadlineReader struct {
	r        io.Reader
	conn     *smtp.Conn
	idle     time.Duration
	end      time.Time
	timedOut bool
	// err is the last read error other than io.EOF, so a failure of the
	// client's connection is not mistaken for a spool failure.
	err error
}

// Read reads and moves the deadline on.
func (d *deadlineReader) Read(p []byte) (int, error) {
	dl := time.Now().Add(d.idle)
	if dl.After(d.end) {
		dl = d.end
	}
	d.conn.Conn().SetReadDeadline(dl)
	n, err := d.r.Read(p)
	if err != nil {
		var ne interface{ Timeout() bool }
		if errors.As(err, &ne) && ne.Timeout() {
			d.timedOut = true
		}
		if err != io.EOF && !errors.Is(err, smtp.ErrDataTooLarge) && !errors.Is(err, smtp.ErrTooLongLine) {
			d.err = err
		}
	}
	return n, err
}
