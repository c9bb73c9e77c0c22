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

// checkMailbox authenticates as mb and optionally sends a test message.
func (r *run) checkMailbox(ctx context.Context, app *config.App, mb *config.Mailbox, tok oauth.Token, c oauth.Claims) {
	const in = "    "
	s, stage, err := submit.Open(ctx, r.o.Dial, endpointOf(app, mb), r.cfg.Listen.Hostname, r.roots, r.o.Timeout, mb.Address, tok)
	if err != nil {
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
	if r.o.SendTest == "" {
		return
	}
	now := r.o.Now()
	reply, stage, err := s.Send(mb.Address, []string{r.o.SendTest}, r.testMessage(app, mb, now))
	if err != nil {
		v := transport.Classify(stage, err, mb.Address)
		r.fail(in, fmt.Sprintf("test message to %s (%s): %s", r.o.SendTest, stage, v.Reply), personalize(v.Fix, app, c))
		return
	}
	r.pass(in, "test message to %s accepted: 250 %s", r.o.SendTest, reply)
}

// testMessage is what --send-test sends from a mailbox.
func (r *run) testMessage(app *config.App, mb *config.Mailbox, now time.Time) []byte {
	host := r.cfg.Listen.Hostname
	return []byte(fmt.Sprintf("From: <%s>\r\nTo: <%s>\r\nSubject: oauthrelay doctor test from %s\r\nDate: %s\r\nMessage-ID: <doctor.%d@%s>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"+
		"This is a test message sent by `oauthrelay doctor --send-test` on %s\r\nthrough mailbox %s (app %s, %s). No reply is needed.\r\n",
		mb.Address, r.o.SendTest, mb.Address, now.Format(time.RFC1123Z), now.UnixNano(), host, host, mb.Address, app.Name, mb.Transport))
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
