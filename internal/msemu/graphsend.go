package msemu

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"net/mail"
	"strings"
	"time"
)

// drainLimit bounds what is read and discarded of a refused request
// body, so that the client gets its answer on a live connection.
const drainLimit = 256 << 20

// handleSendMail is POST /v1.0/users/{mailbox}/sendMail: the MIME
// message base64-encoded (text/plain), or a JSON message.
func (e *Emulator) handleSendMail(w http.ResponseWriter, r *http.Request, call *graphCall) {
	data, ok := e.readGraphMessage(w, r, call, true)
	if !ok {
		return
	}
	e.graphSubmit(w, r, call, data, GraphSendMail, nil)
}

// readGraphMessage reads a message given as base64 MIME (text/plain) or
// as JSON (a Graph message, inside {"message":…} when wrapped, as
// sendMail takes it) and returns it as MIME.
func (e *Emulator) readGraphMessage(w http.ResponseWriter, r *http.Request, call *graphCall, wrapped bool) ([]byte, bool) {
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt != "text/plain" && mt != "application/json" {
		e.graphError(w, r, http.StatusUnsupportedMediaType, "ErrorInvalidRequest", "Content-Type must be text/plain (base64 MIME) or application/json.")
		return nil, false
	}
	body, ok := e.readGraphBody(w, r)
	if !ok {
		return nil, false
	}
	if mt == "text/plain" {
		return e.decodeMIME(w, r, body)
	}
	var msg graphMessage
	if !wrapped {
		ok = e.decodeGraphJSON(w, r, body, &msg)
	} else {
		var req struct {
			Message *graphMessage `json:"message"`
		}
		if ok = e.decodeGraphJSON(w, r, body, &req); ok && req.Message == nil {
			e.graphError(w, r, http.StatusBadRequest, "ErrorInvalidParameter", "The value of the parameter 'Message' is empty.")
			ok = false
		} else if ok {
			msg = *req.Message
		}
	}
	if !ok {
		return nil, false
	}
	return msg.toMIME(call.mailbox, e.now()), true
}

// readGraphBody reads a request body of at most GraphMaxRequestBody
// bytes, answering 413 for a bigger one.
func (e *Emulator) readGraphBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	var body []byte
	var err error
	if r.ContentLength <= GraphMaxRequestBody {
		body, err = io.ReadAll(io.LimitReader(r.Body, GraphMaxRequestBody+1))
		if err != nil {
			e.graphError(w, r, http.StatusBadRequest, "BadRequest", "The request body could not be read.")
			return nil, false
		}
	}
	if r.ContentLength > GraphMaxRequestBody || len(body) > GraphMaxRequestBody {
		io.Copy(io.Discard, io.LimitReader(r.Body, drainLimit))
		e.graphError(w, r, http.StatusRequestEntityTooLarge, "RequestEntityTooLarge", "The maximum request length supported is 4MB.")
		return nil, false
	}
	return body, true
}

// readGraphJSON reads a JSON request body into v, answering 413 or 400
// when it cannot.
func (e *Emulator) readGraphJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	body, ok := e.readGraphBody(w, r)
	return ok && e.decodeGraphJSON(w, r, body, v)
}

// decodeGraphJSON unmarshals body into v, answering 400 if it is not JSON.
func (e *Emulator) decodeGraphJSON(w http.ResponseWriter, r *http.Request, body []byte, v any) bool {
	if err := json.Unmarshal(body, v); err != nil {
		e.graphError(w, r, http.StatusBadRequest, "BadRequest", "Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid JSON format.")
		return false
	}
	return true
}

// decodeMIME decodes base64 MIME and checks that it parses as a message.
func (e *Emulator) decodeMIME(w http.ResponseWriter, r *http.Request, body []byte) ([]byte, bool) {
	// The decoder skips CR and LF, so wrapped base64 is fine too.
	data := make([]byte, base64.StdEncoding.DecodedLen(len(body)))
	n, err := base64.StdEncoding.Decode(data, bytes.TrimSpace(body))
	data = data[:n]
	if err == nil && n > 0 {
		_, err = mail.ReadMessage(bytes.NewReader(data))
	}
	if err != nil || n == 0 {
		e.graphError(w, r, http.StatusBadRequest, "ErrorMimeContentInvalidBase64String", "Invalid base64 string for MIME content.")
		return nil, false
	}
	return data, true
}

