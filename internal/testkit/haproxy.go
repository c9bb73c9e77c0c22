package testkit

import (
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// HAProxyFrontend is one TCP frontend of a test HAProxy: it balances
// round robin over Servers ("host:port"), each with ServerOptions
// (e.g. "send-proxy-v2 check").
type HAProxyFrontend struct {
	Servers       []string
	ServerOptions string
}

// HAProxy is a running Debian haproxy.
type HAProxy struct {
	// Addrs are the frontends' addresses, in the order given.
	Addrs []string
	// Config is the configuration it runs with.
	Config string
	out    *SyncBuffer
}

// Output is what haproxy wrote (its warnings and errors).
func (h *HAProxy) Output() string { return h.out.String() }

// StartHAProxy starts haproxy in the foreground on loopback ephemeral
// ports with one frontend per f; it is stopped when the test ends. The
// test is skipped when haproxy is not installed.
func StartHAProxy(t testing.TB, f ...HAProxyFrontend) *HAProxy {
	t.Helper()
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		if bin, err = exec.LookPath("/usr/sbin/haproxy"); err != nil {
			t.Skip("haproxy is not installed (apt-get install haproxy); test.sh installs it when run as root")
		}
	}
	h := &HAProxy{out: &SyncBuffer{}}
	var b strings.Builder
	// One thread, so that round robin is the order of connections.
	b.WriteString("global\n  nbthread 1\n\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n")
	for i, fe := range f {
		addr := net.JoinHostPort("127.0.0.1", freePort(t))
		h.Addrs = append(h.Addrs, addr)
		fmt.Fprintf(&b, "\nfrontend fe%d\n  bind %s\n  default_backend be%d\n\nbackend be%d\n  balance roundrobin\n", i, addr, i, i)
		for j, s := range fe.Servers {
			fmt.Fprintf(&b, "  server s%d %s %s\n", j, s, fe.ServerOptions)
		}
	}
	h.Config = b.String()
	cfg := filepath.Join(t.TempDir(), "haproxy.cfg")
	writeShared(t, cfg, h.Config, 0o644)
	cmd := exec.Command(bin, "-db", "-f", cfg)
	cmd.Stdout, cmd.Stderr = h.out, h.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-exited })
	for _, a := range h.Addrs {
		if !waitListening(t, a, exited) {
			t.Fatalf("haproxy exited (%s):\n%s\nconfiguration:\n%s", cmd.ProcessState, h.Output(), h.Config)
		}
	}
	return h
}
