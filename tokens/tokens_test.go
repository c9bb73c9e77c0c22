package tokens

import (
	"context"
	"strings"
	"testing"

	"github.com/oauthrelay/oauthrelay/config"
	"github.com/oauthrelay/oauthrelay/internal/msemu"
	"github.com/oauthrelay/oauthrelay/internal/msemu/emutest"
	"github.com/oauthrelay/oauthrelay/internal/testkit"
	"github.com/oauthrelay/oauthrelay/oauth"
	"github.com/oauthrelay/oauthrelay/transport"
)

func TestResources(t *testing.T) {
	cfg := &config.Config{Mailboxes: []*config.Mailbox{
		{Address: "a@x", App: "smtp-only", Transport: "smtp"},
		{Address: "b@x", App: "both", Transport: "hve"},
		{Address: "c@x", App: "both", Transport: "graph"},
		{Address: "d@x", App: "graph-only", Transport: "graph"},
	}}
	for app, want := range map[string]string{
		"smtp-only": "exchange", "both": "exchange,graph", "graph-only": "graph",
		"unused": "exchange", // its credential is still checked
	} {
		var got []string
		for _, r := range Resources(cfg, app) {
			got = append(got, string(r))
		}
		if strings.Join(got, ",") != want {
			t.Errorf("%s: %v, want %s", app, got, want)
		}
	}
}

// An app with SMTP and Graph mailboxes holds one source per resource; a
// reload with the same settings keeps them (no new token request), and
// asking for a resource the app does not use says why.
func TestSetPerResource(t *testing.T) {
	emu := emutest.Start(t, msemu.Options{})
	const tenant, client, secret = "8d5d2a5b-3f0e-4c1a-9a59-2c1f5e0b7a11", "3b9f1c2e-7a44-4d0e-b1a2-6f0c9e8d7b55", "Qx8~tokens.test"
	emu.ProvisionGraph(tenant, client, secret, "smtp@contoso.com", "graph@contoso.com")
	kit := testkit.Config{Emulator: emu, Upstream: testkit.Upstream{GraphURL: emu.GraphURL()},
		Apps:      []testkit.App{{Name: "contoso", TenantID: tenant, ClientID: client, ClientSecret: secret}},
		Mailboxes: []testkit.Mailbox{{Address: "smtp@contoso.com", App: "contoso"}, {Address: "graph@contoso.com", App: "contoso", Transport: "graph"}},
		Clients:   []testkit.Client{{Name: "app", Networks: []string{"127.0.0.1"}, Senders: []string{"*"}}}}
	cfg, err := config.Load(kit.Write(t))
	if err != nil {
		t.Fatal(err)
	}
	log, _ := testkit.DebugLogger(t)
	set, err := New(context.Background(), cfg, emu.CertPool(), oauth.Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	auds := map[transport.Resource]string{}
	for _, r := range []transport.Resource{transport.Exchange, transport.Graph} {
		src, err := set.Get("contoso", r)
		if err != nil {
			t.Fatal(err)
		}
		tok, err := src.Token(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		c, _ := oauth.ParseClaims(tok.AccessToken)
		auds[r] = c.Aud
	}
	if auds[transport.Exchange] != "https://outlook.office365.com" || auds[transport.Graph] != emu.GraphURL() {
		t.Errorf("audiences %v", auds)
	}
	before := emu.Stats().TokenRequests
	if err := set.Update(cfg); err != nil {
		t.Fatal(err)
	}
	for _, r := range []transport.Resource{transport.Exchange, transport.Graph} {
		src, _ := set.Get("contoso", r)
		if _, err := src.Token(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if n := emu.Stats().TokenRequests - before; n != 0 {
		t.Errorf("a reload with the same settings cost %d token requests", n)
	}
	if len(set.Statuses()) != 2 {
		t.Errorf("statuses %+v, want one per resource", set.Statuses())
	}
	cfg.Mailboxes = cfg.Mailboxes[:1] // Graph no longer used
	if err := set.Update(cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := set.Get("contoso", transport.Graph); err == nil || !strings.Contains(err.Error(), "no mailbox of it uses that transport") {
		t.Errorf("Graph source of an app without Graph mailboxes: %v", err)
	}
	if _, err := set.Get("fabrikam", transport.Exchange); err == nil || !strings.Contains(err.Error(), `no [[app]] named "fabrikam"`) {
		t.Errorf("unknown app: %v", err)
	}
}
