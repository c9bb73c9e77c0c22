package graph

import (
	"bufio"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"mime/multipart"
	"net/textproto"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/metrics"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/config"
	"github.com/oauthrelay/oauthrelay/internal/msemu"
	"github.com/oauthrelay/oauthrelay/oauth"
	"github.com/oauthrelay/oauthrelay/transport"
)

// BenchmarkGraphSendSmall is one sendMail per op through one Transport
// (one kept-alive connection), against the emulator.
func BenchmarkGraphSendSmall(b *testing.B) {
	r := newRig(b)
	path := filepath.Join(b.TempDir(), "small.eml")
	if err := os.WriteFile(path, []byte(small), 0o600); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(small)))
	b.ReportAllocs()
	for b.Loop() {
		if res := r.deliverFile(b, path, "alice@fabrikam.example", "bob@fabrikam.example"); res.Msg != nil {
			b.Fatal(res.Msg.Reply)
		}
	}
}

// BenchmarkGraphSendLarge is a 13.5 MB message per op: a draft, an
// upload session of four chunks, and send.
func BenchmarkGraphSendLarge(b *testing.B) {
	r := newRig(b)
	path := filepath.Join(b.TempDir(), "big.eml")
	bigMessage(b, path, 10_000_000)
	fi, _ := os.Stat(path)
	b.SetBytes(fi.Size())
	b.ReportAllocs()
	for b.Loop() {
		if res := r.deliverFile(b, path, "alice@fabrikam.example"); res.Msg != nil {
			b.Fatal(res.Msg.Reply)
		}
	}
}

// emuChild is how the emulator process tells the measuring one where it is.
type emuChild struct {
	Authority, Graph string
	CA               []byte
}

// TestEmulatorProcess is the emulator as a child process of
// TestPeakMemory100MB, so that what it keeps of a 100 MB message does
// not count against the transport. It serves until stdin closes.
func TestEmulatorProcess(t *testing.T) {
	if os.Getenv("GRAPH_EMULATOR_CHILD") != "1" {
		t.Skip("runs only as TestPeakMemory100MB's child")
	}
	emu, err := msemu.New(msemu.Options{MaxMessageSize: -1})
	if err != nil {
		t.Fatal(err)
	}
	if err := emu.Start(); err != nil {
		t.Fatal(err)
	}
	defer emu.Close()
	emu.ProvisionGraph(tenantID, clientID, secret, mbx)
	if err := json.NewEncoder(os.Stdout).Encode(emuChild{emu.Authority(), emu.GraphURL(), emu.CACertPEM()}); err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, os.Stdin)
}

// TestPeakMemory100MB measures the transport's peak heap and RSS while it
// delivers a 100 MB message (a 74 MB attachment, base64) through the
// upload path; the emulator runs in another process. Run with
//
//	GRAPH_MEMORY=1 go test -run TestPeakMemory100MB -v ./transport/graph/
func TestPeakMemory100MB(t *testing.T) {
	if os.Getenv("GRAPH_MEMORY") != "1" {
		t.Skip("a measurement: set GRAPH_MEMORY=1")
	}
	child := exec.Command(os.Args[0], "-test.run=^TestEmulatorProcess$")
	child.Env = append(os.Environ(), "GRAPH_EMULATOR_CHILD=1")
	child.Stderr = os.Stderr
	stdin, _ := child.StdinPipe()
	stdout, _ := child.StdoutPipe()
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { stdin.Close(); child.Wait() }()
	var where emuChild
	if err := json.NewDecoder(bufio.NewReader(stdout)).Decode(&where); err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(where.CA)

	path := filepath.Join(t.TempDir(), "100mb.eml")
	writeHuge(t, path, 74<<20)
	fi, _ := os.Stat(path)

	src, err := oauth.NewSource(oauth.AppSettings{Name: "contoso", TenantID: tenantID, ClientID: clientID, ClientSecret: secret,
		Authority: where.Authority, Scope: where.Graph + "/.default", RootCAs: roots}, oauth.Options{})
	if err != nil {
		t.Fatal(err)
	}
	tokens := func(string, transport.Resource) (transport.TokenSource, error) { return src, nil }
	app := &config.App{Name: "contoso", TenantID: tenantID, ClientID: clientID, GraphURL: where.Graph}
	r := &rig{tr: newTransport(transport.Deps{Tokens: tokens, RootCAs: roots}), app: app, src: src,
		mb: &config.Mailbox{Address: mbx, App: "contoso", AppRef: app}}

	var peak atomic.Uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
		for {
			metrics.Read(s)
			if v := s[0].Value.Uint64(); v > peak.Load() {
				peak.Store(v)
			}
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	res := r.deliverFile(t, path, "alice@fabrikam.example")
	close(stop)
	<-sampled
	if res.Msg != nil {
		t.Fatal(res.Msg.Reply)
	}
	hwm := vmHWM(t)
	t.Logf("message %.1f MB: peak live heap %.1f MB, peak RSS of the test process %.1f MB", float64(fi.Size())/1e6, float64(peak.Load())/1e6, float64(hwm)/1e6)
	if hwm > 64<<20 {
		t.Fatalf("peak RSS %d bytes is over 64 MiB", hwm)
	}
}

// writeHuge writes a message with an attachment of n pseudo-random bytes
// without holding it in memory.
func writeHuge(t *testing.T, path string, n int64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w := bufio.NewWriter(f)
	mw := multipart.NewWriter(w)
	fmt.Fprintf(w, "From: helpdesk@contoso.com\r\nTo: alice@fabrikam.example\r\nSubject: 100 MB\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=%s\r\n\r\n", mw.Boundary())
	p, _ := mw.CreatePart(textproto.MIMEHeader{"Content-Type": {"text/plain"}})
	io.WriteString(p, "See attachment.\r\n")
	p, _ = mw.CreatePart(textproto.MIMEHeader{"Content-Type": {"application/octet-stream"}, "Content-Transfer-Encoding": {"base64"},
		"Content-Disposition": {`attachment; filename="data.bin"`}})
	enc := base64.NewEncoder(base64.StdEncoding, &lineBreaker{w: p})
	if _, err := io.CopyN(enc, rand.NewChaCha8([32]byte{}), n); err != nil {
		t.Fatal(err)
	}
	enc.Close()
	mw.Close()
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
}

// lineBreaker cuts base64 into 76-column lines.
type lineBreaker struct {
	w   io.Writer
	col int
}

func (l *lineBreaker) Write(b []byte) (int, error) {
	for n := 0; n < len(b); {
		k := min(76-l.col, len(b)-n)
		if _, err := l.w.Write(b[n : n+k]); err != nil {
			return n, err
		}
		n, l.col = n+k, l.col+k
		if l.col == 76 {
			if _, err := io.WriteString(l.w, "\r\n"); err != nil {
				return n, err
			}
			l.col = 0
		}
	}
	return len(b), nil
}

// vmHWM is this process's peak resident set (Linux).
func vmHWM(t *testing.T) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skip("no /proc/self/status")
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			var kb int64
			fmt.Sscanf(strings.TrimSpace(v), "%d kB", &kb)
			return kb << 10
		}
	}
	return 0
}
