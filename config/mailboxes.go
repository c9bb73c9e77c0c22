package config

import (
	"fmt"
	"strings"
	"time"
)

// limit is a per-mailbox connection limit of one transport, and the words
// that explain it.
type limit struct {
	n                   int
	whose, what, excess string
}

// connectionLimit is the most concurrent deliveries Microsoft allows one
// mailbox on transport t, which is also the default of max_connections.
func connectionLimit(t string) limit {
	if t == TransportGraph {
		return limit{DefaultGraphMaxConnections, "Microsoft Graph's limit",
			"concurrent requests Microsoft Graph allows per app and mailbox", "Graph answers 429"}
	}
	return limit{DefaultMaxConnections, "Exchange Online's limit",
		"connections Exchange Online allows per mailbox", "Exchange answers 432 4.3.2"}
}

// transport checks mailbox.transport and fills in the default.
func (v *validator) transport(m *Mailbox, key string, line func(string) int) {
	switch m.Transport {
	case "":
		m.Transport = TransportSMTP
	case TransportSMTP, TransportGraph, TransportHVE:
	default:
		fix := `use "smtp" (SMTP AUTH, the default), "graph" (Microsoft Graph) or "hve" (High Volume Email)`
		if s := closest(m.Transport, Transports); s != "" {
			fix = fmt.Sprintf("did you mean %q? ", s) + fix
		}
		v.add(line("transport"), key+".transport", fmt.Sprintf("%q is not a transport", m.Transport), fix)
	}
}

// hveMinTokenLifetime is the least lifetime the High Volume Email endpoint
// accepts in a token (it answers 501 5.5.127 "Token will expire soon").
const hveMinTokenLifetime = 10 * time.Minute

// hveApp warns about app settings that the High Volume Email endpoint
// cannot work with.
func (v *validator) hveApp(m *Mailbox, a *App, key string, line func(string) int) {
	if m.Transport != TransportHVE {
		return
	}
	if a.MinTokenLifetime.Duration < hveMinTokenLifetime {
		v.warn(line("transport"), key+".transport", fmt.Sprintf("app %s renews its token when %s is left, but the High Volume Email endpoint refuses tokens with less than 10 minutes left", a.Name, a.MinTokenLifetime.Duration),
			fmt.Sprintf(`set min_token_lifetime = "10m" (or more) in [[app]] %s`, a.Name))
	}
	if a.Cloud != "" && a.Cloud != "global" && !v.c.Upstream.explicitHVE {
		v.warn(line("transport"), key+".transport", fmt.Sprintf("app %s is in Microsoft's %s cloud, but hve_address is the global cloud's endpoint %s", a.Name, a.Cloud, v.c.Upstream.HVEAddress),
			`set [upstream] hve_address to your cloud's High Volume Email endpoint, or use transport "smtp" or "graph"`)
	}
}

func (v *validator) mailboxes(apps map[string]*App) {
	c := v.c
	c.senders = map[string]*Mailbox{}
	seen := map[string]int{} // address → index of the mailbox that sends it
	for i, m := range c.Mailboxes {
		key := fmt.Sprintf("mailbox[%d]", i)
		if m.Address != "" {
			key = fmt.Sprintf("mailbox[%d] (%s)", i, m.Address)
		}
		line := func(k string) int { return v.lineOf("mailbox", i, k) }
		v.transport(m, key, line)
		conns := connectionLimit(m.Transport)
		if m.MaxPerMinute == 0 {
			m.MaxPerMinute = DefaultMaxPerMinute
		}
		if m.MaxConnections == 0 {
			m.MaxConnections = conns.n
		}
		if m.MaxRecipientsPerDay == 0 {
			m.MaxRecipientsPerDay = DefaultRecipientsPerDay
		}
		for _, lim := range []struct {
			key string
			n   int
			fix string
		}{
			{"max_per_minute", m.MaxPerMinute, "use 30, Exchange Online's limit"},
			{"max_connections", m.MaxConnections, fmt.Sprintf("use %d, %s", conns.n, conns.whose)},
			{"max_recipients_per_day", m.MaxRecipientsPerDay, "use 10000, Exchange Online's limit"},
		} {
			if lim.n < 0 {
				v.add(line(lim.key), key+"."+lim.key, "cannot be negative", lim.fix)
			}
		}
		if m.MaxConnections > conns.n {
			v.warn(line("max_connections"), key+".max_connections", fmt.Sprintf("%d is more than the %d %s", m.MaxConnections, conns.n, conns.what), fmt.Sprintf("use %d or less, or %s and mail waits", conns.n, conns.excess))
		}
		addr, err := ParseAddress(m.Address)
		if err != nil {
			v.add(line("address"), key+".address", err.Error(), "write the mailbox's primary SMTP address, e.g. helpdesk@contoso.com")
		}
		m.Address = addr
		if m.App == "" {
			v.add(line("app"), key+".app", "is missing", "name the [[app]] that signs in as this mailbox")
		} else if a := apps[m.App]; a == nil {
			v.add(line("app"), key+".app", fmt.Sprintf("no [[app]] is named %q", m.App), "add an [[app]] with that name, or correct the name")
		} else {
			m.AppRef = a
			v.hveApp(m, a, key, line)
			v.upstreamCloud(m, a)
		}
		for j, s := range append([]string{m.Address}, m.SendAs...) {
			if s == "" {
				continue
			}
			a, err := ParseAddress(s)
			if err != nil {
				v.add(line("send_as"), key+".send_as", err.Error(), "list plain addresses like noreply@contoso.com")
				continue
			}
			if j > 0 {
				m.SendAs[j-1] = a
			}
			la := strings.ToLower(a)
			// Compared by entry, not by address: a second [[mailbox]] with the
			// same address is as ambiguous as a shared send_as.
			if prev, dup := seen[la]; dup && prev != i {
				k := key + ".send_as"
				if j == 0 {
					k = key + ".address"
				}
				v.add(line(k[strings.LastIndexByte(k, '.')+1:]), k, fmt.Sprintf("%s is also a sender of mailbox %s (entry %d)", a, c.Mailboxes[prev].Address, prev), "list each address under exactly one [[mailbox]], so the relay knows which mailbox sends it")
				continue
			}
			seen[la] = i
			c.senders[la] = m
		}
	}
}
