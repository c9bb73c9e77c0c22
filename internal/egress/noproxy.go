package egress

import (
	"fmt"
	"net/netip"
	"strings"
)

// rule is one no_proxy entry.
type rule struct {
	all    bool
	prefix netip.Prefix // an address or CIDR
	domain string       // lower case, without the leading dot
}

// CheckNoProxy returns what is wrong with a no_proxy entry, or nil.
func CheckNoProxy(e string) error {
	_, err := parseRule(e)
	return err
}

func parseRule(e string) (rule, error) {
	s := strings.ToLower(strings.TrimSpace(e))
	switch {
	case s == "*":
		return rule{all: true}, nil
	case strings.Contains(s, "/"):
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return rule{}, fmt.Errorf("no_proxy entry %q is not a valid CIDR", e)
		}
		return rule{prefix: p.Masked()}, nil
	}
	if a, err := netip.ParseAddr(strings.Trim(s, "[]")); err == nil {
		return rule{prefix: netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())}, nil
	}
	d := strings.TrimPrefix(strings.TrimPrefix(s, "*"), ".")
	if d == "" || strings.ContainsAny(d, " :@/*,") {
		return rule{}, fmt.Errorf("no_proxy entry %q is not a host, domain, address or CIDR", e)
	}
	return rule{domain: d}, nil
}

// match reports whether host (a name or an IP address, no port) goes
// directly. A domain matches itself and every name under it; a CIDR
// matches addresses written as addresses (names are not resolved to
// decide).
func (r rule) match(host string) bool {
	if r.all {
		return true
	}
	h := strings.TrimSuffix(strings.ToLower(strings.Trim(host, "[]")), ".")
	if r.domain != "" {
		return h == r.domain || strings.HasSuffix(h, "."+r.domain)
	}
	a, err := netip.ParseAddr(h)
	return err == nil && r.prefix.Contains(a.Unmap())
}
