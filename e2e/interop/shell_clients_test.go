package interop

import (
	"mime"
	"testing"
)

// encodedSubject is the subject as RFC 2047 words, for the clients that
// send headers as given (swaks, curl): the application encodes them.
var encodedSubject = mime.BEncoding.Encode("UTF-8", subject)

// encodedFrom is the From header's value, encoded the same way.
var encodedFrom = mime.BEncoding.Encode("UTF-8", fromName) + " <" + from + ">"

// TestSwaks sends with swaks' own MIME support (--attach).
func TestSwaks(t *testing.T) {
	t.Parallel()
	swaks := need(t, "swaks", "apt-get install swaks")
	version(t, "swaks", swaks, "--version")
	eachSecurity(t, both, func(t *testing.T, r *relay, sec security) {
		tlsFlag := sec.pick("--tls", "--tlsc")
		r.run(sec, "", swaks, tlsFlag, "--tls-verify", "--tls-ca-path", r.caFile,
			"--server", "127.0.0.1", "--port", r.port(sec), "--ehlo", "app.test",
			"--auth", "PLAIN", "--auth-user", user, "--auth-password", password,
			"--from", from, "--to", to+","+cc,
			"--header", "Subject: "+encodedSubject, "--header", "From: "+encodedFrom, "--header", "To: "+to, "--header", "Cc: "+cc,
			"--attach-type", "text/plain; charset=UTF-8", "--attach-body", text,
			"--attach-type", "application/pdf", "--attach-name", attName, "--attach", "@"+r.attFile)
		r.arrived(checks{})
	})
}
