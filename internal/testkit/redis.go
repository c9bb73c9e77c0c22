package testkit

import (
	"net"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"testing"
)

// Redis is Debian's redis-server, run by a test on a loopback port with
// no persistence, so that relays can share budgets through it.
type Redis struct {
	t        testing.TB
	port     string
	password string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

func redisBinary() string {
	if p, err := exec.LookPath("redis-server"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/bin/redis-server"); err == nil {
		return "/usr/bin/redis-server"
	}
	return ""
}

// StartRedis starts redis-server and waits until it accepts connections;
// with a password it requires AUTH. It skips the test when redis-server
// is not installed (Debian: apt-get install redis-server).
func StartRedis(t testing.TB, password string) *Redis {
	t.Helper()
	if redisBinary() == "" {
		t.Skip("redis-server is not installed (Debian: apt-get install redis-server; ./test.sh installs it as root): the cluster tests need a real Redis")
	}
	r := &Redis{t: t, port: freePort(t), password: password}
	r.Start()
	t.Cleanup(r.Stop)
	return r
}

// Addr is "127.0.0.1:PORT".
func (r *Redis) Addr() string { return net.JoinHostPort("127.0.0.1", r.port) }

// URL is "redis://127.0.0.1:PORT/0".
func (r *Redis) URL() string { return "redis://" + r.Addr() + "/0" }

// Start starts (or restarts) the server on its port.
func (r *Redis) Start() {
	t := r.t
	t.Helper()
	args := []string{"--port", r.port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", t.TempDir()}
	if r.password != "" {
		args = append(args, "--requirepass", r.password)
	}
	cmd := exec.Command(redisBinary(), args...)
	out := &SyncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("redis-server: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	r.mu.Lock()
	r.cmd, r.done = cmd, done
	r.mu.Unlock()
	if !waitListening(t, r.Addr(), done) {
		t.Fatalf("redis-server exited (%s):\n%s", cmd.ProcessState, out.String())
	}
}

// Stop stops the server and waits for it to exit; what it held is lost.
func (r *Redis) Stop() {
	r.mu.Lock()
	cmd, done := r.cmd, r.done
	r.cmd = nil
	r.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGKILL)
	<-done
}
