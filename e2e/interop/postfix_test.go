package interop

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestPostfix relays a composed message through a private Postfix
// instance, as sites do that keep Postfix in front of their applications:
// STARTTLS at level "secure" (the relay's certificate verified against
// the test CA and matched to the next hop's name) and AUTH PLAIN.
// Postfix has no implicit TLS towards a relayhost without a TLS wrapper
// setting; STARTTLS is what sites configure. Needs root (Postfix's
// daemons switch users); elsewhere the test skips.
func TestPostfix(t *testing.T) {
	t.Parallel()
	postfix, err := exec.LookPath("postfix")
	if err != nil {
		t.Skip("postfix is not installed (apt-get install postfix libsasl2-modules, 'No configuration')")
	}
	sendmail, err := exec.LookPath("sendmail")
	if err != nil || os.Geteuid() != 0 {
		t.Skip("needs root and Postfix's sendmail to run a private Postfix instance")
	}
	debVersion(t, "Postfix", "postfix")
	r := startRelay(t)

	// Postfix's daemons run as user postfix and must reach their queue:
	// t.TempDir() is private to root, so use a world-searchable directory.
	w, err := os.MkdirTemp("/var/tmp", "oauthrelay-interop-postfix-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(w, 0o755)
	etc := filepath.Join(w, "etc")
	for _, d := range []string{etc, filepath.Join(w, "queue"), filepath.Join(w, "data")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"master.cf", "postfix-files"} {
		b, err := os.ReadFile(filepath.Join("/etc/postfix", f))
		if err != nil {
			t.Skipf("no Postfix files to copy: %v", err)
		}
		os.WriteFile(filepath.Join(etc, f), b, 0o644)
	}
	exec.Command("cp", "-r", "/etc/postfix/postfix-files.d", etc).Run()
	logFile := filepath.Join(w, "postfix.log")
	mainCf := fmt.Sprintf(`compatibility_level = 3.6
queue_directory = %s/queue
data_directory = %s/data
myhostname = pfclient.test
mydestination =
inet_interfaces = loopback-only
inet_protocols = ipv4
smtp_host_lookup = native
relayhost = [localhost]:%s
smtp_tls_security_level = secure
smtp_tls_secure_cert_match = nexthop
smtp_tls_CAfile = %s
smtp_sasl_auth_enable = yes
smtp_sasl_password_maps = static:%s:%s
smtp_sasl_security_options = noanonymous
maillog_file = %s
`, w, w, r.port(startTLS), r.caFile, user, password, logFile)
	if err := os.WriteFile(filepath.Join(etc, "main.cf"), []byte(mainCf), 0o644); err != nil {
		t.Fatal(err)
	}
	run := func(name string, args ...string) {
		t.Helper()
		if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
	}
	run("postconf", "-c", etc, "-MX", "smtp/inet")
	run("postconf", "-c", etc, "-F", "*/*/chroot = n")
	// set-permissions is slow (it walks every Postfix file), but without
	// it sendmail cannot drop the message into the private queue.
	exec.Command(postfix, "-c", etc, "set-permissions").Run()
	run(postfix, "-c", etc, "start")
	t.Cleanup(func() {
		exec.Command(postfix, "-c", etc, "stop").Run()
		if t.Failed() {
			b, _ := os.ReadFile(logFile)
			t.Logf("postfix log:\n%s", b)
		}
		os.RemoveAll(w)
	})

	r.run(startTLS, composed(t), sendmail, "-C", etc, "-t", "-f", from)
	r.arrived(checks{})
}
