package relay

import (
	"strings"
	"testing"

	"github.com/emersion/go-message/mail"

	"github.com/oauthrelay/oauthrelay/config"
	"github.com/oauthrelay/oauthrelay/internal/testkit"
)

// policyConfig is a configuration for the sender policy alone: two
// mailboxes of one app, a client with a list of senders, one with
// rewrite_from and one that may use any sender.
func policyConfig(tb testing.TB) *config.Config {
	tb.Helper()
	src := testkit.Config{
		Listen: testkit.Listen{Address: "127.0.0.1:0"},
		Apps: []testkit.App{{Name: "contoso", TenantID: "00000000-0000-0000-0000-000000000000",
			ClientID: "11111111-2222-3333-4444-555555555555", ClientSecret: "x"}},
		Mailboxes: []testkit.Mailbox{
			{Address: "helpdesk@contoso.com", App: "contoso", SendAs: []string{"noreply@contoso.com"}},
			{Address: "sales@contoso.com", App: "contoso"},
		},
		Clients: []testkit.Client{
			{Name: "erp", Networks: []string{"10.0.0.0/24"}, Senders: []string{"noreply@contoso.com", "helpdesk@contoso.com", "sales@contoso.com"}},
			{Name: "scanner", Networks: []string{"10.0.1.0/24"}, Senders: []string{"noreply@contoso.com"}, RewriteFrom: "noreply@contoso.com"},
			{Name: "any", Networks: []string{"10.0.2.0/24"}, Senders: []string{"*"}},
		},
	}.TOML(tb)
	cfg, err := config.Parse("policy.toml", []byte(src), func(string) string { return "" })
	if err != nil {
		tb.Fatal(err)
	}
	return cfg
}

// hdr builds the parsed From: and Sender: of a header; "-" leaves a field
// out.
func hdr(from, sender string) *senderHeader {
	var h mail.Header
	if from != "-" {
		h.Set("From", from)
	}
	if sender != "-" {
		h.Set("Sender", sender)
	}
	return parseSenderHeader(fieldsOf(h))
}

// fields builds a parsed header from name, value pairs, in order.
func fields(nv ...string) *senderHeader {
	var fs []headerField
	for i := 0; i+1 < len(nv); i += 2 {
		fs = append(fs, headerField{Name: nv[i], Value: nv[i+1]})
	}
	return parseSenderHeader(fs)
}

