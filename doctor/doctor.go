// Package doctor walks the whole chain from oauthrelay's configuration to
// Exchange Online's mailbox permissions, one step at a time, and explains
// every failure with the administrator's fix, the tenant, app and mailbox
// filled in.
//
// The steps, per endpoint and per app registration:
//
//  0. Proxy: with [upstream] proxy (or HTTPS_PROXY, ALL_PROXY), the proxy
//     is reached; the TCP step below then opens a tunnel through it
//     (CONNECT or SOCKS5), and names the proxy resolves are not looked up
//     here.
//  1. DNS: the endpoint's host name resolves (smtp.office365.com for SMTP
//     AUTH, smtp-hve.office365.com for HVE, graph.microsoft.com for Graph).
//  2. TCP: the endpoint accepts a connection.
//  3. TLS: STARTTLS (SMTP, HVE) or HTTPS (Graph) works with TLS 1.2+ and a
//     certificate that verifies.
//  4. Token: the app gets an access token for each resource its mailboxes
//     use (Exchange Online, Microsoft Graph); its claims are decoded and
//     the role the door needs looked for (SMTP.SendAsApp, Mail.Send; a
//     warning only: tokens issued under Exchange RBAC for Applications
//     carry no roles).
//  5. Each mailbox: AUTH XOAUTH2 succeeds (SMTP AUTH, HVE), or Graph says
//     it would accept mail from it (a sendMail without recipients, which
//     Graph refuses only after every access check).
//  6. Optionally, a test message is sent from each mailbox, through the
//     same transport the relay uses.
//
// The explanations are not kept here: Microsoft's answers are explained by
// transport.Classify and token errors by oauth.Error, exactly as the
// relay's log explains them.
package doctor

import (
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/oauthrelay/oauthrelay/config"
	"github.com/oauthrelay/oauthrelay/internal/egress"
	"github.com/oauthrelay/oauthrelay/tokens"
	"github.com/oauthrelay/oauthrelay/transport"
)

