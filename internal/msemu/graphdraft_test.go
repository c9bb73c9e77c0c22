package msemu

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/mail"
	"strings"
	"testing"
)

// draftClient drives the large-message path against the emulator.
type draftClient struct {
	t   *testing.T
	e   *Emulator
	c   *http.Client
	tok string
	mb  string
}

func (d *draftClient) url(p string) string { return d.e.GraphURL() + "/v1.0/users/" + d.mb + p }

// create makes a draft from MIME and returns its id.
func (d *draftClient) create(msg string) string {
	d.t.Helper()
	r := graphDo(d.t, d.c, "POST", d.url("/messages"), d.tok, "text/plain", []byte(base64.StdEncoding.EncodeToString([]byte(msg))))
	var v struct{ ID string }
	if r.status != http.StatusCreated || json.Unmarshal(r.body, &v) != nil || v.ID == "" {
		d.t.Fatalf("create draft: %d %s", r.status, r.body)
	}
	return v.ID
}

// session opens an upload session for an attachment of size bytes.
func (d *draftClient) session(id, name string, size int) string {
	d.t.Helper()
	body := fmt.Sprintf(`{"AttachmentItem":{"attachmentType":"file","name":%q,"size":%d,"contentType":"application/octet-stream"}}`, name, size)
	r := graphDo(d.t, d.c, "POST", d.url("/messages/"+id+"/attachments/createUploadSession"), d.tok, "application/json", []byte(body))
	var v struct {
		UploadURL          string   `json:"uploadUrl"`
		ExpirationDateTime string   `json:"expirationDateTime"`
		NextExpectedRanges []string `json:"nextExpectedRanges"`
	}
	if r.status != http.StatusCreated || json.Unmarshal(r.body, &v) != nil || v.UploadURL == "" || v.ExpirationDateTime == "" ||
		len(v.NextExpectedRanges) != 1 || v.NextExpectedRanges[0] != "0-" {
		d.t.Fatalf("create upload session: %d %s", r.status, r.body)
	}
	return v.UploadURL
}

// put uploads data[a:b] of a total of len(data) bytes, with no token.
func (d *draftClient) put(u string, data []byte, a, b int, auth string) graphResp {
	d.t.Helper()
	req, err := http.NewRequest("PUT", u, bytes.NewReader(data[a:b]))
	if err != nil {
		d.t.Fatal(err)
	}
	req.Header.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", a, b-1, len(data)))
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	return graphSend(d.t, d.c, req)
}

// pattern is n bytes that differ from offset to offset within 4093
// (a prime, so chunk boundaries never line up with it).
func pattern(n int, seed byte) []byte {
	block := make([]byte, 4093)
	for i := range block {
		block[i] = byte(i*7) ^ seed ^ byte(i>>8)
	}
	return bytes.Repeat(block, n/len(block)+1)[:n]
}

func TestGraphLargeMessageByUploadSession(t *testing.T) {
	e := graphEmu(t, Options{})
	d := &draftClient{t: t, e: e, c: e.HTTPClient(), tok: tokenFor(t, e, graphScope), mb: testMbx}
	small := pattern(5000, 1)
	posted := pattern(1<<20, 2)
	big := pattern(13*GraphChunkUnit+123, 3) // over 4 MiB: three PUTs, the last one short
	const text = "Hello, the big file is attached.\r\n.leading dot\r\n"
	draftMIME := "From: " + testMbx + "\r\nTo: a@example.org\r\nBcc: hidden@example.org\r\nSubject: big\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + text +
		"\r\n--b1\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"small.bin\"\r\n" +
		"Content-Transfer-Encoding: base64\r\n\r\n" + base64.StdEncoding.EncodeToString(small) + "\r\n--b1--\r\n"
	id := d.create(draftMIME)

	att := fmt.Sprintf(`{"@odata.type":"#microsoft.graph.fileAttachment","name":"posted.bin","contentType":"application/octet-stream","contentBytes":%q}`,
		base64.StdEncoding.EncodeToString(posted))
	if r := graphDo(t, d.c, "POST", d.url("/messages/"+id+"/attachments"), d.tok, "application/json", []byte(att)); r.status != http.StatusCreated {
		t.Fatalf("attachment POST: %d %s", r.status, r.body)
	}

	u := d.session(id, "big.bin", len(big))
	const unit = GraphChunkUnit
	for _, tc := range []struct {
		name   string
		a, b   int
		auth   string
		status int
	}{
		{"with a token", 0, unit, "Bearer " + d.tok, 401},
		{"out of order", unit, 2 * unit, "", 400},
		{"not a multiple of 320 KiB", 0, unit + 1, "", 400},
		{"over 4 MiB", 0, 13 * unit, "", 400},
	} {
		if r := d.put(u, big, tc.a, tc.b, tc.auth); r.status != tc.status || r.code == "" {
			t.Errorf("%s: %d %s", tc.name, r.status, r.body)
		}
	}
	var chunks []int
	for a := 0; a < len(big); a += 6 * unit {
		b := min(a+6*unit, len(big))
		r := d.put(u, big, a, b, "")
		chunks = append(chunks, b-a)
		if b < len(big) {
			var v struct{ NextExpectedRanges []string }
			if r.status != 200 || json.Unmarshal(r.body, &v) != nil || len(v.NextExpectedRanges) != 1 || v.NextExpectedRanges[0] != fmt.Sprint(b)+"-" {
				t.Fatalf("chunk at %d: %d %s", a, r.status, r.body)
			}
		} else if r.status != 201 {
			t.Fatalf("last chunk: %d %s", r.status, r.body)
		}
	}
	if r := graphDo(t, d.c, "POST", d.url("/messages/"+id+"/send"), d.tok, "", nil); r.status != 202 || len(r.body) != 0 {
		t.Fatalf("send: %d %s", r.status, r.body)
	}
	got, err := e.WaitDelivered(context.Background(), 1)
	if err != nil {
		t.Fatal(err)
	}
	m := got[0]
	if m.Transport != TransportGraph || m.GraphPath != GraphDraft || len(m.Uploads) != 1 || m.Uploads[0].Name != "big.bin" ||
		m.Uploads[0].Size != int64(len(big)) || fmt.Sprint(m.Uploads[0].Chunks) != fmt.Sprint(chunks) {
		t.Errorf("message path %s %s uploads %+v (chunks sent %v)", m.Transport, m.GraphPath, m.Uploads, chunks)
	}
	if strings.Join(m.Recipients, ",") != "a@example.org,hidden@example.org" {
		t.Errorf("recipients %v", m.Recipients)
	}
	atts, err := m.Attachments()
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string][]byte{"small.bin": small, "posted.bin": posted, "big.bin": big} {
		if !bytes.Equal(atts[name], want) {
			t.Errorf("%s: %d bytes, want %d identical", name, len(atts[name]), len(want))
		}
	}
	if !bytes.Contains(m.Data, []byte("\r\n\r\n"+text+"\r\n--b1\r\n")) {
		t.Error("text body not kept byte for byte")
	}
	// A sent draft is gone.
	if r := graphDo(t, d.c, "POST", d.url("/messages/"+id+"/send"), d.tok, "", nil); r.status != 404 || r.code != "ErrorItemNotFound" {
		t.Errorf("second send: %d %s", r.status, r.code)
	}
}

