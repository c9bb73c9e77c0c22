package msemu

import (
	"bytes"
	"encoding/base64"
	"net/http"
	"net/mail"
	"net/url"
	"strings"
)

// GraphMaxAttachmentPost is the largest attachment POST …/attachments
// takes (3 MB); bigger ones need an upload session.
const GraphMaxAttachmentPost = 3 << 20

// draft is a message saved by POST /v1.0/users/{mb}/messages, waiting
// for its attachments and send.
type draft struct {
	id      string
	mailbox string // lower case
	mime    []byte
	atts    []draftAttachment
	uploads []Upload
}

// draftAttachment is an attachment added to a draft, by POST or by an
// upload session.
type draftAttachment struct {
	name, contentType, contentID string
	inline                       bool
	data                         []byte
}

// handleCreateDraft is POST /v1.0/users/{mailbox}/messages.
func (e *Emulator) handleCreateDraft(w http.ResponseWriter, r *http.Request, call *graphCall) {
	data, ok := e.readGraphMessage(w, r, call, false)
	if !ok {
		return
	}
	d := &draft{id: "AAMkA" + randB64(96), mailbox: strings.ToLower(call.mailbox), mime: data}
	e.mu.Lock()
	e.graph.drafts[d.id] = d
	e.mu.Unlock()
	var subject string
	if m, err := mail.ReadMessage(bytes.NewReader(data)); err == nil {
		subject = m.Header.Get("Subject")
	}
	e.log.Info("msemu graph draft created", "mailbox", call.mailbox, "size", len(data))
	e.writeJSON(w, r, http.StatusCreated, map[string]any{
		"@odata.context": e.GraphURL() + "/v1.0/$metadata#users('" + url.PathEscape(call.mailbox) + "')/messages/$entity",
		"id":             d.id,
		"isDraft":        true,
		"subject":        subject,
	})
}

// findDraftLocked returns the draft {id} of the call's mailbox, or answers 404.
// e.mu is held.
func (e *Emulator) findDraftLocked(w http.ResponseWriter, r *http.Request, call *graphCall) (*draft, bool) {
	d, ok := e.graph.drafts[r.PathValue("id")]
	if !ok || d.mailbox != strings.ToLower(call.mailbox) {
		e.graphError(w, r, http.StatusNotFound, "ErrorItemNotFound", graphNotFound)
		return nil, false
	}
	return d, true
}

// handleAddAttachment is POST …/messages/{id}/attachments with a JSON
// fileAttachment.
func (e *Emulator) handleAddAttachment(w http.ResponseWriter, r *http.Request, call *graphCall) {
	var a struct {
		Type         string `json:"@odata.type"`
		Name         string `json:"name"`
		ContentType  string `json:"contentType"`
		ContentBytes string `json:"contentBytes"`
		IsInline     bool   `json:"isInline"`
		ContentID    string `json:"contentId"`
	}
	if !e.readGraphJSON(w, r, &a) {
		return
	}
	data, err := base64.StdEncoding.DecodeString(a.ContentBytes)
	switch {
	case a.Type != "#microsoft.graph.fileAttachment":
		e.graphError(w, r, http.StatusBadRequest, "ErrorInvalidRequest", "Only #microsoft.graph.fileAttachment attachments are emulated.")
		return
	case err != nil || a.Name == "":
		e.graphError(w, r, http.StatusBadRequest, "ErrorInvalidRequest", "The attachment needs a name and base64 contentBytes.")
		return
	case len(data) > GraphMaxAttachmentPost:
		e.graphError(w, r, http.StatusRequestEntityTooLarge, "RequestEntityTooLarge", "Attachments of 3 MB or more must be uploaded with an upload session.")
		return
	}
	id := "AAMkA" + randB64(48)
	e.mu.Lock()
	d, ok := e.findDraftLocked(w, r, call)
	if ok {
		d.atts = append(d.atts, draftAttachment{a.Name, a.ContentType, a.ContentID, a.IsInline, data})
	}
	e.mu.Unlock()
	if !ok {
		return
	}
	e.writeJSON(w, r, http.StatusCreated, map[string]any{
		"@odata.type": a.Type, "id": id, "name": a.Name, "contentType": a.ContentType,
		"size": len(data), "isInline": a.IsInline,
	})
}

// handleSendDraft is POST …/messages/{id}/send: the draft's MIME with
// its attachments is submitted, and the draft is gone once sent.
func (e *Emulator) handleSendDraft(w http.ResponseWriter, r *http.Request, call *graphCall) {
	// Out of the map while sending, so that it is sent once.
	d, ok := e.takeDraft(w, r, call)
	if !ok {
		return
	}
	data := assembleDraft(d.mime, d.atts)
	if !e.graphSubmit(w, r, call, data, GraphDraft, d.uploads) {
		e.mu.Lock()
		e.graph.drafts[d.id] = d
		e.mu.Unlock()
		return
	}
	e.dropUploadsOf(d.id)
}

// handleDeleteDraft is DELETE …/messages/{id}.
func (e *Emulator) handleDeleteDraft(w http.ResponseWriter, r *http.Request, call *graphCall) {
	if d, ok := e.takeDraft(w, r, call); ok {
		e.dropUploadsOf(d.id)
		w.WriteHeader(http.StatusNoContent)
	}
}

// takeDraft removes the draft {id} of the call's mailbox and returns it,
// or answers 404.
func (e *Emulator) takeDraft(w http.ResponseWriter, r *http.Request, call *graphCall) (*draft, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	d, ok := e.findDraftLocked(w, r, call)
	if ok {
		delete(e.graph.drafts, d.id)
	}
	return d, ok
}

// dropUploadsOf forgets the unfinished upload sessions of a draft.
func (e *Emulator) dropUploadsOf(draftID string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for tok, s := range e.graph.uploads {
		if s.draftID == draftID {
			delete(e.graph.uploads, tok)
		}
	}
}
