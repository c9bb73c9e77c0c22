package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/redis/go-redis/v9"

	"github.com/oauthrelay/oauthrelay/internal/msemu"
	"github.com/oauthrelay/oauthrelay/internal/testkit"
)

// killLeaseTTL is the lease TTL `serve` uses (internal/cluster's default).
const killLeaseTTL = 5 * time.Second

// kill -9 of a relay that holds all of a mailbox's connection slots: the
// slots come free within the lease TTL, the other relay (sharing one
// Redis, with its own spool) then delivers, and the killed relay's spooled
// mail is delivered after it restarts.
func TestKilledRelayFreesItsSlots(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	rd := testkit.StartRedis(t, "")
	bin := buildBinary(t)
	emu, err := msemu.New(msemu.Options{MaxConnsPerMailbox: -1, MaxPerMinute: -1})
	if err != nil {
		t.Fatal(err)
	}
	if err := emu.Start(); err != nil {
		t.Fatal(err)
	}
	defer emu.Close()
	const mbx = "shared@contoso.com"
	emu.Provision(crashTenant, crashClient, crashSecret, mbx)

	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, emu.CACertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	relay := func(node string) (cfg, addr string, logf *os.File) {
		addr = freePort(t)
		cfg = filepath.Join(dir, node+".toml")
		src := fmt.Sprintf(`[listen]
address = %q
hostname = %q
[spool]
dir = %q
min_retry_delay = "200ms"
max_retry_delay = "1s"
[upstream]
address = %q
ca_file = %q
[log]
level = "debug"
[cluster]
redis = %q
node = %q
[[app]]
name = "contoso"
tenant_id = %q
client_id = %q
client_secret = %q
authority = %q
[[mailbox]]
address = %q
app = "contoso"
max_connections = 3
max_per_minute = 100000
[[client]]
name = "app"
networks = ["127.0.0.1"]
senders = ["*"]
`, addr, node+".test", filepath.Join(dir, node+"-spool"), emu.SMTPAddr(), caFile, rd.URL(), node,
			crashTenant, crashClient, crashSecret, emu.Authority(), mbx)
		if err := os.WriteFile(cfg, []byte(src), 0o600); err != nil {
			t.Fatal(err)
		}
		return cfg, addr, relayLog(t, filepath.Join(dir, node+".log"), node)
	}
	submit := func(addr string, n int, tag string) {
		t.Helper()
		c, err := smtp.Dial(addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		for i := range n {
			msg := fmt.Sprintf("From: <%s>\r\nSubject: %s %d\r\n\r\nbody\r\n", mbx, tag, i)
			if err := c.SendMail(mbx, []string{"to@example.com"}, strings.NewReader(msg)); err != nil {
				t.Fatalf("submit %s %d: %v", tag, i, err)
			}
		}
	}
	rc := redis.NewClient(&redis.Options{Addr: rd.Addr()})
	defer rc.Close()
	leasesOf := func(node string) int {
		ms, _ := rc.ZRange(context.Background(), "oauthrelay:lease:mailbox:"+mbx, 0, -1).Result()
		n := 0
		for _, m := range ms {
			if strings.HasPrefix(m, node+":") {
				n++
			}
		}
		return n
	}

	// relay-a takes all three slots and is stuck in them (its token
	// request hangs), with mail in its spool.
	emu.SetTokenDelay(time.Hour)
	cfgA, addrA, logA := relay("relay-a")
	procA, goneA := startServe(t, bin, cfgA, addrA, logA)
	submit(addrA, 6, "a")
	testkit.Eventually(t, "relay-a to hold the mailbox's 3 leases", func() bool { return leasesOf("relay-a") == 3 })

	procA.Process.Kill() // kill -9
	<-goneA
	killed := time.Now()
	emu.SetTokenDelay(0)
	cfgB, addrB, logB := relay("relay-b")
	startServe(t, bin, cfgB, addrB, logB)
	submit(addrB, 6, "b")
	testkit.Eventually(t, "the killed relay's leases to lapse", func() bool { return leasesOf("relay-a") == 0 })
	if d := time.Since(killed); d > killLeaseTTL+2*time.Second {
		t.Errorf("the killed relay's slots came free after %v; the lease TTL is %v", d, killLeaseTTL)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := emu.WaitDelivered(ctx, 6); err != nil {
		t.Fatalf("the survivor did not deliver: %v", err)
	}
	for _, m := range emu.Delivered() {
		if !strings.Contains(string(m.Data), "Subject: b ") {
			t.Fatalf("delivered before relay-a restarted: %q", m.Data[:40])
		}
		// The dead relay's slots were not handed out while its leases
		// lived (its last renewal was at most a third of the TTL before
		// the kill).
		if m.At.Before(killed.Add(killLeaseTTL * 2 / 3)) {
			t.Errorf("relay-b delivered %v after the kill, while the dead relay's leases still held every slot", m.At.Sub(killed))
		}
	}
	// relay-a comes back on its spool and delivers what it had.
	startServe(t, bin, cfgA, addrA, logA)
	if _, err := emu.WaitDelivered(ctx, 12); err != nil {
		t.Fatalf("relay-a's spooled mail after its restart: %v", err)
	}
	if peak := emu.Stats().MaxConcurrentByMailbox[mbx]; peak > 3 {
		t.Errorf("the emulator saw %d connections at once, want at most 3", peak)
	}
}
