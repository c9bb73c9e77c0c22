package transport

import (
	"fmt"
	"strings"
	"time"
)

// StageGraph is a Microsoft Graph request (sendMail, a draft, an upload
// session), for errors that came before Graph answered.
const StageGraph Stage = "graph request"

// GraphApp identifies the app a Graph request ran as, so that fixes name
// the real ids instead of placeholders.
type GraphApp struct {
	ClientID, TenantID string
	// ObjectID is the service principal's object id (the token's oid),
	// when known.
	ObjectID string
	// Authority is the app's sign-in host, for the admin consent link;
	// empty means https://login.microsoftonline.com/.
	Authority string
}

// GraphError is a Microsoft Graph answer other than success.
type GraphError struct {
	// Op is the request: "sendMail", "create draft", "upload attachment"…
	Op string
	// Draft says the request was on the draft path (large messages), which
	// needs Mail.ReadWrite besides Mail.Send.
	Draft  bool
	Status int
	// Code and Message are Graph's error.code and error.message.
	Code, Message string
	// RequestID is Graph's request-id header, for Microsoft support.
	RequestID string
	// RetryAfter is the Retry-After header; zero when absent.
	RetryAfter time.Duration
	App        GraphApp
	// From is the message's From address, when known (for SendAs fixes).
	From string
}

func (e *GraphError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d", e.Status)
	if e.Code != "" {
		b.WriteString(" " + e.Code)
	}
	if e.Message != "" {
		b.WriteString(": " + e.Message)
	}
	fmt.Fprintf(&b, " (Graph %s", e.Op)
	if e.RequestID != "" {
		b.WriteString(", request-id " + e.RequestID)
	}
	b.WriteString(")")
	return b.String()
}

// graphDefaultWait is how long a 429 without Retry-After holds the mailbox.
const graphDefaultWait = 30 * time.Second

// Fixes for Graph's answers. The verbs are filled in from
// GraphError.App and the mailbox.
const (
	fixGraphToken = "Microsoft Graph refused the app's token for %[1]s: check that the app's graph_scope is https://graph.microsoft.com/.default " +
		"(or the cloud's Graph host), that tenant_id %[2]s is the mailbox's tenant, and that app %[3]s has Mail.Send with admin consent (%[4]s)"
	fixGraphAccess = "app %[3]s may not send as %[1]s through Microsoft Graph: grant Mail.Send%[5]s (app registration → API permissions → Microsoft Graph → Application permissions) " +
		"and admin consent (%[4]s); or, with Exchange RBAC for Applications, New-ManagementRoleAssignment -App %[6]s -Role \"Application Mail.Send\"%[7]s -CustomResourceScope <a scope that holds %[1]s>; " +
		"check that no application access policy (Get-ApplicationAccessPolicy) leaves %[1]s out; grants can take up to an hour to apply"
	fixGraphMailbox = "Microsoft Graph finds no Exchange Online mailbox %[1]s in tenant %[2]s: check the address, that it is a user or shared mailbox of this tenant, " +
		"and that it has an Exchange Online license (a new mailbox can take a few hours to become reachable by Graph)"
	fixGraphSendAs = "mailbox %[1]s may not send as %[2]s: Add-RecipientPermission -Identity %[2]s -Trustee %[1]s -AccessRights SendAs " +
		"(and list it under send_as of mailbox %[1]s); grants can take up to an hour to apply"
	fixGraphQuota = "mailbox %[1]s reached Exchange Online's recipients per day; mail waits for the 24-hour window to roll (spread the load over more mailboxes if this repeats)"
	fixGraphFull  = "mailbox %[1]s is full (Sent Items counts toward its quota): empty Sent Items or raise the quota"
)

