// Package doctor walks the whole chain from oauthrelay's configuration to
// Exchange Online's mailbox permissions, one step at a time, and explains
// every failure with the administrator's fix, the tenant, app and mailbox
// filled in.
//
// The steps, per upstream and per app registration:
//
//  1. DNS: the upstream's host name resolves.
//  2. TCP: the upstream accepts a connection.
//  3. TLS: STARTTLS works with TLS 1.2+ and a certificate that verifies.
//  4. Token: the app gets an access token; its claims are decoded and the
//     SMTP.SendAsApp role looked for (a warning only: tokens issued under
//     Exchange RBAC for Applications carry no roles).
//  5. AUTH XOAUTH2 succeeds for each mailbox of the app.
//  6. Optionally, a test message is sent from each mailbox.
//
// The explanations are not kept here: Microsoft's SMTP replies are
// explained by transport.Classify and token errors by oauth.Error, exactly
// as the relay's log explains them.
package doctor

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/oauthrelay/oauthrelay/config"
	"github.com/oauthrelay/oauthrelay/oauth"
	"github.com/oauthrelay/oauthrelay/tokens"
	"github.com/oauthrelay/oauthrelay/transport"
	"github.com/oauthrelay/oauthrelay/transport/submit"
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
	// Dial opens TCP connections to the upstream; nil uses net.Dialer.
	Dial transport.Dialer
	// Resolver looks up the upstream's name; nil uses net.DefaultResolver.
	Resolver *net.Resolver
	// Timeout bounds each network step; 0 means [upstream] timeout, at
	// most 30 s.
	Timeout time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

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
	if o.Dial == nil {
		d := &net.Dialer{}
		o.Dial = d.DialContext
	}
	cfg := o.Config
	if o.Timeout == 0 {
		o.Timeout = min(cfg.Upstream.Timeout.Duration, 30*time.Second)
		if o.Timeout <= 0 {
			o.Timeout = 30 * time.Second
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

	// Group mailboxes by app, apps by upstream, in configuration order.
	var apps []*config.App
	byApp := map[string][]*config.Mailbox{}
	for _, mb := range mailboxes {
		if _, seen := byApp[mb.App]; !seen {
			apps = append(apps, mb.AppRef)
		}
		byApp[mb.App] = append(byApp[mb.App], mb)
	}
	reached := map[string]bool{}
	for _, app := range apps {
		if _, done := reached[app.UpstreamAddress]; !done {
			fmt.Fprintf(o.Out, "upstream %s\n", app.UpstreamAddress)
			reached[app.UpstreamAddress] = r.checkUpstream(ctx, app.UpstreamAddress)
		}
	}
	for _, app := range apps {
		r.checkApp(ctx, app, byApp[app.Name], reached[app.UpstreamAddress])
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

// checkUpstream runs the DNS, TCP and TLS steps; it reports whether all
// passed.
func (r *run) checkUpstream(ctx context.Context, addr string) bool {
	const in = "  "
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		r.fail(in, fmt.Sprintf("upstream address %q is not host:port", addr), "set [upstream] address to smtp.office365.com:587")
		return false
	}
	if _, err := netip.ParseAddr(host); err == nil {
		r.pass(in, "DNS: %s is an IP address; nothing to look up", host)
	} else {
		lctx, cancel := context.WithTimeout(ctx, r.o.Timeout)
		ips, err := r.o.Resolver.LookupHost(lctx, host)
		cancel()
		if err != nil {
			r.fail(in, fmt.Sprintf("DNS: cannot resolve %s: %s", host, dnsSummary(err)),
				"check this host's DNS resolver (/etc/resolv.conf) and that it may resolve public names; "+host+" must resolve")
			return false
		}
		shown := ips
		if len(shown) > 3 {
			shown = append(shown[:3:3], "…")
		}
		r.pass(in, "DNS: %s → %s", host, strings.Join(shown, ", "))
	}
	dctx, cancel := context.WithTimeout(ctx, r.o.Timeout)
	start := r.o.Now()
	c, err := r.o.Dial(dctx, "tcp", addr)
	cancel()
	if err != nil {
		r.fail(in, fmt.Sprintf("TCP: cannot connect to %s: %v", addr, err),
			fmt.Sprintf("allow outbound TCP to port %s (firewall, security group, proxy); many networks block outbound SMTP ports", port))
		return false
	}
	c.Close()
	r.pass(in, "TCP: connected to %s (%s)", addr, r.o.Now().Sub(start).Round(time.Millisecond))

	st, err := submit.ProbeTLS(ctx, r.o.Dial, addr, r.cfg.Listen.Hostname, r.roots, r.o.Timeout)
	if err != nil {
		v := transport.Classify(transport.StageConnect, err, "")
		fix := v.Fix
		if fix == "" {
			fix = "check that " + addr + " is Microsoft 365's submission server (smtp.office365.com:587) and that nothing between blocks STARTTLS"
		}
		r.fail(in, "TLS: STARTTLS to "+addr+" failed: "+v.Reply, fix)
		return false
	}
	subject := ""
	if len(st.PeerCertificates) > 0 {
		subject = st.PeerCertificates[0].Subject.CommonName
		if subject == "" && len(st.PeerCertificates[0].DNSNames) > 0 {
			subject = st.PeerCertificates[0].DNSNames[0]
		}
	}
	r.pass(in, "TLS: STARTTLS with %s, certificate %q verified", tls.VersionName(st.Version), subject)
	return true
}

// checkApp gets a token for app and authenticates as each of its mailboxes.
func (r *run) checkApp(ctx context.Context, app *config.App, mailboxes []*config.Mailbox, upstreamOK bool) {
	const in = "  "
	fmt.Fprintf(r.o.Out, "app %s (tenant %s, client %s, %s)\n", app.Name, app.TenantID, app.ClientID, app.CredentialKind())
	where := fmt.Sprintf(" [app registration %s in tenant %s]", app.ClientID, app.TenantID)
	src, err := oauth.NewSource(tokens.Settings(app, transport.Exchange, r.roots), oauth.Options{Logger: slog.New(slog.DiscardHandler), Now: r.o.Now})
	if err != nil {
		r.fail(in, "token: "+err.Error(), "fix the [[app]] "+app.Name+" settings in "+r.cfg.Path)
		r.skipMailboxes(mailboxes)
		return
	}
	tctx, cancel := context.WithTimeout(ctx, 2*r.o.Timeout)
	tok, err := src.Token(tctx)
	cancel()
	if err != nil {
		var te *oauth.Error
		if errors.As(err, &te) {
			r.fail(in, "token: "+te.Summary(), te.Fix+where)
		} else {
			r.fail(in, "token: "+err.Error(), "check the [[app]] "+app.Name+" settings"+where)
		}
		r.skipMailboxes(mailboxes)
		return
	}
	left := tok.ExpiresOn.Sub(r.o.Now()).Round(time.Second)
	r.pass(in, "token: acquired from %s (valid for %s)", app.Authority, left)

	claims, err := oauth.ParseClaims(tok.AccessToken)
	if err != nil {
		r.warn(in, "claims: cannot decode the token: "+err.Error(), "")
	} else {
		r.checkClaims(in, app, claims)
	}

	if !upstreamOK {
		r.skipMailboxes(mailboxes)
		return
	}
	for _, mb := range mailboxes {
		r.checkMailbox(ctx, app, mb, tok, claims)
	}
}

func (r *run) skipMailboxes(mailboxes []*config.Mailbox) {
	for _, mb := range mailboxes {
		fmt.Fprintf(r.o.Out, "  mailbox %s\n", mb.Address)
		r.skip("    ", "AUTH XOAUTH2")
	}
}

func (r *run) checkClaims(in string, app *config.App, c oauth.Claims) {
	roles := "(none)"
	if len(c.Roles) > 0 {
		roles = strings.Join(c.Roles, ", ")
	}
	r.pass(in, "claims: audience %s, tenant %s, app %s, service principal %s, roles %s", dash(c.Aud), dash(c.Tid), dash(c.AppID), dash(c.Oid), roles)
	if !c.ForExchange() {
		r.fail(in, "claims: the token is not for Exchange Online (audience "+c.Aud+")",
			"leave scope out of [[app]] "+app.Name+" (its cloud preset sets it) or set it to https://outlook.office365.com/.default")
	}
	if c.AppID != "" && !strings.EqualFold(c.AppID, app.ClientID) {
		r.warn(in, fmt.Sprintf("claims: the token is for app %s, not client_id %s", c.AppID, app.ClientID), "")
	}
	if !c.HasRole(oauth.RoleSendAsApp) {
		r.warn(in, "claims: the token has no "+oauth.RoleSendAsApp+" role. That is expected under Exchange RBAC for Applications; otherwise AUTH will fail with 535 5.7.3",
			"if AUTH fails below: in the app registration "+app.ClientID+" (tenant "+app.TenantID+") add the API permission Office 365 Exchange Online → Application → "+oauth.RoleSendAsApp+" and grant admin consent")
	}
}

// checkMailbox authenticates as mb and optionally sends a test message.
func (r *run) checkMailbox(ctx context.Context, app *config.App, mb *config.Mailbox, tok oauth.Token, c oauth.Claims) {
	const in = "    "
	fmt.Fprintf(r.o.Out, "  mailbox %s\n", mb.Address)
	s, stage, err := submit.Open(ctx, r.o.Dial, app.UpstreamAddress, r.cfg.Listen.Hostname, r.roots, r.o.Timeout, mb.Address, tok)
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
	host := r.cfg.Listen.Hostname
	body := fmt.Sprintf("From: <%s>\r\nTo: <%s>\r\nSubject: oauthrelay doctor test from %s\r\nDate: %s\r\nMessage-ID: <doctor.%d@%s>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"+
		"This is a test message sent by `oauthrelay doctor --send-test` on %s\r\nthrough mailbox %s (app %s). No reply is needed.\r\n",
		mb.Address, r.o.SendTest, mb.Address, now.Format(time.RFC1123Z), now.UnixNano(), host, host, mb.Address, app.Name)
	reply, stage, err := s.Send(mb.Address, []string{r.o.SendTest}, []byte(body))
	if err != nil {
		v := transport.Classify(stage, err, mb.Address)
		r.fail(in, fmt.Sprintf("test message to %s (%s): %s", r.o.SendTest, stage, v.Reply), personalize(v.Fix, app, c))
		return
	}
	r.pass(in, "test message to %s accepted: 250 %s", r.o.SendTest, reply)
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
