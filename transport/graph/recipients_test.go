package graph

import (
	"bytes"
	"io"
	"net/mail"
	"slices"
	"strings"
	"testing"

	"github.com/oauthrelay/oauthrelay/transport"
)

// bodyOf is a spool Body serving msg.
func bodyOf(msg string) transport.Body {
	return func() (io.ReadCloser, int64, error) {
		return io.NopCloser(strings.NewReader(msg)), int64(len(msg)), nil
	}
}

// addrs lists the addresses of a header field, lower-cased, "" absent.
func addrs(t *testing.T, h mail.Header, key string) []string {
	t.Helper()
	if h.Get(key) == "" {
		return nil
	}
	l, err := h.AddressList(key)
	if err != nil {
		t.Fatalf("%s: %q: %v", key, h.Get(key), err)
	}
	var out []string
	for _, a := range l {
		out = append(out, strings.ToLower(a.Address))
	}
	return out
}

func TestReconcile(t *testing.T) {
	const body = "\r\nHello,\r\nTo: not-a-header@x.example\r\n"
	for _, tc := range []struct {
		name         string
		header       string
		envelope     []string
		to, cc, bcc  []string
		same         bool     // the message goes byte for byte
		note         []string // substrings of the note
		names        []string // display names that must survive (decoded)
		added, remov int
	}{
		{name: "envelope matches", header: "From: a@contoso.com\r\nTo: b@x.example\r\nCc: c@x.example\r\nSubject: hi\r\n",
			envelope: []string{"b@x.example", "c@x.example"}, to: []string{"b@x.example"}, cc: []string{"c@x.example"}, same: true},
		{name: "envelope-only recipient becomes Bcc", header: "From: a@contoso.com\r\nTo: b@x.example\r\nSubject: hi\r\n",
			envelope: []string{"b@x.example", "hidden@y.example"}, to: []string{"b@x.example"}, bcc: []string{"hidden@y.example"},
			note: []string{"added as Bcc", "hidden@y.example"}, added: 1},
		{name: "To outside the envelope removed", header: "From: a@contoso.com\r\nTo: b@x.example, done@x.example\r\nSubject: hi\r\n",
			envelope: []string{"b@x.example"}, to: []string{"b@x.example"}, note: []string{"removed", "done@x.example"}, remov: 1},
		{name: "only To outside the envelope", header: "From: a@contoso.com\r\nTo: done@x.example\r\nSubject: hi\r\n",
			envelope: []string{"b@x.example"}, bcc: []string{"b@x.example"}, added: 1, remov: 1},
		{name: "Bcc outside the envelope removed", header: "From: a@contoso.com\r\nTo: b@x.example\r\nBcc: other@x.example, b2@x.example\r\n",
			envelope: []string{"b@x.example", "b2@x.example"}, to: []string{"b@x.example"}, bcc: []string{"b2@x.example"}, remov: 1},
		{name: "case differs", header: "From: a@contoso.com\r\nTo: Bob@X.Example\r\nCC: CAROL@x.example\r\n",
			envelope: []string{"bob@x.example", "carol@X.EXAMPLE"}, to: []string{"bob@x.example"}, cc: []string{"carol@x.example"}, same: true},
		{name: "envelope-only joins the existing Bcc", header: "From: a@contoso.com\r\nTo: b@x.example\r\nBcc: c@x.example\r\n",
			envelope: []string{"b@x.example", "c@x.example", "d@x.example"}, to: []string{"b@x.example"}, bcc: []string{"c@x.example", "d@x.example"}, added: 1},
		{name: "group", header: "From: a@contoso.com\r\nTo: Team: b@x.example, gone@x.example;, e@x.example\r\n",
			envelope: []string{"b@x.example", "e@x.example"}, to: []string{"b@x.example", "e@x.example"}, remov: 1},
		{name: "empty group kept", header: "From: a@contoso.com\r\nTo: undisclosed-recipients:;\r\n",
			envelope: []string{"b@x.example"}, bcc: []string{"b@x.example"}, added: 1},
		{name: "encoded display names", header: "From: a@contoso.com\r\nTo: =?utf-8?q?J=C3=BCrgen_M=C3=BCller?= <j@x.example>, =?iso-8859-1?q?Ren=E9?= <r@x.example>\r\n",
			envelope: []string{"J@x.example"}, to: []string{"j@x.example"}, names: []string{"Jürgen Müller"}, remov: 1},
		{name: "folded field", header: "From: a@contoso.com\r\nTo: b@x.example,\r\n c@x.example,\r\n\tgone@x.example\r\n",
			envelope: []string{"b@x.example", "c@x.example"}, to: []string{"b@x.example", "c@x.example"}, remov: 1},
		{name: "unparsable field dropped", header: "From: a@contoso.com\r\nTo: <<<nonsense\r\n",
			envelope: []string{"b@x.example"}, bcc: []string{"b@x.example"}, note: []string{"unparsable", "To: <<<nonsense"}, added: 1},
		{name: "no recipient fields", header: "From: a@contoso.com\r\nSubject: x\r\n",
			envelope: []string{"b@x.example", "B@x.example"}, bcc: []string{"b@x.example"}, added: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			msg := tc.header + body
			rw, err := plan(bodyOf(msg), tc.envelope)
			if err != nil {
				t.Fatal(err)
			}
			rc, n, err := rw.open(bodyOf(msg))
			if err != nil {
				t.Fatal(err)
			}
			out, _ := io.ReadAll(rc)
			if int64(len(out)) != n || n != rw.size {
				t.Fatalf("size %d, open said %d, plan said %d", len(out), n, rw.size)
			}
			if tc.same != (string(out) == msg) {
				t.Fatalf("same=%v, got:\n%s", tc.same, out)
			}
			if !bytes.HasSuffix(out, []byte(body)) || bytes.Count(out, []byte("\r\n\r\n")) != 1 {
				t.Fatalf("the body was not copied as is:\n%q", out)
			}
			m, err := mail.ReadMessage(bytes.NewReader(out))
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range []struct {
				key  string
				want []string
			}{{"To", tc.to}, {"Cc", tc.cc}, {"Bcc", tc.bcc}} {
				if got := addrs(t, m.Header, f.key); !slices.Equal(got, f.want) {
					t.Fatalf("%s = %q, want %q\n%s", f.key, got, f.want, out)
				}
			}
			for _, name := range tc.names {
				l, _ := m.Header.AddressList("To")
				if !slices.ContainsFunc(l, func(a *mail.Address) bool { return a.Name == name }) {
					t.Fatalf("display name %q lost: %q", name, m.Header.Get("To"))
				}
			}
			if len(rw.added) != tc.added || len(rw.removed) != tc.remov {
				t.Fatalf("added %q removed %q", rw.added, rw.removed)
			}
			note := rw.note()
			if (note == "") != tc.same {
				t.Fatalf("note %q", note)
			}
			for _, s := range tc.note {
				if !strings.Contains(note, s) {
					t.Fatalf("note %q lacks %q", note, s)
				}
			}
			if rw.from != "a@contoso.com" {
				t.Fatalf("from %q", rw.from)
			}
		})
	}
}
