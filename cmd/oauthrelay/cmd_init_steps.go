package main

// What `oauthrelay init` finds out by itself (a tenant's id from one of its
// domains) and the tenant steps it prints with every id filled in.

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/oauthrelay/oauthrelay/config"
)

// objectIDPlaceholder stands for the Enterprise application's object id,
// which only the tenant knows.
const objectIDPlaceholder = "<enterprise-app-object-id>"

// guidInRE finds a tenant id inside the issuer or token endpoint URL.
var guidInRE = regexp.MustCompile(`[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}`)

// authorityBase is the token service's base URL, ending in "/".
func (o *initOptions) authorityBase() string {
	a := o.authority
	if a == "" {
		a = config.Clouds[o.cloud].Authority
	}
	return strings.TrimSuffix(a, "/") + "/"
}

// resolveTenant returns the tenant id: as given, or looked up from a
// domain in the tenant's OpenID metadata, whose issuer and token
// endpoint carry the id.
func (o *initOptions) resolveTenant() (string, error) {
	if guidRE.MatchString(o.tenant) {
		return strings.ToLower(o.tenant), nil
	}
	client, err := o.httpClient()
	if err != nil {
		return "", err
	}
	return lookupTenant(client, o.authorityBase(), o.tenant)
}

// httpClient trusts the system's roots and --ca-file.
func (o *initOptions) httpClient() (*http.Client, error) {
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if o.caFile != "" {
		b, err := os.ReadFile(o.caFile)
		if err != nil {
			return nil, fmt.Errorf("--ca-file: %v", err)
		}
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("--ca-file %s: no PEM certificate found", o.caFile)
		}
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}, nil
}

// lookupTenant asks GET {authority}{domain}/v2.0/.well-known/openid-configuration.
func lookupTenant(client *http.Client, authority, domain string) (string, error) {
	u := authority + url.PathEscape(domain) + "/v2.0/.well-known/openid-configuration"
	resp, err := client.Get(u)
	if err != nil {
		return "", fmt.Errorf("cannot look up the tenant of %s: %v; give the Directory (tenant) ID instead (Entra ID → Overview)", domain, err)
	}
	defer resp.Body.Close()
	var doc struct {
		Issuer        string `json:"issuer"`
		TokenEndpoint string `json:"token_endpoint"`
		Description   string `json:"error_description"`
	}
	err = json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&doc)
	if resp.StatusCode != http.StatusOK {
		why := resp.Status
		if d, _, _ := strings.Cut(doc.Description, "\r\n"); d != "" {
			why = d
		}
		return "", fmt.Errorf("Entra ID knows no tenant %s (%s); check the domain, or give the Directory (tenant) ID (Entra ID → Overview)", domain, why)
	}
	if err != nil {
		return "", fmt.Errorf("the OpenID metadata of %s is unreadable: %v; give the Directory (tenant) ID instead", domain, err)
	}
	for _, s := range []string{doc.Issuer, doc.TokenEndpoint} {
		if id := guidInRE.FindString(s); id != "" {
			return strings.ToLower(id), nil
		}
	}
	return "", fmt.Errorf("the OpenID metadata of %s names no tenant id (issuer %q); give the Directory (tenant) ID instead", domain, doc.Issuer)
}

