package config

import (
	"bytes"
	"strings"
	"testing"

	"github.com/oauthrelay/oauthrelay/internal/testkit"
)

// transportBase is a valid configuration with one app, one mailbox and one
// client; the tests below change one thing at a time.
func transportBase() testkit.Config {
	return testkit.Config{
		Listen: testkit.Listen{Address: "127.0.0.1:2525"},
		Apps: []testkit.App{{Name: "contoso", TenantID: "00000000-0000-0000-0000-000000000000",
			ClientID: "11111111-2222-3333-4444-555555555555", ClientSecret: "literal-secret"}},
		Mailboxes: []testkit.Mailbox{{Address: "helpdesk@contoso.com", App: "contoso"}},
		Clients:   []testkit.Client{{Name: "erp", Networks: []string{"10.0.0.0/24"}, Senders: []string{"helpdesk@contoso.com"}}},
	}
}

// lineOfText is the 1-based line of the first line of src containing sub.
func lineOfText(t *testing.T, src, sub string) int {
	t.Helper()
	for i, l := range strings.Split(src, "\n") {
		if strings.Contains(l, sub) {
			return i + 1
		}
	}
	t.Fatalf("%q is not in\n%s", sub, src)
	return 0
}

func TestTransportDefaults(t *testing.T) {
	for _, tt := range []struct {
		name                 string
		mod                  func(*testkit.Config)
		transport            string
		conns                int
		graphURL, graphScope string
		upstream, hveAddress string
	}{
		{"smtp by default", func(*testkit.Config) {}, "smtp", 3,
			"https://graph.microsoft.com", "https://graph.microsoft.com/.default", "smtp.office365.com:587", "smtp-hve.office365.com:587"},
		{"graph", func(c *testkit.Config) { c.Mailboxes[0].Transport = "graph" }, "graph", 4,
			"https://graph.microsoft.com", "https://graph.microsoft.com/.default", "smtp.office365.com:587", "smtp-hve.office365.com:587"},
		{"hve", func(c *testkit.Config) { c.Mailboxes[0].Transport = "hve" }, "hve", 3,
			"https://graph.microsoft.com", "https://graph.microsoft.com/.default", "smtp.office365.com:587", "smtp-hve.office365.com:587"},
		{"graph with its own max_connections", func(c *testkit.Config) { c.Mailboxes[0].Transport = "graph"; c.Mailboxes[0].MaxConnections = 2 }, "graph", 2,
			"https://graph.microsoft.com", "https://graph.microsoft.com/.default", "smtp.office365.com:587", "smtp-hve.office365.com:587"},
		{"usgov", func(c *testkit.Config) { c.Mailboxes[0].Transport = "graph"; c.Apps[0].Extra = `cloud = "usgov"` }, "graph", 4,
			"https://graph.microsoft.us", "https://graph.microsoft.us/.default", "smtp.office365.us:587", "smtp-hve.office365.com:587"},
		{"china", func(c *testkit.Config) { c.Mailboxes[0].Transport = "graph"; c.Apps[0].Extra = `cloud = "china"` }, "graph", 4,
			"https://microsoftgraph.chinacloudapi.cn", "https://microsoftgraph.chinacloudapi.cn/.default", "smtp.partner.outlook.cn:587", "smtp-hve.office365.com:587"},
		{"graph_url wins over the cloud", func(c *testkit.Config) {
			c.Upstream.GraphURL = "https://dod-graph.microsoft.us/"
			c.Apps[0].Extra = `cloud = "usgov"`
		}, "smtp", 3, "https://dod-graph.microsoft.us", "https://dod-graph.microsoft.us/.default", "smtp.office365.us:587", "smtp-hve.office365.com:587"},
		{"graph_scope override", func(c *testkit.Config) {
			c.Apps[0].Extra = `graph_scope = "https://graph.microsoft.com/.default"`
			c.Upstream.GraphURL = "https://127.0.0.1:8443"
		}, "smtp", 3, "https://127.0.0.1:8443", "https://graph.microsoft.com/.default", "smtp.office365.com:587", "smtp-hve.office365.com:587"},
		{"hve_address", func(c *testkit.Config) { c.Upstream.HVEAddress = "127.0.0.1:2587" }, "smtp", 3,
			"https://graph.microsoft.com", "https://graph.microsoft.com/.default", "smtp.office365.com:587", "127.0.0.1:2587"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			kc := transportBase()
			tt.mod(&kc)
			c, probs := parse(t, kc.TOML(t), noEnv)
			if probs != nil {
				t.Fatal(probs)
			}
			if len(c.Warnings) > 0 {
				t.Errorf("warnings: %v", c.Warnings)
			}
			m, a := c.Mailboxes[0], c.Apps[0]
			if m.Transport != tt.transport || m.MaxConnections != tt.conns || m.MaxPerMinute != 30 || m.MaxRecipientsPerDay != 10000 {
				t.Errorf("mailbox: transport %q, max_connections %d, max_per_minute %d, max_recipients_per_day %d; want %q, %d, 30, 10000",
					m.Transport, m.MaxConnections, m.MaxPerMinute, m.MaxRecipientsPerDay, tt.transport, tt.conns)
			}
			if a.GraphURL != tt.graphURL || a.GraphScope != tt.graphScope || a.UpstreamAddress != tt.upstream || a.HVEAddress != tt.hveAddress {
				t.Errorf("app: graph %q scope %q upstream %q hve %q; want %q %q %q %q",
					a.GraphURL, a.GraphScope, a.UpstreamAddress, a.HVEAddress, tt.graphURL, tt.graphScope, tt.upstream, tt.hveAddress)
			}
		})
	}
}

