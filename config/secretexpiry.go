package config

import (
	"fmt"
	"time"
)

// SecretExpiryWarning is how long before client_secret_expires `check`
// and every start or reload warn, the same 30 days as for certificates.
const SecretExpiryWarning = 30 * 24 * time.Hour

// secretExpiry checks client_secret_expires: a date, given only for an app
// that uses a client secret, and warned about when it is near or past.
func (v *validator) secretExpiry(a *App, key func(string) string, line func(string) int, now time.Time) {
	if a.ClientSecretExpires == "" {
		return
	}
	k, l := key("client_secret_expires"), line("client_secret_expires")
	d, err := time.Parse(time.DateOnly, a.ClientSecretExpires)
	if err != nil {
		v.add(l, k, fmt.Sprintf("%q is not a date", a.ClientSecretExpires),
			`write the secret's "Expires" date from Certificates & secrets as "YYYY-MM-DD", e.g. "2027-06-30"`)
		return
	}
	if a.CertificateFile != "" {
		v.warn(l, k, "is set but the app uses a certificate, whose own expiry the relay reads from certificate_file", "remove client_secret_expires")
		return
	}
	if a.ClientSecret == "" && a.ClientSecretFile == "" {
		// A certificate store, federated token or managed identity: a
		// date here would warn about a secret the app never presents.
		v.warn(l, k, "is set but the app does not sign in with a client secret", "remove client_secret_expires")
		return
	}
	a.SecretExpires = d
	const renew = "create a new client secret in the app registration's Certificates & secrets, put its Value where the relay reads it, set client_secret_expires to its new date, then reload the relay (SIGHUP; a ${VAR} secret needs a restart)"
	switch left := d.Sub(now); {
	case left <= 0:
		v.warn(l, k, fmt.Sprintf("the client secret expired on %s; Entra ID refuses it (AADSTS7000222)", a.ClientSecretExpires), renew)
	case left < SecretExpiryWarning:
		v.warn(l, k, fmt.Sprintf("the client secret expires in %d day(s), on %s", int(left.Hours()/24)+1, a.ClientSecretExpires), renew)
	}
}
