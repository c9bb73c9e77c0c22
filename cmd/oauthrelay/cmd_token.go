package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"
	"time"

	"github.com/oauthrelay/oauthrelay/config"
	"github.com/oauthrelay/oauthrelay/oauth"
	"github.com/oauthrelay/oauthrelay/tokens"
	"github.com/oauthrelay/oauthrelay/transport"
)

func init() {
	register("token", command{summary: "get a token for an [[app]] from Entra ID and show its claims (aud, tid, appid, roles, expiry)", run: runToken})
}

// tokenTimeout bounds the whole token command (discovery + token request).
const tokenTimeout = 90 * time.Second

func runToken(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("token", stderr)
	path := fs.String("config", defaultConfig, "configuration file")
	appName := fs.String("app", "", "the [[app]] to get a token for (may be left out when the configuration has one app)")
	printToken := fs.Bool("print-token", false, "also print the access token itself; it is a credential, handle it like a password")
	resource := fs.String("resource", "", "the resource to get the token for: exchange (SMTP AUTH), hve (High Volume Email) or graph (Microsoft Graph); default: what the app's mailboxes use")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: oauthrelay token [-config FILE] [--app NAME] [--resource exchange|hve|graph] [--print-token]")
		fmt.Fprintln(stderr, "\nAcquires an access token the way the relay does and prints what Exchange Online")
		fmt.Fprintln(stderr, "or Microsoft Graph will check in it. The token itself is printed only with --print-token.")
		fmt.Fprintln(stderr)
		fs.PrintDefaults()
	}
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "oauthrelay token: unexpected argument %q (use --app NAME)\n", fs.Arg(0))
		return 2
	}
	cfg, ok := loadConfig(*path, stderr)
	if !ok {
		return 1
	}
	app, code := pickApp(cfg, *appName, stderr)
	if app == nil {
		return code
	}
	res, want, code := pickResource(cfg, app, *resource, stderr)
	if code != 0 {
		return code
	}
	roots, err := tokens.Roots(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "oauthrelay token: %v\n", err)
		return 1
	}
	if app.CertificateFile != "" && !describeCredentialCert(app, stdout, stderr) {
		return 1
	}
	if app.CertificateStore != "" && !describeStoreCert(app, stdout, stderr) {
		return 1
	}
	// The command prints every finding itself; the Source's own log lines
	// would only repeat them.
	src, err := oauth.NewSource(tokens.Settings(app, res, roots), oauth.Options{
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		fmt.Fprintf(stderr, "oauthrelay token: %v\n", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), tokenTimeout)
	defer cancel()
	tok, err := src.Token(ctx)
	if err != nil {
		printTokenError(stderr, app, err)
		return 1
	}
	fmt.Fprintf(stdout, "app %q: token acquired from %s%s for %s\n", app.Name, strings.TrimSuffix(app.Authority, "/")+"/", app.TenantID, want.Resource)
	claims, err := oauth.ParseClaims(tok.AccessToken)
	if err != nil {
		// Still say when it expires; Exchange would refuse a non-JWT anyway.
		fmt.Fprintf(stderr, "WARNING: cannot decode the token's claims: %v\n", err)
	}
	fmt.Fprint(stdout, oauth.DescribeTokenFor(tok, claims, time.Now(), want))
	if *printToken {
		fmt.Fprintf(stdout, "access token (a credential: do not paste it into tickets or chats):\n%s\n", tok.AccessToken)
	}
	return 0
}

// pickResource turns --resource into the token resource and what the door
// expects in the token. Without the flag it follows the app's mailboxes:
// graph when all of them use Graph, hve when all use HVE, else exchange.
func pickResource(cfg *config.Config, app *config.App, name string, stderr io.Writer) (transport.Resource, oauth.Expect, int) {
	if name == "" {
		seen := map[string]bool{}
		for _, m := range cfg.Mailboxes {
			if m.App == app.Name {
				seen[m.Transport] = true
			}
		}
		name = "exchange"
		if len(seen) == 1 && seen[config.TransportGraph] {
			name = "graph"
		} else if len(seen) == 1 && seen[config.TransportHVE] {
			name = "hve"
		}
	}
	switch strings.ToLower(name) {
	case "exchange", "smtp":
		return transport.Exchange, oauth.ExpectSMTP, 0
	case "hve":
		return transport.Exchange, oauth.ExpectHVE, 0
	case "graph":
		return transport.Graph, oauth.ExpectGraph(app.GraphURL), 0
	}
	fmt.Fprintf(stderr, "oauthrelay token: --resource %q: use exchange (SMTP AUTH), hve (High Volume Email) or graph (Microsoft Graph)\n", name)
	return "", oauth.Expect{}, 2
}

