package queue

import (
	"bytes"
	"testing"
	"time"
)

// FuzzDecode feeds arbitrary bytes to the envelope decoder: it must never
// panic, and whatever it accepts must survive an encode/decode round trip
// with an id that cannot escape the spool directory.
func FuzzDecode(f *testing.F) {
	good, _ := Encode(&Envelope{ID: NewID(time.Unix(1700000000, 0)), Mailbox: "helpdesk@contoso.com", MailFrom: "noreply@contoso.com",
		Recipients: []*Recipient{{Address: "a@example.org", State: RcptPending}}, Size: 42})
	f.Add(good)
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"id":"../../etc/passwd","mailbox":"m@x","recipients":[{"address":"a@b"}]}`))
	f.Add([]byte(`{"id":"20261122T205621.123456-3f9a1c","mailbox":"m@x","recipients":[null]}`))
	f.Add([]byte(`[1,2,3]`))
	f.Add([]byte{0xff, 0xfe, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := Decode(b)
		if err != nil {
			return
		}
		if !ValidID(e.ID) || bytes.ContainsAny([]byte(e.ID), "/\\") {
			t.Fatalf("accepted unsafe id %q", e.ID)
		}
		out, err := Encode(e)
		if err != nil {
			t.Fatalf("accepted envelope does not encode: %v", err)
		}
		if _, err := Decode(out); err != nil {
			t.Fatalf("round trip failed: %v", err)
		}
	})
}
