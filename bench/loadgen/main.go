// Command loadgen is the Go half of bench/run.sh: the load and measuring
// tools that smtp-source does not provide.
//
//	loadgen latency -addr A -rate 200 -duration 10s   DATA's final dot → 250, p50/p99
//	loadgen fill    -spool DIR -n 10000 -mailboxes 20  spool messages directly (drain test)
//	loadgen idle    -addr A -n 1000                    hold idle SMTP connections open
//	loadgen big     -addr A -size 35000000             send one large message
//	loadgen measure -pid P [-tree] -- CMD ARGS...      run CMD; report wall time, CPU, peak memory of P
//	loadgen proc    -pid P [-tree]                     print CPU seconds and memory of P now
//	loadgen spoolwait -spool DIR -timeout 5m           wait until the spool has no message left
//
// Results are printed as key=value lines for the script to read. It is a
// benchmark tool, not part of the relay: loopback only, no TLS, no AUTH
// (the bench configuration trusts 127.0.0.1).
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/oauthrelay/oauthrelay/queue"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: loadgen latency|fill|idle|big|measure|proc|spoolwait [flags]")
		os.Exit(2)
	}
	var err error
	args := os.Args[2:]
	switch os.Args[1] {
	case "latency":
		err = latency(args)
	case "fill":
		err = fill(args)
	case "idle":
		err = idle(args)
	case "big":
		err = big(args)
	case "measure":
		err = measure(args)
	case "proc":
		err = procNow(args)
	case "spoolwait":
		err = spoolWait(args)
	default:
		err = fmt.Errorf("unknown subcommand %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

// message builds a message of about size payload bytes in 76-column lines,
// like smtp-source -l.
func message(from, to string, size int, seq int64) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "From: <%s>\r\nTo: <%s>\r\nSubject: bench %d\r\nMessage-ID: <bench-%d-%d@loadgen>\r\nDate: %s\r\n\r\n",
		from, to, seq, os.Getpid(), seq, time.Now().Format(time.RFC1123Z))
	line := strings.Repeat("x", 76) + "\r\n"
	for n := 0; n < size; n += len(line) {
		b.WriteString(line)
	}
	return []byte(b.String())
}

type smtpConn struct {
	c  net.Conn
	tp *textproto.Conn
	bw *bufio.Writer
}

func dial(addr string) (*smtpConn, error) {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	s := &smtpConn{c: c, tp: textproto.NewConn(c), bw: bufio.NewWriterSize(c, 64<<10)}
	if _, _, err := s.tp.ReadResponse(220); err != nil {
		c.Close()
		return nil, fmt.Errorf("banner: %w", err)
	}
	if err := s.cmd(250, "EHLO loadgen.localdomain"); err != nil {
		c.Close()
		return nil, err
	}
	return s, nil
}

func (s *smtpConn) cmd(code int, line string) error {
	if _, err := s.bw.WriteString(line + "\r\n"); err != nil {
		return err
	}
	if err := s.bw.Flush(); err != nil {
		return err
	}
	if _, msg, err := s.tp.ReadResponse(code); err != nil {
		return fmt.Errorf("%s: %w (%s)", strings.Fields(line)[0], err, msg)
	}
	return nil
}

// send runs one transaction and returns the time from the end of the final
// dot to the 250 (the time the server takes to make the message durable).
func (s *smtpConn) send(from, to string, msg []byte) (time.Duration, error) {
	if err := s.cmd(250, "MAIL FROM:<"+from+">"); err != nil {
		return 0, err
	}
	if err := s.cmd(250, "RCPT TO:<"+to+">"); err != nil {
		return 0, err
	}
	if err := s.cmd(354, "DATA"); err != nil {
		return 0, err
	}
	// The message has no line starting with a dot, so it needs no
	// dot-stuffing.
	if _, err := s.bw.Write(msg); err != nil {
		return 0, err
	}
	if _, err := s.bw.WriteString(".\r\n"); err != nil {
		return 0, err
	}
	if err := s.bw.Flush(); err != nil {
		return 0, err
	}
	start := time.Now()
	if _, m, err := s.tp.ReadResponse(250); err != nil {
		return 0, fmt.Errorf("end of DATA: %w (%s)", err, m)
	}
	return time.Since(start), nil
}

func (s *smtpConn) quit() {
	s.c.SetDeadline(time.Now().Add(5 * time.Second))
	s.cmd(221, "QUIT")
	s.c.Close()
}

