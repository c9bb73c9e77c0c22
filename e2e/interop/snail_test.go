package interop

import (
	"fmt"
	"strings"
	"testing"
)

// TestSNail sends with s-nail (mailx), as cron jobs and scripts do, its
// settings and password in its resource file (MAILRC) the way an admin
// writes them: mta=smtp:// with smtp-use-starttls, or mta=smtps://.
// s-nail builds the MIME: subject encoding, attachment, charset. Its
// certificate check matches DNS names only, so it connects to localhost.
func TestSNail(t *testing.T) {
	t.Parallel()
	snail := need(t, "s-nail", "apt-get install s-nail")
	version(t, "s-nail", snail, "-V")
	eachSecurity(t, both, func(t *testing.T, r *relay, sec security) {
		mta := sec.pick("smtp", "smtps") + "://" + user + "@localhost:" + r.port(sec)
		tlsLine := sec.pick("set smtp-use-starttls", "")
		rc := fmt.Sprintf(`set v15-compat
set mta=%s
%s
set smtp-auth=plain
set password-%s@localhost:%s="%s"
set tls-ca-file="%s"
set tls-ca-no-defaults
set tls-verify=strict
set from="%s <%s>"
set hostname=app.test
set ttycharset=UTF-8
set sendcharsets=utf-8
set nosave
`, mta, tlsLine, user, r.port(sec), password, r.caFile, fromName, from)
		mailrc := secretFile(t, "mailrc", rc)
		out := r.runWith(sec, []string{"MAILRC=" + mailrc, "HOME=" + t.TempDir()}, text, snail,
			"-:u", "-s", subject, "-a", r.attFile, "-c", cc, to)
		if strings.TrimSpace(out) != "" {
			t.Logf("s-nail said: %s", out)
		}
		r.arrived(checks{})
	})
}
