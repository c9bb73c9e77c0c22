package config

import (
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
)

// inApp adds lines to base's [[app]], after its credential.
func inApp(src, lines string) string {
	return strings.Replace(src, `client_secret = "literal-secret"`, `client_secret = "literal-secret"`+"\n"+lines, 1)
}

// inMailbox adds lines to base's [[mailbox]].
func inMailbox(src, lines string) string {
	return strings.Replace(src, "app = \"contoso\"\nsend_as", "app = \"contoso\"\n"+lines+"\nsend_as", 1)
}

// TestCloudContradictions: a Microsoft host of another cloud than the
// app's would send its mail (or get its token) from the wrong cloud, so
// check refuses it, at the key to change and with the fix. Hosts that are
// no Microsoft host (test servers, proxies) stay allowed.
func TestCloudContradictions(t *testing.T) {
	upstream := func(src, lines string) string { return src + "\n[upstream]\n" + lines + "\n" }
	for _, tt := range []struct {
		name, src string
		key, at   string // "" = valid
		msg, fix  string
	}{
		{"usgov app, the global SMTP host", upstream(inApp(base, `cloud = "usgov"`), `address = "smtp.office365.com:587"`),
			"upstream.address", `address = "smtp.office365.com:587"`,
			"smtp.office365.com is a host of Microsoft's global cloud, but app contoso (mailbox helpdesk@contoso.com) is in the usgov cloud",
			"leave address out of [upstream] so each app uses its own cloud's host (smtp.office365.us:587 for usgov)"},
		{"usgov app, its own SMTP host", upstream(inApp(base, `cloud = "usgov"`), `address = "smtp.office365.us:587"`), "", "", "", ""},
		{"usgov app, a test server", upstream(inApp(base, `cloud = "usgov"`), `address = "127.0.0.1:2525"`), "", "", "", ""},
		{"global app, the usgov SMTP host", upstream(base, `address = "SMTP.office365.us:587"`),
			"upstream.address", `address = "SMTP`, "is a host of Microsoft's usgov cloud, but app contoso", `or set cloud = "usgov" in [[app]] contoso`},
		{"china app, the global Graph host", upstream(inMailbox(inApp(base, `cloud = "china"`), `transport = "graph"`), `graph_url = "https://graph.microsoft.com"`),
			"upstream.graph_url", "graph_url =", "graph.microsoft.com is a host of Microsoft's global cloud", "https://microsoftgraph.chinacloudapi.cn for china"},
		{"china app, the global SMTP host, Graph mailbox", upstream(inMailbox(inApp(base, `cloud = "china"`), `transport = "graph"`), `address = "smtp.office365.com:587"`), "", "", "", ""},
		{"usgov app, the global HVE host", upstream(inMailbox(inApp(base, `cloud = "usgov"`), `transport = "hve"`), `hve_address = "smtp-hve.office365.com:587"`),
			"upstream.hve_address", "hve_address =", "smtp-hve.office365.com is a host of Microsoft's global cloud", "High Volume Email host only for the global cloud"},
		{"usgov app, the global authority", inApp(base, "cloud = \"usgov\"\nauthority = \"https://login.microsoftonline.com/\""),
			"app[0] (contoso).authority", "authority =", `login.microsoftonline.com is a host of Microsoft's global cloud, but the app is in the usgov cloud (cloud = "usgov")`,
			`leave authority out so the cloud sets it (https://login.microsoftonline.us/), or set cloud = "global" if the tenant is in that cloud (US Government GCC tenants are in "global"`},
		{"no cloud, the usgov authority", inApp(base, `authority = "https://login.microsoftonline.us/"`),
			"app[0] (contoso).authority", "authority =", `cloud is not set, so "global"`, `set cloud = "usgov"`},
		{"usgov app, the global scope", inApp(base, "cloud = \"usgov\"\nscope = \"https://outlook.office365.com/.default\""),
			"app[0] (contoso).scope", "scope =", "outlook.office365.com is a host of Microsoft's global cloud", "https://outlook.office365.us/.default"},
		{"usgov app, its own authority", inApp(base, "cloud = \"usgov\"\nauthority = \"https://login.microsoftonline.us/\""), "", "", "", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, probs := parse(t, tt.src, noEnv)
			if tt.key == "" {
				if probs != nil {
					t.Fatalf("problems: %v", probs)
				}
				return
			}
			if len(probs) != 1 {
				t.Fatalf("want one problem for %s, got %v", tt.key, probs)
			}
			p := probs[0]
			if p.Key != tt.key || p.Line != lineOfText(t, tt.src, tt.at) || !strings.Contains(p.Msg, tt.msg) || !strings.Contains(p.Fix, tt.fix) {
				t.Errorf("problem = %s (line %d)\nwant %s at line of %q, message with %q, fix with %q", p, p.Line, tt.key, tt.at, tt.msg, tt.fix)
			}
		})
	}
}

// TestExampleFollowsTheCloud: setting cloud in a copy of the example is
// enough to deliver to that cloud; the example must not pin the global
// host.
func TestExampleFollowsTheCloud(t *testing.T) {
	src, err := os.ReadFile("../config.toml.example")
	if err != nil {
		t.Fatal(err)
	}
	gov := strings.Replace(string(src), `# cloud = "global"`, `cloud = "usgov"`, 1)
	c, probs := parse(t, gov, func(string) string { return "example-secret-value" })
	if probs != nil {
		t.Fatal(probs)
	}
	a := c.Apps[0]
	if a.UpstreamAddress != "smtp.office365.us:587" || a.GraphURL != "https://graph.microsoft.us" || a.Authority != "https://login.microsoftonline.us/" {
		t.Errorf("a usgov copy of the example delivers to %s / %s with tokens from %s", a.UpstreamAddress, a.GraphURL, a.Authority)
	}
}

