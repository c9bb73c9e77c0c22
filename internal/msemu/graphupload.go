package msemu

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Upload session limits (reference §6).
const (
	// GraphMaxAttachment is the largest attachment an upload session takes.
	GraphMaxAttachment = 150 << 20
	// GraphMaxChunk is the largest PUT to an upload URL (4 MiB).
	GraphMaxChunk = 4 << 20
	// GraphChunkUnit is what every chunk but the last is a multiple of.
	GraphChunkUnit = 320 << 10
	// graphUploadLifetime is how long an upload URL stays valid.
	graphUploadLifetime = 15 * time.Minute
)

// uploadSession is an attachment upload in progress.
type uploadSession struct {
	token, draftID     string
	mailbox, appID     string
	att                draftAttachment // data fills as chunks arrive
	size, next         int64
	chunks             []int
	busy               bool
	expires            time.Time
	uploadURL, attPath string
}

// handleCreateUploadSession is POST
// …/messages/{id}/attachments/createUploadSession.
func (e *Emulator) handleCreateUploadSession(w http.ResponseWriter, r *http.Request, call *graphCall) {
	var req struct {
		AttachmentItem *struct {
			AttachmentType string `json:"attachmentType"`
			Name           string `json:"name"`
			Size           int64  `json:"size"`
			ContentType    string `json:"contentType"`
			IsInline       bool   `json:"isInline"`
			ContentID      string `json:"contentId"`
		} `json:"AttachmentItem"`
	}
	if !e.readGraphJSON(w, r, &req) {
		return
	}
	it := req.AttachmentItem
	switch {
	case it == nil:
		e.graphError(w, r, http.StatusBadRequest, "ErrorInvalidRequest", "The request needs an AttachmentItem.")
		return
	case !strings.EqualFold(it.AttachmentType, "file") || it.Name == "" || it.Size <= 0:
		e.graphError(w, r, http.StatusBadRequest, "ErrorInvalidRequest", "AttachmentItem needs attachmentType \"file\", a name and a positive size.")
		return
	case it.Size > GraphMaxAttachment:
		e.graphError(w, r, http.StatusBadRequest, "ErrorAttachmentSizeLimitExceeded", "The attachment exceeds the maximum size of 150 MB.")
		return
	}
	s := &uploadSession{
		token: randB64(48), mailbox: call.mailbox, appID: call.app.ClientID,
		att:  draftAttachment{name: it.Name, contentType: it.ContentType, contentID: it.ContentID, inline: it.IsInline},
		size: it.Size, expires: e.now().Add(graphUploadLifetime),
	}
	e.mu.Lock()
	d, ok := e.findDraftLocked(w, r, call)
	if ok {
		s.draftID = d.id
		base := e.GraphURL() + "/api/v2.0/Users('" + url.PathEscape(call.mailbox) + "')/Messages('" + d.id + "')"
		s.uploadURL = base + "/AttachmentSessions('" + randB64(24) + "')?authtoken=" + s.token
		s.attPath = base + "/Attachments('AAMkA" + randB64(48) + "')"
		e.graph.uploads[s.token] = s
	}
	e.mu.Unlock()
	if !ok {
		return
	}
	e.writeJSON(w, r, http.StatusCreated, map[string]any{
		"@odata.context":     "https://graph.microsoft.com/v1.0/$metadata#microsoft.graph.uploadSession",
		"uploadUrl":          s.uploadURL,
		"expirationDateTime": s.expires.UTC().Format(graphTime),
		"nextExpectedRanges": []string{"0-"},
	})
}

const graphTime = "2006-01-02T15:04:05.0000000Z"