func TestTransportProblems(t *testing.T) {
	const mb, app = "mailbox[0] (helpdesk@contoso.com)", "app[0] (contoso)"
	for _, tt := range []struct {
		name       string
		mod        func(*testkit.Config)
		key, at    string // at: text on the line the problem must point to
		msg, fix   string
		notFix     string
		neverShown string
	}{
		{"transport typo", func(c *testkit.Config) { c.Mailboxes[0].Transport = "grpah" }, mb + ".transport", `"grpah"`,
			`"grpah" is not a transport`, `did you mean "graph"?`, "", ""},
		{"transport in capitals", func(c *testkit.Config) { c.Mailboxes[0].Transport = "SMTP" }, mb + ".transport", `"SMTP"`,
			"is not a transport", `did you mean "smtp"?`, "", ""},
		{"unknown transport", func(c *testkit.Config) { c.Mailboxes[0].Transport = "ews" }, mb + ".transport", `"ews"`,
			"is not a transport", `"smtp" (SMTP AUTH, the default), "graph" (Microsoft Graph) or "hve"`, "did you mean", ""},
		{"graph_url over http", func(c *testkit.Config) { c.Upstream.GraphURL = "http://graph.microsoft.com" }, "upstream.graph_url", "graph_url =",
			"is not an https URL", `"https://graph.microsoft.com"`, "", ""},
		{"graph_url empty", func(c *testkit.Config) { c.Upstream.Extra = `graph_url = ""` }, "upstream.graph_url", "graph_url =",
			"is not an https URL", "leave the key out", "", ""},
		{"graph_url with a version", func(c *testkit.Config) { c.Upstream.GraphURL = "https://graph.microsoft.com/v1.0" }, "upstream.graph_url", "graph_url =",
			"has a path or query", "the relay adds /v1.0/", "", ""},
		{"graph_url with a password", func(c *testkit.Config) { c.Upstream.GraphURL = "https://u:hunter2@graph.microsoft.com" }, "upstream.graph_url", "graph_url =",
			"holds a user name", "https://graph.microsoft.com", "", "hunter2"},
		{"hve_address without port", func(c *testkit.Config) { c.Upstream.HVEAddress = "smtp-hve.office365.com" }, "upstream.hve_address", "hve_address =",
			"is not host:port", `"smtp-hve.office365.com:587"`, "", ""},
		{"graph_scope", func(c *testkit.Config) { c.Apps[0].Extra = `graph_scope = "https://graph.microsoft.com/Mail.Send"` }, app + ".graph_scope", "graph_scope =",
			"does not end in /.default", `"https://graph.microsoft.com/.default"`, "", ""},
		{"graph_scope of a sovereign cloud", func(c *testkit.Config) { c.Apps[0].Extra = "cloud = \"usgov\"\ngraph_scope = \"Mail.Send\"" }, app + ".graph_scope", "graph_scope =",
			"does not end in /.default", `"https://graph.microsoft.us/.default"`, "", ""},
		{"negative graph connections", func(c *testkit.Config) { c.Mailboxes[0].Transport = "graph"; c.Mailboxes[0].MaxConnections = -1 }, mb + ".max_connections", "max_connections =",
			"cannot be negative", "use 4, Microsoft Graph's limit", "", ""},
		{"negative hve connections", func(c *testkit.Config) { c.Mailboxes[0].Transport = "hve"; c.Mailboxes[0].MaxConnections = -1 }, mb + ".max_connections", "max_connections =",
			"cannot be negative", "use 3, Exchange Online's limit", "", ""},
		{"transport key typo", func(c *testkit.Config) { c.Mailboxes[0].Extra = `transprt = "graph"` }, "mailbox.transprt", "transprt =",
			"unknown key", `did you mean "transport"?`, "", ""},
		{"graph_url key typo", func(c *testkit.Config) { c.Upstream.Extra = `graph_ulr = "https://graph.microsoft.com"` }, "upstream.graph_ulr", "graph_ulr =",
			"unknown key", `did you mean "graph_url"?`, "", ""},
		{"hve_address key typo", func(c *testkit.Config) { c.Upstream.Extra = `hve_adress = "x:1"` }, "upstream.hve_adress", "hve_adress =",
			"unknown key", `did you mean "hve_address"?`, "", ""},
		{"graph_scope key typo", func(c *testkit.Config) { c.Apps[0].Extra = `graph_scop = "x"` }, "app.graph_scop", "graph_scop =",
			"unknown key", `did you mean "graph_scope"?`, "", ""},
		// The app rules are oauth.CheckApp's, the same NewSource applies.
		{"tenant with a slash", func(c *testkit.Config) { c.Apps[0].TenantID = "contoso/x" }, app + ".tenant_id", "tenant_id =",
			`"contoso/x" is not a tenant ID`, "Directory (tenant) ID", "", ""},
		{"secret pasted as client_id", func(c *testkit.Config) { c.Apps[0].ClientID = "Zq8~s3cr3t-VALUE" }, app + ".client_id", "client_id =",
			"is not a GUID", "Application (client) ID", "", "Zq8~s3cr3t-VALUE"},
		{"socks4 proxy", func(c *testkit.Config) { c.Apps[0].Extra = `proxy_url = "socks4://u:hunter2@proxy:1080"` }, app + ".proxy_url", "proxy_url =",
			"is not a proxy URL", "socks5h", "", "hunter2"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			kc := transportBase()
			tt.mod(&kc)
			src := kc.TOML(t)
			_, probs := parse(t, src, noEnv)
			var found *Problem
			for i, p := range probs {
				if p.Key == tt.key {
					found = &probs[i]
				}
				if tt.neverShown != "" && strings.Contains(p.String(), tt.neverShown) {
					t.Errorf("problem shows %q: %s", tt.neverShown, p)
				}
			}
			if found == nil {
				t.Fatalf("no problem for %s in %v", tt.key, probs)
			}
			p := *found
			if want := lineOfText(t, src, tt.at); p.File != "test.toml" || p.Line != want {
				t.Errorf("%s: at %s:%d, want test.toml:%d", p, p.File, p.Line, want)
			}
			if !strings.Contains(p.Msg, tt.msg) || !strings.Contains(p.Fix, tt.fix) || (tt.notFix != "" && strings.Contains(p.Fix, tt.notFix)) {
				t.Errorf("problem = %s\nwant message with %q and fix with %q", p, tt.msg, tt.fix)
			}
		})
	}
}

