package graph

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"sort"
	"strings"
	"time"

	gomessage "github.com/emersion/go-message"
	"github.com/emersion/go-message/textproto"

	"github.com/oauthrelay/oauthrelay/transport"
)

// A message too big for one sendMail goes as a draft: the MIME message
// without its large attachments, then each of them through an upload
// session, then send. The spool file is read in passes (layout, draft,
// uploads) and never held in memory: the draft is at most MaxSimple bytes
// and an upload holds one chunk.

// MaxAttachment is Graph's limit for one attachment (150 MB).
const MaxAttachment = 150 << 20

// part is one top-level part of a multipart/mixed message.
type part struct {
	raw  int64 // bytes as spooled (transfer-encoded)
	size int64 // bytes decoded: what Graph counts
	// leaf parts other than the first (the text) may go separately.
	eligible, upload             bool
	name, contentType, contentID string
	inline                       bool
}

// layout is the first pass: the message's parts and which are uploaded.
type layout struct {
	boundary string
	parts    []part
}

// errTooLarge condemns a message that cannot fit Graph's request limit
// however it is split: the same answer would come on every attempt.
func errTooLarge(op, why string) error {
	return &transport.GraphError{Op: op, Status: 413, Code: "RequestEntityTooLarge", Message: why}
}

// openMultipart opens the message and reads up to its first part.
func openMultipart(open func() (io.ReadCloser, int64, error)) (io.ReadCloser, textproto.Header, *textproto.MultipartReader, error) {
	rc, _, err := open()
	if err != nil {
		return nil, textproto.Header{}, nil, err
	}
	br := bufio.NewReaderSize(rc, 64<<10)
	h, err := textproto.ReadHeader(br)
	if err != nil {
		rc.Close()
		return nil, h, nil, fmt.Errorf("reading the message header: %w", err)
	}
	mt, params, _ := (&gomessage.Header{Header: h}).ContentType()
	if mt != "multipart/mixed" || params["boundary"] == "" {
		rc.Close()
		return nil, h, nil, errTooLarge("draft", fmt.Sprintf("a %s message over %d bytes cannot go through Graph: only attachments of a multipart/mixed message can be uploaded separately", mt, MaxSimple))
	}
	return rc, h, textproto.NewMultipartReader(br, params["boundary"]), nil
}

// decoded reads a part's body without its transfer encoding (and without
// charset conversion: attachments go byte for byte).
func decoded(h textproto.Header, r io.Reader) (io.Reader, error) {
	var only gomessage.Header
	only.Set("Content-Transfer-Encoding", h.Get("Content-Transfer-Encoding"))
	e, err := gomessage.New(only, r)
	if err != nil {
		return nil, err
	}
	return e.Body, nil
}

// scan is the first pass: it measures every part (decoded sizes are what
// upload sessions are told) and picks, largest first, the parts to
// upload until the rest of the total bytes is within budget.
func scan(open func() (io.ReadCloser, int64, error), total, budget int64) (*layout, error) {
	rc, h, mr, err := openMultipart(open)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	_, params, _ := (&gomessage.Header{Header: h}).ContentType()
	l := &layout{boundary: params["boundary"]}
	for i := 0; ; i++ {
		p, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("reading part %d: %w", i+1, err)
		}
		cr := &countingReader{r: p}
		dec, err := decoded(p.Header, cr)
		if err != nil {
			return nil, fmt.Errorf("part %d: %w", i+1, err)
		}
		n, err := io.Copy(io.Discard, dec)
		if err != nil {
			return nil, fmt.Errorf("decoding part %d: %w", i+1, err)
		}
		l.parts = append(l.parts, describe(p.Header, i, cr.n, n))
	}
	order := make([]int, 0, len(l.parts))
	for i, p := range l.parts {
		if p.eligible {
			order = append(order, i)
		}
	}
	sort.SliceStable(order, func(a, b int) bool { return l.parts[order[a]].raw > l.parts[order[b]].raw })
	for _, i := range order {
		if total <= budget {
			break
		}
		l.parts[i].upload = true
		total -= l.parts[i].raw
	}
	return l, nil
}

// describe is what an upload session must be told of a part.
func describe(h textproto.Header, i int, raw, size int64) part {
	mh := gomessage.Header{Header: h}
	mt, cp, err := mh.ContentType()
	if err != nil || mt == "" {
		mt = "application/octet-stream"
	}
	disp, dp, _ := mh.ContentDisposition()
	p := part{raw: raw, size: size, contentType: mt, name: dp["filename"],
		contentID: strings.Trim(h.Get("Content-Id"), "<> ")}
	if p.name == "" {
		p.name = cp["name"]
	}
	if p.name == "" {
		p.name = fmt.Sprintf("attachment-%d", i)
	}
	p.inline = strings.EqualFold(disp, "inline") && p.contentID != ""
	leaf := !strings.HasPrefix(mt, "multipart/")
	p.eligible = leaf && size > 0 && size <= MaxAttachment && (i > 0 || strings.EqualFold(disp, "attachment"))
	return p
}

