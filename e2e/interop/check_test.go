package interop

import (
	"bytes"
	"errors"
	"io"
	"mime"
	"slices"
	"strings"
	"testing"

	"github.com/emersion/go-message"
	"github.com/emersion/go-message/mail"

	"github.com/oauthrelay/oauthrelay/internal/msemu"
)

// checks relaxes checkMessage for what a client cannot do.
type checks struct {
	// quotedWords: the client puts the display name's encoded words in
	// quotes, which RFC 2047 forbids but many readers decode all the same.
	quotedWords bool
}

// checkMessage checks what arrived at the emulator against what every
// client was told to send: the envelope, the From, To and Cc headers, the
// decoded subject and text, and the attachment byte for byte once its
// transfer encoding is undone.
func checkMessage(t *testing.T, m msemu.Message, opt checks) {
	t.Helper()
	if !strings.EqualFold(m.Mailbox, from) || m.MailFrom != from {
		t.Errorf("delivered as mailbox %q with MAIL FROM %q, want %s for both", m.Mailbox, m.MailFrom, from)
	}
	rcpts := slices.Clone(m.Rcpts)
	slices.Sort(rcpts)
	if want := []string{cc, to}; !slices.Equal(rcpts, want) {
		t.Errorf("RCPT TO %v, want %v", m.Rcpts, want)
	}
	defer func() {
		if t.Failed() {
			t.Logf("the message as it arrived:\n%s", m.Data)
		}
	}()

	ent, err := message.Read(bytes.NewReader(m.Data))
	if err != nil {
		t.Fatalf("the arrived message does not parse: %v", err)
	}
	h := mail.Header{Header: ent.Header}
	if got, err := h.Subject(); err != nil || got != subject {
		t.Errorf("subject %q (%v), want %q; raw %q", got, err, subject, ent.Header.Get("Subject"))
	}
	addrs := func(key string) []*mail.Address {
		l, err := h.AddressList(key)
		if err != nil {
			t.Errorf("%s header %q: %v", key, ent.Header.Get(key), err)
		}
		return l
	}
	l := addrs("From")
	if len(l) == 1 && opt.quotedWords {
		if name, err := new(mime.WordDecoder).DecodeHeader(l[0].Name); err == nil {
			l[0].Name = name
		}
	}
	if len(l) != 1 || l[0].Address != from || l[0].Name != fromName {
		t.Errorf("From %q, want %q <%s>", ent.Header.Get("From"), fromName, from)
	}
	if l := addrs("To"); len(l) != 1 || l[0].Address != to {
		t.Errorf("To %q, want %s", ent.Header.Get("To"), to)
	}
	if l := addrs("Cc"); len(l) != 1 || l[0].Address != cc {
		t.Errorf("Cc %q, want %s", ent.Header.Get("Cc"), cc)
	}
	if mt, _, _ := ent.Header.ContentType(); mt != "multipart/mixed" {
		t.Errorf("Content-Type %q, want multipart/mixed", ent.Header.Get("Content-Type"))
	}

	// Every leaf part: one text part with the text, one attachment.
	var texts, atts int
	err = ent.Walk(func(_ []int, part *message.Entity, err error) error {
		if err != nil {
			return err
		}
		if part.MultipartReader() != nil {
			return nil
		}
		body, err := io.ReadAll(part.Body)
		if err != nil {
			return err
		}
		ah := mail.AttachmentHeader{Header: part.Header}
		name, _ := ah.Filename()
		mt, _, _ := part.Header.ContentType()
		switch {
		case name != "":
			atts++
			if name != attName {
				t.Errorf("attachment named %q, want %q", name, attName)
			}
			if want := attachment(); !bytes.Equal(body, want) {
				t.Errorf("attachment: %d bytes (%s), not the %d sent; first difference at byte %d",
					len(body), part.Header.Get("Content-Transfer-Encoding"), len(want), firstDiff(body, want))
			}
		case mt == "text/plain":
			texts++
			got := strings.ReplaceAll(string(body), "\r\n", "\n")
			if strings.TrimRight(got, "\n") != strings.TrimRight(text, "\n") {
				t.Errorf("text %q, want %q", got, text)
			}
		default:
			t.Errorf("unexpected part %q", part.Header.Get("Content-Type"))
		}
		return nil
	})
	if err != nil && !errors.Is(err, io.EOF) {
		t.Errorf("reading the parts: %v", err)
	}
	if texts != 1 || atts != 1 {
		t.Errorf("%d text parts and %d attachments, want 1 of each", texts, atts)
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}