func TestGraphDraftOfSinglePartMessage(t *testing.T) {
	e := graphEmu(t, Options{})
	d := &draftClient{t: t, e: e, c: e.HTTPClient(), tok: tokenFor(t, e, graphScope), mb: testMbx}
	const body = "Plain body,\r\nkept as it was.\r\n"
	id := d.create("From: " + testMbx + "\r\nTo: a@example.org\r\nSubject: one\r\nContent-Type: text/plain; charset=utf-8\r\n" +
		"Content-Transfer-Encoding: 8bit\r\n\r\n" + body)
	data := pattern(1000, 9)
	u := d.session(id, "report.pdf", len(data))
	if r := d.put(u, data, 0, len(data), ""); r.status != 201 || r.header.Get("Location") == "" {
		t.Fatalf("single chunk: %d %s", r.status, r.body)
	}
	if r := graphDo(t, d.c, "POST", d.url("/messages/"+id+"/send"), d.tok, "", nil); r.status != 202 {
		t.Fatalf("send: %d %s", r.status, r.body)
	}
	m := e.Delivered()[0]
	msg, err := mail.ReadMessage(bytes.NewReader(m.Data))
	if err != nil {
		t.Fatal(err)
	}
	mt, params, _ := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if mt != "multipart/mixed" || msg.Header.Get("Subject") != "one" {
		t.Fatalf("header %v", msg.Header)
	}
	p, err := multipart.NewReader(msg.Body, params["boundary"]).NextPart()
	if err != nil {
		t.Fatal(err)
	}
	first, _ := io.ReadAll(p)
	if string(first) != body || p.Header.Get("Content-Transfer-Encoding") != "8bit" {
		t.Errorf("first part %q %v", first, p.Header)
	}
	if atts, _ := m.Attachments(); !bytes.Equal(atts["report.pdf"], data) {
		t.Error("attachment not identical")
	}
}

func TestGraphDraftDeleteAndRoles(t *testing.T) {
	e := graphEmu(t, Options{})
	d := &draftClient{t: t, e: e, c: e.HTTPClient(), tok: tokenFor(t, e, graphScope), mb: testMbx}
	id := d.create("From: " + testMbx + "\r\nTo: a@example.org\r\nSubject: gone\r\n\r\nx\r\n")
	u := d.session(id, "a.bin", 10)
	if r := graphDo(t, d.c, "DELETE", d.url("/messages/"+id), d.tok, "", nil); r.status != 204 {
		t.Fatalf("delete: %d %s", r.status, r.body)
	}
	if r := d.put(u, pattern(10, 0), 0, 10, ""); r.status != 404 {
		t.Errorf("upload to a deleted draft's session: %d", r.status)
	}
	if r := graphDo(t, d.c, "POST", d.url("/messages/"+id+"/send"), d.tok, "", nil); r.status != 404 || r.code != "ErrorItemNotFound" {
		t.Errorf("send deleted: %d %s", r.status, r.code)
	}

	// Mail.Send alone cannot make drafts.
	const sendOnly = "8c3f2061-4d5e-4f70-8b12-c3d4e5f60718"
	e.AddApp(App{TenantID: testTenant, ClientID: sendOnly, Secrets: []string{testSecret}, GraphRoles: []string{RoleMailSend}})
	tok := tokenForClient(t, e, sendOnly, graphScope)
	r := graphDo(t, d.c, "POST", d.url("/messages"), tok, "text/plain", []byte(base64.StdEncoding.EncodeToString([]byte("To: a@example.org\r\n\r\nx"))))
	if r.status != 403 || r.code != "ErrorAccessDenied" {
		t.Errorf("draft with Mail.Send only: %d %s", r.status, r.code)
	}
	if len(e.Delivered()) != 0 {
		t.Error("something was delivered")
	}
}
