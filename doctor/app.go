package doctor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/oauthrelay/oauthrelay/config"
	"github.com/oauthrelay/oauthrelay/oauth"
	"github.com/oauthrelay/oauthrelay/tokens"
	"github.com/oauthrelay/oauthrelay/transport"
	"github.com/oauthrelay/oauthrelay/transport/graph"
)

// checkApp gets a token for each resource the app's mailboxes use and
// checks each mailbox with it.
func (r *run) checkApp(ctx context.Context, app *config.App, mailboxes []*config.Mailbox) {
	fmt.Fprintf(r.o.Out, "app %s (tenant %s, client %s, %s)\n", app.Name, app.TenantID, app.ClientID, app.CredentialKind())
	byRes := map[transport.Resource][]*config.Mailbox{}
	for _, mb := range mailboxes {
		res := transport.Exchange
		if mb.Transport == config.TransportGraph {
			res = transport.Graph
		}
		byRes[res] = append(byRes[res], mb)
	}
	for _, res := range []transport.Resource{transport.Exchange, transport.Graph} {
		if mbs := byRes[res]; len(mbs) > 0 {
			r.checkResource(ctx, app, res, mbs)
		}
	}
}

// checkResource gets the app's token for one resource, judges its claims
// for each door its mailboxes use, and checks the mailboxes.
func (r *run) checkResource(ctx context.Context, app *config.App, res transport.Resource, mailboxes []*config.Mailbox) {
	const in = "  "
	where := fmt.Sprintf(" [app registration %s in tenant %s]", app.ClientID, app.TenantID)
	// The Exchange token is "token", as it was before Graph existed.
	label := "token"
	if res == transport.Graph {
		label = "Microsoft Graph token"
	}
	src, err := oauth.NewSource(tokens.Settings(app, res, r.roots), oauth.Options{Logger: slog.New(slog.DiscardHandler), Now: r.o.Now, Egress: r.egress})
	if err != nil {
		r.fail(in, "token: "+err.Error(), "fix the [[app]] "+app.Name+" settings in "+r.cfg.Path)
		r.skipMailboxes(mailboxes)
		return
	}
	tctx, cancel := context.WithTimeout(ctx, r.o.Timeout)
	start := r.o.Now()
	tok, err := src.Token(tctx)
	cancel()
	if err != nil && r.silent(start) {
		r.fail(in, fmt.Sprintf("%s: no answer from %s in %s", label, app.Authority, r.o.Timeout),
			"check that this host may reach "+app.Authority+" over HTTPS (firewall; a proxy: [upstream] proxy, HTTPS_PROXY or [[app]] proxy_url)"+where)
		r.skipMailboxes(mailboxes)
		return
	}
	if err != nil {
		var te *oauth.Error
		if errors.As(err, &te) {
			r.fail(in, label+": "+te.Summary(), te.Fix+where)
		} else {
			r.fail(in, label+": "+err.Error(), "check the [[app]] "+app.Name+" settings"+where)
		}
		r.skipMailboxes(mailboxes)
		return
	}
	left := tok.ExpiresOn.Sub(r.o.Now()).Round(time.Second)
	r.pass(in, "%s: acquired from %s (valid for %s)", label, app.Authority, left)

	claims, err := oauth.ParseClaims(tok.AccessToken)
	if err != nil {
		r.warn(in, "claims: cannot decode the token: "+err.Error(), "")
	} else {
		seen := map[string]bool{}
		for _, mb := range mailboxes {
			if !seen[mb.Transport] {
				seen[mb.Transport] = true
				r.checkClaims(in, app, claims, expectFor(app, mb.Transport), seen[config.TransportSMTP] && seen[config.TransportHVE])
			}
		}
		// Graph sends mail over about 3 MB through a draft, which needs a
		// second permission; a token without roles (RBAC for
		// Applications) cannot tell.
		if res == transport.Graph && len(claims.Roles) > 0 && !claims.HasRole(graph.RoleMailReadWrite) {
			r.warn(in, "claims: the token has no "+graph.RoleMailReadWrite+" role: messages over about 3 MB, which Graph takes as a draft with upload sessions, will be refused",
				"in the app registration "+app.ClientID+" (tenant "+app.TenantID+") add Microsoft Graph → Application permissions → "+graph.RoleMailReadWrite+" and grant admin consent, if the applications send large attachments")
		}
	}
	for _, mb := range mailboxes {
		fmt.Fprintf(r.o.Out, "  mailbox %s (%s)\n", mb.Address, mb.Transport)
		if !r.reached[endpointOf(app, mb)] {
			r.skip("    ", checkName(mb))
			continue
		}
		if mb.Transport == config.TransportGraph {
			r.checkGraphMailbox(ctx, app, mb, src, claims)
		} else {
			r.checkMailbox(ctx, app, mb, tok, claims)
		}
	}
}

// expectFor is what the door of a transport needs in a token.
func expectFor(app *config.App, t string) oauth.Expect {
	switch t {
	case config.TransportGraph:
		return oauth.ExpectGraph(app.GraphURL)
	case config.TransportHVE:
		return oauth.ExpectHVE
	}
	return oauth.ExpectSMTP
}

func checkName(mb *config.Mailbox) string {
	if mb.Transport == config.TransportGraph {
		return "Graph sendMail check"
	}
	return "AUTH XOAUTH2"
}

func (r *run) skipMailboxes(mailboxes []*config.Mailbox) {
	for _, mb := range mailboxes {
		fmt.Fprintf(r.o.Out, "  mailbox %s (%s)\n", mb.Address, mb.Transport)
		r.skip("    ", checkName(mb))
	}
}

// checkClaims shows the token's claims and judges them for one door. The
// claims line is shown once per token (again only for a second door).
func (r *run) checkClaims(in string, app *config.App, c oauth.Claims, want oauth.Expect, again bool) {
	if !again {
		roles := "(none)"
		if len(c.Roles) > 0 {
			roles = strings.Join(c.Roles, ", ")
		}
		r.pass(in, "claims: audience %s, tenant %s, app %s, service principal %s, roles %s", dash(c.Aud), dash(c.Tid), dash(c.AppID), dash(c.Oid), roles)
		if c.AppID != "" && !strings.EqualFold(c.AppID, app.ClientID) {
			r.warn(in, fmt.Sprintf("claims: the token is for app %s, not client_id %s", c.AppID, app.ClientID), "")
		}
	}
	if !want.AudienceOK(c) {
		r.fail(in, "claims: the token is not for "+want.Resource+" (audience "+c.Aud+")", "in [[app]] "+app.Name+": "+want.AudienceFix)
	}
	if !c.HasRole(want.Role) {
		r.warn(in, "claims: the token has no "+want.Role+" role. That is expected under Exchange RBAC for Applications; otherwise "+want.Resource+" will refuse the mailbox below",
			"if the mailbox check fails below: in the app registration "+app.ClientID+" (tenant "+app.TenantID+"): "+want.RoleFix)
	}
}
