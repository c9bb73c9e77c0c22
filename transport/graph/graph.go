// Package graph delivers through Microsoft Graph sendMail, for tenants
// where SMTP AUTH is off: the MIME message goes base64-encoded to
// POST /v1.0/users/{mailbox}/sendMail; a message too big for one request
// becomes a draft whose large attachments are uploaded in chunks.
//
// Graph sends to the To, Cc and Bcc of the message, not to an envelope, so
// the header block is rewritten first to match the attempt's envelope
// (recipients.go). Every answer is classified by transport.Classify.
package graph

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/oauthrelay/oauthrelay/config"
	"github.com/oauthrelay/oauthrelay/transport"
)

// Graph's request limit is 4 MB (4,194,304 bytes) of base64, so one
// sendMail carries raw messages up to 3 MiB; bigger ones take the draft
// path, as does any message Graph answers 413.
const (
	maxRequest = 4 << 20
	// MaxSimple is the largest raw message sent in one sendMail request.
	MaxSimple = maxRequest / 4 * 3
)

// Transport is the Microsoft Graph door into Exchange Online. Its one
// HTTP client is shared by all its Conns.
type Transport struct {
	deps   transport.Deps
	client *http.Client

	// byProxy holds a client per app proxy_url (the override of the way
	// out), each with its own pool.
	mu      sync.Mutex
	byProxy map[string]*http.Client
}

// New makes the Graph transport.
func New(deps transport.Deps) transport.Transport {
	return newTransport(deps)
}

func newTransport(deps transport.Deps) *Transport {
	if deps.Now == nil {
		deps.Now = time.Now
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	return &Transport{deps: deps, client: newHTTPClient(deps)}
}

// graphURL is the app's Graph base URL: the config loader resolves it
// (graph_url, else the cloud's); an App not from the loader (doctor, tests)
// gets the global cloud's.
func graphURL(app *config.App) string {
	if app.GraphURL != "" {
		return strings.TrimSuffix(app.GraphURL, "/")
	}
	return config.Clouds["global"].Graph
}

// NewConn makes a Conn for a mailbox. Graph has no connection of its own
// to hold, so conns counts requests in flight: that is what the
// mailbox's max_connections bounds here.
func (t *Transport) NewConn(mailbox string, conns func(delta int)) transport.Conn {
	if conns == nil {
		conns = func(int) {}
	}
	return &Conn{t: t, conns: conns}
}

// Conn delivers a mailbox's messages one at a time.
type Conn struct {
	t     *Transport
	conns func(int)
}

// Close does nothing: idle connections stay in the Transport's pool.
func (c *Conn) Close() {}

// session prepares the requests of one attempt as mailbox mc.
func (t *Transport) session(cfg *config.Config, mc *config.Mailbox) (*session, error) {
	app := mc.AppRef
	if app == nil {
		return nil, fmt.Errorf("mailbox %s has no app", mc.Address)
	}
	tokens, err := t.deps.Tokens(app.Name, transport.Graph)
	if err != nil {
		return nil, err
	}
	s := &session{client: t.client, tokens: tokens, mailbox: mc.Address, now: t.deps.Now,
		app:  transport.GraphApp{ClientID: app.ClientID, TenantID: app.TenantID, Authority: app.Authority},
		user: graphURL(app) + "/v1.0/users/" + url.PathEscape(mc.Address)}
	if cfg != nil {
		s.timeout = cfg.Upstream.Timeout.Duration
	}
	if app.ProxyURL != "" {
		if s.client, err = t.clientFor(app); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Deliver sends one message through Graph: all its envelope recipients
// are delivered together or not at all.
func (c *Conn) Deliver(ctx context.Context, a *transport.Attempt) transport.Result {
	c.conns(1)
	defer c.conns(-1)
	fail := func(err error, note string) transport.Result {
		v := transport.Classify(transport.StageGraph, err, a.Mailbox.Address)
		return transport.Result{Msg: &v, Note: note}
	}
	s, err := c.t.session(a.Config, a.Mailbox)
	if err != nil {
		return fail(err, "")
	}
	rw, err := plan(a.Body, a.Recipients)
	if err != nil {
		return fail(err, "")
	}
	rw.log(c.t.deps.Logger, a.ID)
	s.from = rw.from
	open := func() (io.ReadCloser, int64, error) { return rw.open(a.Body) }
	op, id, size := "sendMail", "", rw.size
	if size <= MaxSimple {
		id, err = s.do(ctx, call{op: op, method: "POST", url: s.user + "/sendMail", contentType: "text/plain", body: base64Body(open)}, nil)
	}
	var ge *transport.GraphError
	if size > MaxSimple || (errors.As(err, &ge) && ge.Status == 413) {
		// After a 413, Graph's limit is below ours: every attachment
		// goes separately.
		budget := int64(MaxSimple)
		if size <= MaxSimple {
			budget = 0
		}
		op = "draft send"
		id, err = s.sendLarge(ctx, open, size, budget, c.t.deps.Logger, a.ID)
	}
	if err != nil {
		return fail(err, rw.note())
	}
	reply := fmt.Sprintf("202 Accepted (Graph %s, request-id %s)", op, id)
	res := transport.Result{Reply: reply, Note: rw.note(), Rcpts: make(map[string]transport.Verdict, len(a.Recipients))}
	for _, r := range a.Recipients {
		res.Rcpts[r] = transport.Verdict{Kind: transport.Delivered, Reply: reply}
	}
	return res
}

// plan reads the message's header and decides its rewrite.
func plan(body transport.Body, envelope []string) (*rewrite, error) {
	rc, n, err := body()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	rw, err := reconcile(rc, envelope)
	rw.size = n
	if rw.header != nil {
		rw.size += int64(len(rw.header)) - rw.skip
	}
	return &rw, err
}
