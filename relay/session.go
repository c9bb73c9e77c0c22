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
	"github.com/oauthrelay/oauthrelay/internal/cluster"
	"github.com/oauthrelay/oauthrelay/queue"
)

// session is one SMTP conversation with a legacy application.
type session struct {
	s    *Server
	conn *smtp.Conn
	ip   netip.Addr
	tls  bool
	// tlsVersion is the TLS version negotiated ("1.2"), "" in clear text.
	tlsVersion string
	helo       string
	authed     string // client name after a successful AUTH

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
	// ticket is the transaction's place in its client's rate limits,
	// given back unless the message is accepted.
	ticket *cluster.Ticket

	rl refusalLog
	// failed is the session's last failed login, so that the same
	// credentials tried again over another mechanism count once.
	failed failedLogin
	// lastRcpt is the last command line read if it was a RCPT, else ""
	// (lineTap): the address go-smtp's syntax error does not echo.
	lastRcpt string
}

func newSession(s *Server, c *smtp.Conn) *session {
	st, isTLS := c.TLSConnectionState()
	ss := &session{s: s, conn: c, ip: s.peerIP(c.Conn()), tls: isTLS, helo: c.Hostname()}
	if isTLS {
		ss.tlsVersion = tlsVersion(st.Version)
		ss.logTLS(st)
	}
	return ss
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
	if err := ss.closing(); err != nil {
		return nil, err
	}
	if !ss.authAllowed() {
		if ss.s.listen.TLSCertFile == "" {
			return nil, ss.refuse(newRefusal(authInClearNoCert, ss.ip))
		}
		return nil, ss.refuse(newRefusal(authInClear, ss.ip))
	}
	if d := ss.s.lim.locked(ss.ip); d > 0 {
		return nil, ss.refuse(newRefusal(authLocked, ss.ip, roundUp(d)), "remaining", d.Round(time.Second).String())
	}
	check := func(username, password string) error { return ss.checkLogin(username, password) }
	switch strings.ToUpper(mech) {
	case sasl.Plain:
		return saslWrap{newPlainServer(check), ss}, nil
	case sasl.Login:
		return saslWrap{&loginServer{auth: check}, ss}, nil
	}
	return nil, ss.refuse(newRefusal(authMechanism, sanitize(mech)))
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
	lim := ss.s.lim
	if ss.failed.same(cfg, username, password) {
		// The client tries the credentials that just failed over
		// another mechanism (swaks tries LOGIN, then PLAIN): one failed
		// login, so it is neither compared nor counted again.
		// (Never the session's first refusal of its kind, so not logged.)
		return ss.refuse(newRefusal(authFailed))
	}
	cl := cfg.ClientByUsername(username)
	outside := false
	res := lim.attempt(ss.ip, func() bool {
		if cl == nil || cl.PasswordHash == "" {
			lim.compare(lim.dummyHash(hashCost(cfg.Clients)), []byte(password))
			return false
		}
		if !lim.compare([]byte(cl.PasswordHash), []byte(password)) {
			return false
		}
		outside = len(cl.Prefixes) > 0 && !cl.Trusts(ss.ip)
		return !outside
	})
	if res.lockedFor > 0 {
		return ss.refuse(newRefusal(authLocked, ss.ip, roundUp(res.lockedFor)), "remaining", res.lockedFor.Round(time.Second).String())
	}
	if outside {
		ss.s.log.Warn("auth refused: client logged in from outside its networks", "client", cl.Name, "remote", ss.ip.String(), "networks", strings.Join(cl.Networks, ","),
			"fix", "add the address to the client's networks if it is legitimate")
	}
	if !res.ok {
		ss.failed.set(cfg, username, password)
		r := newRefusal(authFailed)
		if res.nowLocked {
			r = newRefusal(authFailedLockout, ss.ip, roundUp(lim.lockout))
			if ss.s.hooks.LockedOut != nil {
				ss.s.hooks.LockedOut()
			}
		}
		se := ss.refuse(r, "username", sanitize(username), "locked_out", res.nowLocked)
		lim.sleep(res.delay)
		return se
	}
	ss.authed = cl.Name
	ss.gotIn()
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
	if err := ss.closing(); err != nil {
		return err
	}
	ss.Reset()
	cfg := ss.s.Config()
	if cfg.Listen.RequireTLS && !ss.tls {
		return ss.refuse(newRefusal(mailNeedsTLS))
	}
	cl := ss.currentClient(cfg)
	if cl == nil {
		if ss.authed != "" {
			return ss.refuse(newRefusal(clientRemoved, ss.authed), "client", ss.authed)
		}
		return ss.refuse(newRefusal(authRequired, ss.ip), "from", sanitize(from))
	}
	d := decideSender(cfg, cl, from, nil)
	if d.Refusal != nil {
		logFrom := sanitize(from)
		if from == "" {
			logFrom = "<>"
		}
		return ss.refuse(d.Refusal, "client", cl.Name, "from", logFrom)
	}
	if err := ss.reserveRate(cl); err != nil {
		return err
	}
	ss.cfg, ss.client, ss.mailbox = cfg, cl, d.Mailbox
	ss.from, ss.sendFrom = from, d.SendFrom
	ss.utf8 = opts != nil && opts.UTF8
	ss.gotIn()
	return nil
}

