package relay

import (
	"bytes"
	"io"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// BenchmarkMessageCopy is the listener's work on one 4 KiB message between
// DATA and the spool: read the header, check From: against the sender
// policy, add Received: and Message-ID:, copy the body.
func BenchmarkMessageCopy(b *testing.B) {
	cfg := policyConfig(b)
	cl := cfg.Client("erp")
	msg := []byte("From: ERP <noreply@contoso.com>\r\nTo: <a@example.com>\r\nSubject: invoice 4711\r\nDate: Mon, 2 Jan 2026 03:04:05 +0000\r\n\r\n" +
		strings.Repeat(strings.Repeat("x", 76)+"\r\n", 4096/78))
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		m := &message{client: cl, cfg: cfg, id: "20260102T030405.000001-abcdef", now: now, helo: "erp.local",
			ip: netip.MustParseAddr("127.0.0.1"), hostname: "relay.bench", rcpts: []string{"a@example.com"}, from: "noreply@contoso.com"}
		if err := m.copy(io.Discard, bytes.NewReader(msg)); err != nil {
			b.Fatal(err)
		}
	}
}
