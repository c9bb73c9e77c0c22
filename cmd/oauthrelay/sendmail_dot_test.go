package main

import (
	"bufio"
	"io"
	"strings"
	"testing"
)

// TestDotStopLongLineEndingInDot: the tail of a line longer than the
// reader's buffer is not a line of its own, so a "." there does not end
// the message (it did: the rest of the message was silently dropped).
func TestDotStopLongLineEndingInDot(t *testing.T) {
	long := strings.Repeat("a", 4096) + ".\n"
	in := long + "after\n.\nnot sent\n"
	b, err := io.ReadAll(&dotStop{r: bufio.NewReader(strings.NewReader(in))})
	if err != nil {
		t.Fatal(err)
	}
	if want := long + "after\n"; string(b) != want {
		t.Fatalf("read %d bytes ending %q, want %d bytes ending %q", len(b), tail(string(b)), len(want), tail(want))
	}
}

func tail(s string) string { return s[max(0, len(s)-12):] }
