package doctor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/oauthrelay/oauthrelay/config"
	"github.com/oauthrelay/oauthrelay/oauth"
	"github.com/oauthrelay/oauthrelay/transport"
	"github.com/oauthrelay/oauthrelay/transport/submit"
)

// checkMailbox authenticates as mb, tries each of its senders at MAIL
// FROM, and optionally sends a test message from each.
func (r *run) checkMailbox(ctx context.Context, app *config.App, mb *config.Mailbox, tok oauth.Token, c oauth.Claims) {
	const in = "    "
	ep := endpointOf(app, mb)
	start := r.o.Now()
	s, stage, err := submit.Open(ctx, r.dial, ep, r.cfg.Listen.Hostname, r.roots, r.o.Timeout, mb.Address, tok)
	if err != nil {
		if r.silent(start) {
			r.fail(in, fmt.Sprintf("AUTH XOAUTH2 as %s (%s): no answer from %s in %s", mb.Address, stage, ep, r.o.Timeout),
				"the server accepted the connection but stopped answering; check that "+ep+" is Microsoft 365 and that no proxy or firewall holds the connection")
			return
		}
		v := transport.Classify(stage, err, mb.Address)
		fix := personalize(v.Fix, app, c)
		if fix != "" && (v.Kind == transport.ConfigFault) && !c.HasRole(oauth.RoleSendAsApp) && strings.Contains(fix, "New-ServicePrincipal") {
			fix = "the token carries no " + oauth.RoleSendAsApp + " role, so first check admin consent; " + fix
		}
		r.fail(in, fmt.Sprintf("AUTH XOAUTH2 as %s (%s): %s", mb.Address, stage, v.Reply), fix)
		return
	}
	defer s.Close()
	r.pass(in, "AUTH XOAUTH2 as %s accepted", mb.Address)
	for _, from := range mb.SendAs {
		if err := s.TryFrom(from); err != nil {
			v := transport.Classify(transport.StageMail, err, mb.Address)
			r.fail(in, fmt.Sprintf("MAIL FROM:<%s> (send_as): %s", from, v.Reply), personalize(strings.ReplaceAll(v.Fix, "<from address>", from), app, c))
			continue
		}
		r.pass(in, "MAIL FROM:<%s> accepted: the mailbox may send as it (Exchange checks the From: header again after DATA)", from)
	}
	if r.o.SendTest == "" {
		return
	}
	for _, from := range append([]string{mb.Address}, mb.SendAs...) {
		reply, stage, err := s.Send(from, []string{r.o.SendTest}, r.testMessage(app, mb, from, r.o.Now()))
		if err != nil {
			v := transport.Classify(stage, err, mb.Address)
			r.fail(in, fmt.Sprintf("test message from %s to %s (%s): %s", from, r.o.SendTest, stage, v.Reply),
				personalize(strings.ReplaceAll(v.Fix, "<from address>", from), app, c))
			continue
		}
		r.pass(in, "test message to %s accepted (from %s): 250 %s", r.o.SendTest, from, reply)
	}
}

// silent reports whether a step that began at start ran into the step
// deadline, which means the other side stopped answering.
func (r *run) silent(start time.Time) bool {
	return r.o.Now().Sub(start) >= r.o.Timeout-r.o.Timeout/10
}

// testMessage is what --send-test sends from a mailbox as from.
func (r *run) testMessage(app *config.App, mb *config.Mailbox, from string, now time.Time) []byte {
	host := r.cfg.Listen.Hostname
	return []byte(fmt.Sprintf("From: <%s>\r\nTo: <%s>\r\nSubject: oauthrelay doctor test from %s\r\nDate: %s\r\nMessage-ID: <doctor.%d@%s>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"+
		"This is a test message sent by `oauthrelay doctor --send-test` on %s\r\nthrough mailbox %s (app %s, %s). No reply is needed.\r\n",
		from, r.o.SendTest, from, now.Format(time.RFC1123Z), now.UnixNano(), host, host, mb.Address, app.Name, mb.Transport))
}

// personalize fills the placeholders of delivery's fixes with what this
// run knows: the app's client id and, from the token's oid claim, the
// service principal's object id.
func personalize(fix string, app *config.App, c oauth.Claims) string {
	if fix == "" {
		return ""
	}
	fix = strings.ReplaceAll(fix, "<client id>", app.ClientID)
	if c.Oid != "" {
		fix = strings.ReplaceAll(fix, "<Enterprise application object id>", c.Oid)
		fix = strings.ReplaceAll(fix, "<service principal id>", c.Oid)
	}
	return fix + fmt.Sprintf(" [tenant %s, app %s]", app.TenantID, app.Name)
}

func dnsSummary(err error) string {
	var de *net.DNSError
	if errors.As(err, &de) {
		switch {
		case de.IsNotFound:
			return "no such host"
		case de.IsTimeout:
			return "the DNS server did not answer in time"
		}
		return de.Err
	}
	return err.Error()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