// pickApp returns the app named name, or the only app when name is empty.
// On failure it prints why and returns the exit code.
func pickApp(cfg *config.Config, name string, stderr io.Writer) (*config.App, int) {
	var names []string
	for _, a := range cfg.Apps {
		names = append(names, a.Name)
	}
	sort.Strings(names)
	switch {
	case name != "":
		if a := cfg.App(name); a != nil {
			return a, 0
		}
		fmt.Fprintf(stderr, "oauthrelay token: %s has no [[app]] named %q; its apps are: %s\n", cfg.Path, name, strings.Join(names, ", "))
		return nil, 1
	case len(cfg.Apps) == 1:
		return cfg.Apps[0], 0
	case len(cfg.Apps) == 0:
		fmt.Fprintf(stderr, "oauthrelay token: %s has no [[app]]\n", cfg.Path)
		return nil, 1
	}
	fmt.Fprintf(stderr, "oauthrelay token: %s has %d apps; choose one with --app NAME: %s\n", cfg.Path, len(names), strings.Join(names, ", "))
	return nil, 2
}

// describeCredentialCert prints the thumbprints of a certificate credential,
// which an admin compares with the app registration when Entra answers
// AADSTS700027. It reports false (after printing why) when the file is
// unusable.
func describeCredentialCert(app *config.App, stdout, stderr io.Writer) bool {
	certs, _, err := oauth.LoadCertificate(app.CertificateFile, app.CertificatePassword.Reveal())
	if err != nil {
		fmt.Fprintf(stderr, "oauthrelay token: app %q: %v\n", app.Name, err)
		return false
	}
	printCredentialCert(app.CertificateFile, oauth.Describe(certs[0]), stdout, stderr)
	return true
}

// printCredentialCert prints the facts of the certificate an app signs
// with (what names it, its subject, thumbprint and expiry) and warns on
// stderr when it expires soon: the one printer for a file and a store.
func printCredentialCert(what string, info oauth.CertInfo, stdout, stderr io.Writer) {
	fmt.Fprintf(stdout, "certificate: %s\n", what)
	fmt.Fprintf(stdout, "  subject %s, SHA-1 thumbprint %s, expires %s\n", info.Subject, info.SHA1, info.NotAfter.UTC().Format(time.RFC3339))
	if w := info.ExpiryWarning(time.Now()); w != "" {
		fmt.Fprintln(stderr, "WARNING: "+w)
	}
}

// printTokenError explains a failed token request: the AADSTS code, what it
// means and what the admin does. oauth.Error text never holds a secret.
func printTokenError(w io.Writer, app *config.App, err error) {
	var oe *oauth.Error
	if !errors.As(err, &oe) {
		fmt.Fprintf(w, "oauthrelay token: app %q: %v\n", app.Name, err)
		return
	}
	fmt.Fprintf(w, "oauthrelay token: app %q: the token request failed\n", app.Name)
	var what []string
	if oe.AADSTS != 0 {
		what = append(what, fmt.Sprintf("AADSTS%d", oe.AADSTS))
	}
	if oe.ErrorCode != "" {
		what = append(what, oe.ErrorCode)
	}
	if oe.HTTPStatus != 0 {
		what = append(what, fmt.Sprintf("HTTP %d", oe.HTTPStatus))
	}
	if len(what) > 0 {
		fmt.Fprintf(w, "  error:  %s\n", strings.Join(what, ", "))
	}
	fmt.Fprintf(w, "  cause:  %s\n", oe.Cause)
	if d := oe.EntraSays(); d != "" {
		fmt.Fprintf(w, "  Entra:  %s\n", d)
	}
	if oe.Fix != "" {
		fmt.Fprintf(w, "  fix:    %s\n", oe.Fix)
	}
	if !oe.Permanent {
		fmt.Fprintln(w, "  (this looks temporary: try again in a minute)")
	}
}
