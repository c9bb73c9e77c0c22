// Package transport is the one small interface between the scheduler and
// Microsoft 365: deliver this envelope as this mailbox, get a verdict per
// recipient. Each door into Exchange Online (SMTP AUTH, the High Volume
// Email endpoint, Microsoft Graph) is one implementation in a package of
// its own; pacing, retries, pauses, DSNs and metrics stay in the scheduler
// and work the same for all of them. Classify, in this package, is the one
// place that knows what Microsoft's answers mean.
package transport

import (
	"context"
	"crypto/x509"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/oauthrelay/oauthrelay/config"
	"github.com/oauthrelay/oauthrelay/internal/egress"
	"github.com/oauthrelay/oauthrelay/oauth"
)

// TokenSource hands out access tokens for one app and one resource.
type TokenSource interface {
	Token(ctx context.Context) (oauth.Token, error)
	Invalidate(accessToken string)
}

// Resource is what an access token is for. An app that serves mailboxes of
// several transports holds one cached token per resource.
type Resource string

// The resources a transport asks tokens for.
const (
	// Exchange is Exchange Online (SMTP AUTH and HVE):
	// https://outlook.office365.com/.default by cloud, or the app's scope.
	Exchange Resource = "exchange"
	// Graph is Microsoft Graph: https://graph.microsoft.com/.default by
	// cloud, or the app's graph_scope.
	Graph Resource = "graph"
)

// Tokens returns the token source of an app for a resource.
type Tokens func(app string, r Resource) (TokenSource, error)

// Dialer opens a TCP connection to Microsoft; tests replace it.
type Dialer func(ctx context.Context, network, addr string) (net.Conn, error)

// Deps is what every transport is built with.
type Deps struct {
	Tokens  Tokens
	RootCAs *x509.CertPool
	// Dial opens TCP connections (SMTP, and HTTP when HTTPClient is nil).
	// Nil means Egress's, or the environment's proxy settings without one.
	Dial Dialer
	// Egress is the relay's way out to Microsoft ([upstream] proxy or
	// none); Graph builds an app's proxy_url override from it.
	Egress *egress.Dialer
	// HTTPClient, when set, carries the HTTP transports' requests.
	HTTPClient *http.Client
	Now        func() time.Time
	Logger     *slog.Logger
}

// Dialer is how a transport opens TCP connections to Microsoft: Dial when
// set, else Egress's, else one that follows the environment's HTTPS_PROXY,
// ALL_PROXY and NO_PROXY (the configuration loader has refused invalid
// ones; should one slip through, directly).
func (d Deps) Dialer() Dialer {
	switch {
	case d.Dial != nil:
		return d.Dial
	case d.Egress != nil:
		return d.Egress.DialContext
	}
	if e, err := egress.FromEnvironment(os.Getenv, d.RootCAs, nil); err == nil {
		return e.DialContext
	}
	nd := &net.Dialer{}
	return nd.DialContext
}

// Body opens a spooled message from its first byte; it may be opened
// again for a second pass.
type Body func() (io.ReadCloser, int64, error)

// Attempt is one delivery attempt of one message.
type Attempt struct {
	// Config is the configuration in force for this attempt.
	Config *config.Config
	// Mailbox is the mailbox the message is sent as, with its app.
	Mailbox *config.Mailbox
	// ID is the spool's queue id, for logs.
	ID string
	// From is the envelope sender (MAIL FROM); empty for a bounce.
	From     string
	SMTPUTF8 bool
	// Recipients are the envelope recipients still to deliver.
	Recipients []string
	Body       Body
}

// Result is what one attempt achieved.
type Result struct {
	// Msg is set when the attempt failed for the whole message (token,
	// connection, sign-in, MAIL, DATA, a Graph request). Recipients
	// without their own entry in Rcpts share it.
	Msg *Verdict
	// Rcpts holds a verdict per recipient that got its own answer.
	Rcpts map[string]Verdict
	// Reply is the upstream's success reply (it carries Microsoft's id).
	Reply string
	// Note describes what the transport changed to deliver faithfully
	// (Graph: recipients added as Bcc or removed); empty when nothing.
	Note string
}

// Conn delivers one message at a time for one mailbox. The scheduler runs
// one per worker, so max_connections bounds the connections (SMTP) or
// concurrent requests (Graph) per mailbox. A Conn connects lazily on its
// first Deliver and may keep the connection between calls.
type Conn interface {
	Deliver(ctx context.Context, a *Attempt) Result
	// Close releases the connection, if one is open.
	Close()
}

// Transport makes the Conns of one door into Microsoft 365.
type Transport interface {
	// NewConn makes a Conn for a mailbox. conns, if not nil, is told +1
	// and -1 as network connections open and close, for metrics.
	NewConn(mailbox string, conns func(delta int)) Conn
}
