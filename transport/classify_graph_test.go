package transport

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"
)

// Every Graph answer of the reference's §6 table, and the ones a message
// earns for itself.
func TestClassifyGraph(t *testing.T) {
	const mbx = "helpdesk@contoso.com"
	app := GraphApp{ClientID: "11111111-2222-3333-4444-555555555555", TenantID: "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee", ObjectID: "99999999-8888-7777-6666-555555555555"}
	consent := "https://login.microsoftonline.com/" + app.TenantID + "/adminconsent?client_id=" + app.ClientID
	for _, tc := range []struct {
		name    string
		e       GraphError
		kind    Kind
		retry   bool
		wait    time.Duration
		appWide bool
		fix     []string // substrings of Fix; none means Fix must be empty
		notFix  string   // must not be in Fix
	}{
		{"accepted", GraphError{Status: 202}, Delivered, false, 0, false, nil, ""},
		{"stale token", GraphError{Status: 401, Code: "InvalidAuthenticationToken", Message: "Access token has expired or is not yet valid."},
			ConfigFault, true, 0, false, []string{"graph_scope", app.TenantID, consent}, ""},
		{"no Mail.Send", GraphError{Status: 403, Code: "ErrorAccessDenied", Message: "Access is denied. Check credentials and try again."},
			ConfigFault, true, 0, false, []string{"Mail.Send", consent, "New-ManagementRoleAssignment -App " + app.ObjectID + ` -Role "Application Mail.Send"`, mbx}, "Mail.ReadWrite"},
		{"draft without Mail.ReadWrite", GraphError{Status: 403, Code: "ErrorAccessDenied", Message: "Access is denied. Check credentials and try again.", Draft: true},
			ConfigFault, true, 0, false, []string{"Mail.ReadWrite", consent}, ""},
		{"send as denied", GraphError{Status: 403, Code: "ErrorSendAsDenied", Message: "The user account which was used to submit this request does not have the right to send mail on behalf of the specified sending account.", From: "billing@contoso.com"},
			SenderFault, false, 0, false, []string{"Add-RecipientPermission -Identity billing@contoso.com -Trustee " + mbx + " -AccessRights SendAs"}, ""},
		{"no such user", GraphError{Status: 404, Code: "ErrorInvalidUser", Message: "The requested user 'x' is invalid."},
			ConfigFault, false, 0, false, []string{mbx, app.TenantID, "license"}, ""},
		{"resource not found", GraphError{Status: 404, Code: "ResourceNotFound", Message: "Resource could not be discovered."},
			ConfigFault, false, 0, false, []string{mbx}, ""},
		{"no Exchange Online", GraphError{Status: 404, Code: "MailboxNotEnabledForRESTAPI", Message: "The mailbox is either inactive, soft-deleted, or is hosted on-premise."},
			ConfigFault, false, 0, false, []string{"license"}, ""},
		{"mailbox concurrency", GraphError{Status: 429, Code: "ApplicationThrottled", Message: "Application is over its MailboxConcurrency limit.", RetryAfter: 7 * time.Second},
			Throttled, false, 7 * time.Second, false, nil, ""},
		{"app throttled", GraphError{Status: 429, Code: "ApplicationThrottled", Message: "Application is over its IncomingBytes limit.", RetryAfter: 12 * time.Second},
			Throttled, false, 12 * time.Second, true, nil, ""},
		{"429 without Retry-After", GraphError{Status: 429, Code: "TooManyRequests"}, Throttled, false, 30 * time.Second, false, nil, ""},
		{"500", GraphError{Status: 500, Code: "generalException"}, Transient, false, 0, false, nil, ""},
		{"503 with Retry-After", GraphError{Status: 503, Code: "serviceNotAvailable", RetryAfter: time.Minute}, Transient, false, time.Minute, false, nil, ""},
		{"504", GraphError{Status: 504, Code: "UnknownError"}, Transient, false, 0, false, nil, ""},
		{"draft gone", GraphError{Status: 404, Code: "ErrorItemNotFound", Message: "The specified object was not found in the store.", Draft: true}, Transient, false, 0, false, nil, ""},
		{"invalid recipients", GraphError{Status: 400, Code: "ErrorInvalidRecipients", Message: "At least one recipient is not valid."}, Permanent, false, 0, false, nil, ""},
		{"bad base64", GraphError{Status: 400, Code: "ErrorMimeContentInvalidBase64String", Message: "Invalid base64 string for MIME content."}, Permanent, false, 0, false, nil, ""},
		{"too big", GraphError{Status: 413, Code: "RequestEntityTooLarge"}, Permanent, false, 0, false, nil, ""},
		{"daily quota", GraphError{Status: 403, Code: "ErrorSubmissionQuotaExceeded"}, Quota, false, 0, false, []string{"recipients per day"}, ""},
		{"daily quota (400)", GraphError{Status: 400, Code: "ErrorSubmissionQuotaExceeded"}, Quota, false, 0, false, []string{"recipients per day"}, ""},
		{"mailbox full", GraphError{Status: 400, Code: "ErrorQuotaExceeded"}, ConfigFault, false, 0, false, []string{"Sent Items"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := tc.e
			e.Op, e.App, e.RequestID = "sendMail", app, "req-1"
			// Classify is the one entry point; the error arrives wrapped.
			v := Classify(StageGraph, fmt.Errorf("deliver: %w", &e), mbx)
			if v.Kind != tc.kind || v.RetryToken != tc.retry || v.Wait != tc.wait || v.AppWide != tc.appWide {
				t.Fatalf("got kind %v retry %v wait %v appwide %v, want %v %v %v %v (%s)", v.Kind, v.RetryToken, v.Wait, v.AppWide, tc.kind, tc.retry, tc.wait, tc.appWide, v.Reply)
			}
			if len(tc.fix) == 0 && v.Fix != "" {
				t.Fatalf("unexpected fix %q", v.Fix)
			}
			for _, f := range tc.fix {
				if !strings.Contains(v.Fix, f) {
					t.Fatalf("fix %q lacks %q", v.Fix, f)
				}
			}
			if tc.notFix != "" && strings.Contains(v.Fix, tc.notFix) {
				t.Fatalf("fix %q should not mention %q", v.Fix, tc.notFix)
			}
			if e.Status != 202 && (!strings.HasPrefix(v.Reply, fmt.Sprint(e.Status)) || !strings.Contains(v.Reply, "request-id req-1")) {
				t.Fatalf("reply %q lacks the status or request-id", v.Reply)
			}
			if strings.Contains(v.Fix, "<client id>") || strings.Contains(v.Fix, "<tenant id>") || strings.Contains(v.Fix, "<service principal id>") {
				t.Fatalf("fix has placeholders although the ids are known: %q", v.Fix)
			}
		})
	}
}

