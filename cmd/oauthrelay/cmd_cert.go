package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/oauthrelay/oauthrelay/oauth"
)

func init() {
	register("cert", command{
		summary: "create or inspect the certificate an app registration authenticates with",
		run:     runCert,
	})
}

func certUsage(w io.Writer) {
	fmt.Fprintln(w, `Usage:
  oauthrelay cert new  [--subject "CN=oauthrelay"] [--days 730] [--out DIR]
  oauthrelay cert show FILE [--password-file F]
  oauthrelay cert new  --store LocalMachine\My [--subject ...] [--days 730] [--out DIR]   (Windows)
  oauthrelay cert show --store LocalMachine\My --thumbprint HEX | --subject "CN=..."   (Windows)

new   creates a self-signed RSA 2048 certificate: DIR/oauthrelay.pem (private key +
      certificate, for certificate_file) and DIR/oauthrelay.cer (upload it to Entra ID).
show  prints the thumbprints, dates and manifest keyCredentials of a certificate:
      the .pem or .pfx with its key, or the public .cer (PEM or DER).
--store (Windows) creates the key in the certificate store, non-exportable (CNG), and
      writes only DIR/oauthrelay.cer; or shows a certificate of the store.

Run 'oauthrelay cert new -h' or 'oauthrelay cert show -h' for their flags.`)
}

func runCert(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		certUsage(stderr)
		return 2
	}
	switch args[0] {
	case "new":
		return runCertNew(args[1:], stdout, stderr)
	case "show":
		return runCertShow(args[1:], stdout, stderr)
	case "-h", "--help", "help":
		certUsage(stdout)
		return 0
	}
	fmt.Fprintf(stderr, "oauthrelay cert: unknown subcommand %q\n\n", args[0])
	certUsage(stderr)
	return 2
}

func runCertNew(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("cert new", stderr)
	subject := fs.String("subject", "CN=oauthrelay", `certificate subject, e.g. "CN=oauthrelay,O=Contoso"`)
	days := fs.Int("days", 730, "validity in days")
	out := fs.String("out", ".", "directory to write oauthrelay.pem and oauthrelay.cer into")
	store := fs.String("store", "", `Windows certificate store to create the key and certificate in: "LocalMachine\My" or "CurrentUser\My"`)
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "oauthrelay cert new: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if *store != "" {
		return certNewInStore(*store, *subject, *days, *out, stdout, stderr)
	}
	info, files, err := oauth.NewCertificate(*subject, *days, *out)
	if err != nil {
		fmt.Fprintf(stderr, "oauthrelay cert new: %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, "Wrote:")
	fmt.Fprintf(stdout, "  %s  private key + certificate (keep it secret, mode 0600): use as certificate_file\n", files[0])
	fmt.Fprintf(stdout, "  %s  public certificate (PEM): upload this one to Entra ID\n\n", files[1])
	printCertInfo(stdout, info)
	fmt.Fprintf(stdout, `
Next steps:
  1. Entra admin center → App registrations → your app → Certificates & secrets →
     Certificates → Upload certificate → choose %s.
     Check that the thumbprint shown there is %s.
     (Or paste the keyCredentials block above into the app's manifest.)
  2. In the config's [[app]] section set
       certificate_file = "%s"
     and remove client_secret.
  3. Renew before %s: run 'oauthrelay cert new' again and upload the new certificate.
`, files[1], info.SHA1, files[0], info.NotAfter.Format("2006-01-02"))
	return 0
}

func runCertShow(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("cert show", stderr)
	pwFile := fs.String("password-file", "", "file holding the password of an encrypted PEM key or a PFX")
	store := fs.String("store", "", `Windows certificate store to look in: "LocalMachine\My" or "CurrentUser\My"`)
	thumbprint := fs.String("thumbprint", "", "with --store: the certificate's SHA-1 (or SHA-256) thumbprint")
	subject := fs.String("subject", "", "with --store: the certificate's subject, e.g. \"CN=oauthrelay\" (the newest valid one)")
	// Accept the file before or after the flags.
	var file string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		file, args = args[0], args[1:]
	}
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if file == "" && fs.NArg() > 0 {
		file = fs.Arg(0)
	} else if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "oauthrelay cert show: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if *store != "" || *thumbprint != "" || *subject != "" {
		if file != "" {
			fmt.Fprintln(stderr, "oauthrelay cert show: name either a certificate file or --store, not both")
			return 2
		}
		return certShowInStore(*store, *thumbprint, *subject, stdout, stderr)
	}
	if file == "" {
		fmt.Fprintln(stderr, "oauthrelay cert show: name the certificate file, e.g. 'oauthrelay cert show /etc/oauthrelay/oauthrelay.pem'")
		return 2
	}
	var password string
	if *pwFile != "" {
		b, err := os.ReadFile(*pwFile)
		if err != nil {
			fmt.Fprintf(stderr, "oauthrelay cert show: cannot read the password file %s: %v\n", *pwFile, errors.Unwrap(err))
			return 1
		}
		password = strings.TrimRight(string(b), "\r\n")
	}
	// A public certificate (the .cer uploaded to Entra ID) is shown too;
	// a file with a key must hold the key's certificate.
	certs, key, err := oauth.ReadCertificateFile(file, password)
	if err == nil && key != nil {
		certs, _, err = oauth.LoadCertificate(file, password)
	}
	if err != nil {
		fmt.Fprintf(stderr, "oauthrelay cert show: %v\n", err)
		return 1
	}
	if key != nil {
		fmt.Fprintf(stdout, "File:        %s (private key present, matches the certificate)\n", file)
	} else {
		fmt.Fprintf(stdout, "File:        %s (public certificate, no private key: the file to upload to Entra ID; certificate_file needs the one with the key)\n", file)
	}
	info := oauth.Describe(certs[0])
	printCertInfo(stdout, info)
	if len(certs) > 1 {
		fmt.Fprintf(stdout, "Chain:       %d more certificate(s) in the file\n", len(certs)-1)
	}
	printCertWarnings(stdout, info, time.Now())
	return 0
}

// printCertWarnings tells the admin when the certificate expires soon or
// is not valid yet at now (a wrong clock on this host).
func printCertWarnings(w io.Writer, info oauth.CertInfo, now time.Time) {
	if msg := info.ExpiryWarning(now); msg != "" {
		fmt.Fprintln(w, "\nWARNING: "+msg)
	}
	if now.Before(info.NotBefore) {
		fmt.Fprintf(w, "\nWARNING: this certificate is not valid before %s; check this host's clock.\n", info.NotBefore.Format(time.RFC3339))
	}
}

func printCertInfo(w io.Writer, info oauth.CertInfo) {
	fmt.Fprintf(w, "Subject:     %s\n", info.Subject)
	fmt.Fprintf(w, "Valid:       %s to %s\n", info.NotBefore.UTC().Format("2006-01-02 15:04 MST"), info.NotAfter.UTC().Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(w, "Thumbprint:  %s  (SHA-1, as the Entra portal shows it)\n", info.SHA1)
	fmt.Fprintf(w, "SHA-256:     %s\n", info.SHA256)
	fmt.Fprintf(w, "Key ID:      %s  (the keyCredentials keyId, derived from the SHA-256 thumbprint)\n", info.KeyID)
	fmt.Fprintf(w, "\nApp manifest keyCredentials (alternative to uploading the .cer):\n%s\n", info.KeyCredentials)
}