// consentURL is the admin consent link of an app.
func (a GraphApp) consentURL() string {
	host := a.Authority
	if host == "" {
		host = "https://login.microsoftonline.com/"
	}
	return strings.TrimSuffix(host, "/") + "/" + orPlaceholder(a.TenantID, "<tenant id>") + "/adminconsent?client_id=" + orPlaceholder(a.ClientID, "<client id>")
}

func orPlaceholder(s, placeholder string) string {
	if s == "" {
		return placeholder
	}
	return s
}

// classifyGraph reads one Graph answer. Codes decide before statuses:
// Graph sends some codes (ErrorInvalidUser) under more than one status.
func classifyGraph(e *GraphError, mailbox string) Verdict {
	v := Verdict{Reply: e.Error(), Wait: e.RetryAfter}
	code := strings.ToLower(e.Code)
	msg := strings.ToLower(e.Message)
	a := e.App
	client := orPlaceholder(a.ClientID, "<client id>")
	tenant := orPlaceholder(a.TenantID, "<tenant id>")
	switch {
	case e.Status >= 200 && e.Status < 300:
		v.Kind = Delivered
	case e.Status == 401:
		// A stale or wrong-audience token: the first earns a fresh one.
		v.Kind, v.RetryToken = ConfigFault, true
		v.Fix = fmt.Sprintf(fixGraphToken, mailbox, tenant, client, a.consentURL())
	case e.Status == 429:
		v.Kind = Throttled
		if v.Wait <= 0 {
			v.Wait = graphDefaultWait
		}
		v.AppWide = code == "applicationthrottled" && !strings.Contains(msg, "mailboxconcurrency")
	case strings.Contains(code, "sendasdenied") || strings.Contains(msg, "right to send mail on behalf of"):
		v.Kind = SenderFault
		v.Fix = fmt.Sprintf(fixGraphSendAs, mailbox, orPlaceholder(e.From, "<from address>"))
	case code == "errorinvaliduser" || code == "mailboxnotenabledforrestapi" || code == "errormailboxnotenabledforrestapi" ||
		(e.Status == 404 && code == "resourcenotfound") || code == "request_resourcenotfound":
		v.Kind = ConfigFault
		v.Fix = fmt.Sprintf(fixGraphMailbox, mailbox, tenant)
	case strings.Contains(code, "submissionquotaexceeded") || strings.Contains(msg, "submissionquotaexceeded"):
		v.Kind, v.Fix = Quota, fmt.Sprintf(fixGraphQuota, mailbox)
	case code == "errorquotaexceeded" || code == "quotaexceeded":
		v.Kind, v.Fix = ConfigFault, fmt.Sprintf(fixGraphFull, mailbox)
	case e.Status == 403 || code == "erroraccessdenied" || code == "accessdenied" || code == "authorization_requestdenied":
		// A token carries the roles granted when it was issued: after the
		// admin grants Mail.Send, only a fresh token has it. So the first
		// 403 earns one, as 535 5.7.3 does on SMTP.
		v.Kind, v.RetryToken = ConfigFault, true
		readWrite, role := "", ""
		if e.Draft {
			// Large messages go through a draft, which Mail.Send alone
			// may not create.
			readWrite, role = " and Mail.ReadWrite (large messages go through a draft)", " (and \"Application Mail.ReadWrite\")"
		}
		v.Fix = fmt.Sprintf(fixGraphAccess, mailbox, tenant, client, a.consentURL(), readWrite, orPlaceholder(a.ObjectID, "<service principal id>"), role)
	case e.Status >= 500 || e.Status == 408 || e.Status == 409 || e.Status == 423:
		v.Kind = Transient
	case e.Status == 404 || code == "erroritemnotfound":
		// The draft went away half-way; the whole message goes again.
		v.Kind = Transient
	case e.Status == 400 || e.Status == 413 || e.Status == 415 || e.Status == 422:
		// Graph found fault with the message itself (invalid recipients,
		// MIME, size): sending it again gives the same answer.
		v.Kind = Permanent
	default:
		v.Kind = Transient
	}
	return v
}
