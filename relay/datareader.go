package relay

import (
	"bufio"
	"io"
	"reflect"
	"unsafe"

	"github.com/emersion/go-smtp"
)

// How the relay reads a message's bytes after DATA and BDAT.
//
// Two things are wrong with taking them as go-smtp (v0.25.1) hands them
// over. Its DATA reader drops a line-initial ".\r" followed by anything
// but LF, and after a CR that is not followed by LF it no longer knows
// where lines start: a later "." line is not unstuffed and "\r\n.\r\n"
// may not end the data. And lone CR and LF bytes pass through byte for
// byte, so a header line "Subject: x\rFrom: <ceo@…>" is one line to our
// check and two to a reader that takes CR as a line end.
//
// So, for DATA, the relay reads the connection's buffered input itself
// with dotReader (RFC 5321 §4.5.2 exactly: only CRLF ends a line on the
// wire), and then, for DATA and BDAT alike, crlfReader turns every lone CR
// and lone LF into CRLF before anything reads the header: what the sender
// check sees, what is spooled and what Microsoft 365 receives are the
// same lines.

// dotReader decodes the DATA stream: it removes the dot of dot-stuffed
// lines and ends at the line ".", CRLF-terminated, that ends the data. A
// line starts at the beginning of the data and after each CRLF, never
// after a lone CR or LF, so "\n.\n" ends nothing (SMTP smuggling).
type dotReader struct {
	r     *bufio.Reader
	state int
	// goState is go-smtp's own reader state, set to its end state by
	// handBack so that go-smtp reads nothing more of the data.
	goState *int
}

// The states of dotReader.
const (
	dotLineStart = iota // at the start of a line
	dotDot              // read "." at the start of a line
	dotDotCR            // read ".\r" at the start of a line
	dotCR               // read "\r" (possibly at the end of a line)
	dotData             // in the middle of a line
	dotEnd              // read the end-of-data line
)

// goSMTPDataEOF is go-smtp's dataReader state once it has read the
// end-of-data line (stateEOF in its data.go).
const goSMTPDataEOF = 5

// Read implements io.Reader.
func (d *dotReader) Read(p []byte) (n int, err error) {
	for n < len(p) && d.state != dotEnd {
		c, err := d.r.ReadByte()
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return n, err
		}
		switch d.state {
		case dotLineStart:
			if c == '.' {
				d.state = dotDot
				continue
			}
		case dotDot:
			if c == '\r' {
				d.state = dotDotCR
				continue
			}
			// A stuffed dot: drop it, keep the rest of the line.
		case dotDotCR:
			if c == '\n' {
				d.state = dotEnd
				continue
			}
			// ".\r" and more: the dot was stuffing; the CR is data and
			// c is looked at again after it.
			d.r.UnreadByte()
			p[n] = '\r'
			n++
			d.state = dotCR
			continue
		case dotCR:
			if c == '\n' {
				p[n] = c
				n++
				d.state = dotLineStart
				continue
			}
		}
		p[n] = c
		n++
		d.state = dotData
		if c == '\r' {
			d.state = dotCR
		}
	}
	if d.state == dotEnd {
		return n, io.EOF
	}
	return n, nil
}

// handBack gives the connection back to go-smtp with its DATA reader at
// its end, so that it reads nothing more as data.
func (d *dotReader) handBack() { *d.goState = goSMTPDataEOF }

// done reports whether the end-of-data line has been read.
func (d *dotReader) done() bool { return d.state == dotEnd }

var bufioReaderType = reflect.TypeFor[*bufio.Reader]()

// takeOverData returns a dotReader reading the DATA stream in place of
// r, go-smtp's reader, or nil when r is not go-smtp's DATA reader (BDAT
// hands over a pipe with the chunks' bytes as they are; a go-smtp
// upgrade may change its internals: TestLoneCRAndLF fails then).
//
// go-smtp's reader reads the connection's buffered input (its field r)
// with a state (its field state); once the dotReader has read the end
// of the data, handBack sets go-smtp's state to the end so that
// go-smtp's own attempt to read what is left of the data reads nothing.
func takeOverData(r io.Reader) *dotReader {
	v := reflect.ValueOf(r)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return nil
	}
	t := v.Elem().Type()
	if t.Name() != "dataReader" || t.PkgPath() != reflect.TypeFor[smtp.Server]().PkgPath() {
		return nil
	}
	br, st := v.Elem().FieldByName("r"), v.Elem().FieldByName("state")
	if !br.IsValid() || br.Type() != bufioReaderType || !st.IsValid() || st.Kind() != reflect.Int {
		return nil
	}
	state := (*int)(unsafe.Pointer(st.UnsafeAddr()))
	if *state != 0 {
		return nil // go-smtp has read some of it already
	}
	return &dotReader{r: *(**bufio.Reader)(unsafe.Pointer(br.UnsafeAddr())), goState: state}
}

// crlfReader turns every lone CR and every lone LF of what it reads into
// CRLF, and counts what it returns against max (0: no limit), failing
// with smtp.ErrDataTooLarge beyond it.
type crlfReader struct {
	r   io.Reader
	max int64
	n   int64
	// cr: the last byte returned was a CR whose LF has not been seen.
	cr bool
	// pend holds output that did not fit into the caller's buffer.
	pend    [2]byte
	npend   int
	err     error
	scratch [1]byte
}

// Read implements io.Reader.
func (c *crlfReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) && c.npend > 0 {
		p[n] = c.pend[0]
		c.pend[0] = c.pend[1]
		c.npend--
		n++
	}
	if n == len(p) || c.err != nil {
		return c.count(n)
	}
	// Read the input into the second half of p and expand it into p
	// from the front: every byte becomes at most two, so the output
	// never overtakes the input still to be read.
	in := p[n+(len(p)-n+1)/2:]
	if len(p)-n < 2 {
		in = c.scratch[:]
	}
	m, err := c.r.Read(in)
	for _, b := range in[:m] {
		n = c.put(p, n, b)
	}
	if err != nil {
		if err == io.EOF && c.cr {
			n = c.emit(p, n, '\n')
			c.cr = false
		}
		c.err = err
	}
	return c.count(n)
}

// put writes the output for input byte b at p[n:] and returns the new n.
func (c *crlfReader) put(p []byte, n int, b byte) int {
	if c.cr {
		c.cr = false
		n = c.emit(p, n, '\n')
		if b == '\n' {
			return n
		}
	}
	switch b {
	case '\r':
		c.cr = true
	case '\n':
		n = c.emit(p, n, '\r')
	}
	return c.emit(p, n, b)
}

func (c *crlfReader) emit(p []byte, n int, b byte) int {
	if n < len(p) {
		p[n] = b
		return n + 1
	}
	c.pend[c.npend] = b
	c.npend++
	return n
}

func (c *crlfReader) count(n int) (int, error) {
	c.n += int64(n)
	if c.max > 0 && c.n > c.max {
		return 0, smtp.ErrDataTooLarge
	}
	if c.npend > 0 || n > 0 {
		return n, nil
	}
	return n, c.err
}