// graphSubmit sends a complete MIME message as Graph does: From must be
// the mailbox or one it may send as, and it goes to the To, Cc and Bcc
// of the message. It answers 202 and reports whether it was sent.
func (e *Emulator) graphSubmit(w http.ResponseWriter, r *http.Request, call *graphCall, data []byte, path string, uploads []Upload) bool {
	msg, err := mail.ReadMessage(bytes.NewReader(data))
	if err != nil {
		e.graphError(w, r, http.StatusBadRequest, "ErrorMimeContentInvalidBase64String", "Invalid base64 string for MIME content.")
		return false
	}
	msgID, from := inspectHeader(data)
	for _, f := range from {
		if !e.maySendAs(call.mailbox, f) {
			e.graphError(w, r, http.StatusForbidden, "ErrorSendAsDenied", graphSendAsDenied)
			return false
		}
	}
	rcpts := headerRecipients(msg.Header)
	if len(rcpts) == 0 {
		e.graphError(w, r, http.StatusBadRequest, "ErrorInvalidRecipients", graphNoRecipients)
		return false
	}
	sender := call.mailbox
	if len(from) > 0 {
		sender = from[0]
	}
	if msgID == "" {
		msgID = "<" + newGUID() + "@" + storeHost + ">"
	}
	e.deliver(Message{
		Mailbox: call.mailbox, AppID: call.app.ClientID, MailFrom: sender,
		Data: data, QueueID: msgID, At: e.now(), ConnID: call.connID,
		Transport: TransportGraph, Recipients: rcpts, GraphPath: path, Uploads: uploads,
	})
	w.WriteHeader(http.StatusAccepted)
	return true
}

// headerRecipients returns the addresses in To, Cc and Bcc, falling back
// to a scan for anything address-like in a header that does not parse.
func headerRecipients(h mail.Header) []string {
	var out []string
	for _, k := range []string{"To", "Cc", "Bcc"} {
		if h.Get(k) == "" {
			continue
		}
		list, err := h.AddressList(k)
		if err != nil {
			out = append(out, addrRE.FindAllString(h.Get(k), -1)...)
			continue
		}
		for _, a := range list {
			out = append(out, a.Address)
		}
	}
	return out
}

// graphMessage is the part of Graph's message resource the emulator
// understands.
type graphMessage struct {
	Subject string `json:"subject"`
	Body    *struct {
		ContentType string `json:"contentType"`
		Content     string `json:"content"`
	} `json:"body"`
	From          *graphRecipient  `json:"from"`
	ToRecipients  []graphRecipient `json:"toRecipients"`
	CcRecipients  []graphRecipient `json:"ccRecipients"`
	BccRecipients []graphRecipient `json:"bccRecipients"`
}

type graphRecipient struct {
	EmailAddress struct {
		Name    string `json:"name"`
		Address string `json:"address"`
	} `json:"emailAddress"`
}

// mime renders the message as Exchange would submit it; Bcc stays in the
// header so that the record shows whom it went to.
func (m graphMessage) toMIME(mailbox string, now time.Time) []byte {
	var b bytes.Buffer
	addrs := func(rs []graphRecipient) string {
		var s []string
		for _, r := range rs {
			s = append(s, (&mail.Address{Name: r.EmailAddress.Name, Address: r.EmailAddress.Address}).String())
		}
		return strings.Join(s, ", ")
	}
	from := (&mail.Address{Address: mailbox}).String()
	if m.From != nil {
		from = addrs([]graphRecipient{*m.From})
	}
	header := func(k, v string) {
		if v != "" {
			b.WriteString(k + ": " + v + "\r\n")
		}
	}
	header("From", from)
	header("To", addrs(m.ToRecipients))
	header("Cc", addrs(m.CcRecipients))
	header("Bcc", addrs(m.BccRecipients))
	header("Subject", mime.QEncoding.Encode("utf-8", m.Subject))
	header("Date", now.Format("Mon, 02 Jan 2006 15:04:05 -0700"))
	header("Message-ID", "<"+newGUID()+"@"+storeHost+">")
	header("MIME-Version", "1.0")
	ct, content := "text/plain", ""
	if m.Body != nil {
		content = m.Body.Content
		if strings.EqualFold(m.Body.ContentType, "html") {
			ct = "text/html"
		}
	}
	header("Content-Type", ct+"; charset=utf-8")
	header("Content-Transfer-Encoding", "base64")
	b.WriteString("\r\n")
	writeBase64Lines(&b, []byte(content))
	return b.Bytes()
}

// writeBase64Lines writes data base64-encoded in 76-character lines,
// each ending in CRLF, without a second copy of data.
func writeBase64Lines(b *bytes.Buffer, data []byte) {
	var line [76]byte
	for len(data) > 0 {
		n := min(len(data), 57)
		base64.StdEncoding.Encode(line[:], data[:n])
		b.Write(line[:base64.StdEncoding.EncodedLen(n)])
		b.WriteString("\r\n")
		data = data[n:]
	}
}