// Without the ids, a fix still tells the admin what to look up.
func TestClassifyGraphPlaceholders(t *testing.T) {
	v := Classify(StageGraph, &GraphError{Op: "sendMail", Status: 403, Code: "ErrorSendAsDenied"}, "a@contoso.com")
	if !strings.Contains(v.Fix, "-Identity <from address>") {
		t.Fatalf("fix %q", v.Fix)
	}
	v = Classify(StageGraph, &GraphError{Op: "sendMail", Status: 403, Code: "ErrorAccessDenied", App: GraphApp{Authority: "https://login.microsoftonline.us/", TenantID: "t"}}, "a@contoso.com")
	if !strings.Contains(v.Fix, "https://login.microsoftonline.us/t/adminconsent?client_id=<client id>") {
		t.Fatalf("fix %q", v.Fix)
	}
}

// Failures before Graph answers are transient, as for SMTP.
func TestClassifyGraphNetwork(t *testing.T) {
	for _, err := range []error{
		&url.Error{Op: "Post", URL: "https://graph.microsoft.com/v1.0/users/a/sendMail", Err: timeoutErr{}},
		&url.Error{Op: "Post", URL: "https://graph.microsoft.com/v1.0/users/a/sendMail", Err: &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}},
	} {
		if v := Classify(StageGraph, err, "a@contoso.com"); v.Kind != Transient {
			t.Fatalf("%v: %v", err, v.Kind)
		}
	}
}
