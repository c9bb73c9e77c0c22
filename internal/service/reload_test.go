package service

import (
	"encoding/base64"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/oauthrelay/oauthrelay/config"
	"github.com/oauthrelay/oauthrelay/internal/testkit"
)

// TestReloadLiftsLockouts: an address locked out of AUTH (the demo after
// a few wrong swaks runs) shows in oauthrelay_auth_locked_out_addresses,
// and a reload lifts the lockout and says how many it lifted.
func TestReloadLiftsLockouts(t *testing.T) {
	hash, err := bcrypt.GenerateFromPassword([]byte("right"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	path := testkit.Config{
		Listen: testkit.Listen{Address: "127.0.0.1:0", Hostname: "relay.test", Extra: "auth_max_failures = 2"},
		Apps: []testkit.App{{Name: "contoso", TenantID: "00000000-0000-0000-0000-000000000000",
			ClientID: "11111111-2222-3333-4444-555555555555", ClientSecret: "not-a-real-secret"}},
		Mailboxes: []testkit.Mailbox{{Address: "helpdesk@contoso.com", App: "contoso"}},
		Clients:   []testkit.Client{{Name: "app", Username: "app", PasswordHash: string(hash), Senders: []string{"helpdesk@contoso.com"}}},
	}.Write(t)
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	log, logs := testkit.DebugLogger(t)
	r, err := Start(cfg, Options{Logger: log, NoDelivery: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Shutdown(0) })
	gauge := func() float64 {
		t.Helper()
		mfs, err := r.Metrics().Registry().Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == "oauthrelay_auth_locked_out_addresses" {
				return mf.GetMetric()[0].GetGauge().GetValue()
			}
		}
		t.Fatal("no oauthrelay_auth_locked_out_addresses")
		return 0
	}

	c := testkit.DialSMTP(t, r.SMTPAddr().String())
	c.Expect("EHLO app.test", "250")
	c.Expect("AUTH PLAIN "+plain("app", "wrong1"), "535 5.7.8")
	c.Expect("AUTH PLAIN "+plain("app", "wrong2"), "454 4.7.0 Too many failed logins")
	if g := gauge(); g != 1 {
		t.Errorf("oauthrelay_auth_locked_out_addresses = %v after a lockout, want 1", g)
	}
	if !r.Reload(path) {
		t.Fatal("reload refused")
	}
	if !strings.Contains(logs.String(), "lockouts_lifted=1") {
		t.Errorf("the reload does not log the lockout it lifted")
	}
	if g := gauge(); g != 0 {
		t.Errorf("oauthrelay_auth_locked_out_addresses = %v after a reload, want 0", g)
	}
	c = testkit.DialSMTP(t, r.SMTPAddr().String())
	c.Expect("EHLO app.test", "250")
	c.Expect("AUTH PLAIN "+plain("app", "right"), "235")
}

func plain(user, pass string) string {
	return base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + pass))
}
