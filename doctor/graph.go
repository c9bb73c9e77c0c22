package doctor

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/oauthrelay/oauthrelay/config"
	"github.com/oauthrelay/oauthrelay/oauth"
	"github.com/oauthrelay/oauthrelay/transport"
	"github.com/oauthrelay/oauthrelay/transport/graph"
)

// checkGraphMailbox asks Graph whether the app may send as mb, without
// sending (graph.Probe), and with --send-test sends a message through the
// Graph transport the relay uses.
func (r *run) checkGraphMailbox(ctx context.Context, app *config.App, mb *config.Mailbox, src transport.TokenSource, c oauth.Claims) {
	const in = "    "
	deps := transport.Deps{
		Tokens:  func(string, transport.Resource) (transport.TokenSource, error) { return src, nil },
		RootCAs: r.roots, Dial: r.o.Dial, Now: r.o.Now, Logger: slog.New(slog.DiscardHandler),
	}
	pctx, cancel := context.WithTimeout(ctx, 2*r.o.Timeout)
	v, _, _ := graph.Probe(pctx, deps, app, mb.Address)
	cancel()
	if v.Kind != transport.Delivered {
		r.fail(in, "Graph sendMail as "+mb.Address+": "+v.Reply, personalize(v.Fix, app, c))
		return
	}
	r.pass(in, "Graph would accept mail from %s (token, Mail.Send, mailbox and access policy checked; nothing was sent)", mb.Address)
	if r.o.SendTest == "" {
		return
	}
	msg := r.testMessage(app, mb, r.o.Now())
	conn := graph.New(deps).NewConn(mb.Address, nil)
	defer conn.Close()
	sctx, cancel := context.WithTimeout(ctx, 4*r.o.Timeout)
	res := conn.Deliver(sctx, &transport.Attempt{
		Config: r.cfg, Mailbox: mb, ID: "doctor", From: mb.Address, Recipients: []string{r.o.SendTest},
		Body: func() (io.ReadCloser, int64, error) {
			return io.NopCloser(bytes.NewReader(msg)), int64(len(msg)), nil
		},
	})
	cancel()
	v = transport.Verdict{Kind: transport.Delivered, Reply: res.Reply}
	if res.Msg != nil {
		v = *res.Msg
	} else if rv, ok := res.Rcpts[r.o.SendTest]; ok {
		v = rv
	}
	if v.Kind != transport.Delivered {
		r.fail(in, fmt.Sprintf("test message to %s through Graph: %s", r.o.SendTest, v.Reply), personalize(v.Fix, app, c))
		return
	}
	r.pass(in, "test message to %s accepted: %s", r.o.SendTest, v.Reply)
}
