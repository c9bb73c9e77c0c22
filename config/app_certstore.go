package config

import (
	"fmt"
	"runtime"
	"strings"

	"github.com/oauthrelay/oauthrelay/oauth"
)

// StoreRef returns the certificate in the Windows certificate store the
// app names (certificate_store with certificate_thumbprint or
// certificate_subject), or a zero StoreRef when it names none. The loader
// has checked the values.
func (a *App) StoreRef() oauth.StoreRef {
	if a.CertificateStore == "" {
		return oauth.StoreRef{}
	}
	store, err := oauth.ParseStoreName(a.CertificateStore)
	if err != nil {
		store = a.CertificateStore
	}
	ref := oauth.StoreRef{Store: store, Subject: strings.TrimSpace(a.CertificateSubject)}
	if a.CertificateThumbprint != "" {
		ref.Thumbprint, _ = oauth.ParseThumbprint(a.CertificateThumbprint)
		ref.Subject = ""
	}
	return ref
}

// certStore checks an app whose credential is certificate_store: the
// store's name, exactly one of certificate_thumbprint and
// certificate_subject, and, on Windows, that the certificate is there with
// a key the relay may use. Elsewhere it refuses the key and says how to
// export the certificate to a PFX file.
func (v *validator) certStore(a *App, key func(string) string, line func(string) int) {
	store, err := oauth.ParseStoreName(a.CertificateStore)
	if err != nil {
		v.add(line("certificate_store"), key("certificate_store"), err.Error(), `write certificate_store = "LocalMachine\\My"`)
		return
	}
	ref := oauth.StoreRef{Store: store}
	switch {
	case a.CertificateThumbprint != "" && a.CertificateSubject != "":
		v.add(line("certificate_subject"), key("certificate_subject"), "is set together with certificate_thumbprint",
			"keep one: the thumbprint names one certificate; the subject picks the newest valid certificate with that subject")
		return
	case a.CertificateThumbprint != "":
		t, err := oauth.ParseThumbprint(a.CertificateThumbprint)
		if err != nil {
			v.add(line("certificate_thumbprint"), key("certificate_thumbprint"), err.Error(),
				`copy the Thumbprint column of certlm.msc (Personal → Certificates) or of Get-ChildItem Cert:\LocalMachine\My`)
			return
		}
		ref.Thumbprint = t
	case strings.TrimSpace(a.CertificateSubject) != "":
		ref.Subject = strings.TrimSpace(a.CertificateSubject)
	default:
		v.add(line("certificate_store"), key("certificate_thumbprint"), "certificate_store needs certificate_thumbprint or certificate_subject",
			`add certificate_thumbprint = "<the certificate's SHA-1 thumbprint>" (or certificate_subject = "CN=oauthrelay")`)
		return
	}
	if a.CertificatePasswordFile != "" {
		v.warn(line("certificate_password_file"), key("certificate_password_file"), "is not used with certificate_store (the store guards the key)", "remove certificate_password_file")
	}
	if !oauth.StoreSupported {
		v.add(line("certificate_store"), key("certificate_store"),
			fmt.Sprintf("%q is a Windows certificate store, and this relay runs on %s, which has none", a.CertificateStore, runtime.GOOS),
			oauth.StoreExportHint(ref))
		return
	}
	if _, err := oauth.OpenStoreSigner(ref); err != nil {
		k := "certificate_thumbprint"
		if ref.Subject != "" {
			k = "certificate_subject"
		}
		msg, fix := err.Error(), "check the certificate in certlm.msc"
		if se, ok := err.(*oauth.SignError); ok {
			msg, fix = se.Cause, se.Fix
		}
		v.add(line(k), key(k), msg, fix)
	}
}

// certStoreOrphans reports certificate_thumbprint or certificate_subject
// set without certificate_store: the relay would not know where to look.
func (v *validator) certStoreOrphans(a *App, key func(string) string, line func(string) int) {
	for _, k := range []struct{ name, val string }{{"certificate_thumbprint", a.CertificateThumbprint}, {"certificate_subject", a.CertificateSubject}} {
		if k.val != "" {
			v.add(line(k.name), key(k.name), "is set but certificate_store is not",
				`add certificate_store = "LocalMachine\\My" (Windows only), or remove `+k.name)
		}
	}
}

// unsetInCheck is what LoadForCheck's environment returns for a variable
// the checking shell does not have.
const unsetInCheck = "unset-in-this-environment"

// expandPaths replaces ${VAR} in the app's secret file paths with the
// environment's value, so that a systemd unit with LoadCredential= can
// name its files as "${CREDENTIALS_DIRECTORY}/contoso.secret". An unset
// variable is a problem that names it.
func (v *validator) expandPaths(a *App, key func(string) string, line func(string) int, getenv func(string) string) {
	for _, f := range []struct {
		name string
		p    *string
	}{{"client_secret_file", &a.ClientSecretFile}, {"certificate_file", &a.CertificateFile}, {"certificate_password_file", &a.CertificatePasswordFile}, {"password_file", &a.PasswordFile}, {"federated_token_file", &a.FederatedTokenFile}} {
		var missing []string
		orig, unchecked := *f.p, false
		*f.p = envRE.ReplaceAllStringFunc(*f.p, func(m string) string {
			name := envRE.FindStringSubmatch(m)[1]
			val := getenv(name)
			switch val {
			case "":
				missing = append(missing, name)
			case unsetInCheck:
				unchecked = true
			}
			return val
		})
		if unchecked {
			// check in a shell without the service's environment:
			// LoadForCheck warns; the file is not read.
			*f.p = orig
			continue
		}
		if len(missing) == 0 {
			continue
		}
		fix := "export it in the service's environment, or write the path without it"
		for _, m := range missing {
			if m == "CREDENTIALS_DIRECTORY" {
				fix = "systemd sets CREDENTIALS_DIRECTORY for a unit with LoadCredential=; 'systemctl reload oauthrelay' checks the file inside the service. " +
					"To check by hand while the service runs: sudo CREDENTIALS_DIRECTORY=/run/credentials/oauthrelay.service oauthrelay check -config FILE"
			}
		}
		v.add(line(f.name), key(f.name), "environment variable "+strings.Join(missing, ", ")+" is not set", fix)
		*f.p = orig // readable skips a path still holding ${VAR}
	}
}
