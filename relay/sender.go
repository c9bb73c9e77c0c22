package relay

import (
	"github.com/emersion/go-message/mail"

	"github.com/oauthrelay/oauthrelay/config"
)

// senderHeader is what the sender decision reads of a message header: its
// From: and Sender: fields.
type senderHeader struct {
	From, Sender addressField
}

// addressField is one address field of a header as parsed.
type addressField struct {
	Present bool
	Raw     string          // the value as sent
	Addrs   []*mail.Address // empty when Raw is not an address list
}

func parseAddressField(h mail.Header, name string) addressField {
	if !h.Has(name) {
		return addressField{}
	}
	f := addressField{Present: true, Raw: h.Get(name)}
	if addrs, err := h.AddressList(name); err == nil {
		f.Addrs = addrs
	}
	return f
}

func parseSenderHeader(h mail.Header) *senderHeader {
	return &senderHeader{From: parseAddressField(h, "From"), Sender: parseAddressField(h, "Sender")}
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
// it says. Any other client must use one of its senders that a mailbox
// may send as, in the envelope and in every From: and Sender: address,
// and those must all go through the same mailbox: Microsoft 365 checks
// the header against the mailbox it is signed in as.
func decideSender(cfg *config.Config, cl *config.Client, envFrom string, hdr *senderHeader) senderDecision {
	if cl.RewriteFrom != "" {
		d := senderDecision{SendFrom: cl.RewriteFrom, Mailbox: cfg.MailboxFor(cl.RewriteFrom), Header: rewriteFrom}
		if hdr != nil && len(hdr.From.Addrs) > 0 {
			d.HeaderFrom = hdr.From.Addrs[0].Address
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
	for _, f := range []struct {
		name string
		addressField
	}{{"From", hdr.From}, {"Sender", hdr.Sender}} {
		if !f.Present {
			continue
		}
		if len(f.Addrs) == 0 {
			d.HeaderFrom = f.Raw
			d.Refusal = newRefusal(headerNotAddress, f.name, sanitize(f.Raw))
			return d
		}
		for _, a := range f.Addrs {
			d.HeaderFrom = a.Address
			am := cfg.MailboxFor(a.Address)
			if !cl.MaySend(a.Address) || am == nil {
				d.Refusal = newRefusal(fromDenied, f.name, sanitize(a.Address), cl.Name)
				return d
			}
			if am != mbx {
				d.Refusal = newRefusal(fromOtherMailbox, f.name, sanitize(a.Address), am.Address, envFrom, mbx.Address)
				return d
			}
		}
	}
	if !hdr.From.Present {
		// RFC 5322 requires From:, and Exchange checks it against SendAs:
		// the envelope sender was already allowed, so use it.
		d.Header = addFrom
	}
	return d
}
