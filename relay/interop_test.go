package relay

import (
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// The interop tests drive the relay with the clients admins try it with.
// CI installs swaks and python3; elsewhere the tests skip.

func swaks(t *testing.T, args ...string) string {
	t.Helper()
	path, err := exec.LookPath("swaks")
	if err != nil {
		t.Skip("swaks is not installed (apt-get install swaks)")
	}
	out, err := exec.Command(path, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("swaks %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func TestSwaksTLS(t *testing.T) {
	r := startRelay(t, "", nil)
	for _, tt := range []struct{ name, flag, addr, auth string }{
		{"STARTTLS", "--tls", r.addr, "PLAIN"},
		{"implicit TLS", "--tlsc", r.tlsAddr, "LOGIN"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			token := "swaks-token-" + strings.ReplaceAll(tt.name, " ", "-")
			out := swaks(t, tt.flag, "--server", tt.addr, "--ehlo", "app.test",
				"--auth", tt.auth, "--auth-user", "app", "--auth-password", appPassword,
				"--from", "noreply@contoso.com", "--to", "customer@example.com",
				"--header", "Subject: "+token, "--body", "body "+token)
			if !strings.Contains(out, "TLS started") && tt.flag == "--tls" {
				t.Errorf("swaks did not start TLS:\n%s", out)
			}
			body, env := r.stored(queuedID(t, out))
			if !strings.Contains(body, "with ESMTPSA id") || !strings.Contains(body, "Subject: "+token) || !strings.Contains(body, "body "+token) {
				t.Errorf("stored message:\n%s", body)
			}
			if env.Client != "app" || env.MailFrom != "noreply@contoso.com" {
				t.Errorf("envelope %+v", env)
			}
		})
	}
	// And a refusal reads well in swaks' output.
	path, _ := exec.LookPath("swaks")
	out, err := exec.Command(path, "--tls", "--server", r.addr, "--auth", "PLAIN", "--auth-user", "app", "--auth-password", appPassword,
		"--from", "ceo@contoso.com", "--to", "x@example.com").CombinedOutput()
	if err == nil || !strings.Contains(string(out), `550 5.7.1 Sender <ceo@contoso.com> is not allowed for client "app"`) {
		t.Errorf("swaks with a disallowed sender: %v\n%s", err, out)
	}
	r.assertNone("ceo@contoso.com")
}

const pythonClient = `
import smtplib, sys
port, mech, initial = int(sys.argv[1]), sys.argv[2], sys.argv[3] == "1"
s = smtplib.SMTP("127.0.0.1", port, local_hostname="app.test", timeout=20)
s.ehlo()
s.user, s.password = "app", sys.argv[4]
if mech == "PLAIN":
    s.auth("PLAIN", s.auth_plain, initial_response_ok=initial)
else:
    s.auth("LOGIN", s.auth_login, initial_response_ok=initial)
s.mail("noreply@contoso.com")
s.rcpt("customer@example.com")
code, msg = s.data("From: noreply@contoso.com\r\nSubject: python " + mech + "\r\n\r\nsent by smtplib\r\n")
print(code, msg.decode())
s.quit()
`

func TestPythonSmtplib(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 is not installed")
	}
	r := startRelay(t, "", func(r *testRelay) { r.srv.lim.sleep = func(time.Duration) {} })
	port := r.addr[strings.LastIndexByte(r.addr, ':')+1:]
	for _, mech := range []string{"PLAIN", "LOGIN"} {
		for _, initial := range []string{"0", "1"} {
			t.Run(mech+"/initial="+initial, func(t *testing.T) {
				out, err := exec.Command(py, "-c", pythonClient, port, mech, initial, appPassword).CombinedOutput()
				if err != nil {
					t.Fatalf("python: %v\n%s", err, out)
				}
				if !strings.HasPrefix(string(out), "250 ") {
					t.Fatalf("python got %s", out)
				}
				body, _ := r.stored(queuedID(t, string(out)))
				if !strings.Contains(body, "\r\nSubject: python "+mech+"\r\n") || !strings.HasSuffix(body, "\r\n\r\nsent by smtplib\r\n") {
					t.Errorf("stored:\n%q", body)
				}
			})
		}
	}
	// A wrong password, as smtplib reports it.
	out, err := exec.Command(py, "-c", pythonClient, port, "LOGIN", "1", "wrong").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "SMTPAuthenticationError: (535, b'5.7.8 Authentication credentials invalid") {
		t.Errorf("python with a wrong password: %v\n%s", err, out)
	}
}

func TestMsmtp(t *testing.T) {
	msmtp, err := exec.LookPath("msmtp")
	if err != nil {
		t.Skip("msmtp is not installed")
	}
	r := startRelay(t, "", nil)
	port := r.addr[strings.LastIndexByte(r.addr, ':')+1:]
	cmd := exec.Command(msmtp, "--host=127.0.0.1", "--port="+port, "--tls=on", "--tls-starttls=on", "--tls-certcheck=off",
		"--auth=plain", "--user=app", "--passwordeval=echo "+appPassword, "--from=noreply@contoso.com", "--domain=app.test", "customer@example.com")
	cmd.Stdin = strings.NewReader("From: noreply@contoso.com\nSubject: msmtp-token\n\nsent by msmtp\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("msmtp: %v\n%s", err, out)
	}
	ids, err := r.spool.IDs("incoming")
	if err != nil || len(ids) != 1 {
		t.Fatalf("spool: %v %v", ids, err)
	}
	body, _ := r.stored(ids[0])
	if !strings.Contains(body, "Subject: msmtp-token\r\n") || !strings.HasSuffix(body, "\r\nsent by msmtp\r\n") {
		t.Errorf("stored:\n%q", body)
	}
}

// TestSwaksWrongPasswordCountsOnce: swaks given a username and password
// and no mechanism tries each one the relay offers (LOGIN, then PLAIN).
// One such run with a wrong password is one failed login: it counted
// twice, so three runs locked 127.0.0.1 (and the demo) out for 15 minutes.
func TestSwaksWrongPasswordCountsOnce(t *testing.T) {
	path, err := exec.LookPath("swaks")
	if err != nil {
		t.Skip("swaks is not installed (apt-get install swaks)")
	}
	var compares atomic.Int64
	r := startRelay(t, "auth_max_failures = 3", func(r *testRelay) { countCompares(r, &compares) })
	run := func(password string) (string, error) {
		out, err := exec.Command(path, "--server", r.addr, "--ehlo", "app.test",
			"--auth-user", "app", "--auth-password", password,
			"--from", "noreply@contoso.com", "--to", "customer@example.com").CombinedOutput()
		return string(out), err
	}
	for i := range 2 {
		out, err := run("wrong")
		if err == nil || !strings.Contains(out, "AUTH LOGIN") || !strings.Contains(out, "AUTH PLAIN") {
			t.Fatalf("swaks run %d with a wrong password: %v; want a failure after trying LOGIN and PLAIN\n%s", i+1, err, out)
		}
		if n := compares.Load(); n != int64(i+1) {
			t.Errorf("after %d swaks runs %d passwords compared, want %d", i+1, n, i+1)
		}
	}
	// Two failed logins of three: the right password still gets in.
	out, err := run(appPassword)
	if err != nil {
		t.Fatalf("swaks with the right password after two wrong runs: %v\n%s", err, out)
	}
	queuedID(t, out)
}
