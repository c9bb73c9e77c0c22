package submit

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/oauthrelay/oauthrelay/oauth"
	"github.com/oauthrelay/oauthrelay/transport"
)

// client is one authenticated upstream connection for one mailbox.
type client struct {
	c       *smtp.Client
	token   oauth.Token
	maxSize int64
}

// startTLS connects, reads the greeting, says EHLO and upgrades with
// STARTTLS (TLS 1.2 or newer, certificate verified against roots).
func startTLS(ctx context.Context, d transport.Dialer, addr, helo string, roots *x509.CertPool, timeout time.Duration) (*smtp.Client, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, transport.AtStage(transport.StageConnect, err)
	}
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	nc, err := d(dctx, "tcp", addr)
	if err != nil {
		return nil, transport.AtStage(transport.StageConnect, err)
	}
	// The greeting, EHLO and TLS handshake must finish in time, and stop
	// at shutdown: a server that accepts and then says nothing cannot
	// hold a worker. go-smtp replaces any deadline we set with its own
	// command timeout, so close the connection instead.
	cut := time.AfterFunc(timeout, func() { nc.Close() })
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	defer func() { cut.Stop(); stop() }()
	tc := &tls.Config{ServerName: host, RootCAs: roots, MinVersion: tls.VersionTLS12}
	c, err := smtp.NewClientStartTLS(nc, tc)
	if err != nil {
		nc.Close()
		return nil, transport.AtStage(transport.StageConnect, err)
	}
	c.CommandTimeout = timeout
	if err := c.Hello(helo); err != nil {
		c.Close()
		return nil, transport.AtStage(transport.StageConnect, err)
	}
	if st, ok := c.TLSConnectionState(); !ok || st.Version < tls.VersionTLS12 {
		c.Close()
		return nil, transport.AtStage(transport.StageConnect, errors.New("TLS below 1.2 negotiated"))
	}
	return c, nil
}

// dial connects, requires STARTTLS with TLS 1.2 or newer and a verified
// certificate, and authenticates as mailbox with XOAUTH2.
func dial(ctx context.Context, d transport.Dialer, addr, helo string, roots *x509.CertPool, timeout time.Duration, mailbox string, tok oauth.Token) (*client, error) {
	c, err := startTLS(ctx, d, addr, helo, roots, timeout)
	if err != nil {
		return nil, err
	}
	// AUTH is bounded by the client's command timeout.
	if err := c.Auth(oauth.NewXOAUTH2Client(mailbox, tok.AccessToken)); err != nil {
		c.Close()
		return nil, transport.AtStage(transport.StageAuth, scrubAuthErr(err))
	}
	u := &client{c: c, token: tok}
	if n, ok := c.MaxMessageSize(); ok && n > 0 {
		u.maxSize = int64(n)
	}
	return u, nil
}

// scrubAuthErr keeps SMTP replies as they are but never lets an error that
// might quote our SASL exchange (and so the token) through.
func scrubAuthErr(err error) error {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return se
	}
	var ne net.Error
	if errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return err
	}
	return errors.New("XOAUTH2 exchange failed")
}

// rcptResult is what the upstream said to one RCPT.
type rcptResult struct {
	addr string
	err  error
}

// send runs one transaction on an open connection. It returns the
// per-recipient RCPT results, the DATA reply text on success, and an error
// for a failure that concerns the whole message (with its stage).
func (u *client) send(from string, utf8 bool, size int64, rcpts []string, body io.Reader) (results []rcptResult, dataReply string, err error) {
	if u.maxSize > 0 && size > u.maxSize {
		return nil, "", transport.AtStage(transport.StageMail, &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 3, 4},
			Message: fmt.Sprintf("Message size %d exceeds the upstream's limit of %d bytes (checked by the relay before sending)", size, u.maxSize)})
	}
	opts := &smtp.MailOptions{Size: size, UTF8: utf8}
	if err := u.c.Mail(from, opts); err != nil {
		return nil, "", transport.AtStage(transport.StageMail, err)
	}
	accepted := 0
	for _, r := range rcpts {
		err := u.c.Rcpt(r, nil)
		var se *smtp.SMTPError
		if err != nil && !errors.As(err, &se) {
			// Not a reply: the connection is gone.
			return nil, "", transport.AtStage(transport.StageRcpt, err)
		}
		results = append(results, rcptResult{addr: r, err: err})
		if err == nil {
			accepted++
		}
	}
	if accepted == 0 {
		return results, "", nil
	}
	w, err := u.c.Data()
	if err != nil {
		return results, "", transport.AtStage(transport.StageData, err)
	}
	if _, err := io.Copy(w, body); err != nil {
		w.Close()
		return results, "", transport.AtStage(transport.StageData, err)
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		return results, "", transport.AtStage(transport.StageData, err)
	}
	return results, resp.StatusText, nil
}

func (u *client) reset() error { return u.c.Reset() }

func (u *client) close() {
	// QUIT politely but never wait long for it.
	done := make(chan struct{})
	go func() {
		u.c.Quit()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
	}
	u.c.Close()
}
