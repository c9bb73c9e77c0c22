package doctor

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/oauthrelay/oauthrelay/config"
	"github.com/oauthrelay/oauthrelay/oauth"
	"github.com/oauthrelay/oauthrelay/transport"
	"github.com/oauthrelay/oauthrelay/transport/graph"
)

// checkGraphMailbox asks Graph whether the app may send as mb, and as each
// of its send_as addresses, without sending (graph.Probe), and with
// --send-test sends a message from each through the Graph transport the
// relay uses.
func (r *run) checkGraphMailbox(ctx context.Context, app *config.App, mb *config.Mailbox, src transport.TokenSource, c oauth.Claims) {
	const in = "    "
	deps := transport.Deps{
		Tokens:  func(string, transport.Resource) (transport.TokenSource, error) { return src, nil },
		RootCAs: r.roots, Dial: r.dial, Egress: r.egress, Now: r.o.Now, Logger: slog.New(slog.DiscardHandler),
	}
	probe := func(from string) transport.Verdict {
		pctx, cancel := context.WithTimeout(ctx, r.o.Timeout)
		defer cancel()
		start := r.o.Now()
		var v transport.Verdict
		if from == "" {
			v, _, _ = graph.Probe(pctx, deps, app, mb.Address)
		} else {
			v, _, _ = graph.ProbeFrom(pctx, deps, app, mb.Address, from)
		}
		if v.Kind != transport.Delivered && r.silent(start) {
			v.Reply = fmt.Sprintf("no answer from %s in %s", app.GraphURL, r.o.Timeout)
			v.Fix = "check that " + app.GraphURL + " is Microsoft Graph and that no proxy or firewall holds the connection"
		}
		return v
	}
	if v := probe(""); v.Kind != transport.Delivered {
		r.fail(in, "Graph sendMail as "+mb.Address+": "+v.Reply, personalize(v.Fix, app, c))
		return
	}
	r.pass(in, "Graph would accept mail from %s (token, Mail.Send, mailbox and access policy checked; nothing was sent)", mb.Address)
	for _, from := range mb.SendAs {
		if v := probe(from); v.Kind != transport.Delivered {
			r.fail(in, fmt.Sprintf("Graph sendMail as %s from %s (send_as): %s", mb.Address, from, v.Reply),
				personalize(strings.ReplaceAll(v.Fix, "<from address>", from), app, c))
			continue
		}
		r.pass(in, "Graph accepted a message from %s without recipients (a good sign for SendAs; Graph may check it again when it sends)", from)
	}
	if r.o.SendTest == "" {
		return
	}
	conn := graph.New(deps).NewConn(mb.Address, nil)
	defer conn.Close()
	for _, from := range append([]string{mb.Address}, mb.SendAs...) {
		msg := r.testMessage(app, mb, from, r.o.Now())
		sctx, cancel := context.WithTimeout(ctx, 2*r.o.Timeout)
		res := conn.Deliver(sctx, &transport.Attempt{
			Config: r.cfg, Mailbox: mb, ID: "doctor", From: from, Recipients: []string{r.o.SendTest},
			Body: func() (io.ReadCloser, int64, error) {
				return io.NopCloser(bytes.NewReader(msg)), int64(len(msg)), nil
			},
		})
		cancel()
		v := transport.Verdict{Kind: transport.Delivered, Reply: res.Reply}
		if res.Msg != nil {
			v = *res.Msg
		} else if rv, ok := res.Rcpts[r.o.SendTest]; ok {
			v = rv
		}
		if v.Kind != transport.Delivered {
			r.fail(in, fmt.Sprintf("test message from %s to %s through Graph: %s", from, r.o.SendTest, v.Reply),
				personalize(strings.ReplaceAll(v.Fix, "<from address>", from), app, c))
			continue
		}
		r.pass(in, "test message to %s accepted (from %s): %s", r.o.SendTest, from, v.Reply)
	}
}
