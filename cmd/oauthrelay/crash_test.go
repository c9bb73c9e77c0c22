package main

import (
	"fmt"
	"io"
	"net"
	"net/textproto"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/queue"
)

// buildBinary compiles oauthrelay into a temporary directory.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "oauthrelay")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// relayLog creates the log file a relay started by startServe writes to;
// it is closed when the test ends and shown, under label, if it failed.
// Register it before startServe so the process is killed before the log
// is read.
func relayLog(t *testing.T, path, label string) *os.File {
	t.Helper()
	logf, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(path)
			t.Logf("%s log:\n%s", label, b)
		}
	})
	return logf
}

// startServe runs `oauthrelay serve` and waits until it accepts. The
// returned channel is closed when the process has exited.
// env, if given, is added to the process's environment.
func startServe(t *testing.T, bin, cfg, addr string, logf *os.File, env ...string) (*exec.Cmd, <-chan struct{}) {
	t.Helper()
	cmd := exec.Command(bin, "serve", "-config", cfg)
	cmd.Stdout, cmd.Stderr = logf, logf
	if len(env) > 0 {
		cmd.Env = append(os.Environ(), env...)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	gone := make(chan struct{})
	go func() { exited <- cmd.Wait(); close(gone) }()
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			t.Cleanup(func() {
				cmd.Process.Kill()
				<-gone
			})
			return cmd, gone
		}
		select {
		case err := <-exited:
			b, _ := os.ReadFile(logf.Name())
			t.Fatalf("oauthrelay serve exited: %v\n%s", err, b)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

var queuedAs = regexp.MustCompile(`^250 2\.0\.0 OK: queued as (\S+)$`)

// sender sends messages over one connection until stop is closed or the
// relay goes away, reporting each acknowledged (id, token).
func sender(addr string, worker int, stop <-chan struct{}, acked func(id, token string)) error {
	c, err := textproto.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	step := func(want int, format string, args ...any) (string, error) {
		if format != "" {
			if err := c.PrintfLine(format, args...); err != nil {
				return "", err
			}
		}
		code, msg, err := c.ReadResponse(want)
		return fmt.Sprintf("%d %s", code, msg), err
	}
	if _, err := step(220, ""); err != nil {
		return err
	}
	if _, err := step(250, "EHLO crash.test"); err != nil {
		return err
	}
	for i := 0; ; i++ {
		select {
		case <-stop:
			return nil
		default:
		}
		token := fmt.Sprintf("token-w%d-m%d-%d", worker, i, time.Now().UnixNano())
		if _, err := step(250, "MAIL FROM:<noreply@contoso.com>"); err != nil {
			return err
		}
		if _, err := step(250, "RCPT TO:<customer@example.com>"); err != nil {
			return err
		}
		if _, err := step(354, "DATA"); err != nil {
			return err
		}
		w := c.DotWriter()
		fmt.Fprintf(w, "From: noreply@contoso.com\r\nSubject: %s\r\n\r\n%s\r\n", token, strings.Repeat(token+" ", 20))
		if err := w.Close(); err != nil {
			return err
		}
		reply, err := step(250, "")
		if err != nil {
			return err
		}
		m := queuedAs.FindStringSubmatch(reply)
		if m == nil {
			return fmt.Errorf("unexpected reply %q", reply)
		}
		acked(m[1], token)
	}
}

// TestCrashLosesNothingAcknowledged is the kill -9 test: eight
// concurrent senders, SIGKILL in the middle of the load, restart, and every
// message that got 250 must be in the spool, intact.
func TestCrashLosesNothingAcknowledged(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildBinary(t)
	dir := t.TempDir()
	addr := freePort(t)
	spool := filepath.Join(dir, "spool")
	cfg := filepath.Join(dir, "config.toml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`[listen]
address = %q
hostname = "crash.test"

[spool]
dir = %q

[upstream]
address = "127.0.0.1:1"   # unreachable: deliveries just defer

[log]
level = "warn"

[[app]]
name = "contoso"
tenant_id = "00000000-0000-0000-0000-000000000000"
client_id = "11111111-2222-3333-4444-555555555555"
client_secret = "not-a-real-secret"

[[mailbox]]
address = "helpdesk@contoso.com"
app = "contoso"
send_as = ["noreply@contoso.com"]

[[client]]
name = "loadgen"
networks = ["127.0.0.1"]
senders = ["noreply@contoso.com"]
`, addr, spool)), 0o600)
	logf := relayLog(t, filepath.Join(dir, "relay.log"), "relay")

	first, firstGone := startServe(t, bin, cfg, addr, logf)

	const workers, killAfter = 8, 300
	var mu sync.Mutex
	acked := map[string]string{}
	killed := make(chan struct{})
	var killOnce sync.Once
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sender(addr, w, stop, func(id, token string) {
				mu.Lock()
				acked[id] = token
				n := len(acked)
				mu.Unlock()
				if n >= killAfter {
					killOnce.Do(func() {
						// Mid-load: the other senders are between commands
						// or inside DATA.
						first.Process.Signal(syscall.SIGKILL)
						close(killed)
					})
				}
			})
		}()
	}
	<-killed
	wg.Wait() // every sender sees the connection die
	close(stop)
	mu.Lock()
	n := len(acked)
	mu.Unlock()
	if n < killAfter {
		t.Fatalf("only %d messages acknowledged", n)
	}

	// A killed process keeps its listening socket until the kernel has
	// reaped it: restarting before that would talk to the dead one.
	<-firstGone
	startServe(t, bin, cfg, addr, logf)
	sp, _, err := queue.Open(spool, queue.Options{Existing: true})
	if err != nil {
		t.Fatal(err)
	}
	for id, token := range acked {
		state := ""
		for _, st := range []string{"incoming", "active", "deferred"} {
			// One file a message: the body, then the envelope.
			if b, err := os.ReadFile(filepath.Join(spool, st, id+".eml")); err == nil {
				if !strings.Contains(string(b), `"id": "`+id+`"`) {
					t.Errorf("%s/%s.eml is damaged: %s", st, id, b)
				}
				state = st
				break
			}
		}
		if state == "" {
			t.Errorf("acknowledged message %s (%s) has no envelope after the crash", id, token)
			continue
		}
		body, err := readBody(sp, id)
		if err != nil {
			t.Errorf("acknowledged message %s has no body: %v", id, err)
			continue
		}
		if !strings.Contains(string(body), "\r\nSubject: "+token+"\r\n") || !strings.HasSuffix(string(body), "\r\n\r\n"+strings.Repeat(token+" ", 20)+"\r\n") {
			t.Errorf("body of %s is not the message sent:\n%s", id, body)
		}
	}
	if ents, _ := os.ReadDir(filepath.Join(spool, "corrupt")); len(ents) > 0 {
		t.Errorf("corrupt/ holds %d envelopes after a crash", len(ents))
	}
	// The restarted relay accepts again.
	stop2 := make(chan struct{})
	var again string
	err = sender(addr, 99, stop2, func(id, token string) {
		if again == "" {
			again = id
			close(stop2)
		}
	})
	if err != nil || again == "" {
		t.Fatalf("after restart: %v", err)
	}
	if _, err := sp.Find(again); err != nil {
		t.Errorf("message accepted after restart is not spooled: %v", err)
	}
	t.Logf("%d messages acknowledged before SIGKILL", n)
}

// readBody reads the body of a spooled message as delivery will.
func readBody(sp *queue.Spool, id string) ([]byte, error) {
	r, _, err := sp.Body(id)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}