func TestTransportWarnings(t *testing.T) {
	for _, tt := range []struct {
		name string
		mod  func(*testkit.Config)
		warn string // "" = none
		fix  string
	}{
		{"graph at Graph's limit", func(c *testkit.Config) { c.Mailboxes[0].Transport = "graph"; c.Mailboxes[0].MaxConnections = 4 }, "", ""},
		{"graph over Graph's limit", func(c *testkit.Config) { c.Mailboxes[0].Transport = "graph"; c.Mailboxes[0].MaxConnections = 5 },
			"5 is more than the 4 concurrent requests Microsoft Graph allows per app and mailbox", "use 4 or less, or Graph answers 429"},
		{"smtp over Exchange's limit", func(c *testkit.Config) { c.Mailboxes[0].MaxConnections = 4 },
			"4 is more than the 3 connections Exchange Online allows per mailbox", "use 3 or less"},
		{"hve over Exchange's limit", func(c *testkit.Config) { c.Mailboxes[0].Transport = "hve"; c.Mailboxes[0].MaxConnections = 4 },
			"4 is more than the 3 connections", "use 3 or less"},
		{"hve with short-lived tokens", func(c *testkit.Config) { c.Mailboxes[0].Transport = "hve"; c.Apps[0].MinTokenLifetime = "5m" },
			"app contoso renews its token when 5m0s is left, but the High Volume Email endpoint refuses tokens with less than 10 minutes left", `min_token_lifetime = "10m"`},
		{"smtp with short-lived tokens", func(c *testkit.Config) { c.Apps[0].MinTokenLifetime = "5m" }, "", ""},
		{"hve in a sovereign cloud", func(c *testkit.Config) { c.Mailboxes[0].Transport = "hve"; c.Apps[0].Extra = `cloud = "usgov"` },
			"app contoso is in Microsoft's usgov cloud, but hve_address is the global cloud's endpoint smtp-hve.office365.com:587", "set [upstream] hve_address"},
		{"hve in a sovereign cloud with its own address", func(c *testkit.Config) {
			c.Mailboxes[0].Transport = "hve"
			c.Apps[0].Extra = `cloud = "usgov"`
			c.Upstream.HVEAddress = "hve.example.us:587"
		}, "", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			kc := transportBase()
			tt.mod(&kc)
			src := kc.TOML(t)
			c, probs := parse(t, src, noEnv)
			if probs != nil {
				t.Fatal(probs)
			}
			if tt.warn == "" {
				if len(c.Warnings) > 0 {
					t.Errorf("warnings: %v", c.Warnings)
				}
				return
			}
			if len(c.Warnings) != 1 || !strings.Contains(c.Warnings[0].Msg, tt.warn) || !strings.Contains(c.Warnings[0].Fix, tt.fix) || c.Warnings[0].Line == 0 {
				t.Errorf("warnings = %v\nwant one with %q, fix %q and a line", c.Warnings, tt.warn, tt.fix)
			}
		})
	}
}

