package e2e

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/oauthrelay/oauthrelay/internal/msemu"
	"github.com/oauthrelay/oauthrelay/internal/testkit"
	"github.com/oauthrelay/oauthrelay/oauth"
	"github.com/oauthrelay/oauthrelay/transport"
)

// gatedTransport holds token POSTs until open is closed, so that a test can
// line up many callers behind one request that is provably in flight.
type gatedTransport struct {
	base http.RoundTripper
	open chan struct{}
	// posted is closed when the first token POST reaches the gate.
	once   sync.Once
	posted chan struct{}
}

func (g *gatedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method == http.MethodPost && strings.HasSuffix(req.URL.Path, "/oauth2/v2.0/token") {
		g.once.Do(func() { close(g.posted) })
		select {
		case <-g.open:
		case <-req.Context().Done():
			return nil, req.Context().Err()
		}
	}
	return g.base.RoundTrip(req)
}

func newGate(emu *msemu.Emulator) (*gatedTransport, *http.Client) {
	g := &gatedTransport{
		base:   &http.Transport{TLSClientConfig: &tls.Config{RootCAs: emu.CertPool(), MinVersion: tls.VersionTLS12}},
		open:   make(chan struct{}),
		posted: make(chan struct{}),
	}
	return g, &http.Client{Transport: g}
}

// TestConcurrentDeliveriesOneTokenRequest: 100 messages delivered at once
// through the relay (34 mailboxes of one app, three connections each, so
// 100 upstream connections want a token at the same moment) cause exactly
// one request to the token endpoint. The token request is held at a gate
// until all 100 deliveries are waiting for it, so the test really has 100
// concurrent callers, not 100 callers one after the other.
func TestConcurrentDeliveriesOneTokenRequest(t *testing.T) {
	ctx := ctxFor(t)
	emu := startEmulator(t, msemu.Options{})
	const messages, perMailbox = 100, 3
	nMailboxes := (messages + perMailbox - 1) / perMailbox
	var boxes []string
	var mconf []testkit.Mailbox
	for i := range nMailboxes {
		addr := fmt.Sprintf("box%02d@contoso.com", i)
		boxes = append(boxes, addr)
		mconf = append(mconf, testkit.Mailbox{Address: addr, App: "contoso", MaxConnections: perMailbox})
	}
	emu.Provision(tenantID, secretApp, clientSec, boxes...)
	gate, hc := newGate(emu)
	r := startRelay(t, emu, relayOptions{
		Apps:       []testkit.App{{Name: "contoso", TenantID: tenantID, ClientID: secretApp, ClientSecret: clientSec}},
		Mailboxes:  mconf,
		HTTPClient: hc,
		NoDelivery: true,
	})
	// Spool all 100 first, then start delivery: every mailbox starts its
	// three workers at once and each asks for a token.
	for i := range messages {
		r.mustSend(ctx, boxes[i%nMailboxes], "someone@example.org", fmt.Sprintf("message %d", i))
	}
	r.startDelivery()
	select {
	case <-gate.posted:
	case <-ctx.Done():
		t.Fatal("no token request was made")
	}
	if err := r.rec.waitWaiting(ctx, messages); err != nil {
		t.Fatal(err)
	}
	close(gate.open)

	msgs, err := emu.WaitDelivered(ctx, messages)
	if err != nil {
		t.Fatalf("delivered %d of %d: %v", len(msgs), messages, err)
	}
	st := emu.Stats()
	if st.TokenRequests != 1 {
		t.Errorf("%d concurrent deliveries made %d token requests, want exactly 1", messages, st.TokenRequests)
	}
	if len(st.AuthTokens) < messages {
		t.Errorf("%d AUTH commands, want one per connection (%d)", len(st.AuthTokens), messages)
	}
	for _, a := range st.AuthTokens {
		if !a.OK {
			t.Errorf("AUTH as %s refused: %s", a.Mailbox, a.Reply)
		}
	}
	if toks := r.rec.Tokens(); len(toks) != 1 {
		t.Errorf("the deliveries were handed %d distinct tokens, want 1", len(toks))
	}
}

// TestConcurrentSourceCallsOneTokenRequest is the unit-level proof against
// the emulator: 100 goroutines calling oauth.Source.Token at once, while the
// only request is held in flight, share that one request.
func TestConcurrentSourceCallsOneTokenRequest(t *testing.T) {
	ctx := ctxFor(t)
	emu := startEmulator(t, msemu.Options{})
	emu.Provision(tenantID, secretApp, clientSec, "helpdesk@contoso.com")
	gate, hc := newGate(emu)
	src, err := oauth.NewSource(oauth.AppSettings{Name: "contoso", TenantID: tenantID, ClientID: secretApp,
		Authority: emu.Authority(), ClientSecret: clientSec}, oauth.Options{HTTPClient: hc, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	// Count the callers inside Token to open the gate only when all wait.
	rec := &tokenRecorder{get: func(string, transport.Resource) (transport.TokenSource, error) { return src, nil }}
	counted, _ := rec.Get("contoso", transport.Exchange)
	const callers = 100
	type result struct {
		tok oauth.Token
		err error
	}
	results := make(chan result, callers)
	for range callers {
		go func() {
			tok, err := counted.Token(ctx)
			results <- result{tok, err}
		}()
	}
	select {
	case <-gate.posted:
	case <-ctx.Done():
		t.Fatal("no token request was made")
	}
	if err := rec.waitWaiting(ctx, callers); err != nil {
		t.Fatal(err)
	}
	close(gate.open)
	first := ""
	for range callers {
		res := <-results
		if res.err != nil {
			t.Fatalf("Token: %v", res.err)
		}
		if first == "" {
			first = res.tok.AccessToken
		} else if res.tok.AccessToken != first {
			t.Error("callers got different tokens")
		}
	}
	if n := emu.Stats().TokenRequests; n != 1 {
		t.Errorf("%d concurrent Token calls made %d token requests, want 1", callers, n)
	}
	// And afterwards the cached token serves without a request.
	if _, err := src.Token(ctx); err != nil {
		t.Fatal(err)
	}
	if n := emu.Stats().TokenRequests; n != 1 {
		t.Errorf("a cached token cost %d token requests in total, want 1", n)
	}
}
