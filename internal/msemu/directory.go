package msemu

import (
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"strings"
)

// App is an app registration in Entra ID together with its Exchange
// Online service principal.
type App struct {
	TenantID, ClientID string
	// Secrets are the accepted client secret values.
	Secrets []string
	// ExpiredSecrets are recognised but expired (AADSTS7000222).
	ExpiredSecrets []string
	// Certificates are the uploaded public certificates, matched by the
	// assertion's x5t#S256 or x5t thumbprint (or x5c).
	Certificates []*x509.Certificate
	// Consent means admin consent for SMTP.SendAsApp was granted, so the
	// token carries roles ["SMTP.SendAsApp"].
	Consent bool
	// ServicePrincipal means New-ServicePrincipal was run in Exchange;
	// without it AUTH fails with 535 5.7.3.
	ServicePrincipal bool
	// ObjectID is the service principal's object id (oid claim);
	// generated when empty.
	ObjectID string
	// GraphRoles are the Microsoft Graph application permissions granted
	// with admin consent (RoleMailSend, RoleMailReadWrite); Graph tokens
	// carry them as roles. None when nil.
	GraphRoles []string
	// ExchangeRoles are Office 365 Exchange Online application
	// permissions besides SMTP.SendAsApp, carried by Exchange tokens:
	// RoleMailSend is what High Volume Email requires.
	ExchangeRoles []string
	// ScopedMailboxes is an RBAC for Applications management scope (or
	// application access policy): when not empty, Graph refuses every
	// other mailbox with 403 ErrorAccessDenied.
	ScopedMailboxes []string
	// Federated are the app's federated identity credentials, which
	// accept tokens of other issuers (Kubernetes, a managed identity).
	Federated []FederatedCredential
}

// Application permissions Graph and High Volume Email check.
const (
	RoleMailSend      = "Mail.Send"
	RoleMailReadWrite = "Mail.ReadWrite"
)

// Mailbox is an Exchange Online mailbox.
type Mailbox struct {
	Address string
	// FullAccess lists client IDs granted Add-MailboxPermission FullAccess,
	// which may AUTH as this mailbox.
	FullAccess []string
	// SendAs lists other From addresses this mailbox may send as
	// (Add-RecipientPermission SendAs).
	SendAs []string
	// SMTPAuthDisabled is Set-CASMailbox -SmtpClientAuthenticationDisabled $true.
	SMTPAuthDisabled bool
	// Unlicensed means the user has no Exchange Online license: Graph
	// answers 404 MailboxNotEnabledForRESTAPI.
	Unlicensed bool
}

// AddApp registers an app, replacing any app with the same client ID.
func (e *Emulator) AddApp(a App) {
	if a.ObjectID == "" {
		a.ObjectID = newGUID()
	}
	a.Secrets = append([]string(nil), a.Secrets...)
	a.ExpiredSecrets = append([]string(nil), a.ExpiredSecrets...)
	a.Certificates = append([]*x509.Certificate(nil), a.Certificates...)
	a.GraphRoles = append([]string(nil), a.GraphRoles...)
	a.ExchangeRoles = append([]string(nil), a.ExchangeRoles...)
	a.ScopedMailboxes = append([]string(nil), a.ScopedMailboxes...)
	a.Federated = append([]FederatedCredential(nil), a.Federated...)
	e.mu.Lock()
	defer e.mu.Unlock()
	e.apps[strings.ToLower(a.ClientID)] = &a
}

// AddMailbox creates or replaces a mailbox.
func (e *Emulator) AddMailbox(m Mailbox) {
	m.FullAccess = append([]string(nil), m.FullAccess...)
	m.SendAs = append([]string(nil), m.SendAs...)
	e.mu.Lock()
	defer e.mu.Unlock()
	e.mailboxes[strings.ToLower(m.Address)] = &m
}

// Provision grants everything an admin would for app-only SMTP: the app
// with a secret, admin consent and a service principal, and FullAccess on
// each mailbox (created if missing).
func (e *Emulator) Provision(tenantID, clientID, secret string, mailboxes ...string) {
	e.provision(tenantID, clientID, secret, mailboxes, func(*App) {})
}

// ProvisionGraph is Provision plus what Graph and High Volume Email
// need: Graph Mail.Send and Mail.ReadWrite (for drafts and upload
// sessions) and Exchange Mail.Send (Add-HVEAppAccess), all consented.
// One call gives an app every transport on the mailboxes.
func (e *Emulator) ProvisionGraph(tenantID, clientID, secret string, mailboxes ...string) {
	e.provision(tenantID, clientID, secret, mailboxes, func(a *App) {
		a.GraphRoles = addMissing(a.GraphRoles, RoleMailSend, RoleMailReadWrite)
		a.ExchangeRoles = addMissing(a.ExchangeRoles, RoleMailSend)
	})
}

// provision creates or updates the app (keeping its other grants), lets
// grant add to it, and gives it FullAccess on each mailbox.
func (e *Emulator) provision(tenantID, clientID, secret string, mailboxes []string, grant func(*App)) {
	e.mu.Lock()
	a, ok := e.apps[strings.ToLower(clientID)]
	var app App
	if ok && strings.EqualFold(a.TenantID, tenantID) {
		app = *a
	} else {
		app = App{TenantID: tenantID, ClientID: clientID}
	}
	e.mu.Unlock()
	if secret != "" {
		app.Secrets = addMissing(app.Secrets, secret)
	}
	app.Consent, app.ServicePrincipal = true, true
	grant(&app)
	e.AddApp(app)
	for _, addr := range mailboxes {
		e.mu.Lock()
		m, ok := e.mailboxes[strings.ToLower(addr)]
		var mb Mailbox
		if ok {
			mb = *m
		} else {
			mb = Mailbox{Address: addr}
		}
		e.mu.Unlock()
		mb.FullAccess = addMissing(mb.FullAccess, clientID)
		e.AddMailbox(mb)
	}
}

// addMissing appends each of add not already in list (case-insensitive).
func addMissing(list []string, add ...string) []string {
	for _, s := range add {
		if !contains(list, s) {
			list = append(list, s)
		}
	}
	return list
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if strings.EqualFold(x, s) {
			return true
		}
	}
	return false
}

// newGUID returns a random version-4 UUID, as Entra's ids look.
func newGUID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
