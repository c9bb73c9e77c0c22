package config

import (
	"fmt"
	"io"
	"net/netip"
	"sort"
	"strings"
)

// MailboxFor returns the mailbox that sends as addr (its own address or a
// send_as), or nil.
func (c *Config) MailboxFor(addr string) *Mailbox {
	return c.senders[strings.ToLower(addr)]
}

// MaySend reports whether the client may use addr as a sender.
func (cl *Client) MaySend(addr string) bool {
	if cl.AnySender {
		return true
	}
	return cl.allowed[strings.ToLower(addr)]
}

// Trusts reports whether ip lies in one of the client's networks.
func (cl *Client) Trusts(ip netip.Addr) bool {
	ip = ip.Unmap()
	for _, p := range cl.Prefixes {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// ClientByUsername finds the client that logs in as username
// (case-insensitive, as most legacy devices cannot be trusted with case).
func (c *Config) ClientByUsername(username string) *Client {
	for _, cl := range c.Clients {
		if cl.Username != "" && strings.EqualFold(cl.Username, username) {
			return cl
		}
	}
	return nil
}

// TrustedClient returns the username-less client whose networks contain ip,
// preferring the most specific network, or nil.
func (c *Config) TrustedClient(ip netip.Addr) *Client {
	ip = ip.Unmap()
	var best *Client
	bits := -1
	for _, cl := range c.Clients {
		if cl.Username != "" {
			continue
		}
		for _, p := range cl.Prefixes {
			if p.Contains(ip) && p.Bits() > bits {
				best, bits = cl, p.Bits()
			}
		}
	}
	return best
}

// App returns the app named name, or nil.
func (c *Config) App(name string) *App {
	for _, a := range c.Apps {
		if a.Name == name {
			return a
		}
	}
	return nil
}

// Mailbox returns the mailbox with the address addr, or nil. It uses the
// sender index, so it agrees with MailboxFor and costs no scan per message.
func (c *Config) Mailbox(addr string) *Mailbox {
	if m := c.senders[strings.ToLower(addr)]; m != nil && strings.EqualFold(m.Address, addr) {
		return m
	}
	return nil
}

// Senders lists the addresses a client may use, in order.
func (c *Config) Senders(cl *Client) []string {
	var out []string
	if cl.AnySender {
		for a := range c.senders {
			out = append(out, a)
		}
	} else {
		for a := range cl.allowed {
			out = append(out, a)
		}
	}
	sort.Strings(out)
	return out
}

// SecretFromEnvironment reports whether the app's client_secret comes from
// ${VAR}, or its client_id, tenant_id or federated_token_file from the
// AZURE_* variables: a running relay cannot re-read its environment, so a
// fix there takes a restart, not a reload.
func (a *App) SecretFromEnvironment() bool {
	return envRE.MatchString(a.ClientSecret) || len(a.fromEnv) > 0
}

// CredentialKind names how an app signs in, for humans.
func (a *App) CredentialKind() string {
	if a.Username != "" {
		return "password of service account " + a.Username + " from " + a.PasswordFile + ", with the app's " + a.appCredentialKind()
	}
	return a.appCredentialKind()
}

// appCredentialKind names the app's own credential.
func (a *App) appCredentialKind() string {
	switch {
	case a.FederatedTokenFile != "":
		return "federated token from " + a.FederatedTokenFile
	case a.ManagedIdentity && a.ManagedIdentityClientID != "":
		return "managed identity " + a.ManagedIdentityClientID
	case a.ManagedIdentity:
		return "system-assigned managed identity"
	case a.CertificateFile != "":
		return "certificate " + a.CertificateFile
	case a.CertificateStore != "":
		return "certificate in the Windows store, " + a.StoreRef().String()
	case a.ClientSecretFile != "":
		return "client secret from " + a.ClientSecretFile
	default:
		return "client secret"
	}
}

// WriteRoutes prints the routing table client → sender → mailbox → app →
// transport, then where each app's mail goes.
func (c *Config) WriteRoutes(w io.Writer) {
	const row = "%-16s %-34s %-30s %-16s %s\n"
	fmt.Fprintf(w, row, "CLIENT", "SENDER", "MAILBOX", "APP", "TRANSPORT")
	for _, cl := range c.Clients {
		name := cl.Name
		how := ""
		switch {
		case cl.Username != "" && len(cl.Networks) > 0:
			how = fmt.Sprintf("  (AUTH as %q from %s)", cl.Username, strings.Join(cl.Networks, ", "))
		case cl.Username != "":
			how = fmt.Sprintf("  (AUTH as %q)", cl.Username)
		default:
			how = fmt.Sprintf("  (no AUTH, trusted from %s)", strings.Join(cl.Networks, ", "))
		}
		for _, s := range c.Senders(cl) {
			m := c.MailboxFor(s)
			fmt.Fprintf(w, row, name, s, m.Address, m.App, m.Transport)
			name = ""
		}
		if cl.RewriteFrom != "" {
			fmt.Fprintf(w, "%-16s %s\n", "", "rewrites every sender to "+cl.RewriteFrom)
		}
		fmt.Fprintf(w, "%-16s%s\n", "", how)
	}
	for _, a := range c.Apps {
		fmt.Fprintf(w, "app %s: tenant %s, client %s, %s, token from %s, delivers to %s\n", a.Name, a.TenantID, a.ClientID, a.CredentialKind(), a.Authority, strings.Join(c.destinations(a), ", "))
	}
}

// destinations lists where an app's mailboxes deliver, one entry per
// transport they use; an app no mailbox uses shows its SMTP host.
func (c *Config) destinations(a *App) []string {
	used := map[string]bool{}
	for _, m := range c.Mailboxes {
		if m.AppRef == a {
			used[m.Transport] = true
		}
	}
	var out []string
	for _, t := range Transports {
		switch {
		case !used[t]:
		case t == TransportGraph:
			out = append(out, a.GraphURL+" (graph, scope "+a.GraphScope+")")
		case t == TransportHVE:
			out = append(out, a.HVEAddress+" (hve)")
		default:
			out = append(out, a.UpstreamAddress+" (smtp)")
		}
	}
	if len(out) == 0 {
		out = append(out, a.UpstreamAddress)
	}
	return out
}

// Client returns the client named name, or nil.
func (c *Config) Client(name string) *Client {
	for _, cl := range c.Clients {
		if cl.Name == name {
			return cl
		}
	}
	return nil
}
