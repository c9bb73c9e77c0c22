package interop

import (
	"fmt"
	"os"
	"os/exec"
	"testing"

	"github.com/oauthrelay/oauthrelay/internal/testkit"
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

	etc, _ := testkit.StartPostfix(t, postfix, "oauthrelay-interop-postfix-", func(work, logFile string) string {
		return fmt.Sprintf(`compatibility_level = 3.6
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
`, work, work, r.port(startTLS), r.caFile, user, password, logFile)
	})

	r.run(startTLS, composed(t), sendmail, "-C", etc, "-t", "-f", from)
	r.arrived(checks{})
}
