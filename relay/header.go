package relay

import (
	"bufio"
	"bytes"
	"io"
	"strings"
)

// Limits of what the relay reads of a message header. The header is
// streamed to the spool file as it is read; only the sender fields are
// held in memory, so a connection costs at most the read buffer plus
// maxSenderFieldBytes however big a header a client sends.
const (
	// maxHeaderBytes bounds the header of one message (552 5.3.4 beyond).
	maxHeaderBytes = 1000 * 1000
	// maxSenderFieldBytes bounds the From:, Sender: and Resent- fields
	// of one message together (552 5.3.4 beyond): real ones are a few
	// hundred bytes.
	maxSenderFieldBytes = 64 * 1000
)

// droppedOnRewrite are the fields a rewrite_from client's header loses:
// its own From: (replaced) and the fields that would contradict it.
var droppedOnRewrite = map[string]bool{"From": true, "Sender": true, "Resent-From": true, "Resent-Sender": true}

// headerScan is what streaming a header leaves to decide on it.
type headerScan struct {
	// fields are the sender fields (senderFields), in order.
	fields []headerField
	// has records which of Message-Id, Date and Reply-To are present.
	has map[string]bool
	// sep is the line that ended the header ("\r\n"), or nil when the
	// message ended inside it; bodyStart is the first line of the body
	// when the header ended at a line that is not a header field: sep is
	// then a CRLF we add, as Postfix does, so that what we check as the
	// header is what Microsoft 365 reads as the header.
	sep, bodyStart []byte
}

// scanHeader copies the header from br to w, leaving out the fields named
// in drop, and returns what the policy and the added fields need. Its
// input has CRLF line ends only (crlfReader). A message without any
// header is all body.
func scanHeader(w io.Writer, br *bufio.Reader, drop map[string]bool) (*headerScan, error) {
	hs := &headerScan{has: map[string]bool{}}
	total, kept := 0, 0
	inField, dropping := false, false
	var field *bytes.Buffer // the sender field being read, if any
	endField := func() {
		if field != nil {
			name, value, _ := strings.Cut(field.String(), ":")
			hs.fields = append(hs.fields, headerField{Name: name, Value: unfold(value)})
			field = nil
		}
	}
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			if string(line) == "\r\n" {
				endField()
				hs.sep = []byte("\r\n")
				return hs, nil
			}
			cont := line[0] == ' ' || line[0] == '\t'
			if !isHeaderLine(line, inField) {
				endField()
				hs.sep, hs.bodyStart = []byte("\r\n"), append([]byte(nil), line...)
				return hs, nil
			}
			if !cont {
				endField()
				name := fieldName(line)
				dropping = drop[name]
				if name != "" {
					hs.has[name] = true
				}
				if senderFields[name] {
					field = &bytes.Buffer{}
					field.WriteString(name)
				}
			}
			inField = true
			// What the field keeps of the line: its value, after the name.
			fieldPart := line
			if !cont {
				fieldPart = line[bytes.IndexByte(line, ':'):]
			}
			// A line longer than the buffer comes in pieces.
			for {
				total += len(line)
				if total > maxHeaderBytes {
					return nil, newRefusal(headerTooBig, humanSize(maxHeaderBytes))
				}
				if field != nil {
					kept += len(fieldPart)
					if kept > maxSenderFieldBytes {
						return nil, newRefusal(senderFieldsTooBig, humanSize(maxSenderFieldBytes))
					}
					field.Write(fieldPart)
				}
				if !dropping {
					if _, werr := w.Write(line); werr != nil {
						return nil, werr
					}
				}
				if err != bufio.ErrBufferFull {
					break
				}
				line, err = br.ReadSlice('\n')
				fieldPart = line
			}
		}
		if err == io.EOF {
			endField()
			if len(line) > 0 && !dropping && line[len(line)-1] != '\n' {
				if _, werr := io.WriteString(w, "\r\n"); werr != nil {
					return nil, werr
				}
			}
			return hs, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// knownFields are the fields the relay looks at, by canonical name.
var knownFields = []string{"From", "Sender", "Resent-From", "Resent-Sender", "Message-Id", "Date", "Reply-To"}

// fieldName is the canonical name of the field line starts (isHeaderLine
// has checked it has one) when it is one of knownFields ("FROM :" is
// From), and "" for any other: nothing is kept of the others, not even
// their names.
func fieldName(line []byte) string {
	name := bytes.TrimRight(line[:bytes.IndexByte(line, ':')], " \t")
	for _, k := range knownFields {
		if bytes.EqualFold(name, []byte(k)) {
			return k
		}
	}
	return ""
}

// unfold joins a field value's lines (RFC 5322 §2.2.3) and trims it.
func unfold(v string) string {
	return strings.TrimSpace(strings.ReplaceAll(v, "\r\n", ""))
}

// isHeaderLine reports whether line (its first bytes at least) is a header
// field ("Name: value", RFC 5322 §2.2, allowing the obsolete blanks before
// the colon) or, after a field, a folded continuation.
func isHeaderLine(line []byte, afterField bool) bool {
	if line[0] == ' ' || line[0] == '\t' {
		return afterField
	}
	i := bytes.IndexByte(line, ':')
	if i <= 0 {
		return false
	}
	name := bytes.TrimRight(line[:i], " \t")
	if len(name) == 0 {
		return false
	}
	for _, c := range name {
		if c < 33 || c > 126 {
			return false
		}
	}
	return true
}
