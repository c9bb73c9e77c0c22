package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"os"
	"os/signal"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

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