// handleUpload is PUT {uploadUrl}: one chunk of an attachment. The URL
// carries its own authorization; an Authorization header is refused.
func (e *Emulator) handleUpload(w http.ResponseWriter, r *http.Request) {
	e.mu.Lock()
	s, ok := e.graph.uploads[r.URL.Query().Get("authtoken")]
	e.mu.Unlock()
	if !ok {
		e.graphError(w, r, http.StatusNotFound, "ErrorItemNotFound", graphNotFound)
		return
	}
	e.countGraphMailbox(s.mailbox)
	if r.Header.Get("Authorization") != "" {
		e.graphError(w, r, http.StatusUnauthorized, "InvalidAuthenticationToken", "The upload URL is pre-authenticated: send no Authorization header.")
		return
	}
	release, ok := e.graphSlot(w, r, s.appID, s.mailbox)
	if !ok {
		return
	}
	defer release()
	first, last, total, err := parseContentRange(r.Header.Get("Content-Range"))
	n := last - first + 1
	var bad string
	e.mu.Lock()
	switch {
	case err != nil:
		bad = err.Error()
	case total != s.size:
		bad = fmt.Sprintf("The Content-Range total %d is not the session's size %d.", total, s.size)
	case s.busy:
		bad = "Another fragment of this session is being uploaded."
	case first != s.next:
		bad = fmt.Sprintf("The uploaded fragment is out of order: expected bytes %d-.", s.next)
	case n > GraphMaxChunk:
		bad = fmt.Sprintf("The fragment of %d bytes is over the 4 MiB limit.", n)
	case last+1 < total && n%GraphChunkUnit != 0:
		bad = fmt.Sprintf("The fragment of %d bytes is not a multiple of 320 KiB and not the last one.", n)
	case r.ContentLength >= 0 && r.ContentLength != n:
		bad = fmt.Sprintf("Content-Length %d does not match Content-Range (%d bytes).", r.ContentLength, n)
	default:
		s.busy = true
		if s.att.data == nil {
			s.att.data = make([]byte, s.size)
		}
	}
	e.mu.Unlock()
	if bad != "" {
		e.graphError(w, r, http.StatusBadRequest, "InvalidRange", bad)
		return
	}
	// Straight into place: no copy of the attachment is made.
	_, err = io.ReadFull(r.Body, s.att.data[first:last+1])
	e.mu.Lock()
	s.busy = false
	if err == nil {
		s.next = last + 1
		s.chunks = append(s.chunks, int(n))
	}
	next := s.next
	done := err == nil && next == s.size
	var d *draft
	if done {
		delete(e.graph.uploads, s.token)
		if d = e.graph.drafts[s.draftID]; d != nil {
			d.atts = append(d.atts, s.att)
			d.uploads = append(d.uploads, Upload{Name: s.att.name, ContentType: s.att.contentType, Size: s.size, Chunks: s.chunks})
		}
	}
	e.mu.Unlock()
	switch {
	case err != nil:
		e.graphError(w, r, http.StatusBadRequest, "InvalidRange", "The fragment is shorter than its Content-Range.")
	case done && d == nil:
		e.graphError(w, r, http.StatusNotFound, "ErrorItemNotFound", graphNotFound)
	case done:
		w.Header().Set("Location", s.attPath)
		w.WriteHeader(http.StatusCreated)
	default:
		e.writeJSON(w, r, http.StatusOK, map[string]any{
			"expirationDateTime": s.expires.UTC().Format(graphTime),
			"nextExpectedRanges": []string{strconv.FormatInt(next, 10) + "-"},
		})
	}
}

// parseContentRange parses "bytes first-last/total".
func parseContentRange(h string) (first, last, total int64, err error) {
	bad := fmt.Errorf("The Content-Range header %q is not bytes first-last/total.", h)
	spec, ok := strings.CutPrefix(h, "bytes ")
	rng, tot, ok2 := strings.Cut(spec, "/")
	a, b, ok3 := strings.Cut(rng, "-")
	if !ok || !ok2 || !ok3 {
		return 0, 0, 0, bad
	}
	var errs [3]error
	first, errs[0] = strconv.ParseInt(a, 10, 64)
	last, errs[1] = strconv.ParseInt(b, 10, 64)
	total, errs[2] = strconv.ParseInt(tot, 10, 64)
	if errs[0] != nil || errs[1] != nil || errs[2] != nil || first < 0 || last < first || last >= total {
		return 0, 0, 0, bad
	}
	return first, last, total, nil
}
