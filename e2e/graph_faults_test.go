package e2e

// Graph faults end to end: Graph refusing the relay's own configuration
// keeps mail queued and says which admin step fixes it.

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/oauthrelay/oauthrelay/internal/msemu"
	"github.com/oauthrelay/oauthrelay/internal/testkit"
	"github.com/oauthrelay/oauthrelay/queue"
)

// readyz fetches /readyz.
func (r *testRelay) readyz(ctx context.Context) (int, string) {
	r.t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+r.svc.MetricsAddr().String()+"/readyz", nil)
	if err != nil {
		r.t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestGraphConfigFaultsKeepMailQueued: Graph refusing the relay's own
// setup keeps the mail queued without a DSN and says what to do: 403
// ErrorAccessDenied (no Mail.Send, or an RBAC scope that leaves the
// mailbox out) pauses the mailbox with a fix naming the grant; 403
// ErrorSendAsDenied (From not granted) holds that sender's mail with a fix
// naming Add-RecipientPermission while the mailbox's own mail goes on.
// /readyz answers 503 with the fix. Once the grant is made in Microsoft
// 365 and the relay reloaded, the mail goes.
func TestGraphConfigFaultsKeepMailQueued(t *testing.T) {
	const sendAs = "noreply@contoso.com"
	graphRoles := []string{msemu.RoleMailSend, msemu.RoleMailReadWrite}
	app := func(roles, scope []string) msemu.App {
		return msemu.App{TenantID: tenantID, ClientID: secretApp, Secrets: []string{clientSec}, Consent: true,
			ServicePrincipal: true, GraphRoles: roles, ScopedMailboxes: scope}
	}
	for _, tc := range []struct {
		name string
		// from is the message's sender (MAIL FROM and From:).
		from string
		// setup provisions the emulator with the fault; grant fixes it.
		setup, grant func(e *msemu.Emulator)
		code         string
		fix          []string
		// sender: the fault is the sender's (SendAs), not the mailbox's.
		sender bool
	}{
		{
			name: "app lacks Mail.Send",
			from: graphMbx,
			setup: func(e *msemu.Emulator) {
				e.Provision(tenantID, secretApp, clientSec, graphMbx) // SMTP only: no Graph permission
			},
			grant: func(e *msemu.Emulator) { e.AddApp(app(graphRoles, nil)) },
			code:  "ErrorAccessDenied",
			fix:   []string{"Mail.Send", "admin consent", "adminconsent?client_id=" + secretApp, "New-ManagementRoleAssignment"},
		},
		{
			name: "RBAC scope leaves the mailbox out",
			from: graphMbx,
			setup: func(e *msemu.Emulator) {
				e.ProvisionGraph(tenantID, secretApp, clientSec, graphMbx)
				e.AddApp(app(graphRoles, []string{"someone-else@contoso.com"}))
			},
			grant: func(e *msemu.Emulator) { e.AddApp(app(graphRoles, []string{"someone-else@contoso.com", graphMbx})) },
			code:  "ErrorAccessDenied",
			fix:   []string{"Mail.Send", "New-ManagementRoleAssignment -App", "-CustomResourceScope"},
		},
		{
			name:  "From not granted SendAs",
			from:  sendAs,
			setup: func(e *msemu.Emulator) { e.ProvisionGraph(tenantID, secretApp, clientSec, graphMbx) },
			grant: func(e *msemu.Emulator) {
				e.AddMailbox(msemu.Mailbox{Address: graphMbx, FullAccess: []string{secretApp}, SendAs: []string{sendAs}})
			},
			code:   "ErrorSendAsDenied",
			fix:    []string{"Add-RecipientPermission -Identity " + sendAs + " -Trustee " + graphMbx + " -AccessRights SendAs"},
			sender: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := ctxFor(t)
			emu := startEmulator(t, msemu.Options{})
			tc.setup(emu)
			box := graphBox(graphMbx)
			box.SendAs = []string{sendAs}
			r := startRelay(t, emu, relayOptions{Apps: contosoApp(), Mailboxes: []testkit.Mailbox{box}, Metrics: true})
			r.mustSend(ctx, tc.from, "alice@fabrikam.example", tc.name)

			var reason, fix string
			testkit.WaitFor(ctx, t, "the fault in the mailbox's status", func() bool {
				st := r.statusOf(graphMbx)
				if !tc.sender {
					reason, fix = st.Reason, st.Fix
					return st.ConfigFault && st.Paused
				}
				for _, f := range st.SenderFaults {
					if strings.EqualFold(f.Sender, tc.from) {
						reason, fix = f.Reply, f.Fix
						return true
					}
				}
				return false
			})
			if !strings.Contains(reason, "403") || !strings.Contains(reason, tc.code) {
				t.Errorf("reason %q, want Graph's 403 %s", reason, tc.code)
			}
			for _, want := range tc.fix {
				if !strings.Contains(fix, want) {
					t.Errorf("fix %q does not name %q", fix, want)
				}
			}
			testkit.WaitFor(ctx, t, "the message deferred", func() bool { return len(r.ids(queue.Deferred)) == 1 })
			code, body := r.readyz(ctx)
			if code != http.StatusServiceUnavailable || !strings.Contains(body, graphMbx) || !strings.Contains(body, fix) {
				t.Errorf("/readyz = %d %q, want 503 naming %s and the fix", code, body, graphMbx)
			}
			envs, _, err := r.spool.List(queue.Deferred)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range envs {
				for _, rc := range e.Recipients {
					if rc.State != queue.RcptPending {
						t.Errorf("recipient %s is %s, want pending", rc.Address, rc.State)
					}
				}
			}
			if len(emu.Delivered()) != 0 || len(r.ids(queue.Failed)) != 0 || len(r.ids(queue.Incoming))+len(r.ids(queue.Active)) != 0 {
				t.Fatalf("a configuration fault delivered, failed or bounced mail: %d delivered, failed %v", len(emu.Delivered()), r.ids(queue.Failed))
			}
			want := 1
			if tc.sender {
				// The mailbox itself is fine: its own mail goes on.
				if st := r.statusOf(graphMbx); st.Paused || st.ConfigFault {
					t.Errorf("a sender's missing SendAs paused the whole mailbox: %+v", st)
				}
				r.mustSend(ctx, graphMbx, "bob@fabrikam.example", "the mailbox's own mail")
				msgs, err := emu.WaitDelivered(ctx, 1)
				if err != nil || !strings.EqualFold(msgs[0].MailFrom, graphMbx) {
					t.Fatalf("the mailbox's own mail was not delivered during the sender's fault: %v %+v", err, msgs)
				}
				want = 2
			}

			// The admin makes the grant and reloads.
			tc.grant(emu)
			refused := emu.Stats().GraphStatuses[http.StatusForbidden]
			if !r.svc.Reload(r.path) {
				t.Fatal("reload refused")
			}
			testkit.WaitFor(ctx, t, "delivery after the grant and a reload", func() bool {
				if n := emu.Stats().GraphStatuses[http.StatusForbidden] - refused; n >= 3 {
					t.Fatalf("Graph still answered 403 %d times after the grant and a reload (%d token requests in all); the relay's status: %+v",
						n, emu.Stats().TokenRequests, r.statusOf(graphMbx))
				}
				return len(emu.Delivered()) == want
			})
			m := emu.Delivered()[want-1]
			if !sameAddrs(m.Recipients, []string{"alice@fabrikam.example"}) || !strings.EqualFold(m.MailFrom, tc.from) {
				t.Errorf("delivered %+v", m)
			}
			r.waitQueueEmpty(ctx)
			if st := r.statusOf(graphMbx); st.ConfigFault || st.Paused || len(st.SenderFaults) != 0 {
				t.Errorf("mailbox still faulted after the fix: %+v", st)
			}
			if code, body := r.readyz(ctx); code != http.StatusOK {
				t.Errorf("/readyz after the fix = %d %q", code, body)
			}
		})
	}
}
