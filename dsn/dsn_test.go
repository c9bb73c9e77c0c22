package dsn

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-message"
)

func TestStatus(t *testing.T) {
	for reply, want := range map[string]string{
		"550 5.1.10 RESOLVER.ADR.RecipientNotFound; not found": "5.1.10",
		"554 5.2.0 STOREDRV.Submission.Exception":              "5.2.0",
		"451 4.3.0 try later":                                  "5.0.0",
		"gave up after 48h0m0s in the queue":                   "5.0.0",
		"550 no enhanced code":                                 "5.0.0",
	} {
		if got := Status(reply); got != want {
			t.Errorf("Status(%q) = %q, want %q", reply, got, want)
		}
	}
}

func TestCompose(t *testing.T) {
	at := time.Date(2026, 12, 1, 9, 30, 0, 0, time.UTC)
	r := Report{Host: "relay.example", QueueID: "20261201T093000.000001-abcdef", Received: at.Add(-time.Hour),
		Mailbox: "helpdesk@contoso.com", To: []string{"erp@contoso.com"}, RemoteMTA: "smtp.office365.com",
		Failed: []Failed{{Address: "nobody@fabrikam.com", Reply: "550 5.1.10 RESOLVER.ADR.RecipientNotFound;\r\n Recipient not found"}},
		Now:    at, OriginalHeader: "Subject: invoice\r\nFrom: <erp@contoso.com>\r\n\r\n"}
	var a, b bytes.Buffer
	if err := Compose(&a, r); err != nil {
		t.Fatal(err)
	}
	if err := Compose(&b, r); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Fatal("the same report gave different bytes")
	}
	m, err := message.Read(bytes.NewReader(a.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if ct, params, _ := m.Header.ContentType(); ct != "multipart/report" || params["report-type"] != "delivery-status" {
		t.Fatalf("content type %q %v", ct, params)
	}
	if got := m.Header.Get("From"); got != "Mail Delivery System <helpdesk@contoso.com>" {
		t.Fatalf("From %q", got)
	}
	var parts []string
	mr := m.MultipartReader()
	for {
		p, err := mr.NextPart()
		if err != nil {
			break
		}
		ct, _, _ := p.Header.ContentType()
		var body bytes.Buffer
		body.ReadFrom(p.Body)
		parts = append(parts, ct)
		if ct == "message/delivery-status" {
			for _, want := range []string{"Reporting-MTA: dns; relay.example", "Final-Recipient: rfc822; nobody@fabrikam.com", "Status: 5.1.10",
				"Remote-MTA: dns; smtp.office365.com", "Diagnostic-Code: smtp; 550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found"} {
				if !strings.Contains(body.String(), want) {
					t.Errorf("delivery-status lacks %q:\n%s", want, body.String())
				}
			}
		}
	}
	if strings.Join(parts, ",") != "text/plain,message/delivery-status,text/rfc822-headers" {
		t.Fatalf("parts %v", parts)
	}
}
