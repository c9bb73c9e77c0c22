package interop

import (
	"os"
	"path/filepath"
	"testing"
)

// The library clients: each program builds the message with the library's
// own MIME support and sends it the way the library's documentation says,
// trusting the relay's test CA only.

func TestNodemailer(t *testing.T) {
	t.Parallel()
	node := need(t, "node", "apt-get install nodejs")
	if _, err := os.Stat("node/node_modules/nodemailer/package.json"); err != nil {
		t.Skip("nodemailer is not installed (npm ci --prefix e2e/interop/node)")
	}
	version(t, "node", node, "--version")
	version(t, "nodemailer", node, "-p", `require("./node/node_modules/nodemailer/package.json").version`)
	sendsBoth(t, nil, node, "node/send.js")
}

func TestPHPMailer(t *testing.T) {
	t.Parallel()
	php := need(t, "php", "apt-get install php-cli")
	if _, err := os.Stat("/usr/share/php/libphp-phpmailer/autoload.php"); err != nil {
		t.Skip("PHPMailer is not installed (apt-get install libphp-phpmailer)")
	}
	version(t, "php", php, "--version")
	debVersion(t, "PHPMailer", "libphp-phpmailer")
	sendsBoth(t, nil, php, "php/send.php")
}

func TestJakartaMail(t *testing.T) {
	t.Parallel()
	javac := need(t, "javac", "apt-get install default-jdk-headless")
	java := need(t, "java", "apt-get install default-jdk-headless")
	cp := jakartaClasspath(t)
	version(t, "java", java, "-version")
	debVersion(t, "Jakarta Mail", "libjakarta-mail-java")
	out := filepath.Join(buildDir, "java")
	build(t, "Jakarta Mail", javac, "-encoding", "UTF-8", "-cp", cp, "-d", out, "java/Send.java")
	// Jakarta Mail 2.0's identity check matches DNS names only, not IP
	// addresses: connect by name, as applications do.
	sendsBoth(t, []string{"SMTP_HOST=localhost"}, java, "-cp", cp+":"+out, "Send")
}

// TestMonoSmtpClient: System.Net.Mail.SmtpClient has no implicit TLS
// (EnableSsl is STARTTLS), and Mono's offers TLS 1.0 only (its ClientHello
// lists 0x0301 alone, even with ServicePointManager.SecurityProtocol set
// to Tls12). So the relay refuses it by default, and takes it with
// min_tls_version = "1.0", the setting for exactly such old clients. The
// message is also proven as a trusted-network client sends it: from an
// address in networks, without TLS or AUTH.
func TestMonoSmtpClient(t *testing.T) {
	t.Parallel()
	mcs := need(t, "mcs", "apt-get install mono-complete")
	mono := need(t, "mono", "apt-get install mono-complete")
	version(t, "mono", mono, "--version")
	exe := filepath.Join(buildDir, "Send.exe")
	build(t, ".NET SmtpClient", mcs, "-nologo", "-nowarn:618", "-r:System.dll", "-r:System.Net.dll", "-out:"+exe, "mono/Send.cs")
	t.Run("starttls refused at the default TLS 1.2", func(t *testing.T) {
		r := startRelay(t)
		out, err := r.try(startTLS, nil, mono, exe)
		if err == nil {
			t.Fatalf("Mono's TLS 1.0 STARTTLS succeeded against min_tls_version 1.2:\n%s", out)
		}
	})
	t.Run("starttls with min_tls_version 1.0", func(t *testing.T) {
		r := startRelayTLS(t, false, true)
		r.run(startTLS, "", mono, exe)
		r.arrived(checks{quotedWords: true})
	})
	t.Run("trusted network", func(t *testing.T) {
		r := startRelayWith(t, true)
		r.run(noTLS, "", mono, exe)
		r.arrived(checks{quotedWords: true})
	})
}

func TestPerlNetSMTP(t *testing.T) {
	t.Parallel()
	perl := need(t, "perl", "apt-get install perl")
	for _, m := range []string{"IO::Socket::SSL", "Authen::SASL"} {
		if err := runQuiet(perl, "-M"+m, "-e", "1"); err != nil {
			t.Skipf("Perl's %s is missing (apt-get install libio-socket-ssl-perl libauthen-sasl-perl)", m)
		}
	}
	version(t, "Net::SMTP", perl, "-MNet::SMTP", "-MIO::Socket::SSL", "-e",
		`print "Net::SMTP $Net::SMTP::VERSION, IO::Socket::SSL $IO::Socket::SSL::VERSION, perl $^V"`)
	sendsBoth(t, nil, perl, "perl/send.pl")
}

func TestPythonSmtplib(t *testing.T) {
	t.Parallel()
	py := need(t, "python3", "apt-get install python3")
	version(t, "python3", py, "--version")
	sendsBoth(t, nil, py, "python/send.py")
}

// sendsBoth runs a library client's send program over STARTTLS and
// implicit TLS, each against a fresh relay, and checks the full message
// arrived: the library clients take all their settings from the
// environment the harness gives them, so only the command differs.
func sendsBoth(t *testing.T, env []string, name string, args ...string) {
	t.Helper()
	eachSecurity(t, both, func(t *testing.T, r *relay, sec security) {
		r.runEnv(sec, env, name, args...)
		r.arrived(checks{})
	})
}
