package graph

import (
	"context"
	"errors"
	"fmt"

	"github.com/oauthrelay/oauthrelay/config"
	"github.com/oauthrelay/oauthrelay/oauth"
	"github.com/oauthrelay/oauthrelay/transport"
)

// The Graph application permissions this transport needs.
const (
	// RoleMailSend lets the app send as any mailbox it is not scoped out of.
	RoleMailSend = "Mail.Send"
	// RoleMailReadWrite is needed besides for messages over MaxSimple,
	// which go through a draft.
	RoleMailReadWrite = "Mail.ReadWrite"
)

// probeMessage has no recipients: Graph checks the token, the
// permission, the mailbox and access policies first, and only then
// refuses it with 400 ErrorInvalidRecipients, so nothing is ever sent.
var probeMessage = map[string]any{"message": map[string]any{"subject": "oauthrelay doctor"}, "saveToSentItems": false}

// Probe checks, without sending anything, that app may send as mailbox
// through Microsoft Graph. The Verdict is Delivered when Graph would
// accept mail (its Reply says what was checked); otherwise it is
// classified like a delivery, with the fix, and err is Graph's answer or
// the token failure. claims are those of the token used (zero without
// one), for doctor to show its roles (RoleMailSend, RoleMailReadWrite;
// under Exchange RBAC for Applications a token has none).
func Probe(ctx context.Context, deps transport.Deps, app *config.App, mailbox string) (transport.Verdict, oauth.Claims, error) {
	return newTransport(deps).probe(ctx, app, mailbox, "")
}

// ProbeFrom is Probe with the message's From set to from, an address the
// mailbox sends as: Graph checks SendAs for it before it looks for
// recipients (as Microsoft's emulated behaviour has it; real Graph may
// check it only when it sends, so a pass here is a good sign, not proof).
func ProbeFrom(ctx context.Context, deps transport.Deps, app *config.App, mailbox, from string) (transport.Verdict, oauth.Claims, error) {
	return newTransport(deps).probe(ctx, app, mailbox, from)
}

func (t *Transport) probe(ctx context.Context, app *config.App, mailbox, from string) (transport.Verdict, oauth.Claims, error) {
	s, err := t.session(nil, &config.Mailbox{Address: mailbox, App: app.Name, AppRef: app})
	if err != nil {
		return transport.Classify(transport.StageToken, err, mailbox), oauth.Claims{}, err
	}
	tok, err := s.tokens.Token(ctx)
	if err != nil {
		return transport.Classify(transport.StageToken, err, mailbox), oauth.Claims{}, err
	}
	claims, _ := oauth.ParseClaims(tok.AccessToken)
	msg := probeMessage
	if from != "" {
		s.from = from
		msg = map[string]any{"message": map[string]any{"subject": "oauthrelay doctor", "from": map[string]any{"emailAddress": map[string]any{"address": from}}},
			"saveToSentItems": false}
	}
	id, err := s.do(ctx, call{op: "sendMail (doctor probe)", method: "POST", url: s.user + "/sendMail",
		contentType: "application/json", body: jsonBody(msg)}, nil)
	var ge *transport.GraphError
	switch {
	case errors.As(err, &ge) && ge.Status == 400 && ge.Code == "ErrorInvalidRecipients":
		return transport.Verdict{Kind: transport.Delivered, Reply: fmt.Sprintf(
			"%s — Graph would accept mail from %s: token, permission, mailbox and access checks passed (the probe has no recipients, so nothing was sent)", ge.Error(), mailbox)}, claims, nil
	case err == nil:
		return transport.Verdict{Kind: transport.Delivered, Reply: fmt.Sprintf("202 Accepted (Graph sendMail (doctor probe), request-id %s)", id)}, claims, nil
	}
	return transport.Classify(transport.StageGraph, err, mailbox), claims, err
}
