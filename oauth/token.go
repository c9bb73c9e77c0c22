package oauth

import (
	"fmt"
	"log/slog"
	"time"
)

// Token is an access token and when it expires. Its String, GoString,
// Format and LogValue methods never show the token itself.
type Token struct {
	AccessToken string
	ExpiresOn   time.Time
}

// String redacts the token.
func (t Token) String() string {
	if t.AccessToken == "" {
		return "Token(none)"
	}
	return "Token(redacted, expires " + t.ExpiresOn.UTC().Format(time.RFC3339) + ")"
}

// GoString redacts the token for %#v.
func (t Token) GoString() string { return t.String() }

// Format redacts the token for every fmt verb (%v, %+v, %s, %q, %x ...).
func (t Token) Format(f fmt.State, verb rune) { _, _ = f.Write([]byte(t.String())) }

// LogValue redacts the token in slog output.
func (t Token) LogValue() slog.Value {
	return slog.GroupValue(slog.String("access_token", "[redacted]"), slog.Time("expires_on", t.ExpiresOn))
}
