package submit

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"time"

	"github.com/oauthrelay/oauthrelay/oauth"
	"github.com/oauthrelay/oauthrelay/transport"
)

// The functions in this file open the same upstream conversation delivery
// uses, one step at a time, for `oauthrelay doctor`. Their errors go through
// Classify (with the Stage they return) like delivery's do, so the doctor
// explains a reply exactly as the relay's log would.

// defaultDialer is d, or the environment's way out when d is nil.
func defaultDialer(d transport.Dialer) transport.Dialer {
	return transport.Deps{Dial: d}.Dialer()
}

// ProbeTLS connects to addr, says EHLO as helo and upgrades with STARTTLS,
// requiring TLS 1.2 or newer and a certificate that verifies against
// roots, then quits. It returns the negotiated TLS state.
func ProbeTLS(ctx context.Context, d transport.Dialer, addr, helo string, roots *x509.CertPool, timeout time.Duration) (tls.ConnectionState, error) {
	c, err := startTLS(ctx, defaultDialer(d), addr, helo, roots, timeout)
	if err != nil {
		_, err = transport.SplitStage(err, transport.StageConnect)
		return tls.ConnectionState{}, err
	}
	st, _ := c.TLSConnectionState()
	u := &client{c: c}
	u.close()
	return st, nil
}

// Session is an authenticated upstream connection opened for diagnostics.
type Session struct{ u *client }

// Open connects like delivery does (STARTTLS, TLS 1.2+, a verified
// certificate) and authenticates as mailbox with XOAUTH2 and tok. On
// failure it returns the stage that failed, for Classify.
func Open(ctx context.Context, d transport.Dialer, addr, helo string, roots *x509.CertPool, timeout time.Duration, mailbox string, tok oauth.Token) (*Session, transport.Stage, error) {
	u, err := dial(ctx, defaultDialer(d), addr, helo, roots, timeout, mailbox, tok)
	if err != nil {
		stage, err := transport.SplitStage(err, transport.StageConnect)
		return nil, stage, err
	}
	return &Session{u: u}, "", nil
}

// Send sends one message from from to rcpts. It returns the upstream's
// reply to DATA, or the stage and error of the first failure (a recipient
// refused at RCPT fails the whole test message).
func (s *Session) Send(from string, rcpts []string, body []byte) (string, transport.Stage, error) {
	results, reply, err := s.u.send(from, false, int64(len(body)), rcpts, bytes.NewReader(body))
	if err != nil {
		stage, err := transport.SplitStage(err, transport.StageData)
		return "", stage, err
	}
	for _, r := range results {
		if r.err != nil {
			return "", transport.StageRcpt, r.err
		}
	}
	return reply, "", nil
}

// TryFrom opens a transaction from from and resets it before any
// recipient: Exchange decides SendAs for the envelope sender at MAIL FROM
// (550 5.7.60), so this proves the grant without sending anything. It
// cannot prove what Exchange checks on the From: header after DATA.
func (s *Session) TryFrom(from string) error {
	if err := s.u.c.Mail(from, nil); err != nil {
		return err
	}
	return s.u.reset()
}

// Close quits the session.
func (s *Session) Close() { s.u.close() }