// Options configure a doctor run.
type Options struct {
	Config *config.Config
	// Mailbox limits the run to one mailbox and its app; empty checks all.
	Mailbox string
	// SendTest, when set, is the recipient of a test message sent from
	// each mailbox checked.
	SendTest string
	// Out receives the report.
	Out io.Writer
	// Dial opens the TCP connections under the proxy layer (to the proxy,
	// or to the upstream directly); nil uses net.Dialer.
	Dial transport.Dialer
	// Resolver looks up the upstream's name; nil uses net.DefaultResolver.
	Resolver *net.Resolver
	// Timeout bounds each network step; 0 means [upstream] timeout, at
	// most StepTimeout.
	Timeout time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// StepTimeout is the longest any one step waits for an answer, so a
// server that accepts and says nothing is reported in seconds.
const StepTimeout = 20 * time.Second

// Result counts what a run found.
type Result struct {
	Passed, Failed, Warnings int
}

// OK reports whether every step passed (warnings allowed).
func (r Result) OK() bool { return r.Failed == 0 }

type run struct {
	o     Options
	cfg   *config.Config
	roots *x509.CertPool
	res   Result
	// reached records which endpoints passed their network checks.
	reached map[string]bool
	// egress is the way out (the proxy or directly) and dial its dialer,
	// as the relay uses them.
	egress *egress.Dialer
	dial   transport.Dialer
	// proxyOK says the proxy (if any) was reached.
	proxyOK bool
}

func (r *run) pass(indent, format string, a ...any) {
	r.res.Passed++
	fmt.Fprintf(r.o.Out, "%s✓ %s\n", indent, fmt.Sprintf(format, a...))
}

func (r *run) warn(indent, msg, fix string) {
	r.res.Warnings++
	fmt.Fprintf(r.o.Out, "%s! %s\n", indent, msg)
	if fix != "" {
		fmt.Fprintf(r.o.Out, "%s    fix: %s\n", indent, fix)
	}
}

func (r *run) fail(indent, msg, fix string) {
	r.res.Failed++
	fmt.Fprintf(r.o.Out, "%s✗ %s\n", indent, msg)
	if fix != "" {
		fmt.Fprintf(r.o.Out, "%s    fix: %s\n", indent, fix)
	}
}

func (r *run) skip(indent, what string) {
	fmt.Fprintf(r.o.Out, "%s- %s: skipped (fix the step above first)\n", indent, what)
}

// Run checks the chain and writes a report to o.Out. The configuration is
// assumed valid (the caller loaded it with config.Load).
func Run(ctx context.Context, o Options) Result {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Resolver == nil {
		o.Resolver = net.DefaultResolver
	}
	cfg := o.Config
	if o.Timeout == 0 {
		o.Timeout = min(cfg.Upstream.Timeout.Duration, StepTimeout)
		if o.Timeout <= 0 {
			o.Timeout = StepTimeout
		}
	}
	r := &run{o: o, cfg: cfg}

	mailboxes := cfg.Mailboxes
	if o.Mailbox != "" {
		mb := cfg.Mailbox(o.Mailbox)
		if mb == nil {
			var known []string
			for _, m := range cfg.Mailboxes {
				known = append(known, m.Address)
			}
			r.fail("", fmt.Sprintf("there is no [[mailbox]] %s in %s", o.Mailbox, cfg.Path),
				"use one of: "+strings.Join(known, ", "))
			return r.res
		}
		mailboxes = []*config.Mailbox{mb}
	}
	if len(mailboxes) == 0 {
		r.fail("", "the configuration has no [[mailbox]]", "add a [[mailbox]] with the address the app signs in as and its app")
		return r.res
	}

	roots, err := tokens.Roots(cfg)
	if err != nil {
		r.fail("", "trusted CAs: "+err.Error(), "fix [upstream] ca_file (a PEM file of CA certificates)")
		return r.res
	}
	r.roots = roots
	eg, err := tokens.Egress(cfg, roots, egress.DialFunc(o.Dial))
	if err != nil {
		r.fail("", "proxy: "+err.Error(), "correct [upstream] proxy in "+cfg.Path+" (or HTTPS_PROXY / ALL_PROXY in the environment)")
		return r.res
	}
	r.egress, r.dial = eg, eg.DialContext
	r.proxyOK = r.checkProxy(ctx)
	r.checkCluster(ctx)

	// Group mailboxes by app, apps by endpoint, in configuration order.
	var apps []*config.App
	byApp := map[string][]*config.Mailbox{}
	for _, mb := range mailboxes {
		if _, seen := byApp[mb.App]; !seen {
			apps = append(apps, mb.AppRef)
		}
		byApp[mb.App] = append(byApp[mb.App], mb)
	}
	r.reached = map[string]bool{}
	for _, app := range apps {
		for _, mb := range byApp[app.Name] {
			ep := endpointOf(app, mb)
			if _, done := r.reached[ep]; !done {
				fmt.Fprintf(o.Out, "%s %s\n", mb.Transport, ep)
				r.reached[ep] = r.checkEndpoint(ctx, mb.Transport, ep)
			}
		}
	}
	for _, app := range apps {
		r.checkApp(ctx, app, byApp[app.Name])
	}
	fmt.Fprintln(o.Out)
	if r.res.Failed == 0 {
		fmt.Fprintf(o.Out, "all %d checks passed", r.res.Passed)
		if r.res.Warnings > 0 {
			fmt.Fprintf(o.Out, " (%d warning(s))", r.res.Warnings)
		}
		fmt.Fprintln(o.Out)
	} else {
		fmt.Fprintf(o.Out, "%d check(s) failed, %d passed: follow the fixes above, then run `oauthrelay doctor` again\n", r.res.Failed, r.res.Passed)
	}
	return r.res
}
