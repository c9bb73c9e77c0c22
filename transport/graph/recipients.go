package graph

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

	gomessage "github.com/emersion/go-message"
	"github.com/emersion/go-message/mail"
	"github.com/emersion/go-message/textproto"

	"github.com/oauthrelay/oauthrelay/transport"
)

// Graph delivers to the To, Cc and Bcc of the message it is given, not to
// an SMTP envelope. The envelope decides: recipients.go rewrites the header
// block so that Graph's recipients are exactly the attempt's envelope.

// rewrite is what reconcile decided for one message: a new header block
// (nil when the message goes as it is) replacing the first skip bytes.
type rewrite struct {
	header []byte
	skip   int64
	// added went to Bcc; removed were in the header but not in the
	// envelope; dropped are header fields that could not be parsed.
	added, removed, dropped []string
	// from is the From address, for SendAs fixes.
	from string
	// size is the size of the message as Graph gets it.
	size int64
	// out is the reconciled header, before it is written into header.
	out textproto.Header
}

// changed reports whether the header needs rewriting.
func (r *rewrite) changed() bool {
	return len(r.added)+len(r.removed)+len(r.dropped) > 0
}

// note is the one-line summary for Result.Note; empty when nothing changed.
func (r *rewrite) note() string {
	var parts []string
	if len(r.added) > 0 {
		parts = append(parts, "added as Bcc (envelope only): "+strings.Join(r.added, ", "))
	}
	if len(r.removed) > 0 {
		parts = append(parts, "removed (not in this attempt's envelope): "+strings.Join(r.removed, ", "))
	}
	if len(r.dropped) > 0 {
		parts = append(parts, "unparsable header fields removed: "+strings.Join(r.dropped, ", "))
	}
	return strings.Join(parts, "; ")
}

// countingReader counts what was read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// maxHeader bounds the header block we hold in memory.
const maxHeader = 1 << 20

// readHeader reads a message's header block and says how many bytes it
// took (blank line included).
func readHeader(r io.Reader) (textproto.Header, int64, error) {
	cr := &countingReader{r: io.LimitReader(r, maxHeader)}
	br := bufio.NewReader(cr)
	h, err := textproto.ReadHeader(br)
	if err != nil && !errors.Is(err, io.EOF) {
		return h, 0, fmt.Errorf("reading the message header: %w", err)
	}
	return h, cr.n - int64(br.Buffered()), nil
}

// reconcile reads the header of the message in r and rewrites its To, Cc
// and Bcc to the envelope.
func reconcile(r io.Reader, envelope []string) (rewrite, error) {
	h, n, err := readHeader(r)
	if err != nil {
		return rewrite{}, err
	}
	rw := reconcileHeader(h, envelope)
	if from, err := (&mail.Header{Header: gomessage.Header{Header: h}}).AddressList("From"); err == nil && len(from) > 0 {
		rw.from = from[0].Address
	}
	if !rw.changed() {
		return rw, nil
	}
	var b bytes.Buffer
	if err := textproto.WriteHeader(&b, rw.out); err != nil {
		return rewrite{}, err
	}
	rw.header, rw.skip = b.Bytes(), n
	rw.out = textproto.Header{}
	return rw, nil
}

// field is one header field on its way out: raw as read when not nil,
// else its addresses.
type field struct {
	key   string
	raw   []byte
	addrs []*mail.Address
}

var recipientFields = map[string]bool{"To": true, "Cc": true, "Bcc": true}

// reconcileHeader keeps in To, Cc and Bcc only the envelope's recipients
// and adds those the header lacks as Bcc, compared case-insensitively.
// Untouched fields keep their bytes.
func reconcileHeader(h textproto.Header, envelope []string) rewrite {
	want := make(map[string]bool, len(envelope))
	for _, a := range envelope {
		want[strings.ToLower(a)] = true
	}
	seen := map[string]bool{}
	var rw rewrite
	var out []field
	for fs := h.Fields(); fs.Next(); {
		raw, _ := fs.Raw()
		k := fs.Key()
		if !recipientFields[k] {
			out = append(out, field{key: k, raw: raw})
			continue
		}
		addrs, err := mail.ParseAddressList(fs.Value())
		if err != nil {
			if strings.TrimSpace(fs.Value()) == "" {
				out = append(out, field{key: k, raw: raw})
				continue
			}
			// Graph might read addresses we cannot; it must not get them.
			rw.dropped = append(rw.dropped, k+": "+fs.Value())
			continue
		}
		var kept []*mail.Address
		for _, a := range addrs {
			if l := strings.ToLower(a.Address); want[l] {
				kept = append(kept, a)
				seen[l] = true
			} else {
				rw.removed = append(rw.removed, a.Address)
			}
		}
		switch {
		case len(kept) == len(addrs):
			out = append(out, field{key: k, raw: raw, addrs: kept})
		case len(kept) > 0:
			out = append(out, field{key: k, addrs: kept})
		}
	}
	var missing []*mail.Address
	for _, a := range envelope {
		if l := strings.ToLower(a); !seen[l] {
			seen[l] = true
			missing = append(missing, &mail.Address{Address: a})
			rw.added = append(rw.added, a)
		}
	}
	if len(missing) > 0 {
		out = appendBcc(out, missing)
	}
	rw.out = buildHeader(out)
	return rw
}

// appendBcc adds addrs to the first Bcc field, or to a new one: one Bcc
// field, as RFC 5322 wants, is what every MIME reader understands.
func appendBcc(out []field, addrs []*mail.Address) []field {
	for i := range out {
		if out[i].key == "Bcc" {
			out[i].addrs = append(out[i].addrs, addrs...)
			out[i].raw = nil
			return out
		}
	}
	return append(out, field{key: "Bcc", addrs: addrs})
}

// buildHeader makes a header of fields in order (textproto.Header writes
// the last added first).
func buildHeader(fs []field) textproto.Header {
	var h textproto.Header
	for i := len(fs) - 1; i >= 0; i-- {
		f := fs[i]
		if f.raw != nil {
			h.AddRaw(f.raw)
			continue
		}
		list := make([]string, len(f.addrs))
		for j, a := range f.addrs {
			list[j] = a.String()
		}
		h.Add(f.key, strings.Join(list, ", "))
	}
	return h
}

// log tells the operator what the rewrite changed, with the queue id.
func (r *rewrite) log(log *slog.Logger, id string) {
	if !r.changed() {
		return
	}
	log.Info("graph: recipients reconciled with the envelope", "queue_id", id,
		"added_bcc", r.added, "removed", r.removed, "dropped_fields", r.dropped)
}

// open opens the message as Graph must get it: the rewritten header block,
// then the spooled message after its own header, copied as is.
func (r *rewrite) open(body transport.Body) (io.ReadCloser, int64, error) {
	rc, n, err := body()
	if err != nil {
		return nil, 0, err
	}
	if r.header == nil {
		return rc, n, nil
	}
	if _, err := io.CopyN(io.Discard, rc, r.skip); err != nil {
		rc.Close()
		return nil, 0, fmt.Errorf("skipping the message header: %w", err)
	}
	return struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(r.header), rc), rc}, int64(len(r.header)) + n - r.skip, nil
}