// printSteps prints the Entra and Exchange steps for this configuration,
// then how the legacy application connects.
func (o *initOptions) printSteps(out io.Writer, w *initWritten) {
	sendAs := sortedUnique(o.sendAs, o.mailbox)
	consent := strings.TrimSuffix(config.Clouds[o.cloud].Authority, "/") + "/" + o.tenantID + "/adminconsent?client_id=" + o.clientID
	fmt.Fprintf(out, "\nMicrosoft 365 setup, once (tenant %s, app %s, mailbox %s, transport %s)\n", o.tenantID, o.clientID, o.mailbox, o.transport)
	fmt.Fprintf(out, "\nIn the Entra admin center, App registrations → the app with client id %s:\n", o.clientID)
	switch o.transport {
	case config.TransportGraph:
		fmt.Fprintln(out, "  1. API permissions → Add a permission → Microsoft Graph → Application permissions →\n     Mail.Send (and Mail.ReadWrite, for messages over about 3 MB) → Add permissions → Grant admin consent.")
	case config.TransportHVE:
		fmt.Fprintln(out, "  1. API permissions → Add a permission → APIs my organization uses → Office 365 Exchange Online →\n     Application permissions → Mail.Send → Add permissions → Grant admin consent.")
	default:
		fmt.Fprintln(out, "  1. API permissions → Add a permission → APIs my organization uses → Office 365 Exchange Online →\n     Application permissions → SMTP.SendAsApp → Add permissions → Grant admin consent.")
	}
	fmt.Fprintf(out, "     Or let an administrator open: %s\n", consent)
	switch {
	case w.certPublic != "":
		fmt.Fprintf(out, "  2. Certificates & secrets → Certificates → Upload certificate → %s.\n     The portal must show thumbprint %s. Renew it before %s.\n", w.certPublic, w.cert.SHA1, w.cert.NotAfter.Format("2006-01-02"))
	case w.cert != nil:
		fmt.Fprintf(out, "  2. Certificates & secrets → Certificates: the certificate with thumbprint %s must be uploaded.\n", w.cert.SHA1)
	default:
		fmt.Fprintf(out, "  2. Certificates & secrets: note the secret's expiry date; before it, create a new secret,\n     write its Value into %s and reload the relay.\n", w.secretFile)
	}
	fmt.Fprintf(out, `  3. Exchange needs the object id of the app's service principal, not of the registration:
     Enterprise applications → search %[1]s → Overview → Object ID. Or, in PowerShell:
       Connect-MgGraph -TenantId %[2]s -Scopes Application.Read.All
       (Get-MgServicePrincipal -Filter "appId eq '%[1]s'").Id
     Put it where the lines below say %[3]s.
`, o.clientID, o.tenantID, objectIDPlaceholder)

	fmt.Fprintln(out, "\nIn Exchange Online PowerShell (Connect-ExchangeOnline, as an Exchange administrator):")
	sp := fmt.Sprintf("  New-ServicePrincipal -AppId %s -ObjectId %s -DisplayName \"oauthrelay\"\n", o.clientID, objectIDPlaceholder)
	switch o.transport {
	case config.TransportGraph:
		if len(sendAs) > 0 {
			fmt.Fprintf(out, "  # SendAs: Graph sends as the mailbox, so the mailbox is the trustee.\n")
			for _, a := range sendAs {
				fmt.Fprintf(out, "  Add-RecipientPermission -Identity %s -Trustee %s -AccessRights SendAs -Confirm:$false\n", a, o.mailbox)
			}
		}
		fmt.Fprintf(out, `  # Recommended: Mail.Send of step 1 lets the app send as ANY mailbox. To limit it to
  # %[1]s with RBAC for Applications, use these instead of step 1's grant (then remove
  # that grant if you gave it; tokens then carry no roles, which is expected):
`, o.mailbox)
		fmt.Fprint(out, sp)
		fmt.Fprintf(out, "  New-ManagementScope -Name \"oauthrelay mailboxes\" -RecipientRestrictionFilter \"PrimarySmtpAddress -eq '%s'\"\n", o.mailbox)
		for _, role := range []string{"Application Mail.Send", "Application Mail.ReadWrite"} {
			fmt.Fprintf(out, "  New-ManagementRoleAssignment -App %s -Role %q -CustomResourceScope \"oauthrelay mailboxes\"\n", objectIDPlaceholder, role)
		}
	case config.TransportHVE:
		fmt.Fprint(out, sp)
		fmt.Fprintf(out, "  Add-HVEAppAccess -Identity %s -AppIds \"%s\"\n", o.mailbox, o.clientID)
		o.printSendAs(out, sendAs)
		fmt.Fprintf(out, "  # %s must be a High Volume Email account; HVE delivers to internal recipients only.\n", o.mailbox)
	default:
		fmt.Fprint(out, sp)
		fmt.Fprintf(out, "  Add-MailboxPermission -Identity %s -User %s -AccessRights FullAccess\n", o.mailbox, objectIDPlaceholder)
		o.printSendAs(out, sendAs)
		fmt.Fprintf(out, "  Set-CASMailbox -Identity %s -SmtpClientAuthenticationDisabled $false\n", o.mailbox)
	}
	fmt.Fprintln(out, "Grants can take up to an hour to apply.")
	o.printClient(out, w, sendAs)
}

func (o *initOptions) printSendAs(out io.Writer, sendAs []string) {
	for _, a := range sendAs {
		fmt.Fprintf(out, "  Add-RecipientPermission -Identity %s -Trustee %s -AccessRights SendAs -Confirm:$false\n", a, objectIDPlaceholder)
	}
}

// printClient tells how the legacy application connects, with the
// generated password, shown this once.
func (o *initOptions) printClient(out io.Writer, w *initWritten, sendAs []string) {
	fmt.Fprintf(out, "\nThe legacy application %q, in its mail server settings:\n", o.clientName)
	fmt.Fprintf(out, "  server    %s (plain SMTP; STARTTLS once [listen] has a certificate)\n", w.listen)
	if w.password != "" {
		fmt.Fprintf(out, "  username  %s\n  password  %s\n", o.clientName, w.password)
		fmt.Fprintln(out, "            (shown only now: the configuration keeps its bcrypt hash; a new one: oauthrelay hash-password)")
		if len(o.networks) > 0 {
			fmt.Fprintf(out, "  from      %s only\n", strings.Join(o.networks, ", "))
		}
		if host, _, err := net.SplitHostPort(w.listen); err == nil && host != "localhost" && !isLoopback(host) {
			fmt.Fprintln(out, "            (from other hosts the relay takes AUTH only after STARTTLS: set tls_cert_file and tls_key_file in [listen])")
		}
	} else {
		fmt.Fprintf(out, "  no login: connections from %s are trusted\n", strings.Join(o.networks, ", "))
	}
	fmt.Fprintf(out, "  sender    %s\n", strings.Join(append([]string{o.mailbox}, sendAs...), " or "))
}
