package interop

import "testing"

// TestMsmtp sends a composed message with msmtp -t (recipients from the
// headers, as sendmail -t), the password from --passwordeval so it stays
// out of the process list.
func TestMsmtp(t *testing.T) {
	t.Parallel()
	msmtp := need(t, "msmtp", "apt-get install msmtp")
	version(t, "msmtp", msmtp, "--version")
	eachSecurity(t, both, func(t *testing.T, r *relay, sec security) {
		starttls := sec.pick("on", "off")
		r.run(sec, composed(t), msmtp, "--host=127.0.0.1", "--port="+r.port(sec), "--domain=app.test",
			"--tls=on", "--tls-starttls="+starttls, "--tls-trust-file="+r.caFile,
			"--auth=plain", "--user="+user, `--passwordeval=printf %s "$SMTP_PASSWORD"`,
			"--from="+from, "-t")
		r.arrived(checks{})
	})
}