func TestProxySchemesOfTheTokenSource(t *testing.T) {
	for _, proxy := range []string{"http://proxy:3128", "https://proxy:3128", "socks5://proxy:1080", "socks5h://u:pw@proxy:1080"} {
		kc := transportBase()
		kc.Apps[0].Extra = `proxy_url = "` + proxy + `"`
		if _, probs := parse(t, kc.TOML(t), noEnv); probs != nil {
			t.Errorf("%s: %v", proxy, probs)
		}
	}
}

func TestWriteRoutesShowsTransport(t *testing.T) {
	kc := transportBase()
	kc.Mailboxes = append(kc.Mailboxes, testkit.Mailbox{Address: "sales@contoso.com", App: "contoso", Transport: "graph"})
	kc.Clients[0].Senders = []string{"helpdesk@contoso.com", "sales@contoso.com"}
	c, probs := parse(t, kc.TOML(t), noEnv)
	if probs != nil {
		t.Fatal(probs)
	}
	var b bytes.Buffer
	c.WriteRoutes(&b)
	out := b.String()
	for _, want := range []string{
		"CLIENT           SENDER                             MAILBOX                        APP              TRANSPORT\n",
		"erp              helpdesk@contoso.com               helpdesk@contoso.com           contoso          smtp\n",
		"                 sales@contoso.com                  sales@contoso.com              contoso          graph\n",
		"delivers to smtp.office365.com:587 (smtp), https://graph.microsoft.com (graph, scope https://graph.microsoft.com/.default)\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("routes lack %q:\n%s", want, out)
		}
	}
}
