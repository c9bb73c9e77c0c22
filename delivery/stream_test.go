package delivery

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"hash"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/testkit"
	"github.com/oauthrelay/oauthrelay/queue"
	"github.com/oauthrelay/oauthrelay/transport"
)

// A 35 MB message is streamed from the spool file: the delivery side
// allocates a small fraction of the message size in total.
//
// The emulator keeps every message in memory (it buffers DATA and copies
// it into Delivered), which would swamp the measurement, so this test
// delivers into a sink: a minimal STARTTLS + XOAUTH2 server in this file
// that hashes DATA with fixed buffers and keeps nothing. Everything else
// (token from the emulator, spool, scheduler, upstream client) is real.
func TestLargeMessageStreamed(t *testing.T) {
	if testing.Short() {
		t.Skip("35 MB")
	}
	sink := startSink(t)
	h := newHarness(t, hopts{rootCAs: sink.pool, noStart: true,
		dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, sink.addr)
		}})

	// Write the message into the spool in chunks, hashing as we go.
	const size = 35 * 1000 * 1000
	w, err := h.spool.Create()
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.New()
	out := func(b []byte) {
		w.Write(b)
		sum.Write(b)
	}
	hdr := "From: " + tSendAs + "\r\nTo: a@example.org\r\nSubject: big\r\nMessage-ID: <big@test>\r\n\r\n"
	out([]byte(hdr))
	line := []byte(strings.Repeat("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/ABCDEFGHIJKL", 1) + "\r\n")
	dotLine := append([]byte("."), line[1:]...)
	n := len(hdr)
	for i := 0; n+len(line) <= size; i++ {
		l := line
		if i%1000 == 0 {
			l = dotLine // dot-stuffing on the way out must be undone on the way in
		}
		out(l)
		n += len(l)
	}
	out(bytes.Repeat([]byte("x"), size-n-2))
	out([]byte("\r\n"))
	env := &queue.Envelope{Client: "local", Mailbox: tMailbox, MailFrom: tSendAs, Recipients: []*queue.Recipient{{Address: "a@example.org"}}}
	if err := w.Commit(env); err != nil {
		t.Fatal(err)
	}
	if env.Size != size {
		t.Fatalf("spooled %d bytes", env.Size)
	}
	want := hex.EncodeToString(sum.Sum(nil))

	// Have the token before measuring: MSAL's allocations are not ours.
	src, _ := h.tokens.Get("contoso", transport.Exchange)
	ctx, cancel := context.WithTimeout(context.Background(), testkit.WaitLimit)
	defer cancel()
	if _, err := src.Token(ctx); err != nil {
		t.Fatal(err)
	}

	var peak atomic.Uint64
	stopSampling := make(chan struct{})
	var sampled sync.WaitGroup
	runtime.GC()
	var m0 runtime.MemStats
	runtime.ReadMemStats(&m0)
	sampled.Add(1)
	go func() {
		defer sampled.Done()
		var m runtime.MemStats
		for {
			select {
			case <-stopSampling:
				return
			case <-time.After(20 * time.Millisecond):
			}
			runtime.ReadMemStats(&m)
			if m.HeapInuse > peak.Load() {
				peak.Store(m.HeapInuse)
			}
		}
	}()
	h.start()
	done := h.waitDone(1)
	var m1 runtime.MemStats
	runtime.ReadMemStats(&m1)
	close(stopSampling)
	sampled.Wait()

	got := sink.messages()
	if len(got) != 1 {
		t.Fatalf("sink got %d messages", len(got))
	}
	if got[0].size != size || got[0].sha != want {
		t.Errorf("sink got %d bytes sha %s, want %d bytes sha %s", got[0].size, got[0].sha, size, want)
	}
	if !strings.Contains(got[0].mail, "SIZE=35000000") {
		t.Errorf("MAIL FROM did not declare the size: %q", got[0].mail)
	}
	if done[0].Attempts[0].Result != "delivered" {
		t.Errorf("attempt %+v", done[0].Attempts[0])
	}
	alloc := m1.TotalAlloc - m0.TotalAlloc
	peakDelta := int64(peak.Load()) - int64(m0.HeapInuse)
	t.Logf("35 MB message: %.1f MB allocated in total while delivering, peak heap in use %.1f MB above the start (%.1f MB absolute)",
		float64(alloc)/1e6, float64(peakDelta)/1e6, float64(peak.Load())/1e6)
	if alloc > 20*1000*1000 {
		t.Errorf("delivering a 35 MB message allocated %.1f MB: the body is buffered somewhere", float64(alloc)/1e6)
	}
}

