package config

import (
	"strings"
	"testing"
)

// FuzzParse runs the loader over arbitrary files: it must never panic, and
// every refusal must be an *Error naming the file.
func FuzzParse(f *testing.F) {
	f.Add(`[listen]
address = "127.0.0.1:2525"
[[app]]
name = "a"
tenant_id = "t"
client_id = "00000000-0000-0000-0000-000000000000"
client_secret = "${S}"
[[mailbox]]
address = "m@contoso.com"
app = "a"
[[client]]
name = "c"
networks = ["10.0.0.0/24"]
senders = ["m@contoso.com"]
`)
	f.Add("[listen]\nadress = 1\n")
	f.Add("[[client]]\nnetworks = [\"300.1.1.1/99\"]\n")
	f.Add("max_message_size = \"35MB\"")
	f.Add("[spool]\nmax_age = \"5d\"\nmin_retry_delay = \"-1s\"")
	f.Add("\x00\xff[[")
	f.Fuzz(func(t *testing.T, src string) {
		_, err := Parse("fuzz.toml", []byte(src), func(string) string { return "x" })
		if err == nil {
			return
		}
		ce, ok := err.(*Error)
		if !ok {
			t.Fatalf("error of type %T, want *Error: %v", err, err)
		}
		for _, p := range ce.Problems {
			if p.File != "fuzz.toml" || p.Msg == "" {
				t.Fatalf("problem without file or message: %+v", p)
			}
		}
	})
}

// FuzzParseAddress checks the address parser never panics and never
// accepts something with a line break or angle brackets, which would let a
// sender inject SMTP commands or headers.
func FuzzParseAddress(f *testing.F) {
	for _, s := range []string{"a@b.c", "<a@b.c>", "A <a@b.c>", "a@b.c\r\nRCPT TO:<x@y>", "\"q u\"@b.c", "ü@ä.de", "@", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseAddress(s)
		if err != nil {
			return
		}
		if strings.ContainsAny(a, "\r\n<>") || !strings.Contains(a, "@") {
			t.Fatalf("accepted %q as %q", s, a)
		}
	})
}
