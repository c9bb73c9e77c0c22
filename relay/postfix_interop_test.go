package relay

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/testkit"
)

// TestPostfixClient relays through a private Postfix instance, as sites do
// that keep Postfix in front of their applications: Postfix speaks STARTTLS
// (mandatory) and AUTH PLAIN to the relay. CI installs postfix (with no
// system configuration); elsewhere the test skips.
func TestPostfixClient(t *testing.T) {
	postfix, err := exec.LookPath("postfix")
	if err != nil {
		t.Skip("postfix is not installed (apt-get install postfix, 'No configuration')")
	}
	sendmail, err := exec.LookPath("sendmail")
	if err != nil || os.Geteuid() != 0 {
		t.Skip("needs root and Postfix's sendmail to run a private Postfix instance")
	}
	r := startRelay(t, "", nil)

	host, port, _ := net.SplitHostPort(r.addr)
	etc, logFile := testkit.StartPostfix(t, postfix, "oauthrelay-postfix-", func(work, logFile string) string {
		return fmt.Sprintf(`compatibility_level = 3.6
queue_directory = %s/queue
data_directory = %s/data
myhostname = pfclient.test
mydestination =
inet_interfaces = loopback-only
inet_protocols = ipv4
relayhost = [%s]:%s
smtp_tls_security_level = encrypt
smtp_sasl_auth_enable = yes
smtp_sasl_password_maps = static:app:%s
smtp_sasl_security_options = noanonymous
maillog_file = %s
`, work, work, host, port, appPassword, logFile)
	})

	token := fmt.Sprintf("postfix-%d", time.Now().UnixNano())
	cmd := exec.Command(sendmail, "-C", etc, "-f", "noreply@contoso.com", "customer@example.com")
	cmd.Stdin = strings.NewReader("From: Billing <noreply@contoso.com>\nTo: customer@example.com\nSubject: " + token + "\n\nsent through Postfix\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sendmail: %v\n%s", err, out)
	}

	sent := regexp.MustCompile(`status=sent \((250 2\.0\.0 OK: queued as \S+)\)`)
	// Postfix reports in its log file only: read it until the message is
	// sent or refused.
	var log string
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	testkit.WaitFor(ctx, t, "Postfix to relay the message", func() bool {
		b, _ := os.ReadFile(logFile)
		log = string(b)
		return sent.MatchString(log) || strings.Contains(log, "status=bounced") || strings.Contains(log, "status=deferred") || strings.Contains(log, "fatal:")
	})
	m := sent.FindStringSubmatch(log)
	if m == nil {
		t.Fatalf("Postfix could not relay:\n%s", log)
	}
	body, env := r.stored(queuedID(t, m[1]))
	if !strings.Contains(body, "Subject: "+token) || !strings.Contains(body, "with ESMTPSA id") {
		t.Errorf("stored message:\n%s", body)
	}
	if env.Client != "app" || env.MailFrom != "noreply@contoso.com" || len(env.Recipients) != 1 {
		t.Errorf("envelope %+v", env)
	}
}
