package main

import (
	"context"
	"fmt"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/oauthrelay/oauthrelay/internal/msemu"
	"github.com/oauthrelay/oauthrelay/internal/testkit"
)

// TestCrashAtCommitPoint kills the relay at the two edges of the one sync
// that commits a message (OAUTHRELAY_FAILPOINT, compiled in and inert
// unless set): after the message file is written but before it is synced,
// and after the sync but before the client hears 250. Either way the
// client gets no 250, so the message may be delivered or not, but at most
// once, never damaged, and the restarted relay leaves nothing behind in
// tmp/ or corrupt/. A process kill keeps the page cache, so the file is
// whole in both cases and recovery queues it: after the sync that is the
// guarantee (the message was durable), before it the luck of a kill that
// is not a power cut.
func TestCrashAtCommitPoint(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildBinary(t)
	emu, err := msemu.New(msemu.Options{MaxConnsPerMailbox: -1, MaxPerMinute: -1, MaxRecipientsPerDay: -1})
	if err != nil {
		t.Fatal(err)
	}
	if err := emu.Start(); err != nil {
		t.Fatal(err)
	}
	defer emu.Close()
	emu.Provision(crashTenant, crashClient, crashSecret, crashMailbox)
	emu.AddMailbox(msemu.Mailbox{Address: crashMailbox, FullAccess: []string{crashClient}, SendAs: []string{"noreply@contoso.com"}})
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, emu.CACertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	delivered := 0
	for _, fp := range []string{"commit-before-sync", "commit-after-sync"} {
		t.Run(fp, func(t *testing.T) {
			dir := t.TempDir()
			addr := freePort(t)
			spool := filepath.Join(dir, "spool")
			cfg := filepath.Join(dir, "config.toml")
			if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`[listen]
address = %q
hostname = "crash.test"

[spool]
dir = %q

[upstream]
address = %q
ca_file = %q

[log]
level = "info"

[[app]]
name = "contoso"
tenant_id = %q
client_id = %q
client_secret = %q
authority = %q

[[mailbox]]
address = %q
app = "contoso"
send_as = ["noreply@contoso.com"]

[[client]]
name = "loadgen"
networks = ["127.0.0.1"]
senders = ["noreply@contoso.com"]
`, addr, spool, emu.SMTPAddr(), caFile, crashTenant, crashClient, crashSecret, emu.Authority(), crashMailbox)), 0o600); err != nil {
				t.Fatal(err)
			}
			logf := relayLog(t, filepath.Join(dir, "relay.log"), "relay")

			_, gone := startServe(t, bin, cfg, addr, logf, "OAUTHRELAY_FAILPOINT="+fp)
			// The pool fills in the background: wait until it has made two
			// files, so that one is left after the message takes one.
			testkit.Eventually(t, "the relay to make its ready files in tmp/", func() bool {
				return countPooled(tmpFiles(spool)) >= 2
			})
			token := "commit-token-" + fp
			reply, err := sendOne(addr, token)
			if err == nil {
				t.Fatalf("the relay answered %q; it should have died at %s", reply, fp)
			}
			<-gone // the kill is the failpoint's, not ours
			// What the crash left in tmp/: the message, and the empty
			// files the relay keeps ready, which recovery must remove too.
			crashed := tmpFiles(spool)
			if countPooled(crashed) == 0 {
				t.Errorf("the killed relay left no ready-made files in tmp/ (%v)", crashed)
			}

			startServe(t, bin, cfg, addr, logf)
			ctx, cancel := context.WithTimeout(context.Background(), testkit.WaitLimit)
			defer cancel()
			if fp == "commit-after-sync" {
				// Durable before the kill: it must be delivered.
				msgs, err := emu.WaitDelivered(ctx, delivered+1)
				if err != nil {
					t.Fatalf("the message synced before the kill was not delivered: %v", err)
				}
				if m := msgs[len(msgs)-1]; !strings.Contains(string(m.Data), "Subject: "+token+"\r\n") {
					t.Fatalf("delivered the wrong message:\n%s", m.Data)
				}
				testkit.Eventually(t, "the recovery line", func() bool {
					b, _ := os.ReadFile(logf.Name())
					return strings.Contains(string(b), "committed_from_tmp=1")
				})
			}
			// The restarted relay takes mail again; the marker message
			// arriving means anything queued before it went first.
			marker := "commit-marker-" + fp
			if reply, err := sendOne(addr, marker); err != nil {
				t.Fatalf("after restart: %v (%s)", err, reply)
			}
			testkit.Eventually(t, "the marker's delivery", func() bool {
				for _, m := range emu.Delivered() {
					if strings.Contains(string(m.Data), "Subject: "+marker+"\r\n") {
						return true
					}
				}
				return false
			})
			testkit.Eventually(t, "an empty spool", func() bool {
				n := 0
				for _, d := range []string{"incoming", "active", "deferred"} {
					ents, _ := os.ReadDir(filepath.Join(spool, d))
					n += len(ents)
				}
				return n == 0
			})
			copies := 0
			for _, m := range emu.Delivered() {
				if strings.Contains(string(m.Data), "Subject: "+token+"\r\n") {
					copies++
					if !strings.HasSuffix(string(m.Data), "\r\n\r\n"+strings.Repeat(token+" ", 20)+"\r\n") {
						t.Errorf("delivered body is damaged:\n%s", m.Data)
					}
				}
			}
			if copies > 1 {
				t.Errorf("delivered %d copies of %s", copies, token)
			}
			delivered = len(emu.Delivered())
			for _, d := range []string{"corrupt", "failed"} {
				if ents, _ := os.ReadDir(filepath.Join(spool, d)); len(ents) > 0 {
					t.Errorf("%s/ holds %d files", d, len(ents))
				}
			}
			// Only the running relay's own empty ready-made files may be
			// there: nothing the crash left.
			var left []string
			for p, size := range tmpFiles(spool) {
				if _, old := crashed[p]; old || !strings.HasSuffix(p, ".pool") || size != 0 {
					left = append(left, p)
				}
			}
			if len(left) > 0 {
				t.Errorf("tmp/ holds %v after recovery", left)
			}
			t.Logf("%s: %d cop(ies) delivered after the kill", fp, copies)
		})
	}
}