// latency offers a fixed load (rate messages/s, open loop) over conns
// persistent connections and reports the distribution of dot→250 times.
func latency(args []string) error {
	fs := flag.NewFlagSet("latency", flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:2525", "SMTP server")
	rate := fs.Float64("rate", 200, "offered messages per second")
	dur := fs.Duration("duration", 10*time.Second, "how long to offer load")
	conns := fs.Int("conns", 16, "persistent connections")
	size := fs.Int("size", 4096, "payload bytes")
	from := fs.String("from", "bench@bench.example", "sender")
	to := fs.String("to", "rcpt@bench.example", "recipient")
	fs.Parse(args)

	msg := message(*from, *to, *size, 0)
	total := int(*rate * dur.Seconds())
	tickets := make(chan struct{}, total)
	var mu sync.Mutex
	lats := make([]time.Duration, 0, total)
	var errs atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for i := 0; i < *conns; i++ {
		c, err := dial(*addr)
		if err != nil {
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.quit()
			for range tickets {
				d, err := c.send(*from, *to, msg)
				if err != nil {
					errs.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					return
				}
				mu.Lock()
				lats = append(lats, d)
				mu.Unlock()
			}
		}()
	}
	start := time.Now()
	interval := time.Duration(float64(time.Second) / *rate)
	for i := 0; i < total; i++ {
		// Open loop: the schedule does not wait for replies.
		if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
			time.Sleep(d)
		}
		tickets <- struct{}{}
	}
	close(tickets)
	wg.Wait()
	el := time.Since(start)
	if len(lats) == 0 {
		return fmt.Errorf("no message accepted: %v", firstErr.Load())
	}
	sort.Slice(lats, func(i, j int) bool { return lats[i] < lats[j] })
	pct := func(p float64) float64 {
		i := int(p * float64(len(lats)-1))
		return float64(lats[i].Microseconds()) / 1000
	}
	fmt.Printf("sent=%d errors=%d elapsed=%.2f achieved=%.1f p50_ms=%.2f p99_ms=%.2f max_ms=%.2f\n",
		len(lats), errs.Load(), el.Seconds(), float64(len(lats))/el.Seconds(), pct(0.50), pct(0.99), pct(1))
	if e := firstErr.Load(); e != nil {
		fmt.Fprintln(os.Stderr, "loadgen latency: first error:", e)
	}
	return nil
}

// fill spools n messages directly (the relay's own spool code, with its
// fsyncs) spread over mailboxes mbx0..mbxN-1@<domain>.
func fill(args []string) error {
	fs := flag.NewFlagSet("fill", flag.ExitOnError)
	dir := fs.String("spool", "", "spool directory")
	n := fs.Int("n", 10000, "messages")
	mailboxes := fs.Int("mailboxes", 20, "mailboxes (mbx<i>@<domain>)")
	domain := fs.String("domain", "bench.example", "mailbox domain")
	size := fs.Int("size", 4096, "payload bytes")
	par := fs.Int("parallel", 8, "concurrent writers")
	fs.Parse(args)
	sp, _, err := queue.Open(*dir, queue.Options{})
	if err != nil {
		return err
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	var ferr atomic.Value
	start := time.Now()
	for p := 0; p < *par; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(*n) {
					return
				}
				mbx := fmt.Sprintf("mbx%d@%s", i%int64(*mailboxes), *domain)
				w, err := sp.Create()
				if err == nil {
					_, err = w.Write(message(mbx, "rcpt@dest.example", *size, i))
				}
				if err == nil {
					err = w.Commit(&queue.Envelope{Client: "bench", Mailbox: mbx, MailFrom: mbx,
						Recipients: []*queue.Recipient{{Address: "rcpt@dest.example"}}})
				}
				if err != nil {
					ferr.CompareAndSwap(nil, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if e := ferr.Load(); e != nil {
		return e.(error)
	}
	fmt.Printf("spooled=%d elapsed=%.2f\n", *n, time.Since(start).Seconds())
	return nil
}

// idle opens n connections, says EHLO on each and holds them until stdin
// closes or a signal comes.
func idle(args []string) error {
	fs := flag.NewFlagSet("idle", flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:2525", "SMTP server")
	n := fs.Int("n", 1000, "connections")
	hold := fs.Duration("hold", 30*time.Second, "longest time to hold them")
	fs.Parse(args)
	conns := make([]*smtpConn, 0, *n)
	defer func() {
		for _, c := range conns {
			c.c.Close()
		}
	}()
	for i := 0; i < *n; i++ {
		c, err := dial(*addr)
		if err != nil {
			return fmt.Errorf("connection %d: %w", i+1, err)
		}
		conns = append(conns, c)
	}
	fmt.Printf("open=%d\n", len(conns))
	os.Stdout.Sync()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	eof := make(chan struct{})
	go func() { io.Copy(io.Discard, os.Stdin); close(eof) }()
	select {
	case <-sig:
	case <-eof:
	case <-time.After(*hold):
	}
	return nil
}

// big sends one message of size bytes.
func big(args []string) error {
	fs := flag.NewFlagSet("big", flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:2525", "SMTP server")
	size := fs.Int("size", 35_000_000, "payload bytes")
	from := fs.String("from", "bench@bench.example", "sender")
	to := fs.String("to", "rcpt@bench.example", "recipient")
	fs.Parse(args)
	c, err := dial(*addr)
	if err != nil {
		return err
	}
	defer c.quit()
	start := time.Now()
	d, err := c.send(*from, *to, message(*from, *to, *size, 1))
	if err != nil {
		return err
	}
	fmt.Printf("sent_bytes=%d elapsed=%.2f dot_to_250_ms=%.1f\n", *size, time.Since(start).Seconds(), float64(d.Microseconds())/1000)
	return nil
}

// --- process accounting --------------------------------------------------

var clkTck = 100.0 // USER_HZ on every Linux we run on

// procStat returns utime+stime and cutime+cstime (seconds) and the parent
// pid of pid.
func procStat(pid int) (self, children float64, ppid int, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, 0, err
	}
	// The command name may contain spaces: fields start after the last ')'.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	num := func(i int) float64 { v, _ := strconv.ParseFloat(f[i], 64); return v }
	// f[0] is field 3 (state); utime is field 14 → f[11].
	ppid, _ = strconv.Atoi(f[1])
	return (num(11) + num(12)) / clkTck, (num(13) + num(14)) / clkTck, ppid, nil
}

// statusKB reads a "Key:   123 kB" line of /proc/pid/status or smaps_rollup.
func statusKB(file, key string) int64 {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, key+":"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				v, _ := strconv.ParseInt(f[0], 10, 64)
				return v
			}
		}
	}
	return 0
}

// children lists the direct children of pid.
func children(pid int) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if _, _, pp, err := procStat(p); err == nil && pp == pid {
			out = append(out, p)
		}
	}
	return out
}

