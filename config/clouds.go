package config

import (
	"fmt"
	"net"
	"net/url"
	"strings"
)

// cloudDomains maps Microsoft's DNS names (each with every name under it)
// to the cloud that serves them, so that a host written in the file can be
// compared with an app's cloud. A host not listed (a test server, a proxy,
// an emulator) belongs to no cloud and is never refused.
var cloudDomains = []struct{ domain, cloud string }{
	{"office365.com", "global"}, // smtp, outlook, smtp-hve
	{"graph.microsoft.com", "global"},
	{"login.microsoftonline.com", "global"},
	{"login.microsoft.com", "global"},
	{"login.windows.net", "global"},
	{"office365.us", "usgov"},       // smtp, outlook
	{"microsoft.us", "usgov"},       // graph, dod-graph
	{"microsoftonline.us", "usgov"}, // login
	{"outlook.cn", "china"},         // smtp.partner, partner
	{"chinacloudapi.cn", "china"},   // microsoftgraph, login
	{"microsoftonline.cn", "china"}, // login.partner
}

// hostOf returns the lower-cased host of a "host:port" or a URL.
func hostOf(s string) string {
	h := s
	if strings.Contains(s, "://") {
		u, err := url.Parse(s)
		if err != nil {
			return ""
		}
		h = u.Hostname()
	} else if hh, _, err := net.SplitHostPort(s); err == nil {
		h = hh
	}
	return strings.TrimSuffix(strings.ToLower(h), ".")
}

// cloudOf names the Microsoft cloud whose host s ("host:port" or a URL)
// is, or "" when it is no known Microsoft host.
func cloudOf(s string) string {
	h := hostOf(s)
	for _, d := range cloudDomains {
		if h == d.domain || strings.HasSuffix(h, "."+d.domain) {
			return d.cloud
		}
	}
	return ""
}

// gccNote helps the admin of a US government tenant pick the right cloud:
// GCC tenants live in the global cloud, only GCC High and DoD in usgov.
func gccNote(clouds ...string) string {
	for _, c := range clouds {
		if c == "usgov" {
			return ` (US Government GCC tenants are in "global"; "usgov" is GCC High and DoD)`
		}
	}
	return ""
}

// appCloud refuses an app key (authority, scope, graph_scope) the admin
// set to a host of another cloud than the app's: the token would come
// from, or be meant for, the wrong cloud. preset is the value the cloud
// would give the key.
func (v *validator) appCloud(a *App, cloud string, k, value, preset string, key func(string) string, line func(string) int) {
	hc := cloudOf(value)
	if value == "" || hc == "" || hc == cloud {
		return
	}
	set := fmt.Sprintf("cloud = %q", cloud)
	if a.Cloud == "" {
		set = `cloud is not set, so "global"`
	}
	v.add(line(k), key(k), fmt.Sprintf("%s is a host of Microsoft's %s cloud, but the app is in the %s cloud (%s)", hostOf(value), hc, cloud, set),
		fmt.Sprintf("leave %s out so the cloud sets it (%s), or set cloud = %q if the tenant is in that cloud%s", k, preset, hc, gccNote(cloud, hc)))
}

// upstreamCloud refuses an [upstream] destination the admin set to a host
// of another cloud than the app of a mailbox that delivers there: its
// mail would silently go to the wrong cloud. Each key is reported once
// per app.
func (v *validator) upstreamCloud(m *Mailbox, a *App) {
	if a.cloud == "" {
		return // an unknown cloud is reported on its own
	}
	u := &v.c.Upstream
	var k, value, own string
	switch m.Transport {
	case TransportSMTP:
		if !u.explicit {
			return
		}
		k, value, own = "address", u.Address, Clouds[a.cloud].Upstream
	case TransportGraph:
		if !u.explicitGraph {
			return
		}
		k, value, own = "graph_url", u.GraphURL, Clouds[a.cloud].Graph
	case TransportHVE:
		if !u.explicitHVE {
			return // hveApp warns about the default's cloud
		}
		k, value = "hve_address", u.HVEAddress
	default:
		return
	}
	hc := cloudOf(value)
	if hc == "" || hc == a.cloud || v.cloudSeen[k+"\x00"+a.Name] {
		return
	}
	if v.cloudSeen == nil {
		v.cloudSeen = map[string]bool{}
	}
	v.cloudSeen[k+"\x00"+a.Name] = true
	msg := fmt.Sprintf("%s is a host of Microsoft's %s cloud, but app %s (mailbox %s) is in the %s cloud: its mail would go to the wrong cloud", hostOf(value), hc, a.Name, m.Address, a.cloud)
	fix := fmt.Sprintf("leave %s out of [upstream] so each app uses its own cloud's host (%s for %s), or set cloud = %q in [[app]] %s if the tenant is in that cloud%s",
		k, own, a.cloud, hc, a.Name, gccNote(a.cloud, hc))
	if own == "" {
		fix = fmt.Sprintf("Microsoft documents a High Volume Email host only for the global cloud: set hve_address to your cloud's endpoint, use transport \"smtp\" or \"graph\" for %s, or set cloud = %q in [[app]] %s if the tenant is in that cloud%s",
			m.Address, hc, a.Name, gccNote(a.cloud, hc))
	}
	v.add(v.lineOf("upstream", -1, k), "upstream."+k, msg, fix)
}