// countPooled counts the ready-made (.pool) files among files.
func countPooled(files map[string]int64) int {
	n := 0
	for p := range files {
		if strings.HasSuffix(p, ".pool") {
			n++
		}
	}
	return n
}

// tmpFiles maps the files under spool's tmp/ to their sizes.
func tmpFiles(spool string) map[string]int64 {
	out := map[string]int64{}
	filepath.WalkDir(filepath.Join(spool, "tmp"), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if info, err := d.Info(); err == nil {
				out[p] = info.Size()
			}
		}
		return nil
	})
	return out
}

// sendOne sends one message whose subject is token, returning the reply
// to its DATA.
func sendOne(addr, token string) (string, error) {
	c, err := textproto.Dial("tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	for _, s := range []struct {
		code int
		line string
	}{{220, ""}, {250, "EHLO crash.test"}, {250, "MAIL FROM:<noreply@contoso.com>"}, {250, "RCPT TO:<customer@example.com>"}, {354, "DATA"}} {
		if s.line != "" {
			if err := c.PrintfLine("%s", s.line); err != nil {
				return "", err
			}
		}
		if _, msg, err := c.ReadResponse(s.code); err != nil {
			return msg, err
		}
	}
	w := c.DotWriter()
	fmt.Fprintf(w, "From: noreply@contoso.com\r\nSubject: %s\r\n\r\n%s\r\n", token, strings.Repeat(token+" ", 20))
	if err := w.Close(); err != nil {
		return "", err
	}
	code, msg, err := c.ReadResponse(250)
	return fmt.Sprintf("%d %s", code, msg), err
}
