package relay

import (
	"github.com/emersion/go-message/mail"

	"github.com/oauthrelay/oauthrelay/config"
)

// senderFields are the header fields the sender decision reads, by their
// canonical names. Resent-From: and Resent-Sender: name who re-sent a
// message, and a reader may take them for its author as well, so they are
// held to the same policy as From: and Sender:.
var senderFields = map[string]bool{"From": true, "Sender": true, "Resent-From": true, "Resent-Sender": true}

// headerField is one field of a message header: its canonical name and
// its value as sent (unfolded or not).
type headerField struct{ Name, Value string }

// senderHeader is what the sender decision reads of a message header:
// every From:, Sender:, Resent-From: and Resent-Sender: field, in order.
type senderHeader struct {
	Fields []addressField
}

// addressField is one address field of a header as parsed.
type addressField struct {
	Name  string          // canonical: "From", "Sender", "Resent-From", "Resent-Sender"
	Raw   string          // the value as sent
	Addrs []*mail.Address // empty when Raw is not an address list
}

// count returns how many fields named name the header has.
func (h *senderHeader) count(name string) int {
	if h == nil {
		return 0
	}
	n := 0
	for _, f := range h.Fields {
		if f.Name == name {
			n++
		}
	}
	return n
}

// first returns the first field named name, or nil.
func (h *senderHeader) first(name string) *addressField {
	if h == nil {
		return nil
	}
	for i := range h.Fields {
		if h.Fields[i].Name == name {
			return &h.Fields[i]
		}
	}
	return nil
}

// inPolicyOrder returns the fields in the order the policy checks them:
// From:, Sender:, then the Resent- fields.
func (h *senderHeader) inPolicyOrder() []addressField {
	var out []addressField
	for _, name := range []string{"From", "Sender", "Resent-From", "Resent-Sender"} {
		for _, f := range h.Fields {
			if f.Name == name {
				out = append(out, f)
			}
		}
	}
	return out
}

// duplicate refuses a header with more than one From: or Sender: (RFC
// 5322 §3.6 allows exactly one From: and at most one Sender:): the policy
// would pass one of them and the reader might be shown the other.
func (h *senderHeader) duplicate() *refusal {
	for _, name := range []string{"From", "Sender"} {
		if n := h.count(name); n > 1 {
			rule := "exactly one"
			if name == "Sender" {
				rule = "at most one"
			}
			return newRefusal(duplicateField, n, name, rule)
		}
	}
	return nil
}

// parseSenderHeader parses the sender fields among fields; the others are
// ignored.
func parseSenderHeader(fields []headerField) *senderHeader {
	sh := &senderHeader{}
	for _, f := range fields {
		if !senderFields[f.Name] {
			continue
		}
		// One field at a time, so that each of several fields of one name
		// is parsed (mail.Header parses the first only).
		var h mail.Header
		h.Set(f.Name, f.Value)
		af := addressField{Name: f.Name, Raw: h.Get(f.Name)}
		if addrs, err := h.AddressList(f.Name); err == nil {
			af.Addrs = addrs
		}
		sh.Fields = append(sh.Fields, af)
	}
	return sh
}

// fieldsOf lists a parsed header's fields in order.
func fieldsOf(h mail.Header) []headerField {
	var fs []headerField
	for it := h.Fields(); it.Next(); {
		fs = append(fs, headerField{Name: it.Key(), Value: it.Value()})
	}
	return fs
}

// headerAction is what an allowed message's header needs.
type headerAction int

const (
	keepHeader  headerAction = iota // send it as it came
	addFrom                         // it has no From:; add the envelope sender
	rewriteFrom                     // replace From: with the client's rewrite_from
)

// senderDecision is the outcome of the sender policy for one message.
type senderDecision struct {
	// Refusal is set when the sender is not allowed; the other fields
	// are then to be ignored, except HeaderFrom.
	Refusal *refusal
	// SendFrom is the envelope sender to use upstream, and Mailbox the
	// mailbox that sends as it.
	SendFrom string
	Mailbox  *config.Mailbox
	Header   headerAction
	// HeaderFrom is the header address the decision turned on, for logs.
	HeaderFrom string
}

// decideSender applies the sender policy of client cl under cfg to the
// envelope sender envFrom and, once the message has been read, to the
// From: and Sender: of its header (hdr; nil at MAIL FROM). It reads
// nothing but its arguments.
//
// A client with rewrite_from sends everything as that address, whatever
// it says (its From:, Sender: and Resent- fields are replaced). Any other
// client must use one of its senders that a mailbox may send as, in the
// envelope and in every From:, Sender:, Resent-From: and Resent-Sender:
// address, and those must all go through the same mailbox: Microsoft 365
// checks the header against the mailbox it is signed in as. A header
// with two From: or two Sender: fields is refused whoever sends it.
func decideSender(cfg *config.Config, cl *config.Client, envFrom string, hdr *senderHeader) senderDecision {
	if r := hdr.duplicate(); r != nil {
		return senderDecision{Refusal: r}
	}
	if cl.RewriteFrom != "" {
		d := senderDecision{SendFrom: cl.RewriteFrom, Mailbox: cfg.MailboxFor(cl.RewriteFrom), Header: rewriteFrom}
		if f := hdr.first("From"); f != nil && len(f.Addrs) > 0 {
			d.HeaderFrom = f.Addrs[0].Address
		}
		return d
	}
	if envFrom == "" {
		// A null sender (a bounce or a read receipt) has no mailbox to
		// sign in as.
		return senderDecision{Refusal: newRefusal(nullSender, cl.Name)}
	}
	mbx := cfg.MailboxFor(envFrom)
	if !cl.MaySend(envFrom) || mbx == nil {
		return senderDecision{Refusal: newRefusal(senderDenied, sanitize(envFrom), cl.Name)}
	}
	d := senderDecision{SendFrom: envFrom, Mailbox: mbx}
	if hdr == nil {
		return d
	}
	for _, f := range hdr.inPolicyOrder() {
		if len(f.Addrs) == 0 {
			d.HeaderFrom = f.Raw
			d.Refusal = newRefusal(headerNotAddress, f.Name, sanitize(f.Raw))
			return d
		}
		for _, a := range f.Addrs {
			d.HeaderFrom = a.Address
			am := cfg.MailboxFor(a.Address)
			if !cl.MaySend(a.Address) || am == nil {
				d.Refusal = newRefusal(fromDenied, f.Name, sanitize(a.Address), cl.Name)
				return d
			}
			if am != mbx {
				d.Refusal = newRefusal(fromOtherMailbox, f.Name, sanitize(a.Address), am.Address, envFrom, mbx.Address)
				return d
			}
		}
	}
	if hdr.first("From") == nil {
		// RFC 5322 requires From:, and Exchange checks it against SendAs:
		// the envelope sender was already allowed, so use it.
		d.Header = addFrom
	}
	return d
}
