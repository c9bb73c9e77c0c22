package interop

import (
	"bytes"
	"testing"
	"time"

	"github.com/emersion/go-message/mail"
)

// composed is the message for the clients that only carry a message
// they are given (msmtp, Postfix's sendmail), composed as an
// application's own MIME library would: go-message here.
func composed(t *testing.T) string {
	t.Helper()
	var h mail.Header
	h.SetDate(time.Now())
	h.SetAddressList("From", []*mail.Address{{Name: fromName, Address: from}})
	h.SetAddressList("To", []*mail.Address{{Address: to}})
	h.SetAddressList("Cc", []*mail.Address{{Address: cc}})
	h.SetSubject(subject)
	if err := h.GenerateMessageID(); err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	w, err := mail.CreateWriter(&b, h)
	if err != nil {
		t.Fatal(err)
	}
	var th mail.InlineHeader
	th.SetContentType("text/plain", map[string]string{"charset": "UTF-8"})
	tw, err := w.CreateSingleInline(th)
	if err != nil {
		t.Fatal(err)
	}
	tw.Write([]byte(text))
	tw.Close()
	var ah mail.AttachmentHeader
	ah.SetContentType("application/pdf", nil)
	ah.SetFilename(attName)
	aw, err := w.CreateAttachment(ah)
	if err != nil {
		t.Fatal(err)
	}
	aw.Write(attachment())
	aw.Close()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.String()
}