func TestDecideSender(t *testing.T) {
	cfg := policyConfig(t)
	erp, scanner, anyone := cfg.Client("erp"), cfg.Client("scanner"), cfg.Client("any")
	for _, tt := range []struct {
		name    string
		cl      *config.Client
		envFrom string
		hdr     *senderHeader // nil: at MAIL FROM
		// want is the refusal kind, or -1 for none.
		want       kind
		sendFrom   string
		mailbox    string
		action     headerAction
		headerFrom string
		reply      string // a part of the refusal's reply
	}{
		{"MAIL: allowed send_as", erp, "noreply@contoso.com", nil, -1, "noreply@contoso.com", "helpdesk@contoso.com", keepHeader, "", ""},
		{"MAIL: case does not matter", erp, "NoReply@Contoso.com", nil, -1, "NoReply@Contoso.com", "helpdesk@contoso.com", keepHeader, "", ""},
		{"MAIL: mailbox's own address", erp, "sales@contoso.com", nil, -1, "sales@contoso.com", "sales@contoso.com", keepHeader, "", ""},
		{"MAIL: not a sender of the client", erp, "ceo@contoso.com", nil, senderDenied, "", "", 0, "", `Sender <ceo@contoso.com> is not allowed for client "erp"`},
		{"MAIL: any sender, but no mailbox sends as it", anyone, "ceo@contoso.com", nil, senderDenied, "", "", 0, "", `Sender <ceo@contoso.com> is not allowed for client "any"`},
		{"MAIL: any sender a mailbox sends as", anyone, "sales@contoso.com", nil, -1, "sales@contoso.com", "sales@contoso.com", keepHeader, "", ""},
		{"MAIL: null sender", erp, "", nil, nullSender, "", "", 0, "", "Sender <> (a bounce)"},
		{"MAIL: control bytes are not echoed", erp, "a\x00b@contoso.com", nil, senderDenied, "", "", 0, "", "<a?b@contoso.com>"},
		{"MAIL: rewrite_from takes anything", scanner, "root@printer.local", nil, -1, "noreply@contoso.com", "helpdesk@contoso.com", rewriteFrom, "", ""},
		{"MAIL: rewrite_from takes a null sender", scanner, "", nil, -1, "noreply@contoso.com", "helpdesk@contoso.com", rewriteFrom, "", ""},

		{"DATA: From matches", erp, "noreply@contoso.com", hdr("ERP <noreply@contoso.com>", "-"), -1, "noreply@contoso.com", "helpdesk@contoso.com", keepHeader, "noreply@contoso.com", ""},
		{"DATA: From is the mailbox behind the send_as", erp, "noreply@contoso.com", hdr("helpdesk@contoso.com", "noreply@contoso.com"), -1, "noreply@contoso.com", "helpdesk@contoso.com", keepHeader, "noreply@contoso.com", ""},
		{"DATA: no From: is added", erp, "noreply@contoso.com", hdr("-", "-"), -1, "noreply@contoso.com", "helpdesk@contoso.com", addFrom, "", ""},
		{"DATA: Sender only, From: is added", erp, "noreply@contoso.com", hdr("-", "noreply@contoso.com"), -1, "noreply@contoso.com", "helpdesk@contoso.com", addFrom, "noreply@contoso.com", ""},
		{"DATA: From not allowed", erp, "noreply@contoso.com", hdr("ceo@contoso.com", "-"), fromDenied, "", "", 0, "ceo@contoso.com", `From: <ceo@contoso.com> is not allowed for client "erp"`},
		{"DATA: second From address not allowed", erp, "noreply@contoso.com", hdr("noreply@contoso.com, ceo@contoso.com", "-"), fromDenied, "", "", 0, "ceo@contoso.com", "From: <ceo@contoso.com>"},
		{"DATA: Sender not allowed", erp, "noreply@contoso.com", hdr("noreply@contoso.com", "ceo@contoso.com"), fromDenied, "", "", 0, "ceo@contoso.com", "Sender: <ceo@contoso.com>"},
		{"DATA: From through another mailbox", erp, "noreply@contoso.com", hdr("sales@contoso.com", "-"), fromOtherMailbox, "", "", 0, "sales@contoso.com",
			"From: <sales@contoso.com> belongs to mailbox sales@contoso.com but the envelope sender <noreply@contoso.com> is sent through helpdesk@contoso.com"},
		{"DATA: From not an address", erp, "noreply@contoso.com", hdr("not an address at all", "-"), headerNotAddress, "", "", 0, "not an address at all", `The From: header "not an address at all" is not a valid address`},
		{"DATA: empty From", erp, "noreply@contoso.com", hdr("", "-"), headerNotAddress, "", "", 0, "", `The From: header "" is not a valid address`},
		{"DATA: any sender, From: no mailbox sends as", anyone, "noreply@contoso.com", hdr("ceo@contoso.com", "-"), fromDenied, "", "", 0, "ceo@contoso.com", `From: <ceo@contoso.com> is not allowed for client "any"`},
		{"DATA: envelope refused before the header", erp, "ceo@contoso.com", hdr("noreply@contoso.com", "-"), senderDenied, "", "", 0, "", "Sender <ceo@contoso.com>"},
		{"DATA: rewrite_from ignores From and Sender", scanner, "x@printer.local", hdr("Scanner <scan@printer.local>", "root@printer.local"), -1, "noreply@contoso.com", "helpdesk@contoso.com", rewriteFrom, "scan@printer.local", ""},
		{"DATA: a second From:", erp, "noreply@contoso.com", fields("From", "<noreply@contoso.com>", "From", "<ceo@contoso.com>"), duplicateField, "", "", 0, "", "The message has 2 From: fields and RFC 5322 allows exactly one"},
		{"DATA: two allowed From: fields are still two", erp, "noreply@contoso.com", fields("From", "noreply@contoso.com", "Subject", "x", "From", "noreply@contoso.com"), duplicateField, "", "", 0, "", "2 From: fields"},
		{"DATA: a second Sender:", erp, "noreply@contoso.com", fields("From", "noreply@contoso.com", "Sender", "noreply@contoso.com", "Sender", "ceo@contoso.com"), duplicateField, "", "", 0, "", "2 Sender: fields and RFC 5322 allows at most one"},
		{"DATA: rewrite_from with two From: fields", scanner, "x@printer.local", fields("From", "a@printer.local", "From", "b@printer.local"), duplicateField, "", "", 0, "", "2 From: fields"},
		{"DATA: Resent-From not allowed", erp, "noreply@contoso.com", fields("From", "noreply@contoso.com", "Resent-From", "<ceo@contoso.com>"), fromDenied, "", "", 0, "ceo@contoso.com", "Resent-From: <ceo@contoso.com> is not allowed"},
		{"DATA: Resent-Sender not allowed", erp, "noreply@contoso.com", fields("Resent-Sender", "ceo@contoso.com", "From", "noreply@contoso.com"), fromDenied, "", "", 0, "ceo@contoso.com", "Resent-Sender: <ceo@contoso.com>"},
		{"DATA: several allowed Resent-From: fields", erp, "noreply@contoso.com", fields("Resent-From", "noreply@contoso.com", "Resent-From", "helpdesk@contoso.com", "From", "noreply@contoso.com"), -1, "noreply@contoso.com", "helpdesk@contoso.com", keepHeader, "helpdesk@contoso.com", ""},
		{"DATA: rewrite_from ignores Resent-From", scanner, "x@printer.local", fields("Resent-From", "ceo@contoso.com"), -1, "noreply@contoso.com", "helpdesk@contoso.com", rewriteFrom, "", ""},
		{"DATA: rewrite_from without From", scanner, "x@printer.local", hdr("-", "-"), -1, "noreply@contoso.com", "helpdesk@contoso.com", rewriteFrom, "", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d := decideSender(cfg, tt.cl, tt.envFrom, tt.hdr)
			if d.HeaderFrom != tt.headerFrom {
				t.Errorf("HeaderFrom %q, want %q", d.HeaderFrom, tt.headerFrom)
			}
			if tt.want >= 0 {
				if d.Refusal == nil || d.Refusal.kind != tt.want {
					t.Fatalf("decision %+v, want refusal %d", d, tt.want)
				}
				if msg := d.Refusal.Error(); !strings.Contains(msg, tt.reply) {
					t.Errorf("reply %q does not contain %q", msg, tt.reply)
				}
				return
			}
			if d.Refusal != nil {
				t.Fatalf("refused: %v", d.Refusal)
			}
			if d.SendFrom != tt.sendFrom || d.Mailbox == nil || d.Mailbox.Address != tt.mailbox || d.Header != tt.action {
				t.Errorf("decision: send from %q via %v, header %d; want %q via %s, header %d", d.SendFrom, d.Mailbox, d.Header, tt.sendFrom, tt.mailbox, tt.action)
			}
		})
	}
}
