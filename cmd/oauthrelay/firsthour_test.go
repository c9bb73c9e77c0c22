package main

import (
	"bytes"
	"encoding/pem"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/debug"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/oauthrelay/oauthrelay/internal/testkit"
)

// TestCertShowTheUploadedCertificate: cert show describes the .cer that
// cert new says to upload (PEM, or DER as Windows exports it) as well as
// the .pem with the key, and every one of them shows the thumbprint and
// keyId cert new printed.
func TestCertShowTheUploadedCertificate(t *testing.T) {
	dir := t.TempDir()
	var out, errb bytes.Buffer
	if code := run([]string{"cert", "new", "-days", "10", "-out", dir}, &out, &errb); code != 0 {
		t.Fatalf("cert new: exit %d\n%s", code, errb.String())
	}
	field := func(s, name string) string {
		m := regexp.MustCompile(`(?m)^` + name + `:\s+(\S+)`).FindStringSubmatch(s)
		if m == nil {
			t.Fatalf("no %s in\n%s", name, s)
		}
		return m[1]
	}
	keyIDRE := regexp.MustCompile(`"keyId": "([0-9a-f-]{36})"`)
	created := out.String()
	thumb, kid := field(created, "Thumbprint"), keyIDRE.FindStringSubmatch(created)
	if kid == nil || field(created, "Key ID") != kid[1] {
		t.Fatalf("cert new shows no keyId, or two:\n%s", created)
	}
	pemCer, err := os.ReadFile(filepath.Join(dir, "oauthrelay.cer"))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(pemCer)
	der := filepath.Join(dir, "exported.cer")
	if err := os.WriteFile(der, block.Bytes, 0o644); err != nil {
		t.Fatal(err)
	}
	for file, says := range map[string]string{
		filepath.Join(dir, "oauthrelay.pem"): "private key present",
		filepath.Join(dir, "oauthrelay.cer"): "public certificate, no private key",
		der:                                  "public certificate, no private key",
	} {
		out.Reset()
		errb.Reset()
		if code := run([]string{"cert", "show", file}, &out, &errb); code != 0 {
			t.Errorf("cert show %s: exit %d\n%s", filepath.Base(file), code, errb.String())
			continue
		}
		shown := out.String()
		if !strings.Contains(shown, says) || field(shown, "Thumbprint") != thumb || !strings.Contains(shown, `"keyId": "`+kid[1]+`"`) || !strings.Contains(shown, `"keyCredentials"`) {
			t.Errorf("cert show %s does not show what cert new did (%s, thumbprint %s, keyId %s):\n%s", filepath.Base(file), says, thumb, kid[1], shown)
		}
		// A certificate made for 10 days expires in 10 days, not 9.
		if !strings.Contains(shown, "expires in 10 day(s)") {
			t.Errorf("cert show %s: expiry of a 10-day certificate:\n%s", filepath.Base(file), shown)
		}
	}
}

// flagsListed returns the flag names a usage text lists.
func flagsListed(usage string) []string {
	var names []string
	for _, m := range regexp.MustCompile(`(?m)^  --?([a-z][a-z0-9-]*)`).FindAllStringSubmatch(usage, -1) {
		names = append(names, m[1])
	}
	sort.Strings(names)
	return names
}

// TestHelpOfEveryCommand: every command's and action's -h starts with
// "Usage: oauthrelay NAME" and its arguments, says what it does, and lists
// only the flags that apply to it.
func TestHelpOfEveryCommand(t *testing.T) {
	var names []string
	for name := range commands {
		switch name {
		case "queue":
			for _, a := range []string{"list", "show", "retry", "hold", "release", "requeue-failed", "delete"} {
				names = append(names, "queue "+a)
			}
		case "cert":
			names = append(names, "cert new", "cert show")
		case "service":
			if runtime.GOOS == "windows" {
				for _, a := range []string{"install", "uninstall", "start", "stop"} {
					names = append(names, "service "+a)
				}
			}
		case "emulator":
			// cmd_emulator.go makes its FlagSet without newFlags.
		default:
			names = append(names, name)
		}
	}
	for _, name := range names {
		var out, errb bytes.Buffer
		if code := run(append(strings.Fields(name), "-h"), &out, &errb); code != 0 {
			t.Errorf("%s -h: exit %d", name, code)
		}
		help := errb.String()
		lines := strings.Split(help, "\n")
		if !strings.HasPrefix(lines[0], "Usage: oauthrelay "+name) || len(lines) < 3 || lines[1] != "" || len(strings.TrimSpace(lines[2])) < 20 {
			t.Errorf("%s -h does not start with its usage line, a blank line and what it does:\n%s", name, help)
		}
		if strings.Contains(help, "Usage of ") {
			t.Errorf("%s -h prints the flag package's bare usage:\n%s", name, help)
		}
		if u, ok := usages[name]; ok && u.flags != nil {
			want := slices.Clone(u.flags)
			sort.Strings(want)
			if got := flagsListed(help); !slices.Equal(got, want) {
				t.Errorf("%s -h lists flags %v, want %v:\n%s", name, got, want, help)
			}
		}
	}
	var out, errb bytes.Buffer
	run([]string{"queue", "show", "-h"}, &out, &errb)
	if !strings.HasPrefix(errb.String(), "Usage: oauthrelay queue show [-config FILE | -spool DIR] ID\n") || strings.Contains(errb.String(), "-json") {
		t.Errorf("queue show -h:\n%s", errb.String())
	}
}

