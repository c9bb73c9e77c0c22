package main

import (
	"flag"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/oauthrelay/oauthrelay/queue"
)

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

// spoolWait waits until no message awaits delivery (incoming, active or
// deferred): everything was delivered (or failed, which the script checks
// separately).
func spoolWait(args []string) error {
	fs := flag.NewFlagSet("spoolwait", flag.ExitOnError)
	dir := fs.String("spool", "", "spool directory")
	timeout := fs.Duration("timeout", 5*time.Minute, "give up after")
	fs.Parse(args)
	// serve owns the spool: open it as the queue commands do, without
	// recovery and without creating anything.
	sp, _, err := queue.Open(*dir, queue.Options{Existing: true})
	if err != nil {
		return err
	}
	start := time.Now()
	for {
		left := 0
		for _, st := range []queue.State{queue.Incoming, queue.Active, queue.Deferred} {
			ids, err := sp.IDs(st)
			if err != nil {
				return err
			}
			left += len(ids)
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