// The relay checks the upstream's SIZE before sending: a message larger
// than the advertised limit fails without being transmitted.
func TestUpstreamSizeChecked(t *testing.T) {
	sink := startSink(t)
	sink.advertise = 1000
	h := newHarness(t, hopts{rootCAs: sink.pool,
		dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, sink.addr)
		}})
	body := append(testMessage(tSendAs, "too big"), bytes.Repeat([]byte("y"), 2000)...)
	id := h.enqueue(tSendAs, []string{"a@example.org"}, body)
	envs := h.waitDone(2) // the message and its DSN (which fits)
	for _, e := range envs {
		if e.ID == id && (e.Recipients[0].State != queue.RcptFailed || !strings.Contains(e.FailReason, "552 5.3.4")) {
			t.Errorf("oversized message: %+v", e)
		}
	}
	for _, m := range sink.messages() {
		if m.size > 1000 {
			t.Errorf("a %d-byte message was sent to a server that takes 1000", m.size)
		}
	}
}

type sinkMsg struct {
	mail string
	size int
	sha  string
}

// sink is a minimal Exchange-shaped SMTP server that keeps only hashes.
type sink struct {
	addr      string
	pool      *x509.CertPool
	cert      tls.Certificate
	advertise int
	mu        sync.Mutex
	got       []sinkMsg
}

func (s *sink) messages() []sinkMsg {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]sinkMsg(nil), s.got...)
}

func startSink(t *testing.T) *sink {
	t.Helper()
	ca := testkit.NewCA(t)
	s := &sink{pool: ca.Pool(), cert: ca.Leaf(t, "127.0.0.1").TLS, advertise: 157286400}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	s.addr = ln.Addr().String()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go s.serve(c)
		}
	}()
	return s
}

func (s *sink) serve(c net.Conn) {
	defer c.Close()
	r, w := bufio.NewReaderSize(c, 64<<10), bufio.NewWriter(c)
	say := func(lines ...string) {
		for _, l := range lines {
			w.WriteString(l + "\r\n")
		}
		w.Flush()
	}
	say("220 sink ready")
	isTLS := false
	var mail string
	var sum hash.Hash
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		verb := strings.ToUpper(strings.Fields(line + " x")[0])
		switch verb {
		case "EHLO":
			last := "250 STARTTLS"
			if isTLS {
				last = "250 AUTH XOAUTH2"
			}
			say("250-sink", fmt.Sprintf("250-SIZE %d", s.advertise), "250-PIPELINING", last)
		case "STARTTLS":
			say("220 2.0.0 SMTP server ready")
			tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{s.cert}, MinVersion: tls.VersionTLS12})
			if tc.Handshake() != nil {
				return
			}
			c, isTLS = tc, true
			r, w = bufio.NewReaderSize(tc, 64<<10), bufio.NewWriter(tc)
		case "AUTH":
			say("235 2.7.0 Authentication successful")
		case "MAIL":
			mail = strings.TrimSpace(line)
			say("250 2.1.0 Sender OK")
		case "RCPT":
			say("250 2.1.5 Recipient OK")
		case "DATA":
			say("354 Start mail input; end with <CRLF>.<CRLF>")
			if sum == nil {
				sum = sha256.New()
			}
			sum.Reset()
			n := 0
			for {
				l, err := r.ReadSlice('\n')
				if err != nil {
					return
				}
				if string(l) == ".\r\n" {
					break
				}
				if l[0] == '.' {
					l = l[1:]
				}
				sum.Write(l)
				n += len(l)
			}
			s.mu.Lock()
			s.got = append(s.got, sinkMsg{mail: mail, size: n, sha: hex.EncodeToString(sum.Sum(nil))})
			s.mu.Unlock()
			say("250 2.0.0 OK <sink> [Hostname=sink]")
		case "RSET", "NOOP":
			say("250 2.0.0 OK")
		case "QUIT":
			say("221 2.0.0 Bye")
			return
		default:
			say("500 5.3.3 Unrecognized command")
		}
	}
}
