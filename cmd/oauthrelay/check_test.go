package main

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/oauthrelay/oauthrelay/internal/testkit"
)

func TestCheckExample(t *testing.T) {
	t.Setenv("CONTOSO_CLIENT_SECRET", "example-secret-value")
	var out, errb bytes.Buffer
	if code := run([]string{"check", "-config", "../../config.toml.example"}, &out, &errb); code != 0 {
		t.Fatalf("check exited %d:\n%s", code, errb.String())
	}
	for _, want := range []string{
		"configuration is valid",
		"CLIENT", "SENDER", "MAILBOX", "APP",
		"erp              helpdesk@contoso.com               helpdesk@contoso.com           contoso",
		"noreply@contoso.com                helpdesk@contoso.com           contoso",
		`(AUTH as "erp" from 10.0.0.0/24)`,
		"rewrites every sender to scanner@contoso.com",
		"app contoso: tenant",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("routing table lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String()+errb.String(), "example-secret-value") {
		t.Error("check printed the client secret")
	}
	// Without the variable, check still passes (admins check in a shell
	// without the service's secrets) but warns which one is missing.
	os.Unsetenv("CONTOSO_CLIENT_SECRET")
	out.Reset()
	errb.Reset()
	if code := run([]string{"check", "-config", "../../config.toml.example"}, &out, &errb); code != 0 || !strings.Contains(errb.String(), "CONTOSO_CLIENT_SECRET is not set") {
		t.Errorf("check without the variable: exit %d\n%s", code, errb.String())
	}
}

func TestCheckReportsEveryProblem(t *testing.T) {
	src := `[listen]
address = "127.0.0.1:2525"
hostnme = "relay.contoso.com"

[[app]]
name = "contoso"
tenant_id = "00000000-0000-0000-0000-000000000000"
client_id = "11111111-2222-3333-4444-555555555555"
client_secret = "x"

[[mailbox]]
address = "helpdesk@contoso.com"
app = "contoso"

[[client]]
name = "erp"
networks = ["10.0.0.0/24", "10.1.0.0/99"]
senders = ["helpdesk@contoso.com", "ceo@contoso.com"]
`
	path := testkit.WriteFile(t, "bad.toml", []byte(src))
	var out, errb bytes.Buffer
	if code := run([]string{"check", "-config", path}, &out, &errb); code != 1 {
		t.Fatalf("check exited %d, want 1", code)
	}
	for _, want := range []string{
		"3 problem(s)",
		path + `:3: listen.hostnme: unknown key — fix: did you mean "hostname"?`,
		path + ":18: client[0] (erp).senders: ceo@contoso.com is not the address or a send_as of any [[mailbox]]",
		path + `:17: client[0] (erp).networks: "10.1.0.0/99" is not a valid network — fix:`,
	} {
		if !strings.Contains(errb.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, errb.String())
		}
	}
	if out.Len() != 0 {
		t.Errorf("a failed check printed a routing table:\n%s", out.String())
	}
}

func TestCheckDefaultPathAndFlags(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"check", "-bogus"}, &out, &errb); code != 2 {
		t.Errorf("bad flag: exit %d", code)
	}
	errb.Reset()
	// -h is asking for help, not an error, in every command.
	for _, cmd := range []string{"check", "serve", "demo", "hash-password", "token", "doctor", "queue", "cert", "emulator"} {
		if code := run([]string{cmd, "-h"}, &out, &errb); code != 0 {
			t.Errorf("%s -h: exit %d, want 0", cmd, code)
		}
	}
	errb.Reset()
	run([]string{"check", "-h"}, &out, &errb)
	if !strings.Contains(errb.String(), "/etc/oauthrelay/config.toml") {
		t.Errorf("-config does not default to /etc/oauthrelay/config.toml:\n%s", errb.String())
	}
}

func TestHashPassword(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	w.WriteString("s3cret pass\n")
	w.Close()
	old := os.Stdin
	os.Stdin = r
	defer func() { os.Stdin = old }()
	var out, errb bytes.Buffer
	if code := run([]string{"hash-password", "-cost", "4"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	h := strings.TrimSpace(out.String())
	if bcrypt.CompareHashAndPassword([]byte(h), []byte("s3cret pass")) != nil {
		t.Errorf("hash %q does not match the password without its newline", h)
	}
}