// cpuTotal is the CPU seconds used so far by pid, and with tree by all its
// children too: the live ones' own time plus what the ones that exited
// left in pid's cutime/cstime (Postfix's master reaps its daemons).
func cpuTotal(pid int, tree bool) float64 {
	self, ch, _, err := procStat(pid)
	if err != nil {
		return 0
	}
	if !tree {
		return self
	}
	t := self + ch
	for _, c := range children(pid) {
		s, cc, _, err := procStat(c)
		if err == nil {
			t += s + cc
		}
	}
	return t
}

// memKB is the memory of pid: its VmHWM (peak RSS) alone, or with tree the
// sum of the proportional set sizes (Pss: shared pages divided among the
// processes that share them) of pid and its children right now.
func memKB(pid int, tree bool) int64 {
	if !tree {
		return statusKB(fmt.Sprintf("/proc/%d/status", pid), "VmHWM")
	}
	t := statusKB(fmt.Sprintf("/proc/%d/smaps_rollup", pid), "Pss")
	for _, c := range children(pid) {
		t += statusKB(fmt.Sprintf("/proc/%d/smaps_rollup", c), "Pss")
	}
	return t
}

func procFlags(name string, args []string) (*flag.FlagSet, *int, *bool) {
	fs := flag.NewFlagSet(name, flag.ExitOnError)
	pid := fs.Int("pid", 0, "process to account")
	tree := fs.Bool("tree", false, "include its children (Postfix's master and daemons); memory is then sampled summed Pss")
	fs.Parse(args)
	return fs, pid, tree
}

// measure runs the command after "--" and reports its wall time and the
// CPU seconds and peak memory of the accounted process meanwhile.
func measure(args []string) error {
	fs, pid, tree := procFlags("measure", args)
	cmdArgs := fs.Args()
	if len(cmdArgs) == 0 {
		return errors.New("measure: no command")
	}
	cpu0 := cpuTotal(*pid, *tree)
	var peak atomic.Int64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			if m := memKB(*pid, *tree); m > peak.Load() {
				peak.Store(m)
			}
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()
	cmd := exec.Command(cmdArgs[0], cmdArgs[1:]...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	start := time.Now()
	err := cmd.Run()
	el := time.Since(start)
	close(stop)
	<-sampled
	if m := memKB(*pid, *tree); m > peak.Load() {
		peak.Store(m)
	}
	cpu := cpuTotal(*pid, *tree) - cpu0
	if err != nil {
		return fmt.Errorf("%s: %w", cmdArgs[0], err)
	}
	fmt.Printf("elapsed=%.3f cpu=%.2f peak_kb=%d\n", el.Seconds(), cpu, peak.Load())
	return nil
}

func procNow(args []string) error {
	_, pid, tree := procFlags("proc", args)
	fmt.Printf("cpu=%.2f mem_kb=%d rss_kb=%d\n", cpuTotal(*pid, *tree), memKB(*pid, *tree),
		statusKB(fmt.Sprintf("/proc/%d/status", *pid), "VmRSS"))
	return nil
}

// spoolWait waits until messages/ in the spool is empty: everything was
// delivered (or failed, which the script checks separately).
func spoolWait(args []string) error {
	fs := flag.NewFlagSet("spoolwait", flag.ExitOnError)
	dir := fs.String("spool", "", "spool directory")
	timeout := fs.Duration("timeout", 5*time.Minute, "give up after")
	fs.Parse(args)
	start := time.Now()
	for {
		ents, err := os.ReadDir(filepath.Join(*dir, "incoming"))
		if err != nil {
			return err
		}
		left := len(ents)
		for _, st := range []string{"active", "deferred"} {
			e, _ := os.ReadDir(filepath.Join(*dir, st))
			left += len(e)
		}
		if left == 0 {
			fmt.Printf("elapsed=%.3f\n", time.Since(start).Seconds())
			return nil
		}
		if time.Since(start) > *timeout {
			return fmt.Errorf("spool still has %d messages after %s", left, *timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
