package e2e

import (
	"fmt"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// promqlNotMetrics are the words of PromQL that look like metric names:
// aggregations (written before "by (...)" as well as before "("),
// operators and literals.
var promqlNotMetrics = map[string]bool{
	"sum": true, "min": true, "max": true, "avg": true, "group": true, "stddev": true, "stdvar": true,
	"count": true, "count_values": true, "bottomk": true, "topk": true, "quantile": true, "limitk": true, "limit_ratio": true,
	"and": true, "or": true, "unless": true, "atan2": true, "bool": true, "offset": true, "inf": true, "nan": true,
}

// promqlLabelLists are the words followed by a list of label names.
var promqlLabelLists = map[string]bool{
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
}

// metricNames returns the metric names a PromQL expression reads: every
// identifier that is not a function (followed by "("), an aggregation, an
// operator or a label name (in {...} or after by/without/on/ignoring/
// group_left/group_right). Strings, ranges, numbers, durations and
// Grafana's $variables are skipped. A recording rule's name would be
// reported too: the shipped rules have none, so every name must be the
// relay's own.
func metricNames(expr string) ([]string, error) {
	seen := map[string]bool{}
	isIdent := func(c byte, first bool) bool {
		return c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || !first && c >= '0' && c <= '9'
	}
	// skipTo returns the index after the bracket closing the one at i,
	// stepping over quoted strings.
	skipTo := func(i int, open, close byte) (int, error) {
		depth := 0
		for j := i; j < len(expr); j++ {
			switch c := expr[j]; c {
			case '"', '\'', '`':
				k := j + 1
				for k < len(expr) && expr[k] != c {
					if expr[k] == '\\' && c != '`' {
						k++
					}
					k++
				}
				j = k
			case open:
				depth++
			case close:
				depth--
				if depth == 0 {
					return j + 1, nil
				}
			}
		}
		return 0, fmt.Errorf("unbalanced %c in %q", open, expr)
	}
	// The parentheses must balance (strings are stepped over).
	depth := 0
	for i := 0; i < len(expr) && depth >= 0; i++ {
		switch c := expr[i]; c {
		case '"', '\'', '`':
			for i++; i < len(expr) && expr[i] != c; i++ {
				if expr[i] == '\\' && c != '`' {
					i++
				}
			}
		case '(':
			depth++
		case ')':
			depth--
		}
	}
	if depth != 0 {
		return nil, fmt.Errorf("unbalanced parentheses in %q", expr)
	}
	for i := 0; i < len(expr); {
		c := expr[i]
		switch {
		case c == '"' || c == '\'' || c == '`':
			// A string outside braces (label_replace's arguments).
			k := i + 1
			for k < len(expr) && expr[k] != c {
				if expr[k] == '\\' && c != '`' {
					k++
				}
				k++
			}
			if k >= len(expr) {
				return nil, fmt.Errorf("unterminated string in %q", expr)
			}
			i = k + 1
		case c == '{':
			j, err := skipTo(i, '{', '}')
			if err != nil {
				return nil, err
			}
			i = j
		case c == '[':
			j, err := skipTo(i, '[', ']')
			if err != nil {
				return nil, err
			}
			i = j
		case c == '#':
			for i < len(expr) && expr[i] != '\n' {
				i++
			}
		case c == '$' || c >= '0' && c <= '9' || c == '.':
			// A Grafana variable, a number or a duration.
			i++
			for i < len(expr) && (isIdent(expr[i], false) || expr[i] == '.' || expr[i] == '{' || expr[i] == '}') {
				i++
			}
		case isIdent(c, true):
			j := i
			for j < len(expr) && isIdent(expr[j], false) {
				j++
			}
			word := expr[i:j]
			k := j
			for k < len(expr) && (expr[k] == ' ' || expr[k] == '\t' || expr[k] == '\n') {
				k++
			}
			next := byte(0)
			if k < len(expr) {
				next = expr[k]
			}
			switch {
			case promqlLabelLists[strings.ToLower(word)] && next == '(':
				end, err := skipTo(k, '(', ')')
				if err != nil {
					return nil, err
				}
				j = end
			case promqlLabelLists[strings.ToLower(word)], promqlNotMetrics[strings.ToLower(word)], next == '(':
			default:
				seen[word] = true
			}
			i = j
		default:
			i++
		}
	}
	names := make([]string, 0, len(seen))
	for n := range seen {
		names = append(names, n)
	}
	sort.Strings(names)
	return names, nil
}

// labelValuesRE finds the metric of a Grafana label_values(metric, label)
// variable query.
var labelValuesRE = regexp.MustCompile(`label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)`)

func TestMetricNames(t *testing.T) {
	for _, tc := range []struct {
		expr string
		want []string
	}{
		{`up{job="oauthrelay"} == 0`, []string{"up"}},
		{`max by (instance, app, resource) (oauthrelay_token_refused) == 1`, []string{"oauthrelay_token_refused"}},
		{`sum by (instance, mailbox) (increase(oauthrelay_throttled_total[10m])) > 0`, []string{"oauthrelay_throttled_total"}},
		{"oauthrelay_mailbox_recipients_24h\n  / on (instance, mailbox) oauthrelay_mailbox_max_recipients_per_day > 0.8",
			[]string{"oauthrelay_mailbox_max_recipients_per_day", "oauthrelay_mailbox_recipients_24h"}},
		{`oauthrelay_app_certificate_expiry_timestamp_seconds - time() < 30 * 86400`, []string{"oauthrelay_app_certificate_expiry_timestamp_seconds"}},
		{`sum by (result) (rate(oauthrelay_delivery_attempts_total{instance=~"$instance", result!="a}b"}[$__rate_interval])) or vector(0)`,
			[]string{"oauthrelay_delivery_attempts_total"}},
		{`histogram_quantile(0.99, sum by (le) (rate(x_seconds_bucket[5m]))) / ignoring(le) group_left(state) y_total offset 1h`,
			[]string{"x_seconds_bucket", "y_total"}},
		{`label_replace(oauthrelay_ready, "x", "$1", "instance", "(.*)")`, []string{"oauthrelay_ready"}},
	} {
		got, err := metricNames(tc.expr)
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("metricNames(%q) = %v, %v; want %v", tc.expr, got, err, tc.want)
		}
	}
	if _, err := metricNames(`sum(rate(x[5m])`); err == nil {
		t.Error("an unbalanced expression gave no error")
	}
}
