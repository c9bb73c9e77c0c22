package oauth

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/testkit"
)

// fakeEntra is an in-process HTTPS Entra token endpoint.
type fakeEntra struct {
	srv      *httptest.Server
	requests atomic.Int64
	mu       sync.Mutex
	// respond scripts the token endpoint; nil = success with expiresIn.
	respond   func(n int64, form url.Values) (int, string)
	expiresIn int
	forms     []url.Values
}

func newFakeEntra(t *testing.T) *fakeEntra {
	t.Helper()
	f := &fakeEntra{expiresIn: 3599}
	f.srv = httptest.NewTLSServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeEntra) authority() string { return f.srv.URL + "/" }

func (f *fakeEntra) tokenURL(tenant string) string {
	return f.srv.URL + "/" + tenant + "/oauth2/v2.0/token"
}

func (f *fakeEntra) serve(w http.ResponseWriter, r *http.Request) {
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	w.Header().Set("Content-Type", "application/json")
	switch {
	case r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/v2.0/.well-known/openid-configuration"):
		tenant := parts[0]
		base := f.srv.URL + "/" + tenant
		_ = json.NewEncoder(w).Encode(map[string]any{
			"token_endpoint":                        base + "/oauth2/v2.0/token",
			"authorization_endpoint":                base + "/oauth2/v2.0/authorize",
			"issuer":                                base + "/v2.0",
			"jwks_uri":                              base + "/discovery/v2.0/keys",
			"token_endpoint_auth_methods_supported": []string{"client_secret_post", "private_key_jwt", "client_secret_basic"},
		})
	case r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/oauth2/v2.0/token"):
		n := f.requests.Add(1)
		_ = r.ParseForm()
		f.mu.Lock()
		f.forms = append(f.forms, r.PostForm)
		respond, exp := f.respond, f.expiresIn
		f.mu.Unlock()
		if respond != nil {
			code, body := respond(n, r.PostForm)
			if code != 0 {
				w.WriteHeader(code)
				_, _ = w.Write([]byte(body))
				return
			}
		}
		fmt.Fprintf(w, `{"token_type":"Bearer","expires_in":%d,"ext_expires_in":%d,"access_token":"%s"}`, exp, exp, fakeJWT(n))
	default:
		http.NotFound(w, r)
	}
}

func (f *fakeEntra) lastForm() url.Values {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.forms) == 0 {
		return nil
	}
	return f.forms[len(f.forms)-1]
}

// fakeJWT is a distinct, JWT-shaped access token per request.
func fakeJWT(n int64) string {
	return fmt.Sprintf("eyJhbGciOiJSUzI1NiJ9.eyJ0ZXN0IjoxfQ.c2lnbmF0dXJlLXNlY3JldC10b2tlbi0%04d", n)
}

// entraError builds an error body as Entra's token endpoint sends it.
func entraError(errCode string, aadsts int, desc string) string {
	b, _ := json.Marshal(map[string]any{
		"error":             errCode,
		"error_description": fmt.Sprintf("AADSTS%d: %s\r\nTrace ID: 0000\r\nCorrelation ID: 1111\r\nTimestamp: 2025-01-01 00:00:00Z", aadsts, desc),
		"error_codes":       []int{aadsts},
		"trace_id":          "0000",
		"correlation_id":    "1111",
		"error_uri":         fmt.Sprintf("https://login.microsoftonline.com/error?code=%d", aadsts),
	})
	return string(b)
}

// newTestClock is a fake clock at a fixed instant, so that logged times
// and expiries are the same in every run.
func newTestClock() *testkit.Clock {
	return testkit.NewClock(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
}

const testSecret = "Zq8~s3cr3t-VALUE-do-not-leak_0123456789"

func secretSettings(f *fakeEntra) AppSettings {
	return AppSettings{
		Name:         "contoso",
		TenantID:     "11111111-2222-3333-4444-555555555555",
		ClientID:     "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
		Authority:    f.authority(),
		ClientSecret: testSecret,
	}
}

func newTestSource(t *testing.T, f *fakeEntra, s AppSettings, o Options) *Source {
	t.Helper()
	if o.HTTPClient == nil {
		o.HTTPClient = f.srv.Client()
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	src, err := NewSource(s, o)
	if err != nil {
		t.Fatalf("NewSource: %v", err)
	}
	src.jitter = func() float64 { return 0 }
	return src
}
