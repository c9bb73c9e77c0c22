// Package submit delivers over SMTP submission: STARTTLS with TLS 1.2 or
// newer and a verified certificate, then AUTH XOAUTH2 as the mailbox with
// an app-only token. It serves two doors into Exchange Online: SMTP AUTH
// (smtp.office365.com:587) and the High Volume Email endpoint
// (smtp-hve.office365.com:587), which differ only in address and in the
// permission the token carries.
package submit

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/oauthrelay/oauthrelay/config"
	"github.com/oauthrelay/oauthrelay/transport"
)

// Transport opens SMTP submission connections to one endpoint.
type Transport struct {
	deps transport.Deps
	// addr picks the endpoint for a mailbox's app.
	addr func(cfg *config.Config, mc *config.Mailbox) string
}

func withDefaults(d transport.Deps) transport.Deps {
	d.Dial = d.Dialer()
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.Logger == nil {
		d.Logger = slog.Default()
	}
	return d
}

// New is SMTP AUTH to the app's upstream address (smtp.office365.com:587
// by default).
func New(deps transport.Deps) *Transport {
	return &Transport{deps: withDefaults(deps), addr: func(_ *config.Config, mc *config.Mailbox) string { return mc.AppRef.UpstreamAddress }}
}

// NewHVE is the High Volume Email endpoint ([upstream] hve_address).
func NewHVE(deps transport.Deps) *Transport {
	return &Transport{deps: withDefaults(deps), addr: func(_ *config.Config, mc *config.Mailbox) string { return mc.AppRef.HVEAddress }}
}

// NewConn makes a connection slot for a mailbox; it dials on first use.
func (t *Transport) NewConn(mailbox string, conns func(delta int)) transport.Conn {
	if conns == nil {
		conns = func(int) {}
	}
	return &Conn{t: t, conns: conns}
}

// Conn is one upstream connection's worth of a mailbox's deliveries.
type Conn struct {
	t     *Transport
	conns func(int)
	c     *client
	addr  string
}

// Close quits the connection, if one is open.
func (w *Conn) Close() {
	if w.c != nil {
		w.c.close()
		w.c = nil
		w.conns(-1)
	}
}

// Deliver makes one delivery attempt on this connection, opening (and,
// when a stale token is refused, reopening) it as needed.
func (w *Conn) Deliver(ctx context.Context, a *transport.Attempt) transport.Result {
	mc := a.Mailbox
	app := mc.AppRef
	addr := w.t.addr(a.Config, mc)
	if w.c != nil && (w.addr != addr || w.c.token.ExpiresOn.Sub(w.t.deps.Now()) < app.MinTokenLifetime.Duration) {
		// Never present, or keep using, a token under the minimum; and a
		// reload may have moved the endpoint.
		w.Close()
	}
	retried := false
	for w.c == nil {
		v, ok := w.open(ctx, a.Config, mc, addr, !retried)
		if ok {
			break
		}
		if v.RetryToken && !retried {
			retried = true
			continue
		}
		return transport.Result{Msg: &v}
	}
	body, size, err := a.Body()
	if err != nil {
		v := transport.Verdict{Kind: transport.Transient, Reply: "cannot read the message body from the spool: " + err.Error()}
		return transport.Result{Msg: &v}
	}
	defer body.Close()
	// Cut the connection if delivery is shutting down past its grace.
	c := w.c.c // the callback may run after Close cleared w.c
	stop := context.AfterFunc(ctx, func() { c.Close() })
	results, dataReply, err := w.c.send(a.From, a.SMTPUTF8, size, a.Recipients, body)
	stop()
	out := transport.Result{Rcpts: map[string]transport.Verdict{}, Reply: dataReply}
	if err != nil {
		v := transport.ClassifyAt(err, transport.StageData, mc.Address)
		out.Msg = &v
		// After DATA failed the recipients accepted at RCPT share its
		// verdict; those refused at RCPT keep their own.
		for _, r := range results {
			if r.err != nil {
				out.Rcpts[r.addr] = transport.Classify(transport.StageRcpt, r.err, mc.Address)
			}
		}
		var se *smtp.SMTPError
		if !errors.As(err, &se) || v.Kind == transport.Throttled || se.Code == 421 {
			// The connection's state is unknown (or the server is
			// closing it): start afresh next time.
			w.Close()
		} else if w.c.reset() != nil {
			w.Close()
		}
		return out
	}
	for _, r := range results {
		if r.err != nil {
			out.Rcpts[r.addr] = transport.Classify(transport.StageRcpt, r.err, mc.Address)
		} else {
			out.Rcpts[r.addr] = transport.Verdict{Kind: transport.Delivered, Reply: "250 " + dataReply}
		}
	}
	if w.c.reset() != nil {
		w.Close()
	}
	return out
}

// open dials and authenticates. On failure it returns the verdict; when
// first is set, a refused token is invalidated so the retry gets a fresh
// one. A token refused on the retry stays cached: dropping it too would
// only cost another token request for a fault a new token does not fix.
func (w *Conn) open(ctx context.Context, cfg *config.Config, mc *config.Mailbox, addr string, first bool) (transport.Verdict, bool) {
	d := w.t.deps
	app := mc.AppRef
	src, err := d.Tokens(app.Name, transport.Exchange)
	if err != nil {
		return transport.Verdict{Kind: transport.ConfigFault, Reply: "token source: " + err.Error(), Fix: "check the [[app]] " + app.Name + " credential settings"}, false
	}
	tctx, cancel := context.WithTimeout(ctx, cfg.Upstream.Timeout.Duration)
	tok, err := src.Token(tctx)
	cancel()
	if err != nil {
		return transport.Classify(transport.StageToken, err, mc.Address), false
	}
	c, err := dial(ctx, d.Dial, addr, cfg.Listen.Hostname, d.RootCAs, cfg.Upstream.Timeout.Duration, mc.Address, tok)
	if err != nil {
		v := transport.ClassifyAt(err, transport.StageConnect, mc.Address)
		if v.RetryToken && first {
			src.Invalidate(tok.AccessToken)
		}
		return v, false
	}
	w.c, w.addr = c, addr
	w.conns(1)
	return transport.Verdict{}, true
}
