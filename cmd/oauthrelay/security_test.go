package main

// Issue 7 with the real binary: a revoked secret fixed by editing the
// configuration and sending SIGHUP; secrets never on the command line
// (ps); spool and key files 0600.

import (
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/oauthrelay/oauthrelay/internal/msemu"
)

const (
	revokedSecret = "Revoked~secret.VALUE_0000000000"
	fixedSecret   = "Fixed~secret.VALUE_1111111111"
)

func TestRevokedSecretFixedBySIGHUP(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildBinary(t)
	emu, err := msemu.New(msemu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := emu.Start(); err != nil {
		t.Fatal(err)
	}
	defer emu.Close()
	// The admin rotated the secret in Entra ID: only the new one works.
	emu.Provision(crashTenant, crashClient, fixedSecret, opsMailbox)

	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, emu.CACertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	addr, metricsAddr := freePort(t), freePort(t)
	spool := filepath.Join(dir, "spool")
	cfg := filepath.Join(dir, "config.toml")
	write := func(secret string) {
		t.Helper()
		if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`[listen]
address = %q
hostname = "sighup.test"

[spool]
dir = %q
min_retry_delay = "200ms"
max_retry_delay = "1s"

[upstream]
address = %q
ca_file = %q

[metrics]
address = %q

[log]
level = "debug"

[[app]]
name = "contoso"
tenant_id = %q
client_id = %q
client_secret = %q
authority = %q

[[mailbox]]
address = %q
app = "contoso"

[[client]]
name = "erp"
networks = ["127.0.0.1"]
senders = [%q]
`, addr, spool, emu.SMTPAddr(), caFile, metricsAddr, crashTenant, crashClient, secret, emu.Authority(), opsMailbox, opsMailbox)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(revokedSecret)
	logf := relayLog(t, filepath.Join(dir, "relay.log"), "relay")
	logs := func() string { b, _ := os.ReadFile(logf.Name()); return string(b) }
	proc, _ := startServe(t, bin, cfg, addr, logf)

	// ps: the command line holds no secret (it is read from the file).
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", proc.Process.Pid))
	if err == nil {
		for _, s := range []string{revokedSecret, fixedSecret} {
			if strings.Contains(string(cmdline), s) {
				t.Errorf("the secret is on the command line: %q", cmdline)
			}
		}
	} else {
		t.Logf("no /proc: %v", err)
	}

	for i := range 3 {
		if err := send(t, addr, fmt.Sprintf("revoked-%d", i)); err != nil {
			t.Fatalf("message %d not acknowledged: %v", i, err)
		}
	}
	// Health: /readyz turns 503 naming the AADSTS code; the log says what
	// to fix; mail stays queued, nothing bounces.
	var body string
	eventually(t, "/readyz to report the revoked secret", func() bool {
		var code int
		code, body = httpGet(t, "http://"+metricsAddr+"/readyz")
		return code == http.StatusServiceUnavailable && strings.Contains(body, "AADSTS7000215")
	})
	eventually(t, "the log to name the fault", func() bool {
		return strings.Contains(logs(), "AADSTS7000215")
	})
	if len(emu.Delivered()) != 0 {
		t.Fatal("delivered with a revoked secret")
	}
	if ents, _ := os.ReadDir(filepath.Join(spool, "failed")); len(ents) > 0 {
		t.Errorf("a revoked secret failed %d messages", len(ents))
	}

	// Spool files 0600, directories 0700, while mail is queued.
	nFiles := 0
	filepath.WalkDir(spool, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // a file moved meanwhile
		}
		fi, err := d.Info()
		if err != nil {
			return nil
		}
		want := fs.FileMode(0o600)
		if d.IsDir() {
			want = 0o700
		} else {
			nFiles++
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s has mode %v, want %v", p, fi.Mode().Perm(), want)
		}
		return nil
	})
	// Three queued messages, one file each, and the lock.
	if nFiles < 4 {
		t.Errorf("only %d spool files checked", nFiles)
	}

	// The admin puts the new secret in the file and sends SIGHUP.
	write(fixedSecret)
	if err := proc.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the reload", func() bool { return strings.Contains(logs(), "configuration reloaded") })
	eventually(t, "all three delivered", func() bool { return len(emu.Delivered()) >= 3 })
	eventually(t, "/readyz to turn ready", func() bool {
		code, _ := httpGet(t, "http://"+metricsAddr+"/readyz")
		return code == http.StatusOK
	})
	got := map[string]int{}
	for _, m := range emu.Delivered() {
		for i := range 3 {
			if strings.Contains(string(m.Data), fmt.Sprintf("revoked-%d", i)) {
				got[fmt.Sprintf("revoked-%d", i)]++
			}
		}
	}
	if len(got) != 3 {
		t.Errorf("delivered %v, want each of revoked-0..2", got)
	}
	// At debug level the log names the fault but holds neither secret.
	for _, s := range []string{revokedSecret, fixedSecret} {
		if strings.Contains(logs(), s) {
			t.Errorf("the log holds a client secret")
		}
	}
}

// `oauthrelay cert new` writes the private key 0600.
func TestCertNewKeyMode(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	dir := t.TempDir()
	code, stdout, stderr := oauthrelay("cert", "new", "-out", dir)
	if code != 0 {
		t.Fatalf("cert new: %d\n%s\n%s", code, stdout, stderr)
	}
	fi, err := os.Stat(filepath.Join(dir, "oauthrelay.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("oauthrelay.pem has mode %v, want 0600", fi.Mode().Perm())
	}
}
