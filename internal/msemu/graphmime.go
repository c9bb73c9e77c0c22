package msemu

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/mail"
	"net/textproto"
	"strings"
)

// assembleDraft returns the MIME Exchange sends for a draft: the draft's
// own MIME with the added attachments as base64 parts of its
// multipart/mixed, or, for a draft that is not multipart/mixed, a new
// multipart/mixed whose first part is the draft's body, byte for byte.
func assembleDraft(draftMIME []byte, atts []draftAttachment) []byte {
	if len(atts) == 0 {
		return draftMIME
	}
	var parts bytes.Buffer
	boundary := ""
	msg, err := mail.ReadMessage(bytes.NewReader(draftMIME))
	if err == nil {
		if mt, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type")); err == nil && mt == "multipart/mixed" {
			boundary = params["boundary"]
		}
	}
	closing := -1
	if boundary != "" {
		closing = bytes.LastIndex(draftMIME, []byte("--"+boundary+"--"))
	}
	if closing < 0 {
		boundary = "_msemu_" + randB64(18)
	}
	size := len(draftMIME) + 512
	for _, a := range atts {
		size += base64.StdEncoding.EncodedLen(len(a.data))*78/76 + 512
	}
	parts.Grow(size)
	if closing >= 0 {
		parts.Write(draftMIME[:closing])
	} else {
		header, body := splitHeader(draftMIME)
		var ct, cte string
		for _, f := range header {
			name, value, _ := strings.Cut(f, ":")
			switch strings.ToLower(strings.TrimSpace(name)) {
			case "content-type":
				ct = strings.TrimSpace(value)
				continue
			case "content-transfer-encoding":
				cte = strings.TrimSpace(value)
				continue
			}
			parts.WriteString(f)
		}
		if msg == nil || msg.Header.Get("MIME-Version") == "" {
			parts.WriteString("MIME-Version: 1.0\r\n")
		}
		fmt.Fprintf(&parts, "Content-Type: multipart/mixed; boundary=\"%s\"\r\n\r\n--%s\r\n", boundary, boundary)
		if ct != "" {
			parts.WriteString("Content-Type: " + ct + "\r\n")
		}
		if cte != "" {
			parts.WriteString("Content-Transfer-Encoding: " + cte + "\r\n")
		}
		parts.WriteString("\r\n")
		parts.Write(body)
		parts.WriteString("\r\n")
	}
	for _, a := range atts {
		parts.WriteString("--" + boundary + "\r\n")
		ct := a.contentType
		if ct == "" {
			ct = "application/octet-stream"
		}
		parts.WriteString("Content-Type: " + mime.FormatMediaType(ct, map[string]string{"name": a.name}) + "\r\n")
		disp := "attachment"
		if a.inline {
			disp = "inline"
		}
		parts.WriteString("Content-Disposition: " + mime.FormatMediaType(disp, map[string]string{"filename": a.name}) + "\r\n")
		if a.contentID != "" {
			parts.WriteString("Content-ID: <" + strings.Trim(a.contentID, "<>") + ">\r\n")
		}
		parts.WriteString("Content-Transfer-Encoding: base64\r\n\r\n")
		writeBase64Lines(&parts, a.data)
	}
	parts.WriteString("--" + boundary + "--")
	if closing >= 0 {
		parts.Write(draftMIME[closing+len(boundary)+4:])
	} else {
		parts.WriteString("\r\n")
	}
	return parts.Bytes()
}

// splitHeader returns the header fields, each with its continuation
// lines and line ending, and the body after the blank line.
func splitHeader(data []byte) (fields []string, body []byte) {
	rest := data
	for len(rest) > 0 {
		end := bytes.IndexByte(rest, '\n') + 1
		if end == 0 {
			end = len(rest)
		}
		line := rest[:end]
		rest = rest[end:]
		if len(bytes.TrimRight(line, "\r\n")) == 0 {
			return fields, rest
		}
		if (line[0] == ' ' || line[0] == '\t') && len(fields) > 0 {
			fields[len(fields)-1] += string(line)
			continue
		}
		fields = append(fields, string(line))
	}
	return fields, nil
}

// Attachments returns the decoded content of the message's parts that
// have a file name (Content-Disposition filename or Content-Type name),
// by that name, so tests can compare attachments byte for byte.
func (m Message) Attachments() (map[string][]byte, error) {
	msg, err := mail.ReadMessage(bytes.NewReader(m.Data))
	if err != nil {
		return nil, err
	}
	out := map[string][]byte{}
	err = walkParts(textproto.MIMEHeader(msg.Header), msg.Body, out)
	return out, err
}

// walkParts collects the named leaf parts below one MIME entity.
func walkParts(h textproto.MIMEHeader, body io.Reader, out map[string][]byte) error {
	mt, params, _ := mime.ParseMediaType(h.Get("Content-Type"))
	if strings.HasPrefix(mt, "multipart/") {
		mr := multipart.NewReader(body, params["boundary"])
		for {
			p, err := mr.NextRawPart()
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return err
			}
			if err := walkParts(p.Header, p, out); err != nil {
				return err
			}
		}
	}
	name := params["name"]
	if _, dp, err := mime.ParseMediaType(h.Get("Content-Disposition")); err == nil && dp["filename"] != "" {
		name = dp["filename"]
	}
	if name == "" {
		return nil
	}
	switch strings.ToLower(h.Get("Content-Transfer-Encoding")) {
	case "base64":
		body = base64.NewDecoder(base64.StdEncoding, body) // skips CR and LF
	case "quoted-printable":
		body = quotedprintable.NewReader(body)
	}
	data, err := io.ReadAll(body)
	if err != nil {
		return fmt.Errorf("attachment %q: %w", name, err)
	}
	out[name] = data
	return nil
}