// TestReadableConfigWithInlineSecrets: a configuration file every user
// may read is warned about when it holds a secret or a password hash
// itself, like a client_secret_file would be; 0600 and 0640 are fine, and
// so is a file whose only secret comes from the environment.
func TestReadableConfigWithInlineSecrets(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no mode bits on Windows")
	}
	noHash := regexp.MustCompile(`(?m)^(username|password_hash) = .*\n`).ReplaceAllString(base, "")
	envOnly := strings.Replace(noHash, `"literal-secret"`, `"${S}"`, 1)
	for _, tt := range []struct {
		name string
		src  string
		mode os.FileMode
		want []string // "" = no warning
	}{
		{"secret and hash, 0644", base, 0o644, []string{"is readable by every user on this machine (mode 0644) and holds app contoso's client_secret, client erp's password_hash",
			"chmod 600 ", "chown root:oauthrelay", "client_secret_file", "guess the password offline"}},
		{"secret, 0604", noHash, 0o604, []string{"holds app contoso's client_secret", "client_secret_file"}},
		{"secret and hash, 0600", base, 0o600, nil},
		{"secret and hash, 0640", base, 0o640, nil},
		{"secret from the environment, 0644", envOnly, 0o644, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("S", "from-env")
			path := filepath.Join(t.TempDir(), "config.toml")
			if err := os.WriteFile(path, []byte(tt.src), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, tt.mode); err != nil {
				t.Fatal(err)
			}
			for name, load := range map[string]func(string) (*Config, error){"Load": Load, "LoadForCheck": LoadForCheck} {
				c, err := load(path)
				if err != nil {
					t.Fatal(err)
				}
				if tt.want == nil {
					if len(c.Warnings) > 0 {
						t.Errorf("%s: warnings %v", name, c.Warnings)
					}
					continue
				}
				if len(c.Warnings) != 1 {
					t.Fatalf("%s: want one warning, got %v", name, c.Warnings)
				}
				w := c.Warnings[0]
				if w.Key != "app[0] (contoso).client_secret" || w.Line != lineOfText(t, tt.src, "client_secret =") {
					t.Errorf("%s: warning at %s line %d, want the client_secret's", name, w.Key, w.Line)
				}
				for _, s := range tt.want {
					if !strings.Contains(w.Msg+" — fix: "+w.Fix, s) {
						t.Errorf("%s: warning %s lacks %q", name, w, s)
					}
				}
			}
		})
	}
}

// TestProblemsInLineOrder: problems read top to bottom like the file,
// whatever order the checks found them in.
func TestProblemsInLineOrder(t *testing.T) {
	src := strings.Replace(base, `address = "127.0.0.1:2525"`, `address = "127.0.0.1:2525"`+"\nhostname = \"\"", 1)
	src = strings.Replace(src, `name = "erp"`, "name = \"erp\"\nsendrs = []", 1)
	src = strings.Replace(src, `app = "contoso"`, `app = "nobody"`, 1)
	_, probs := parse(t, src, noEnv)
	if len(probs) != 3 {
		t.Fatalf("want 3 problems, got %v", probs)
	}
	for i := 1; i < len(probs); i++ {
		if probs[i].Line < probs[i-1].Line {
			t.Errorf("problems out of line order:\n%v\n%v", probs[i-1], probs[i])
		}
	}
}

// TestExampleSaysWhatNeedsARestart: the example's reload paragraph names
// exactly the settings the running relay cannot change, as
// internal/service's Reload warns about them, and ${VAR} secrets.
func TestExampleSaysWhatNeedsARestart(t *testing.T) {
	reload, err := os.ReadFile("../internal/service/reload.go")
	if err != nil {
		t.Fatal(err)
	}
	example, err := os.ReadFile("../config.toml.example")
	if err != nil {
		t.Fatal(err)
	}
	start := strings.Index(string(example), "# Reload:")
	if start < 0 {
		t.Fatal("config.toml.example has no '# Reload:' paragraph")
	}
	para := string(example[start:])
	para = para[:strings.Index(para, "\n\n")]
	para = strings.Join(strings.Fields(strings.ReplaceAll(para, "#", "")), " ")
	keys := regexp.MustCompile(`restart\("([a-z_.]+)"`).FindAllStringSubmatch(string(reload), -1)
	if len(keys) < 10 {
		t.Fatalf("found only %d restart keys in reload.go", len(keys))
	}
	named := map[string]bool{}
	for _, k := range keys {
		named[k[1]] = true
		if !strings.Contains(para, k[1]) {
			t.Errorf("the example's reload paragraph does not say that %s needs a restart:\n%s", k[1], para)
		}
	}
	for _, k := range regexp.MustCompile(`\b[a-z]+\.[a-z_]+\b`).FindAllString(para, -1) {
		if strings.Contains(k, "_") || strings.HasPrefix(k, "listen.") || strings.HasPrefix(k, "log.") || strings.HasPrefix(k, "spool.") || strings.HasPrefix(k, "metrics.") || strings.HasPrefix(k, "upstream.") {
			if !named[k] {
				t.Errorf("the example says %s needs a restart, but a reload applies it", k)
			}
		}
	}
	if !strings.Contains(para, "${VAR} also needs a restart") {
		t.Errorf("the example does not say that a ${VAR} secret needs a restart:\n%s", para)
	}
}
