package testkit

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// SquidMode is what a test Squid does with CONNECT requests.
type SquidMode int

// The modes of a test Squid.
const (
	// SquidAllow tunnels every CONNECT.
	SquidAllow SquidMode = iota
	// SquidAuth wants a login (407 without one) and checks it against
	// SquidOptions.User and Password.
	SquidAuth
	// SquidDeny forbids every CONNECT (403).
	SquidDeny
)

// SquidOptions configure a test Squid.
type SquidOptions struct {
	// Hosts maps names that only Squid resolves (its hosts_file) to
	// addresses, e.g. "smtp.emulator.test" → "127.0.0.1".
	Hosts map[string]string
	Mode  SquidMode
	// User and Password are the login SquidAuth accepts.
	User, Password string
}

// Squid is Debian's squid, run in the foreground by a test on a loopback
// port with a minimal configuration the test writes: CONNECT to any port,
// no cache, logs in a temporary directory.
type Squid struct {
	t    testing.TB
	dir  string
	port string
	o    SquidOptions

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// squidBinary is the installed squid, or "".
func squidBinary() string {
	if p, err := exec.LookPath("squid"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/sbin/squid"); err == nil {
		return "/usr/sbin/squid"
	}
	return ""
}

// StartSquid starts Squid and waits until it accepts connections. It skips
// the test when squid is not installed (Debian: apt-get install squid).
func StartSquid(t testing.TB, o SquidOptions) *Squid {
	t.Helper()
	if squidBinary() == "" {
		t.Skip("squid is not installed (Debian: apt-get install squid; ./test.sh installs it as root): the proxy tests need a real Squid")
	}
	s := &Squid{t: t, dir: sharedTempDir(t, "squid"), port: freePort(t), o: o}
	s.start()
	t.Cleanup(s.stop)
	return s
}

// URL is the proxy's URL, "http://127.0.0.1:PORT", without a user.
func (s *Squid) URL() string { return "http://" + s.Addr() }

// Addr is the proxy's "127.0.0.1:PORT".
func (s *Squid) Addr() string { return net.JoinHostPort("127.0.0.1", s.port) }

// AccessLog is Squid's access log so far: a line per request, e.g.
// "... TCP_TUNNEL/200 ... CONNECT smtp.emulator.test:587 ...".
func (s *Squid) AccessLog() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "access.log"))
	return string(b)
}

// Restart stops Squid and starts it again on the same port in mode m,
// as an admin changing the proxy's rules would. Tunnels open through it
// are cut.
func (s *Squid) Restart(m SquidMode) {
	s.t.Helper()
	s.Stop()
	s.o.Mode = m
	s.start()
}

// Stop shuts Squid down and waits for it to exit. Squid writes a tunnel's
// access log line when the tunnel ends, so only after Stop does AccessLog
// show the tunnels that were still open.
func (s *Squid) Stop() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGTERM)
	<-done
}

func (s *Squid) start() {
	t := s.t
	t.Helper()
	var hosts strings.Builder
	for name, addr := range s.o.Hosts {
		fmt.Fprintf(&hosts, "%s %s\n", addr, name)
	}
	writeShared(t, filepath.Join(s.dir, "hosts"), hosts.String(), 0o644)
	rules := "http_access allow CONNECT\n"
	switch s.o.Mode {
	case SquidAuth:
		// A basic-auth helper: Squid writes "user password" lines and
		// reads OK or ERR.
		helper := filepath.Join(s.dir, "auth.sh")
		writeShared(t, helper, fmt.Sprintf("#!/bin/sh\nwhile read -r u p; do if [ \"$u\" = %q ] && [ \"$p\" = %q ]; then echo OK; else echo ERR; fi; done\n",
			s.o.User, s.o.Password), 0o755)
		rules = "auth_param basic program /bin/sh " + helper + "\nauth_param basic realm oauthrelay-test\nacl authed proxy_auth REQUIRED\nhttp_access allow CONNECT authed\n"
	case SquidDeny:
		rules = "http_access deny CONNECT\n"
	}
	conf := fmt.Sprintf(`http_port 127.0.0.1:%[1]s
pid_filename %[2]s/squid.pid
cache_log %[2]s/cache.log
access_log stdio:%[2]s/access.log
cache_store_log none
cache deny all
cache_mem 8 MB
coredump_dir %[2]s
hosts_file %[2]s/hosts
dns_nameservers 127.0.0.1
pinger_enable off
netdb_filename none
shutdown_lifetime 0 seconds
acl CONNECT method CONNECT
%[3]shttp_access deny all
`, s.port, s.dir, rules)
	path := filepath.Join(s.dir, "squid.conf")
	writeShared(t, path, conf, 0o644)
	cmd := exec.Command(squidBinary(), "-N", "-f", path)
	out := &SyncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("squid: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	s.mu.Lock()
	s.cmd, s.done = cmd, done
	s.mu.Unlock()
	if !waitListening(t, s.Addr(), done) {
		b, _ := os.ReadFile(filepath.Join(s.dir, "cache.log"))
		t.Fatalf("squid exited (%s):\n%s%s", cmd.ProcessState, out.String(), b)
	}
}

func (s *Squid) stop() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Kill()
	<-done
}

