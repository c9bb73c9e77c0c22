package relay

import (
	"bufio"
	"bytes"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/emersion/go-smtp"
)

func TestDotReader(t *testing.T) {
	for _, tt := range []struct{ in, want, rest string }{
		{"a\r\n.\r\n", "a\r\n", ""},
		{".\r\n", "", ""},
		{"..a\r\n.\r\nNOOP\r\n", ".a\r\n", "NOOP\r\n"},
		// go-smtp drops ".\r" here and then loses track of line starts,
		// so the end of the data below was not seen.
		{"a\r\n.\rb\r\n.\r\nNOOP\r\n", "a\r\n\rb\r\n", "NOOP\r\n"},
		{"a\r\n.\r\r\n.\r\n", "a\r\n\r\r\n", ""},
		{"a\r\r\n.\r\n", "a\r\r\n", ""},
		// Only CRLF ends a line: these are data.
		{"a\n.\nb\r.\r\n.\r\n", "a\n.\nb\r.\r\n", ""},
		{"a\r\n.x\r\n.\r\n", "a\r\nx\r\n", ""},
	} {
		state := 0
		br := bufio.NewReader(strings.NewReader(tt.in))
		d := &dotReader{r: br, goState: &state}
		got, err := io.ReadAll(iotest.OneByteReader(d))
		if err != nil || string(got) != tt.want || !d.done() {
			t.Errorf("%q: got %q, %v, done %v; want %q", tt.in, got, err, d.done(), tt.want)
		}
		rest, _ := io.ReadAll(br)
		if string(rest) != tt.rest {
			t.Errorf("%q: left %q, want %q", tt.in, rest, tt.rest)
		}
		d.handBack()
		if state != goSMTPDataEOF {
			t.Errorf("go-smtp's state %d", state)
		}
	}
	d := &dotReader{r: bufio.NewReader(strings.NewReader("a\r\nb")), goState: new(int)}
	if _, err := io.ReadAll(d); err != io.ErrUnexpectedEOF {
		t.Errorf("data cut short: %v", err)
	}
}

func TestCRLFReader(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"a\r\nb\r\n", "a\r\nb\r\n"},
		{"a\nb\n", "a\r\nb\r\n"},
		{"Subject: x\rFrom: <ceo@contoso.com>\r\n", "Subject: x\r\nFrom: <ceo@contoso.com>\r\n"},
		{"\r.\r\n", "\r\n.\r\n"},
		{"\r\r\n\n\r", "\r\n\r\n\r\n\r\n"},
		{"", ""},
	} {
		for name, wrap := range map[string]func(io.Reader) io.Reader{
			"whole": func(r io.Reader) io.Reader { return r }, "byte by byte": iotest.OneByteReader, "half": iotest.HalfReader,
		} {
			got, err := io.ReadAll(wrap(&crlfReader{r: wrap(strings.NewReader(tt.in))}))
			if err != nil || string(got) != tt.want {
				t.Errorf("%s %q: got %q, %v; want %q", name, tt.in, got, err, tt.want)
			}
		}
	}
	_, err := io.ReadAll(&crlfReader{r: strings.NewReader(strings.Repeat("\n", 60)), max: 100})
	if err != smtp.ErrDataTooLarge {
		t.Errorf("60 LFs are 120 bytes, over 100: %v", err)
	}
	got, err := io.ReadAll(&crlfReader{r: bytes.NewReader(bytes.Repeat([]byte("x\n"), 50)), max: 150})
	if err != nil || len(got) != 150 {
		t.Errorf("exactly at the limit: %d bytes, %v", len(got), err)
	}
}
