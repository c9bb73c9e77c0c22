package interop

import "testing"

// TestCurl sends with curl's SMTP support, as shell scripts do: smtp://
// with --ssl-reqd (STARTTLS or fail) and smtps:// (implicit TLS); curl
// builds the MIME (-F) but sends headers (-H) as given, so the script
// encodes the subject itself. The password is in a netrc file, not on the
// command line.
func TestCurl(t *testing.T) {
	t.Parallel()
	curl := need(t, "curl", "apt-get install curl")
	version(t, "curl", curl, "--version")
	eachSecurity(t, both, func(t *testing.T, r *relay, sec security) {
		netrc := secretFile(t, "netrc", "machine 127.0.0.1 login "+user+" password "+password+"\n")
		scheme := sec.pick("smtp", "smtps")
		r.run(sec, "", curl, "--silent", "--show-error", "--ssl-reqd", "--cacert", r.caFile, "--netrc-file", netrc,
			"--url", scheme+"://127.0.0.1:"+r.port(sec)+"/app.test",
			"--mail-from", from, "--mail-rcpt", to, "--mail-rcpt", cc,
			"-H", "Subject: "+encodedSubject, "-H", "From: "+encodedFrom, "-H", "To: "+to, "-H", "Cc: "+cc,
			"-F", "="+text+";type=text/plain; charset=UTF-8;encoder=quoted-printable",
			"-F", "=@"+r.attFile+";type=application/pdf;encoder=base64")
		r.arrived(checks{})
	})
}