// SOCKSOptions configure a test SOCKS5 proxy.
type SOCKSOptions struct {
	// Hosts maps names that only the proxy resolves to addresses: the
	// proxy runs in a mount namespace of its own whose /etc/hosts has
	// them (unshare -m, which needs root).
	Hosts map[string]string
	// User and Password, when set, are the login the proxy requires.
	User, Password string
}

// SOCKS is Debian's microsocks, a SOCKS5 proxy, run by a test on a
// loopback port.
type SOCKS struct {
	// Addr is the proxy's "127.0.0.1:PORT".
	Addr string
}

// StartSOCKS starts microsocks and waits until it accepts connections. It
// skips the test when microsocks is not installed (Debian: apt-get install
// microsocks) or, with Hosts, when a mount namespace cannot be made.
func StartSOCKS(t testing.TB, o SOCKSOptions) *SOCKS {
	t.Helper()
	bin, err := exec.LookPath("microsocks")
	if err != nil {
		t.Skip("microsocks is not installed (Debian: apt-get install microsocks; ./test.sh installs it as root): the SOCKS5 tests need a real SOCKS5 proxy")
	}
	port := freePort(t)
	args := []string{"-i", "127.0.0.1", "-p", port}
	if o.User != "" {
		args = append(args, "-u", o.User, "-P", o.Password)
	}
	cmd := exec.Command(bin, args...)
	if len(o.Hosts) > 0 {
		unshare, err := exec.LookPath("unshare")
		if err != nil || os.Geteuid() != 0 {
			t.Skip("the SOCKS5 test resolves made-up names only inside the proxy, which needs unshare -m as root")
		}
		sys, _ := os.ReadFile("/etc/hosts")
		hosts := string(sys)
		for name, addr := range o.Hosts {
			hosts += fmt.Sprintf("\n%s %s\n", addr, name)
		}
		hf := filepath.Join(t.TempDir(), "hosts")
		writeShared(t, hf, hosts, 0o644)
		cmd = exec.Command(unshare, append([]string{"-m", "--propagation", "private", "sh", "-c",
			`mount --bind "$0" /etc/hosts && exec "$@"`, hf, bin}, args...)...)
	}
	out := &SyncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("microsocks: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-done })
	addr := net.JoinHostPort("127.0.0.1", port)
	if !waitListening(t, addr, done) {
		if len(o.Hosts) > 0 {
			t.Skipf("cannot run microsocks in a mount namespace of its own (%s): %s", cmd.ProcessState, out.String())
		}
		t.Fatalf("microsocks exited (%s): %s", cmd.ProcessState, out.String())
	}
	return &SOCKS{Addr: addr}
}

// waitListening waits until addr accepts a connection (true) or the
// server exits (false).
func waitListening(t testing.TB, addr string, exited <-chan struct{}) bool {
	t.Helper()
	up := false
	Eventually(t, addr+" to accept connections", func() bool {
		select {
		case <-exited:
			return true
		default:
		}
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return false
		}
		c.Close()
		up = true
		return true
	})
	return up
}

// freePort is a loopback port nothing listens on now.
func freePort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, port, _ := net.SplitHostPort(l.Addr().String())
	return port
}

// sharedTempDir is a directory every user may write: Squid started as
// root runs as its own user (proxy) and writes its logs there.
func sharedTempDir(t testing.TB, pattern string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", pattern)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	return dir
}

func writeShared(t testing.TB, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}