// writeDraft is the second pass: the message without the uploaded parts.
func (l *layout) writeDraft(open func() (io.ReadCloser, int64, error), w io.Writer) error {
	rc, h, mr, err := openMultipart(open)
	if err != nil {
		return err
	}
	defer rc.Close()
	if err := textproto.WriteHeader(w, h); err != nil {
		return err
	}
	delim := "--" + l.boundary + "\r\n"
	for i := 0; ; i++ {
		p, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		if i < len(l.parts) && l.parts[i].upload {
			continue
		}
		if _, err := io.WriteString(w, delim); err != nil {
			return err
		}
		if err := textproto.WriteHeader(w, p.Header); err != nil {
			return err
		}
		if _, err := io.Copy(w, p); err != nil {
			return err
		}
		// The line break before a delimiter belongs to the delimiter.
		delim = "\r\n--" + l.boundary + "\r\n"
	}
	_, err = io.WriteString(w, "\r\n--"+l.boundary+"--\r\n")
	return err
}

// sendLarge sends the message (total bytes) as a draft with upload
// sessions, uploading parts until the draft is within budget bytes. A
// failure half-way deletes the draft, so that the retry starts clean.
func (s *session) sendLarge(ctx context.Context, open func() (io.ReadCloser, int64, error), total, budget int64, log *slog.Logger, queueID string) (string, error) {
	l, err := scan(open, total, budget)
	if err != nil {
		return "", err
	}
	var draft bytes.Buffer
	if err := l.writeDraft(open, &draft); err != nil {
		return "", err
	}
	if draft.Len() > MaxSimple {
		return "", errTooLarge("draft", fmt.Sprintf("the message without its attachments is %d bytes, more than the %d one Graph request carries", draft.Len(), MaxSimple))
	}
	var created struct {
		ID string `json:"id"`
	}
	if _, err := s.do(ctx, call{op: "create draft", method: "POST", url: s.user + "/messages", contentType: "text/plain", draft: true,
		body: base64Body(bytesBody(draft.Bytes()))}, &created); err != nil {
		return "", err
	}
	if created.ID == "" {
		return "", &transport.GraphError{Op: "create draft", Draft: true, Status: 502, Message: "Graph created a draft without an id", App: s.app}
	}
	log.Debug("graph: draft created for a large message", "queue_id", queueID, "draft_bytes", draft.Len())
	if err := s.uploadAll(ctx, open, l, created.ID); err != nil {
		s.deleteDraft(ctx, created.ID, log, queueID)
		return "", err
	}
	id, err := s.do(ctx, call{op: "send draft", method: "POST", url: s.draftURL(created.ID) + "/send", draft: true}, nil)
	if err != nil {
		s.deleteDraft(ctx, created.ID, log, queueID)
		return "", err
	}
	return id, nil
}

// uploadAll is the third pass: each part chosen for upload, decoded as
// it streams.
func (s *session) uploadAll(ctx context.Context, open func() (io.ReadCloser, int64, error), l *layout, draftID string) error {
	rc, _, mr, err := openMultipart(open)
	if err != nil {
		return err
	}
	defer rc.Close()
	var buf []byte
	for i := 0; i < len(l.parts); i++ {
		p, err := mr.NextPart()
		if err != nil {
			return fmt.Errorf("reading part %d again: %w", i+1, err)
		}
		if !l.parts[i].upload {
			continue
		}
		if buf == nil {
			buf = make([]byte, chunkSize)
		}
		dec, err := decoded(p.Header, p)
		if err != nil {
			return err
		}
		if err := s.upload(ctx, draftID, l.parts[i], dec, buf); err != nil {
			return err
		}
	}
	return nil
}

// upload attaches one part to the draft through an upload session.
func (s *session) upload(ctx context.Context, draftID string, p part, r io.Reader, buf []byte) error {
	item := map[string]any{"attachmentType": "file", "name": p.name, "size": p.size, "contentType": p.contentType}
	if p.inline {
		item["isInline"], item["contentId"] = true, p.contentID
	}
	var sess struct {
		UploadURL string `json:"uploadUrl"`
	}
	if _, err := s.do(ctx, call{op: "create upload session", method: "POST", url: s.draftURL(draftID) + "/attachments/createUploadSession",
		contentType: "application/json", draft: true, body: jsonBody(map[string]any{"AttachmentItem": item})}, &sess); err != nil {
		return err
	}
	if sess.UploadURL == "" {
		return &transport.GraphError{Op: "create upload session", Draft: true, Status: 502, Message: "Graph opened an upload session without an uploadUrl", App: s.app}
	}
	for _, c := range chunks(p.size) {
		chunk := buf[:c.len()]
		if _, err := io.ReadFull(r, chunk); err != nil {
			return fmt.Errorf("reading attachment %q: %w", p.name, err)
		}
		if _, err := s.do(ctx, call{op: "upload attachment", method: "PUT", url: sess.UploadURL, contentType: "application/octet-stream",
			header: map[string]string{"Content-Range": c.contentRange(p.size)}, anonymous: true, draft: true, body: bytesBody(chunk)}, nil); err != nil {
			return err
		}
	}
	if n, _ := io.Copy(io.Discard, r); n > 0 {
		return fmt.Errorf("attachment %q grew by %d bytes between two readings of the spool", p.name, n)
	}
	return nil
}

// deleteDraft removes a draft left by a failed attempt, even when the
// attempt's context has ended.
func (s *session) deleteDraft(ctx context.Context, id string, log *slog.Logger, queueID string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if _, err := s.do(ctx, call{op: "delete draft", method: "DELETE", url: s.draftURL(id), draft: true}, nil); err != nil {
		log.Warn("graph: a failed large message left its draft in Drafts; delete it by hand", "queue_id", queueID, "mailbox", s.mailbox, "draft_id", id, "error", err)
	}
}

func (s *session) draftURL(id string) string { return s.user + "/messages/" + url.PathEscape(id) }
