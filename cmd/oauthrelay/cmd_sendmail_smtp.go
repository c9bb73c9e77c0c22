package main

import (
	"bytes"
	"crypto/tls"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/oauthrelay/oauthrelay/config"
)

// submitTimeout bounds the whole submission; the relay's own data_timeout
// (10 minutes by default) bounds DATA on its side.
const submitTimeout = 10 * time.Minute

// submitError is a failed step of the submission with the sysexits code
// it ends the command with.
type submitError struct {
	code int
	msg  string
}

func (e *submitError) Error() string { return e.msg }

// relayReply renders an SMTP refusal as the relay wrote it.
func relayReply(err error) string {
	var se *smtp.SMTPError
	if !errors.As(err, &se) {
		return err.Error()
	}
	if se.EnhancedCode != (smtp.EnhancedCode{}) && se.EnhancedCode != smtp.NoEnhancedCode {
		return fmt.Sprintf("%d %d.%d.%d %s", se.Code, se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2], se.Message)
	}
	return fmt.Sprintf("%d %s", se.Code, se.Message)
}

// The SMTP steps a refusal can come at; each says what a 5xx there means.
const (
	stepSession   = iota // greeting, EHLO, STARTTLS: the relay is unavailable
	stepAuth             // AUTH: the login is not allowed
	stepSender           // MAIL FROM: the sender or message was refused
	stepRecipient        // RCPT TO: the recipient was refused
	stepData             // DATA and its end: the message was refused
)

// smtpRefusal maps the relay's answer at a step to a sysexits code: 4xx is
// "try again later", 5.7.x (policy, login) is EX_NOPERM, and otherwise the
// step says what was wrong (a recipient, the message, the relay). what
// names the step for the person reading the error.
func smtpRefusal(step int, what string, err error) *submitError {
	var se *smtp.SMTPError
	if !errors.As(err, &se) {
		// The connection broke or timed out: nothing was accepted.
		return &submitError{exTempFail, fmt.Sprintf("%s: %v (nothing was accepted; try again)", what, err)}
	}
	code := exUnavailable
	switch {
	case se.Code >= 400 && se.Code < 500:
		code = exTempFail
	case se.EnhancedCode[0] == 5 && se.EnhancedCode[1] == 7, step == stepAuth:
		code = exNoPerm
	case step == stepRecipient:
		code = exNoUser
	case step == stepSender, step == stepData:
		code = exDataErr
	}
	return &submitError{code, fmt.Sprintf("%s: the relay answered %s", what, relayReply(err))}
}

// relayTLS trusts exactly the certificate the relay's configuration names:
// the connection goes to this host's own listener, whatever names the
// certificate was issued for.
func relayTLS(certFile string) (*tls.Config, error) {
	b, err := os.ReadFile(certFile)
	if err != nil {
		fix := "check [listen] tls_cert_file"
		if errors.Is(err, os.ErrPermission) {
			fix = "let this user read the certificate (it is public: 0644 is fine; the key stays private)"
		}
		return nil, &submitError{exConfig, fmt.Sprintf("cannot read the relay's certificate %s: %v — fix: %s", certFile, err, fix)}
	}
	block, rest := pem.Decode(b)
	for block != nil && block.Type != "CERTIFICATE" {
		block, rest = pem.Decode(rest)
	}
	if block == nil {
		return nil, &submitError{exConfig, fmt.Sprintf("%s holds no PEM certificate — fix: check [listen] tls_cert_file", certFile)}
	}
	want := block.Bytes
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		// Verified below, against the one certificate configured, which
		// may be self-signed or issued for another name than the address
		// dialled.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 || !bytes.Equal(cs.PeerCertificates[0].Raw, want) {
				return fmt.Errorf("the listener's certificate is not the one in %s (was the relay restarted after the certificate changed?)", certFile)
			}
			return nil
		},
	}, nil
}

// recipientsRefused is the error for a message whose recipients were
// refused, which sends nothing. Any permanent refusal makes it permanent:
// the message is all or nothing, so trying it again as it is can never
// succeed, and EX_TEMPFAIL would have the caller retry for ever.
func recipientsRefused(refused []*submitError) *submitError {
	var msgs []string
	code := 0
	for _, e := range refused {
		msgs = append(msgs, e.msg)
		if e.code != exTempFail {
			code = max(code, e.code)
		}
	}
	if code == 0 {
		code = exTempFail
	}
	return &submitError{code, strings.Join(msgs, "\n") + "\nnothing was sent"}
}

