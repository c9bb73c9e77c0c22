package queue

import (
	"bytes"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// benchBody is a 4 KiB message, the size bench/run.sh uses.
var benchBody = []byte("From: <noreply@contoso.com>\r\nTo: <a@example.com>\r\nSubject: bench\r\n\r\n" +
	strings.Repeat(strings.Repeat("x", 76)+"\r\n", 4096/78))

func benchSpool(b *testing.B, fileSync bool) *Spool {
	b.Helper()
	s, _, err := Open(b.TempDir(), Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), FileSync: fileSync})
	if err != nil {
		b.Fatal(err)
	}
	// Nobody reads the notifications here.
	go func() {
		for range s.Notify() {
		}
	}()
	return s
}

func benchEnqueue(b *testing.B, s *Spool) {
	w, err := s.Create()
	if err != nil {
		b.Fatal(err)
	}
	benchCommit(b, w)
}

// benchCommit writes benchBody into w and commits it.
func benchCommit(b *testing.B, w *Writer) {
	if _, err := w.Write(benchBody); err != nil {
		b.Fatal(err)
	}
	env := &Envelope{Client: "erp", Mailbox: "helpdesk@contoso.com", MailFrom: "noreply@contoso.com",
		Recipients: []*Recipient{{Address: "a@example.com"}}}
	if err := w.Commit(env); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkSpoolEnqueue is one writer committing 4 KiB messages one after
// another: every commit pays its own sync (nothing to share it with), as at
// low load. "alone" is the default spool (a lone commit fsyncs its file),
// "alone+dirsync" the same on a filesystem not known to make the new
// entry durable with the file (so its directory is fsynced too), and
// "syncfs" a lone commit syncing the whole filesystem, as before the
// per-file path. The "+log" runs add what a relay always has beside its
// spool: a process appending to a file on the same filesystem without
// syncing it (its log), whose dirty pages a syncfs writes out too.
func BenchmarkSpoolEnqueue(b *testing.B) {
	for _, mode := range []string{"alone", "alone+dirsync", "syncfs", "alone+log", "syncfs+log"} {
		b.Run(mode, func(b *testing.B) {
			s := benchSpool(b, false)
			s.alwaysShare = strings.HasPrefix(mode, "syncfs")
			if s.alwaysShare && s.fs == nil {
				b.Skip("no trustworthy syncfs here")
			}
			if mode == "alone+dirsync" {
				s.entryWithFile = false
			}
			if strings.HasSuffix(mode, "+log") {
				stop := benchLogWriter(b, filepath.Join(s.Dir(), "relay.log"))
				defer stop()
			}
			benchEnqueueSerial(b, s)
		})
	}
}

// benchLogWriter appends a 1 KiB line to path every millisecond, without
// syncing, until stop is called.
func benchLogWriter(b *testing.B, path string) (stop func()) {
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	line := append(bytes.Repeat([]byte("l"), 1023), '\n')
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				f.Write(line)
			}
		}
	}()
	return func() {
		close(done)
		<-finished
		f.Close()
	}
}

func benchEnqueueSerial(b *testing.B, s *Spool) {
	b.SetBytes(int64(len(benchBody)))
	b.ReportAllocs()
	// The median commit is what a client sees at low load; the mean
	// (ns/op) is pulled up by the odd slow sync of a shared disk.
	var took []time.Duration
	for b.Loop() {
		t0 := time.Now()
		benchEnqueue(b, s)
		took = append(took, time.Since(t0))
	}
	slices.Sort(took)
	b.ReportMetric(float64(took[len(took)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(took[len(took)*99/100].Microseconds())/1000, "p99-ms")
}

// BenchmarkSpoolEnqueueParallel is 8 (or -cpu × 4) concurrent writers, as
// when several applications send at once: concurrent commits share their
// syncs (group commit).
// "syncfs" is the default spool (a commit that finds no other syncing
// fsyncs its own file, the rest share a syncfs), "syncfs-always" sends
// every commit to the shared syncfs, as before the per-file path.
func BenchmarkSpoolEnqueueParallel(b *testing.B) {
	for _, mode := range []string{"syncfs", "syncfs-always", "filesync"} {
		b.Run(mode, func(b *testing.B) {
			s := benchSpool(b, mode == "filesync")
			s.alwaysShare = mode == "syncfs-always"
			benchEnqueueParallel(b, s)
		})
	}
}

func benchEnqueueParallel(b *testing.B, s *Spool) {
	b.SetBytes(int64(len(benchBody)))
	b.ReportAllocs()
	b.SetParallelism(4)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			benchEnqueue(b, s)
		}
	})
}

func benchEnvelope() *Envelope {
	t := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	return &Envelope{ID: NewID(t), Received: t, Client: "erp", RemoteAddr: "10.0.0.7", Mailbox: "helpdesk@contoso.com",
		MailFrom: "noreply@contoso.com", Size: 4096, NextAttempt: t.Add(time.Minute),
		Recipients: []*Recipient{{Address: "a@example.com", State: RcptPending}, {Address: "b@example.com", State: RcptDelivered, Reply: "250 2.0.0 OK", Updated: t}},
		Attempts:   []Attempt{{At: t, Duration: 1200, Result: "partial", Reply: "451 4.4.0 try later", Recipients: []string{"a@example.com"}}},
	}
}

func BenchmarkEnvelopeEncode(b *testing.B) {
	e := benchEnvelope()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Encode(e); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEnvelopeDecode(b *testing.B) {
	buf, err := Encode(benchEnvelope())
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(buf); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkNewID(b *testing.B) {
	var n atomic.Int64
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		_ = NewID(now.Add(time.Duration(n.Add(1))))
	}
}