// Rcpt accepts a recipient within listen.max_recipients.
func (ss *session) Rcpt(to string, opts *smtp.RcptOptions) error {
	if err := ss.closing(); err != nil {
		return err
	}
	if ss.client == nil {
		return ss.refuse(newRefusal(rcptBeforeMail))
	}
	max := ss.cfg.Listen.MaxRecipients
	if len(ss.rcpts) >= max {
		return ss.refuse(newRefusal(tooManyRcpts, max), "client", ss.client.Name, "max", max)
	}
	if !validRecipient(to) {
		return ss.refuse(newRefusal(badRecipient, sanitize(to)), "to", sanitize(to))
	}
	if !ss.utf8 && !isASCII(to) {
		return ss.refuse(newRefusal(rcptNotASCII, sanitize(to)), "to", sanitize(to))
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
	if err := ss.closing(); err != nil {
		return err
	}
	if ss.client == nil {
		return ss.refuse(newRefusal(dataBeforeMail))
	}
	start := ss.s.now()
	cfg, l := ss.cfg, ss.s.listen
	// After DATA the relay decodes the stream itself (datareader.go);
	// BDAT's chunks come as they are.
	dot := takeOverData(r)
	if dot != nil {
		r = dot
	} else if _, bdat := r.(*io.PipeReader); !bdat {
		ss.s.rawData.Do(func() {
			ss.s.log.Warn("go-smtp's DATA reader cannot be replaced; lone CRs and \".\\r\" lines are read as go-smtp reads them",
				"fix", "a go-smtp upgrade changed its internals: update relay/datareader.go")
		})
	}
	// The read deadline grows with progress but never past data_timeout,
	// so a slow 35 MB upload works and a stalled client is cut off.
	dr := &deadlineReader{r: r, conn: ss.conn, idle: l.IdleTimeout.Duration, end: time.Now().Add(l.DataTimeout.Duration)}
	// Whatever happens to the message, the rest of the data is read
	// (and dropped) to its end here, so that go-smtp's own reader,
	// which loses track of lines, reads none of it. A client that
	// stalled or broke off gets a 421 and the connection is closed.
	defer func() {
		if dot != nil {
			if !dot.done() && !dr.timedOut && dr.err == nil {
				io.Copy(io.Discard, dr)
			}
			dot.handBack()
		}
	}()
	w, err := ss.s.spool.Create()
	if err != nil {
		id := "-"
		var we *queue.WriteError
		if errors.As(err, &we) {
			id = we.ID
		}
		return ss.spoolFailure(id, err)
	}
	msg := &message{
		client: ss.client, cfg: cfg, from: ss.from, maxSize: int64(l.MaxMessageSize), id: w.ID(), now: start,
		helo: ss.helo, ip: ss.ip, tls: ss.tls, authed: ss.authed != "",
		hostname: l.Hostname, rcpts: ss.rcpts,
	}
	if err := msg.copy(w, &crlfReader{r: dr, max: int64(l.MaxMessageSize)}); err != nil {
		w.Abort()
		return ss.copyFailure(err, dr, msg)
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
		return ss.spoolFailure(w.ID(), err)
	}
	ss.ticket = nil // accepted: it counts
	if ss.s.hooks.Accepted != nil {
		ss.s.hooks.Accepted(ss.client.Name)
	}
	attrs := []any{"id", env.ID, "client", ss.client.Name, "from", ss.sendFrom, "mailbox", env.Mailbox,
		"recipients", len(env.Recipients), "size", env.Size, "remote", ss.ip.String()}
	if ss.tlsVersion != "" {
		attrs = append(attrs, "tls_version", ss.tlsVersion)
	}
	ss.s.log.Info("accepted", attrs...)
	return queuedReply(env.ID)
}

// copyFailure reports why msg could not be read and spooled: the policy
// or a limit refused it, the client stalled or went away, or the spool
// failed.
func (ss *session) copyFailure(err error, dr *deadlineReader, msg *message) *smtp.SMTPError {
	var rf *refusal
	switch {
	case errors.As(err, &rf):
	case dr.timedOut:
		return ss.refuse(newRefusal(dataTimeout), "client", ss.client.Name)
	case errors.Is(err, smtp.ErrTooLongLine):
		rf = newRefusal(lineTooLong)
	case dr.err != nil:
		// The client's side failed (connection reset): not a spool
		// problem.
		return ss.refuse(newRefusal(dataConnError), "client", ss.client.Name, "error", dr.err.Error())
	default:
		return ss.spoolFailure(msg.id, err)
	}
	return ss.refuse(rf, "client", ss.client.Name, "from", ss.sendFrom, "header_from", sanitize(msg.headerFrom))
}

// spoolFailure reports a failure of the spool to take message id.
func (ss *session) spoolFailure(id string, err error) *smtp.SMTPError {
	return ss.refuse(spoolRefusal(id, err), "id", id, "error", err.Error())
}

// Reset forgets the current transaction.
func (ss *session) Reset() {
	ss.cancelRate()
	ss.cfg, ss.client, ss.mailbox, ss.from, ss.sendFrom, ss.rcpts, ss.utf8 = nil, nil, nil, "", "", nil, false
}

// Logout implements smtp.Session: it logs how often each refusal that
// was logged once happened in the session.
func (ss *session) Logout() error {
	ss.cancelRate()
	ss.logSummary()
	return nil
}

// clientName names the session's client for logs, "" if none yet.
func (ss *session) clientName() string {
	if ss.authed != "" {
		return ss.authed
	}
	if cl := ss.s.Config().TrustedClient(ss.ip); cl != nil {
		return cl.Name
	}
	return ""
}

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
