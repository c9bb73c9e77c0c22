package relay

import (
	"bufio"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/oauthrelay/oauthrelay/internal/testkit"
)

// padHeader is n bytes of header lines and no blank line.
func padHeader(n int) string {
	line := "X-Pad: " + strings.Repeat("p", 91) + "\r\n" // 100 bytes
	return strings.Repeat(line, n/len(line))
}

// TestHeaderIsStreamed checks that a big header is not held in memory:
// reading a message with a 990 KB header allocates a small fraction
// of it. (It was read whole into a buffer, then parsed: 900 connections
// doing so took the relay to 1.37 GB.)
func TestHeaderIsStreamed(t *testing.T) {
	cfg := policyConfig(t)
	m := &message{client: cfg.Client("erp"), cfg: cfg, from: "noreply@contoso.com", maxSize: 35e6, id: "x", hostname: "relay.test"}
	msg := "From: <noreply@contoso.com>\r\n" + padHeader(990*1000) + "\r\nbody\r\n"
	m.copy(io.Discard, strings.NewReader(msg)) // warms the buffer pool
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	if err := m.copy(io.Discard, strings.NewReader(msg)); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	// TotalAlloc counts the whole process (other tests' goroutines too),
	// so the bound has slack; a header held whole would cost ≥ 990 KB.
	if n := after.TotalAlloc - before.TotalAlloc; n > 256<<10 {
		t.Errorf("reading a 990 KB header allocated %d KB", n>>10)
	}
}

// TestHeaderLimits: a header over 1 MB, or sender fields over 64 KB, are
// refused with 552 5.3.4 and a sentence.
func TestHeaderLimits(t *testing.T) {
	r := startRelay(t, "", nil)
	r.setPeer("192.0.2.60")
	c := r.dial()
	c.ehlo()
	c.cmd("250", "MAIL FROM:<noreply@contoso.com>")
	c.cmd("250", "RCPT TO:<a@example.com>")
	c.check("end of data", c.Data("From: <noreply@contoso.com>\r\n"+padHeader(1000*1000+100)+"\r\nbody\r\n"), "552 5.3.4 Message header too big (over 1 MB)")
	c.cmd("250", "MAIL FROM:<noreply@contoso.com>")
	c.cmd("250", "RCPT TO:<a@example.com>")
	long := "From: <noreply@contoso.com>" + strings.Repeat(",\r\n <noreply@contoso.com>", 3000) + "\r\n\r\nbody\r\n"
	c.check("end of data", c.Data(long), "552 5.3.4 The message's From:, Sender: and Resent- fields are too long together (over 64 KB)")
	r.assertEmpty()
}

// BenchmarkHeaderMemory measures the relay's memory while many trusted
// connections are each in the middle of sending a ~1 MB header without
// the blank line that ends it (the relay was at 1.37 GB with 900 such
// connections). It reports the Go heap in use and the process's RSS
// (client and relay share the process; the clients write one shared
// buffer). Run:
//
//	go test -run='^$' -bench=HeaderMemory -benchtime=1x ./relay
//
// OAUTHRELAY_BENCH_CONNS sets the number of connections (default 900).
func BenchmarkHeaderMemory(b *testing.B) {
	conns := 900
	if v, err := strconv.Atoi(os.Getenv("OAUTHRELAY_BENCH_CONNS")); err == nil {
		conns = v
	}
	r := startRelay(b, "max_connections = 2000\nmax_connections_per_trusted_ip = 2000\nidle_timeout = \"5m\"\ndata_timeout = \"10m\"", nil)
	r.setPeer("192.0.2.60")
	header := []byte("From: <noreply@contoso.com>\r\n" + padHeader(990*1000))
	for range b.N {
		var wg sync.WaitGroup
		var mu sync.Mutex
		var open []*testkit.SMTPClient
		for range conns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c := testkit.DialSMTP(b, r.addr)
				bw := bufio.NewWriter(c.Conn())
				bw.WriteString("EHLO mem.test\r\nMAIL FROM:<noreply@contoso.com>\r\nRCPT TO:<a@example.com>\r\nDATA\r\n")
				bw.Flush()
				for _, want := range []string{"250", "250", "250", "354"} {
					if got := c.Read(); !strings.HasPrefix(got[strings.LastIndexByte(got, '\n')+1:], want) {
						b.Errorf("got %q, want %s", got, want)
						return
					}
				}
				c.Conn().Write(header)
				mu.Lock()
				open = append(open, c)
				mu.Unlock()
			}()
		}
		wg.Wait()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		b.ReportMetric(float64(ms.HeapInuse)/(1<<20), "heap-MB")
		b.ReportMetric(float64(rssKB())/1024, "RSS-MB")
		b.ReportMetric(float64(len(open)), "conns")
		for _, c := range open {
			c.Conn().Close()
		}
		testkit.Eventually(b, "the sessions to end", func() bool { return r.srv.conns.Load() == 0 })
	}
}

// rssKB is this process's resident set size in KB, from /proc (0
// elsewhere).
func rssKB() int {
	b, _ := os.ReadFile("/proc/self/status")
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return n
		}
	}
	return 0
}