// submit sends m to the relay as sub says: STARTTLS (or implicit TLS)
// when the listener has a certificate, AUTH PLAIN when the client has a
// username, then MAIL, every RCPT and DATA. A refused recipient aborts the
// whole message, so that a caller that tries again sends no duplicates.
func submit(sub *config.Submission, m *outgoing, o *sendmailOpts, stderr io.Writer) error {
	say := func(format string, a ...any) {
		if o.verbose {
			fmt.Fprintf(stderr, "oauthrelay sendmail: "+format+"\n", a...)
		}
	}
	var tlsConf *tls.Config
	if sub.CertFile != "" {
		var err error
		if tlsConf, err = relayTLS(sub.CertFile); err != nil {
			return err
		}
	}
	nc, err := net.DialTimeout("tcp", sub.Address, 30*time.Second)
	if err != nil {
		return &submitError{exTempFail, fmt.Sprintf("cannot reach the relay at %s ([listen] in %s): %v — is it running? (systemctl status oauthrelay)", sub.Address, o.config, errText(err))}
	}
	nc.SetDeadline(time.Now().Add(submitTimeout))
	if sub.ImplicitTLS {
		nc = tls.Client(nc, tlsConf)
	}
	var c *smtp.Client
	if tlsConf != nil && !sub.ImplicitTLS {
		// The listener offers STARTTLS whenever it has a certificate.
		if c, err = smtp.NewClientStartTLS(nc, tlsConf); err != nil {
			nc.Close()
			var ce *tls.CertificateVerificationError
			if errors.As(err, &ce) || strings.Contains(err.Error(), "certificate") {
				return &submitError{exUnavailable, fmt.Sprintf("STARTTLS with %s: %v", sub.Address, err)}
			}
			return smtpRefusal(stepSession, "STARTTLS with "+sub.Address, err)
		}
		say("connected to %s; STARTTLS: the relay's certificate %s verified", sub.Address, sub.CertFile)
	} else {
		c = smtp.NewClient(nc)
		host, _ := os.Hostname()
		if host == "" {
			host = "localhost"
		}
		if err := c.Hello(host); err != nil {
			c.Close()
			return smtpRefusal(stepSession, "connecting to "+sub.Address, err)
		}
		say("connected to %s", sub.Address)
	}
	defer c.Close()
	if sub.Username != "" {
		if err := c.Auth(sasl.NewPlainClient("", sub.Username, sub.Password.Reveal())); err != nil {
			return smtpRefusal(stepAuth, fmt.Sprintf("AUTH as %q (client %q, [sendmail] password_file)", sub.Username, sub.Client), err)
		}
		say("logged in as %q (client %q)", sub.Username, sub.Client)
	}
	opts := &smtp.MailOptions{}
	if ok, _ := c.Extension("8BITMIME"); ok {
		// Declared always: scripts send 8-bit text without saying so.
		opts.Body = smtp.Body8BitMIME
	}
	if ok, _ := c.Extension("SMTPUTF8"); ok && !isASCII(m.from+strings.Join(m.rcpts, "")) {
		opts.UTF8 = true
	}
	if err := c.Mail(m.from, opts); err != nil {
		return smtpRefusal(stepSender, fmt.Sprintf("sender <%s>", m.from), err)
	}
	say("sender <%s> accepted", m.from)
	var refused []*submitError
	for _, r := range m.rcpts {
		if err := c.Rcpt(r, nil); err != nil {
			refused = append(refused, smtpRefusal(stepRecipient, fmt.Sprintf("recipient <%s>", r), err))
			continue
		}
		say("recipient <%s> accepted", r)
	}
	if len(refused) > 0 {
		c.Reset()
		c.Quit()
		return recipientsRefused(refused)
	}
	w, err := c.Data()
	if err != nil {
		return smtpRefusal(stepData, "DATA", err)
	}
	if err := writeOutgoing(w, m); err != nil {
		var se *smtp.SMTPError
		if errors.As(err, &se) {
			return smtpRefusal(stepData, "DATA", err)
		}
		return &submitError{exIOErr, fmt.Sprintf("reading the message: %v (nothing was sent)", err)}
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		return smtpRefusal(stepData, "the message", err)
	}
	say("queued: 250 %s", resp.StatusText)
	c.Quit()
	return nil
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// errText is the reason of a network error without Go's "dial tcp" prefix.
func errText(err error) string {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		return oe.Err.Error()
	}
	return err.Error()
}
