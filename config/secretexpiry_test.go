package config

import (
	"strings"
	"testing"
	"time"
)

// withSecretExpiry is base with client_secret_expires set on its app.
func withSecretExpiry(v string) string {
	return strings.Replace(base, `client_secret = "literal-secret"`, `client_secret = "literal-secret"`+"\nclient_secret_expires = "+v, 1)
}

func TestSecretExpiry(t *testing.T) {
	far := time.Now().AddDate(1, 0, 0).UTC().Format(time.DateOnly)
	c, probs := parse(t, withSecretExpiry(`"`+far+`"`), noEnv)
	if probs != nil {
		t.Fatalf("problems: %v", probs)
	}
	if got := c.Apps[0].SecretExpires.Format(time.DateOnly); got != far || c.Apps[0].SecretExpires.Location() != time.UTC {
		t.Errorf("SecretExpires = %v, want %s UTC", c.Apps[0].SecretExpires, far)
	}
	for _, w := range c.Warnings {
		if strings.Contains(w.Key, "client_secret_expires") {
			t.Errorf("a date a year away warned: %v", w)
		}
	}

	for _, tc := range []struct{ date, want string }{
		{time.Now().AddDate(0, 0, 10).UTC().Format(time.DateOnly), "expires in "},
		{time.Now().AddDate(0, 0, -1).UTC().Format(time.DateOnly), "expired on "},
	} {
		c, probs := parse(t, withSecretExpiry(`"`+tc.date+`"`), noEnv)
		if probs != nil {
			t.Fatalf("%s: problems: %v", tc.date, probs)
		}
		var got string
		for _, w := range c.Warnings {
			if w.Key == "app[0] (contoso).client_secret_expires" {
				got = w.String()
			}
		}
		if !strings.Contains(got, tc.want) || !strings.Contains(got, tc.date) || !strings.Contains(got, "Certificates & secrets") || !strings.Contains(got, "test.toml:12:") {
			t.Errorf("%s: warning %q, want %q with the date, the line and the fix", tc.date, got, tc.want)
		}
	}

	_, probs = parse(t, withSecretExpiry(`"30/06/2027"`), noEnv)
	if len(probs) != 1 || probs[0].Key != "app[0] (contoso).client_secret_expires" || !strings.Contains(probs[0].String(), "YYYY-MM-DD") {
		t.Errorf("a date in another format: problems %v, want one naming the key and the format", probs)
	}
}

// TestSecretExpiryWithoutSecret: an app that presents no client secret
// (here a managed identity) is told the date is not used, and its
// SecretExpires stays zero so nothing warns of an expiry that cannot bite.
func TestSecretExpiryWithoutSecret(t *testing.T) {
	soon := time.Now().AddDate(0, 0, 3).UTC().Format(time.DateOnly)
	cfg := strings.Replace(base, `client_secret = "literal-secret"`, "managed_identity = true\nclient_secret_expires = \""+soon+"\"", 1)
	c, probs := parse(t, cfg, noEnv)
	if probs != nil {
		t.Fatalf("problems: %v", probs)
	}
	if !c.Apps[0].SecretExpires.IsZero() {
		t.Errorf("SecretExpires = %v for an app without a secret, want zero", c.Apps[0].SecretExpires)
	}
	var got string
	for _, w := range c.Warnings {
		if w.Key == "app[0] (contoso).client_secret_expires" {
			got = w.String()
		}
	}
	if !strings.Contains(got, "does not sign in with a client secret") || !strings.Contains(got, "remove client_secret_expires") || strings.Contains(got, "expires in") {
		t.Errorf("warning %q, want one saying the key is unused and to remove it", got)
	}
}
