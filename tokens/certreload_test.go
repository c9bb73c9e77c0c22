package tokens

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/oauthrelay/oauthrelay/config"
	"github.com/oauthrelay/oauthrelay/internal/msemu"
	"github.com/oauthrelay/oauthrelay/internal/msemu/emutest"
	"github.com/oauthrelay/oauthrelay/internal/testkit"
	"github.com/oauthrelay/oauthrelay/oauth"
)

// A certificate renewed in place (the same certificate_file path, new
// contents) is loaded by a reload: the source reports the new expiry, so
// the expiry metric and its alert follow the renewal.
func TestCertificateRenewedInPlace(t *testing.T) {
	emu := emutest.Start(t, msemu.Options{})
	const tenant, client = "8d5d2a5b-3f0e-4c1a-9a59-2c1f5e0b7a11", "5c2a7e11-90b4-4f3e-a1d2-0e9f8c7b6a51"
	newCert := func(days int) (string, oauth.CertInfo) {
		dir := filepath.Join(t.TempDir(), "cert")
		info, _, err := oauth.NewCertificate("CN=oauthrelay renew", days, dir)
		if err != nil {
			t.Fatal(err)
		}
		return filepath.Join(dir, oauth.CertKeyFile), info
	}
	oldFile, oldInfo := newCert(20)
	newFile, newInfo := newCert(400)
	path := filepath.Join(t.TempDir(), "relay.pem")
	copyFile := func(from string) {
		b, err := os.ReadFile(from)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	copyFile(oldFile)
	emu.AddApp(msemu.App{TenantID: tenant, ClientID: client, Consent: true, ServicePrincipal: true})
	emu.AddMailbox(msemu.Mailbox{Address: "scanner@contoso.com", FullAccess: []string{client}})
	kit := testkit.Config{Emulator: emu,
		Apps:      []testkit.App{{Name: "pem", TenantID: tenant, ClientID: client, CertificateFile: path}},
		Mailboxes: []testkit.Mailbox{{Address: "scanner@contoso.com", App: "pem"}},
		Clients:   []testkit.Client{{Name: "app", Networks: []string{"127.0.0.1"}, Senders: []string{"*"}}}}
	cfgPath := kit.Write(t)
	load := func() *config.Config {
		cfg, err := config.Load(cfgPath)
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	log, _ := testkit.DebugLogger(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	set, err := New(ctx, load(), emu.CertPool(), oauth.Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	notAfter := func() string { return set.Statuses()[0].CertNotAfter.UTC().String() }
	if got, want := notAfter(), oldInfo.NotAfter.UTC().String(); got != want {
		t.Fatalf("certificate expiry %s, want %s", got, want)
	}
	// A reload with the file unchanged keeps the source.
	if err := set.Update(load()); err != nil {
		t.Fatal(err)
	}
	if got, want := notAfter(), oldInfo.NotAfter.UTC().String(); got != want {
		t.Fatalf("after a reload without change: certificate expiry %s, want %s", got, want)
	}
	copyFile(newFile)
	if err := set.Update(load()); err != nil {
		t.Fatal(err)
	}
	if got, want := notAfter(), newInfo.NotAfter.UTC().String(); got != want {
		t.Errorf("after renewing the file in place and reloading: certificate expiry %s, want %s", got, want)
	}
}
