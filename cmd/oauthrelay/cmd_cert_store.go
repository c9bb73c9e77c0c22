package main

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/oauthrelay/oauthrelay/config"
	"github.com/oauthrelay/oauthrelay/oauth"
)

// storeRefFromFlags reads --store with --thumbprint or --subject; on
// failure it prints why and returns the exit code.
func storeRefFromFlags(cmd, store, thumbprint, subject string, stderr io.Writer) (oauth.StoreRef, int) {
	if store == "" {
		fmt.Fprintf(stderr, "oauthrelay %s: --thumbprint and --subject need --store, e.g. --store LocalMachine\\My\n", cmd)
		return oauth.StoreRef{}, 2
	}
	name, err := oauth.ParseStoreName(store)
	if err != nil {
		fmt.Fprintf(stderr, "oauthrelay %s: --store: %v\n", cmd, err)
		return oauth.StoreRef{}, 2
	}
	ref := oauth.StoreRef{Store: name, Subject: subject}
	switch {
	case thumbprint != "" && subject != "":
		fmt.Fprintf(stderr, "oauthrelay %s: give --thumbprint or --subject, not both\n", cmd)
		return ref, 2
	case thumbprint != "":
		t, err := oauth.ParseThumbprint(thumbprint)
		if err != nil {
			fmt.Fprintf(stderr, "oauthrelay %s: --thumbprint: %v\n", cmd, err)
			return ref, 2
		}
		ref.Thumbprint, ref.Subject = t, ""
	case subject == "" && cmd == "cert show":
		fmt.Fprintf(stderr, "oauthrelay %s: name the certificate with --thumbprint HEX or --subject \"CN=...\"\n", cmd)
		return ref, 2
	}
	return ref, 0
}

// printStoreErr prints a store failure: its cause and fix on their own
// lines (the export instruction is long).
func printStoreErr(cmd string, err error, stderr io.Writer) {
	var se *oauth.SignError
	if errors.As(err, &se) {
		fmt.Fprintf(stderr, "oauthrelay %s: %s\nfix: %s\n", cmd, se.Cause, se.Fix)
		return
	}
	fmt.Fprintf(stderr, "oauthrelay %s: %v\n", cmd, err)
}

// certShowInStore is 'cert show --store': the facts of a certificate in
// the Windows certificate store whose key the relay can sign with.
func certShowInStore(store, thumbprint, subject string, stdout, stderr io.Writer) int {
	ref, code := storeRefFromFlags("cert show", store, thumbprint, subject, stderr)
	if code != 0 {
		return code
	}
	signer, err := oauth.OpenStoreSigner(ref)
	if err != nil {
		printStoreErr("cert show", err, stderr)
		return 1
	}
	alg := "PS256 (CNG key)"
	if !signer.CanPSS() {
		alg = "RS256 with x5t (the key's provider cannot sign RSA-PSS)"
	}
	fmt.Fprintf(stdout, "Store:       %s (private key present, matches the certificate; assertions signed %s)\n", ref.Store, alg)
	info := oauth.Describe(signer.Certificates()[0])
	printCertInfo(stdout, info)
	printCertWarnings(stdout, info, time.Now())
	return 0
}

// certNewInStore is 'cert new --store': the key is made in the store and
// never leaves it; only the public certificate is written.
func certNewInStore(store, subject string, days int, out string, stdout, stderr io.Writer) int {
	name, err := oauth.ParseStoreName(store)
	if err != nil {
		fmt.Fprintf(stderr, "oauthrelay cert new: --store: %v\n", err)
		return 2
	}
	info, cer, err := oauth.NewStoreCertificate(name, subject, days, out)
	if err != nil {
		printStoreErr("cert new", err, stderr)
		return 1
	}
	fmt.Fprintf(stdout, "Created in %s: the private key (CNG, Microsoft Software Key Storage Provider, not exportable) and its certificate.\n", name)
	fmt.Fprintf(stdout, "Wrote:\n  %s  public certificate (PEM): upload this one to Entra ID\n\n", cer)
	printCertInfo(stdout, info)
	fmt.Fprintf(stdout, `
Next steps:
  1. Entra admin center → App registrations → your app → Certificates & secrets →
     Certificates → Upload certificate → choose %s.
     Check that the thumbprint shown there is %s.
  2. Let the service's account use the key: certlm.msc → Personal → Certificates →
     the certificate → All Tasks → Manage Private Keys → add the account
     (NT AUTHORITY\LOCAL SERVICE for 'oauthrelay service install') with Read.
  3. In the config's [[app]] section set
       certificate_store      = "%s"
       certificate_thumbprint = "%s"
     and remove client_secret.
  4. Renew before %s: run 'oauthrelay cert new --store %s' again, upload, and switch the
     thumbprint (or use certificate_subject = "%s": the newest valid one is used).
`, cer, info.SHA1, tomlEscape(name), info.SHA1, info.NotAfter.Format("2006-01-02"), name, subject)
	return 0
}

// tomlEscape doubles backslashes for a TOML basic string.
func tomlEscape(s string) string {
	out := make([]rune, 0, len(s))
	for _, r := range s {
		if r == '\\' {
			out = append(out, '\\')
		}
		out = append(out, r)
	}
	return string(out)
}

// describeStoreCert is describeCredentialCert for certificate_store: the
// thumbprint an admin compares with the app registration when Entra
// answers AADSTS700027, and how the key signs.
func describeStoreCert(app *config.App, stdout, stderr io.Writer) bool {
	ref := app.StoreRef()
	signer, err := oauth.OpenStoreSigner(ref)
	if err != nil {
		printStoreErr("token", err, stderr)
		return false
	}
	info := oauth.Describe(signer.Certificates()[0])
	alg := "PS256"
	if !signer.CanPSS() {
		alg = "RS256"
	}
	printCredentialCert(fmt.Sprintf("%s (assertions signed %s)", ref, alg), info, stdout, stderr)
	return true
}
