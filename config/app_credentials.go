package config

import (
	"fmt"
	"os"
	"strings"

	"github.com/oauthrelay/oauthrelay/internal/guid"
	"github.com/oauthrelay/oauthrelay/oauth"
)

// lookupEnv reads the AZURE_* variables that AKS workload identity (and
// azidentity) set; a variable for the whole process, not for ${VAR}.
var lookupEnv = os.Getenv

// appEnvironment fills in what a federated app's entry leaves out from
// the variables AKS workload identity injects: AZURE_FEDERATED_TOKEN_FILE
// for an app that names no credential at all, then AZURE_CLIENT_ID and
// AZURE_TENANT_ID for a federated app.
func (v *validator) appEnvironment(a *App) {
	noCredential := a.ClientSecret == "" && a.ClientSecretFile == "" && a.CertificateFile == "" && a.CertificateStore == "" && !a.ManagedIdentity
	if a.FederatedTokenFile == "" && noCredential {
		if f := lookupEnv("AZURE_FEDERATED_TOKEN_FILE"); f != "" {
			a.FederatedTokenFile = f
			a.fromEnv = append(a.fromEnv, "federated_token_file")
		}
	}
	if a.FederatedTokenFile == "" {
		return
	}
	if a.ClientID == "" {
		if id := lookupEnv("AZURE_CLIENT_ID"); id != "" {
			a.ClientID = id
			a.fromEnv = append(a.fromEnv, "client_id")
		}
	}
	if a.TenantID == "" && a.TokenEndpoint == "" {
		if id := lookupEnv("AZURE_TENANT_ID"); id != "" {
			a.TenantID = id
			a.fromEnv = append(a.fromEnv, "tenant_id")
		}
	}
}

// tokenEndpoint applies token_endpoint: it sets the authority, and the
// tenant when tenant_id is empty; check prints the corrected URL for one
// that cannot work.
func (v *validator) tokenEndpoint(a *App, key func(string) string, line func(string) int) {
	if a.TokenEndpoint == "" {
		return
	}
	te, p := oauth.ParseTokenEndpoint(a.TokenEndpoint, a.TenantID)
	if p != nil {
		v.add(line(p.Key), key(p.Key), p.Msg, p.Fix)
		return
	}
	if a.Authority != "" && !strings.EqualFold(strings.TrimSuffix(a.Authority, "/"), strings.TrimSuffix(te.Authority, "/")) {
		v.add(line("authority"), key("authority"), fmt.Sprintf("%q disagrees with token_endpoint, whose sign-in host is %s", a.Authority, te.Authority),
			"remove authority: token_endpoint says where tokens come from")
		return
	}
	a.Authority = te.Authority
	if a.TenantID == "" {
		a.TenantID = te.Tenant
	}
}

// credentialKeys counts the credentials set besides client_secret,
// client_secret_file and certificate_file.
func credentialKeys(a *App) []string {
	var ks []string
	if a.FederatedTokenFile != "" {
		ks = append(ks, "federated_token_file")
	}
	if a.ManagedIdentity {
		ks = append(ks, "managed_identity")
	}
	return ks
}

// federated checks federated_token_file and managed_identity.
func (v *validator) federated(i int, a *App, key func(string) string, line func(string) int) {
	if a.FederatedTokenFile != "" {
		// Projected tokens are not secrets of ours to guard the mode of.
		v.readable("app", i, key("federated_token_file"), a.FederatedTokenFile, false)
	}
}

// managedIdentityClientID checks the user-assigned identity's id.
func (v *validator) managedIdentityClientID(a *App, key func(string) string, line func(string) int) {
	switch {
	case a.ManagedIdentityClientID == "":
	case !a.ManagedIdentity:
		v.add(line("managed_identity_client_id"), key("managed_identity_client_id"), "is set but managed_identity is not", "add managed_identity = true, or remove managed_identity_client_id")
	case !guid.Valid(a.ManagedIdentityClientID):
		v.add(line("managed_identity_client_id"), key("managed_identity_client_id"), "is not a GUID",
			"copy the user-assigned managed identity's Client ID (a GUID) from its Overview page, or leave the key out for the system-assigned identity")
	}
}

// password checks the password grant: username and password_file
// together, next to the app's own secret or certificate.
func (v *validator) password(i int, a *App, key func(string) string, line func(string) int) {
	if a.Username == "" && a.PasswordFile == "" {
		return
	}
	switch {
	case a.Username == "":
		v.add(line("password_file"), key("username"), "password_file is set but username is not", `name the service account, e.g. username = "svc-mail@contoso.com"`)
		return
	case a.PasswordFile == "":
		v.add(line("username"), key("password_file"), "username is set but password_file is not",
			"write the service account's password into a file only the relay can read (chmod 600) and name it in password_file")
		return
	}
	if _, err := ParseAddress(a.Username); err != nil {
		v.add(line("username"), key("username"), err.Error(), "write the service account's user principal name, e.g. svc-mail@contoso.com")
	}
	if b, ok := v.readable("app", i, key("password_file"), a.PasswordFile, true); ok {
		pw := strings.TrimRight(string(b), "\r\n")
		if pw == "" {
			v.add(line("password_file"), key("password_file"), a.PasswordFile+" is empty", "write the service account's password into the file")
		}
		a.Password = Secret(pw)
	}
	if a.FederatedTokenFile != "" || a.ManagedIdentity {
		v.add(line("username"), key("username"), "the password grant needs the app's client secret or certificate, not a federated credential",
			"use client_secret_file or certificate_file with username and password_file, or remove username and password_file")
	}
	v.warn(line("username"), key("username"), "signs in with the service account's password (the resource-owner password grant), which Microsoft discourages: it breaks with MFA, Conditional Access and password expiry",
		"sign in as the app itself instead: certificate_file (made with 'oauthrelay cert new') and the SMTP.SendAsApp permission, then remove username and password_file")
}

// passwordMailboxes: with the password grant the relay always signs in
// to Exchange as the service account, so a mailbox of such an app must be
// the service account's, and other From addresses its send_as.
func (v *validator) passwordMailboxes() {
	for i, m := range v.c.Mailboxes {
		a := m.AppRef
		if a == nil || a.Username == "" {
			continue
		}
		key := fmt.Sprintf("mailbox[%d] (%s)", i, m.Address)
		line := func(k string) int { return v.lineOf("mailbox", i, k) }
		if !strings.EqualFold(m.Address, a.Username) {
			v.add(line("address"), key+".address",
				fmt.Sprintf("app %q signs in as the service account %s (username), so Exchange sends as that account, not as %s", a.Name, a.Username, m.Address),
				fmt.Sprintf("write the mailbox as address = %q with %q in its send_as, and let the account send as it: Add-RecipientPermission -Identity %s -Trustee %s -AccessRights SendAs",
					a.Username, m.Address, m.Address, a.Username))
		}
		if m.Transport != TransportSMTP {
			v.add(line("transport"), key+".transport", fmt.Sprintf("%q is not supported with the password grant of app %q", m.Transport, a.Name),
				`use transport = "smtp" (SMTP AUTH as the service account), or give the app a certificate and no username for Graph or HVE`)
		}
	}
}

// FromEnvironment lists the app's keys filled from AZURE_* variables.
func (a *App) FromEnvironment() []string { return append([]string(nil), a.fromEnv...) }
