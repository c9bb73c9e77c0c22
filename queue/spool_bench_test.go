package queue

import (
	"io"
	"log/slog"
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
// another: every commit pays its own fsyncs (nothing to share them with).
func BenchmarkSpoolEnqueue(b *testing.B) {
	for _, mode := range []string{"syncfs", "filesync"} {
		b.Run(mode, func(b *testing.B) { benchEnqueueSerial(b, mode == "filesync") })
	}
}

func benchEnqueueSerial(b *testing.B, fileSync bool) {
	s := benchSpool(b, fileSync)
	b.SetBytes(int64(len(benchBody)))
	b.ReportAllocs()
	for b.Loop() {
		benchEnqueue(b, s)
	}
}

// BenchmarkSpoolEnqueueParallel is 8 (or -cpu × 4) concurrent writers, as
// when several applications send at once: concurrent commits share their
// syncs (group commit).
func BenchmarkSpoolEnqueueParallel(b *testing.B) {
	for _, mode := range []string{"syncfs", "filesync"} {
		b.Run(mode, func(b *testing.B) { benchEnqueueParallel(b, mode == "filesync") })
	}
}

func benchEnqueueParallel(b *testing.B, fileSync bool) {
	s := benchSpool(b, fileSync)
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