// TestVersion: version, --version and -version print the version, the
// commit and the Go version from the build information.
func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"version"}, {"--version"}, {"-version"}} {
		var out, errb bytes.Buffer
		if code := run(args, &out, &errb); code != 0 || !strings.HasPrefix(out.String(), "oauthrelay ") || !strings.Contains(out.String(), "\ncommit:  ") || !strings.Contains(out.String(), "\ngo:      "+runtime.Version()) {
			t.Errorf("%v: exit %d\n%s%s", args, code, out.String(), errb.String())
		}
	}
	vcs := []debug.BuildSetting{{Key: "vcs.revision", Value: "23cd6ba517d361d61e41e265416b0d8baf561bab"}, {Key: "vcs.time", Value: "2026-12-01T04:58:48Z"}}
	for _, tt := range []struct {
		name string
		bi   *debug.BuildInfo
		want []string
	}{
		{"tagged", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v1.2.3"}, Settings: append(vcs, debug.BuildSetting{Key: "vcs.modified", Value: "false"})},
			[]string{"oauthrelay v1.2.3\n", "commit:  23cd6ba517d361d61e41e265416b0d8baf561bab\n", "date:    2026-12-01T04:58:48Z (commit time)\n", "go:      go1.26.8 "}},
		{"untagged and modified", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v0.0.0-20261201045848-23cd6ba517d3+dirty"}, Settings: append(vcs, debug.BuildSetting{Key: "vcs.modified", Value: "true"})},
			[]string{"oauthrelay devel\n", "commit:  23cd6ba517d361d61e41e265416b0d8baf561bab, with uncommitted changes\n"}},
		{"go run", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}}, []string{"oauthrelay devel\n", "commit:  unknown"}},
		{"no build information", nil, []string{"oauthrelay devel\n", "go:      " + runtime.Version()}},
	} {
		got := versionText(tt.bi)
		for _, w := range tt.want {
			if !strings.Contains(got, w) {
				t.Errorf("%s: version text lacks %q:\n%s", tt.name, w, got)
			}
		}
	}
}

// TestCheckFirstHour: check refuses the global host for a usgov app,
// lists problems top to bottom, and warns about a configuration file
// every user can read that holds a secret.
func TestCheckFirstHour(t *testing.T) {
	src := `[listen]
address = "127.0.0.1:2525"
hostname = ""

[upstream]
address = "smtp.office365.com:587"

[[app]]
name = "gov"
cloud = "usgov"
tenant_id = "00000000-0000-0000-0000-000000000000"
client_id = "11111111-2222-3333-4444-555555555555"
client_secret = "inline-secret"

[[mailbox]]
address = "helpdesk@contoso.com"
app = "gov"

[[client]]
name = "erp"
networks = ["10.0.0.0/24"]
senders = ["helpdesk@contoso.com"]
sendrs = []
`
	path := testkit.WriteFile(t, "config.toml", []byte(src))
	var out, errb bytes.Buffer
	if code := run([]string{"check", "-config", path}, &out, &errb); code != 1 {
		t.Fatalf("check: exit %d, want 1\n%s", code, errb.String())
	}
	got := errb.String()
	first, second, third := strings.Index(got, path+":3: listen.hostname"), strings.Index(got, path+":6: upstream.address: smtp.office365.com is a host of Microsoft's global cloud"), strings.Index(got, path+":23: client.sendrs")
	if first < 0 || second < first || third < second {
		t.Errorf("check does not list the three problems top to bottom:\n%s", got)
	}
	if runtime.GOOS == "windows" {
		return
	}
	valid := strings.Replace(strings.Replace(strings.Replace(src, `hostname = ""`, `hostname = "relay"`, 1), "sendrs = []\n", "", 1), `address = "smtp.office365.com:587"`, "", 1)
	if err := os.WriteFile(path, []byte(valid), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	errb.Reset()
	if code := run([]string{"check", "-config", path}, &out, &errb); code != 0 || !strings.Contains(errb.String(), "warning: "+path+":13: app[0] (gov).client_secret: "+path+" is readable by every user on this machine (mode 0644) and holds app gov's client_secret — fix: chmod 600 ") {
		t.Errorf("check of a 0644 file with an inline secret: exit %d\n%s", code, errb.String())
	}
	if !strings.Contains(out.String(), "delivers to smtp.office365.us:587 (smtp)") {
		t.Errorf("a usgov app without [upstream] address does not deliver to its cloud:\n%s", out.String())
	}
}
