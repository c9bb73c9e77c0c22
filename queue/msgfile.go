package queue

import (
	"bytes"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"strconv"
)

// A message file holds one message whole: the body exactly as it will be
// sent, then the envelope as it was accepted (indented JSON), then one
// footer line that says where each part ends and carries a checksum of
// both:
//
//	<body: size bytes>
//	{ "id": ..., "mailbox": ..., "recipients": [...], ... }
//	oauthrelay-spool 2 body=4096 envelope=512 crc32c=1a2b3c4d
//
// The footer is the commit marker. A file is written once, into tmp/, and
// made durable by one (shared) sync before the client hears 250; only then
// is it renamed into incoming/, and that rename may be lost in a crash:
// recovery moves a file from tmp/ whose footer and checksum hold into
// incoming/, and removes one whose do not (it was never acknowledged). A
// file in a state directory always had a good footer, so one that no
// longer does is damaged, and goes to corrupt/ for a person.
const footerMagic = "oauthrelay-spool 2 "

// msgExt ends the name of a message file; envelopes of the previous
// spool format end in .json.
const msgExt = ".eml"

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// appendTrailer appends the envelope and the footer to buf.
func appendTrailer(buf []byte, envJSON []byte, size int64, crc uint32) []byte {
	crc = crc32.Update(crc, castagnoli, envJSON)
	buf = append(buf, envJSON...)
	return fmt.Appendf(buf, "%sbody=%d envelope=%d crc32c=%08x\n", footerMagic, size, len(envJSON), crc)
}

// footer is a parsed footer line.
type footer struct {
	body, env int64
	crc       uint32
	len       int64 // of the footer line itself
}

// maxFooter is more than any footer line is long.
const maxFooter = 128

var errNoFooter = errors.New("it has no complete footer (it was never finished, or it was cut short)")

// parseFooter finds the footer at the end of tail, the last bytes of a file
// of the given size.
func parseFooter(tail []byte, size int64) (footer, error) {
	var f footer
	if len(tail) == 0 || tail[len(tail)-1] != '\n' {
		return f, errNoFooter
	}
	start := bytes.LastIndexByte(tail[:len(tail)-1], '\n') + 1
	line := tail[start : len(tail)-1]
	rest, ok := bytes.CutPrefix(line, []byte(footerMagic))
	if !ok {
		return f, errNoFooter
	}
	fields := bytes.Fields(rest)
	if len(fields) != 3 {
		return f, errNoFooter
	}
	vals := [3]uint64{}
	for i, name := range []string{"body=", "envelope=", "crc32c="} {
		v, ok := bytes.CutPrefix(fields[i], []byte(name))
		base := 10
		if i == 2 {
			base = 16
		}
		n, err := strconv.ParseUint(string(v), base, 64)
		if !ok || err != nil {
			return f, errNoFooter
		}
		vals[i] = n
	}
	f = footer{body: int64(vals[0]), env: int64(vals[1]), crc: uint32(vals[2]), len: int64(len(line) + 1)}
	if f.body < 0 || f.env <= 0 || f.body+f.env+f.len != size {
		return f, fmt.Errorf("its footer gives sizes that do not add up to the file's %d bytes", size)
	}
	return f, nil
}

// readFooter reads the footer of an open message file of the given size,
// and the tail of the file it read (which often holds the whole envelope).
func readFooter(f *os.File, size int64) (footer, []byte, error) {
	n := min(size, 4096)
	tail := make([]byte, n)
	if _, err := f.ReadAt(tail, size-n); err != nil {
		return footer{}, nil, err
	}
	ft, err := parseFooter(tail, size)
	return ft, tail, err
}

// readTrailerEnvelope reads the envelope a message file was committed with.
func readTrailerEnvelope(f *os.File) (*Envelope, footer, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, footer{}, err
	}
	ft, tail, err := readFooter(f, fi.Size())
	if err != nil {
		return nil, ft, err
	}
	var js []byte
	if int64(len(tail)) >= ft.env+ft.len {
		js = tail[int64(len(tail))-ft.len-ft.env : int64(len(tail))-ft.len]
	} else {
		js = make([]byte, ft.env)
		if _, err := f.ReadAt(js, ft.body); err != nil {
			return nil, ft, err
		}
	}
	e, err := Decode(js)
	if err != nil {
		return nil, ft, err
	}
	if e.Size != ft.body {
		return nil, ft, fmt.Errorf("its envelope says %d bytes of body, the footer %d", e.Size, ft.body)
	}
	return e, ft, nil
}

// verifyMessageFile reads a whole message file and checks its checksum,
// returning the envelope it was committed with. Recovery uses it: a file
// that passes was written whole.
func verifyMessageFile(path string) (*Envelope, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	e, ft, err := readTrailerEnvelope(f)
	if err != nil {
		return nil, err
	}
	h := crc32.New(castagnoli)
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, ft.body+ft.env)); err != nil {
		return nil, err
	}
	if h.Sum32() != ft.crc {
		return nil, errors.New("its checksum does not match its content")
	}
	return e, nil
}

// bodySize returns the body's length in an open message file.
func bodySize(f *os.File) (int64, error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	ft, _, err := readFooter(f, fi.Size())
	return ft.body, err
}

func crc32Update(crc uint32, p []byte) uint32 { return crc32.Update(crc, castagnoli, p) }
