package oauth

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestSecretToken(t *testing.T) {
	f := newFakeEntra(t)
	var calls []error
	src := newTestSource(t, f, secretSettings(f), Options{OnRequest: func(app string, err error) {
		if app != "contoso" {
			t.Errorf("OnRequest app = %q", app)
		}
		calls = append(calls, err)
	}})
	tok, err := src.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if tok.AccessToken != fakeJWT(1) {
		t.Fatalf("token = %q", tok.AccessToken)
	}
	form := f.lastForm()
	if form.Get("grant_type") != "client_credentials" || form.Get("client_secret") != testSecret ||
		form.Get("client_id") != "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee" || !strings.Contains(form.Get("scope"), DefaultScope) {
		t.Fatalf("unexpected form %v", form)
	}
	if len(calls) != 1 || calls[0] != nil {
		t.Fatalf("OnRequest calls = %v", calls)
	}
	st := src.Status()
	if st.Requests != 1 || st.LastError != nil || st.ExpiresOn.IsZero() || st.App != "contoso" {
		t.Fatalf("status = %+v", st)
	}
	// Cached: no second request.
	if _, err := src.Token(context.Background()); err != nil || f.requests.Load() != 1 {
		t.Fatalf("second Token: err=%v requests=%d", err, f.requests.Load())
	}
}

func TestSingleFlight(t *testing.T) {
	f := newFakeEntra(t)
	src := newTestSource(t, f, secretSettings(f), Options{})
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok, err := src.Token(context.Background())
			if err == nil && tok.AccessToken != fakeJWT(1) {
				err = fmt.Errorf("got token %d", len(tok.AccessToken))
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := f.requests.Load(); n != 1 {
		t.Fatalf("100 concurrent Token calls made %d token requests, want 1", n)
	}
}

func TestMinLifetime(t *testing.T) {
	f := newFakeEntra(t)
	f.expiresIn = 630 // 10.5 minutes
	clk := newTestClock()
	s := secretSettings(f)
	s.MinTokenLifetime = 10 * time.Minute
	src := newTestSource(t, f, s, Options{Now: clk.Now})
	ctx := context.Background()
	start := clk.Now()
	for clk.Now().Sub(start) < time.Hour {
		tok, err := src.Token(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if left := tok.ExpiresOn.Sub(clk.Now()); left < 10*time.Minute {
			t.Fatalf("at +%v got a token with %v left, want >= 10m", clk.Now().Sub(start), left)
		}
		clk.Advance(7 * time.Second)
	}
	// 630s tokens usable for 30s each: about 120 requests in an hour, not one per call.
	if n := f.requests.Load(); n < 100 || n > 130 {
		t.Fatalf("requests = %d, want about 120", n)
	}
}

func TestInvalidate(t *testing.T) {
	f := newFakeEntra(t)
	src := newTestSource(t, f, secretSettings(f), Options{})
	ctx := context.Background()
	a, _ := src.Token(ctx)
	src.Invalidate("some-other-token")
	if b, _ := src.Token(ctx); b.AccessToken != a.AccessToken {
		t.Fatal("Invalidate of another token dropped the cached one")
	}
	src.Invalidate(a.AccessToken)
	b, err := src.Token(ctx)
	if err != nil || b.AccessToken == a.AccessToken || f.requests.Load() != 2 {
		t.Fatalf("after Invalidate: err=%v same=%v requests=%d", err, b.AccessToken == a.AccessToken, f.requests.Load())
	}
}

func TestTokenErrors(t *testing.T) {
	tests := []struct {
		name      string
		status    int
		body      string
		aadsts    int
		permanent bool
		want      []string // substrings of Error()
	}{
		{"wrong secret", 401, entraError("invalid_client", 7000215, "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID."),
			7000215, true, []string{`app "contoso": AADSTS7000215: the client secret is wrong — fix: copy the secret's Value, not its Secret ID`}},
		{"expired secret", 401, entraError("invalid_client", 7000222, "The provided client secret keys are expired."), 7000222, true, []string{"expired", "new client secret"}},
		{"unknown app", 400, entraError("unauthorized_client", 700016, "Application with identifier 'x' was not found in the directory."), 700016, true, []string{"client_id and tenant_id"}},
		{"tenant not found", 400, entraError("invalid_request", 90002, "Tenant 'x' not found."), 90002, true, []string{"Directory (tenant) ID"}},
		{"bad tenant name", 400, entraError("invalid_request", 900023, "Specified tenant identifier 'x' is neither a valid DNS name, nor a valid external domain."), 900023, true, []string{"tenant"}},
		{"bad assertion", 401, entraError("invalid_client", 700027, "Client assertion contains an invalid signature. [Reason - The key was not found.]"), 700027, true, []string{"upload the public certificate", "thumbprint"}},
		{"clock", 400, entraError("invalid_client", 700024, "Client assertion is not within its valid time range."), 700024, true, []string{"NTP"}},
		{"aud", 400, entraError("invalid_client", 700023, "Invalid audience"), 700023, true, []string{"audience"}},
		{"iss", 400, entraError("invalid_client", 700021, "Client assertion application identifier doesn't match"), 700021, true, []string{"client_id"}},
		{"scope 1002012", 400, entraError("invalid_scope", 1002012, "The provided value for scope x is not valid."), 1002012, true, []string{"https://outlook.office365.com/.default"}},
		{"scope 70011", 400, entraError("invalid_scope", 70011, "The provided value for the input parameter 'scope' is not valid."), 70011, true, []string{"https://outlook.office365.com/.default"}},
		{"CA", 400, entraError("interaction_required", 53003, "Access has been blocked by Conditional Access policies."), 53003, true, []string{"Conditional Access"}},
		{"security defaults", 400, entraError("invalid_grant", 530035, "Access has been blocked by security defaults."), 530035, true, []string{"security defaults"}},
		{"no credential", 401, entraError("invalid_client", 7000218, "The request body must contain the following parameter: 'client_assertion' or 'client_secret'."), 7000218, true, []string{"client_secret or certificate_file"}},
		{"90024", 503, entraError("temporarily_unavailable", 90024, "RequestBudgetExceededError"), 90024, false, []string{"temporarily unavailable"}},
		{"unknown 4xx", 400, entraError("invalid_request", 123456, "Something new went wrong."), 123456, true, []string{"AADSTS123456", "https://login.microsoftonline.com/error?code=123456", "Something new went wrong."}},
		{"503 no body", 503, "", 0, false, []string{"HTTP 503", "retries"}},
		{"429", 429, `{"error":"too_many_requests"}`, 0, false, []string{"temporarily unavailable"}},
		{"temporarily_unavailable", 400, `{"error":"temporarily_unavailable","error_description":"try later"}`, 0, false, []string{"temporarily unavailable"}},
		{"server echoes secret", 400, entraError("invalid_request", 99999, "bad request client_secret="+testSecret+" and "+testSecret), 99999, true, []string{"[redacted]"}},
		{"html 404", 404, "<html>not here</html>", 0, true, []string{"HTTP 404", "authority"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeEntra(t)
			f.respond = func(int64, url.Values) (int, string) { return tt.status, tt.body }
			var logs bytes.Buffer
			log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			src := newTestSource(t, f, secretSettings(f), Options{Logger: log})
			_, err := src.Token(context.Background())
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("err = %v (%T), want *Error", err, err)
			}
			if e.AADSTS != tt.aadsts || e.Permanent != tt.permanent || IsPermanent(err) != tt.permanent || e.HTTPStatus != tt.status {
				t.Fatalf("got AADSTS=%d permanent=%v status=%d, want %d %v %d: %v", e.AADSTS, e.Permanent, e.HTTPStatus, tt.aadsts, tt.permanent, tt.status, err)
			}
			msg := err.Error()
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("Error() = %q, want it to contain %q", msg, w)
				}
			}
			if e.Fix == "" || e.Cause == "" {
				t.Errorf("missing cause/fix: %+v", e)
			}
			if strings.Contains(e.Description, "Trace ID") || strings.Contains(msg, "Correlation ID") {
				t.Errorf("trace lines not stripped: %q", msg)
			}
			for _, out := range []string{msg, fmt.Sprintf("%+v", err), fmt.Sprintf("%#v", e), logs.String()} {
				if strings.Contains(out, testSecret) {
					t.Fatalf("secret leaked: %s", out)
				}
			}
			if st := src.Status(); st.LastError == nil || st.LastErrorAt.IsZero() {
				t.Errorf("status after error = %+v", st)
			}
		})
	}
}

func TestExplainCoversReference(t *testing.T) {
	for _, code := range []int{7000215, 7000222, 700016, 90002, 900023, 700027, 700024, 700023, 700021, 1002012, 70011, 53003, 530035, 7000218, 90024} {
		cause, fix, permanent, ok := Explain(code)
		if !ok || cause == "" || fix == "" {
			t.Errorf("Explain(%d) missing", code)
		}
		if permanent == (code == 90024) {
			t.Errorf("Explain(%d) permanent = %v", code, permanent)
		}
	}
	if _, _, _, ok := Explain(1); ok {
		t.Error("Explain(1) known")
	}
}

func TestBackoffReturnsCachedError(t *testing.T) {
	tests := []struct {
		name      string
		status    int
		body      string
		firstWait time.Duration
	}{
		{"permanent", 401, entraError("invalid_client", 7000215, "bad secret"), time.Minute},
		{"transient", 503, "", time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeEntra(t)
			f.respond = func(int64, url.Values) (int, string) { return tt.status, tt.body }
			clk := newTestClock()
			src := newTestSource(t, f, secretSettings(f), Options{Now: clk.Now})
			ctx := context.Background()
			_, err1 := src.Token(ctx)
			for range 50 {
				if _, err := src.Token(ctx); err != err1 {
					t.Fatalf("within backoff got %v, want the cached error", err)
				}
			}
			if n := f.requests.Load(); n != 1 {
				t.Fatalf("requests within backoff = %d, want 1", n)
			}
			clk.Advance(tt.firstWait)
			_, _ = src.Token(ctx)
			if n := f.requests.Load(); n != 2 {
				t.Fatalf("requests after backoff = %d, want 2", n)
			}
			// The second failure doubles the wait.
			clk.Advance(tt.firstWait)
			_, _ = src.Token(ctx)
			if n := f.requests.Load(); n != 2 {
				t.Fatalf("requests before doubled backoff = %d, want 2", n)
			}
			clk.Advance(tt.firstWait)
			f.respond = nil
			if _, err := src.Token(ctx); err != nil || f.requests.Load() != 3 {
				t.Fatalf("after recovery err=%v requests=%d", err, f.requests.Load())
			}
			if st := src.Status(); st.LastError != nil {
				t.Fatalf("LastError not cleared after success: %v", st.LastError)
			}
		})
	}
}

func TestBackoffDelay(t *testing.T) {
	tests := []struct {
		permanent bool
		n         int
		r         float64
		want      time.Duration
	}{
		{false, 1, 0, time.Second},
		{false, 2, 0, 2 * time.Second},
		{false, 9, 0, 256 * time.Second},
		{false, 10, 0, 5 * time.Minute},
		{false, 1000, 0, 5 * time.Minute},
		{false, 1, 1, 800 * time.Millisecond},
		{true, 1, 0, time.Minute},
		{true, 5, 0, 16 * time.Minute},
		{true, 6, 0, 30 * time.Minute},
		{true, 64, 0, 30 * time.Minute},
		{true, 6, 0.5, 27 * time.Minute},
		{true, 0, 0, time.Minute},
	}
	for _, tt := range tests {
		if got := backoffDelay(tt.permanent, tt.n, tt.r); got != tt.want {
			t.Errorf("backoffDelay(%v, %d, %v) = %v, want %v", tt.permanent, tt.n, tt.r, got, tt.want)
		}
	}
}

func TestNetworkErrors(t *testing.T) {
	t.Run("connection refused", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		s := AppSettings{Name: "contoso", TenantID: "t1", ClientID: "c1c1c1c1-0000-4000-8000-000000000001", Authority: "https://" + addr + "/", ClientSecret: testSecret}
		src, err := NewSource(s, Options{})
		if err != nil {
			t.Fatal(err)
		}
		_, err = src.Token(context.Background())
		var e *Error
		if !errors.As(err, &e) || e.Permanent || e.Err == nil {
			t.Fatalf("err = %#v", err)
		}
		if !strings.Contains(err.Error(), "check that this host can reach "+addr+" (proxy? firewall?") {
			t.Errorf("Error() = %q", err)
		}
		if strings.Contains(err.Error(), testSecret) {
			t.Fatal("secret leaked")
		}
	})
	t.Run("tls verify", func(t *testing.T) {
		f := newFakeEntra(t)
		s := secretSettings(f)
		s.RootCAs = x509.NewCertPool() // does not hold the test CA
		src, err := NewSource(s, Options{})
		if err != nil {
			t.Fatal(err)
		}
		_, err = src.Token(context.Background())
		var e *Error
		// A certificate that does not verify is a configuration fault.
		if !errors.As(err, &e) || !e.Permanent || !strings.Contains(err.Error(), "could not be verified") || !strings.Contains(err.Error(), "ca_file") {
			t.Fatalf("err = %v", err)
		}
	})
}

// TestCustomAuthorityRootCAs uses the production HTTP client path: an
// authority on 127.0.0.1:PORT and RootCAs holding the test CA.
func TestCustomAuthorityRootCAs(t *testing.T) {
	f := newFakeEntra(t)
	s := secretSettings(f)
	s.RootCAs = x509.NewCertPool()
	s.RootCAs.AddCert(f.srv.Certificate())
	s.Authority = strings.TrimSuffix(f.authority(), "/") // trailing slash optional
	src, err := NewSource(s, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := src.Token(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestNewSourceValidation(t *testing.T) {
	ok := AppSettings{Name: "a", TenantID: "t", ClientID: "cccccccc-0000-4000-8000-000000000001", ClientSecret: "s"}
	tests := []struct {
		name string
		mod  func(*AppSettings)
		want string
	}{
		{"no tenant", func(s *AppSettings) { s.TenantID = "" }, "tenant_id"},
		{"bad tenant", func(s *AppSettings) { s.TenantID = "a/b" }, "tenant_id"},
		{"no client", func(s *AppSettings) { s.ClientID = "" }, "client_id"},
		{"client not a GUID", func(s *AppSettings) { s.ClientID = "contoso-relay" }, "client_id: is not a GUID"},
		{"scope without .default", func(s *AppSettings) { s.Scope = "https://outlook.office365.com/SMTP.Send" }, "/.default"},
		{"socks4 proxy", func(s *AppSettings) { s.ProxyURL = "socks4://user:pw@proxy:1080" }, "socks5h"},
		{"http authority", func(s *AppSettings) { s.Authority = "http://login.example/" }, "https"},
		{"no credential", func(s *AppSettings) { s.ClientSecret = "" }, "no credential"},
		{"both credentials", func(s *AppSettings) { s.CertificateFile = "x.pem" }, "not both"},
		{"missing cert", func(s *AppSettings) { s.ClientSecret = ""; s.CertificateFile = "/nonexistent/x.pem" }, "/nonexistent/x.pem"},
		{"bad proxy", func(s *AppSettings) { s.ProxyURL = "ftp://user:pw@proxy" }, "proxy"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := ok
			tt.mod(&s)
			_, err := NewSource(s, Options{})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
			if strings.Contains(err.Error(), ":pw@") {
				t.Fatal("proxy password leaked")
			}
		})
	}
	if _, err := NewSource(ok, Options{}); err != nil {
		t.Fatal(err)
	}
}

func TestTokenRedaction(t *testing.T) {
	tok := Token{AccessToken: fakeJWT(7), ExpiresOn: time.Now()}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("x", "tok", tok)
	slog.New(slog.NewTextHandler(&buf, nil)).Info("x", "tok", tok)
	for _, s := range []string{
		fmt.Sprint(tok), fmt.Sprintf("%v %+v %#v %s %q %x", tok, tok, tok, tok, tok, tok),
		fmt.Sprintf("%v", &tok), fmt.Sprintf("%+v", struct{ T Token }{tok}), buf.String(),
	} {
		if strings.Contains(s, "eyJ") || strings.Contains(s, "c2lnbmF0") {
			t.Fatalf("token shown: %s", s)
		}
	}
}

// TestStartRefreshesInSimulatedTime runs the background refresher with a
// fake clock whose timers fire at once, advancing simulated time.
func TestStartRefreshesInSimulatedTime(t *testing.T) {
	tests := []struct {
		name           string
		fail           bool
		minReq, maxReq int64
	}{
		// 3599s tokens refreshed at 600+360s before expiry: every 2639s, ~9 in 6h.
		{"success", false, 8, 10},
		// permanent failures: 1,2,4,8,16,30,30... minutes: ~16 in 6h, never a busy loop.
		{"permanent failure", true, 12, 18},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeEntra(t)
			if tt.fail {
				f.respond = func(int64, url.Values) (int, string) {
					return 401, entraError("invalid_client", 7000215, "bad")
				}
			}
			clk := newTestClock()
			src := newTestSource(t, f, secretSettings(f), Options{Now: clk.Now})
			start := clk.Now()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan struct{})
			var once sync.Once
			var minLeft = time.Duration(1 << 62)
			src.after = func(d time.Duration) <-chan time.Time {
				if st := src.Status(); !st.ExpiresOn.IsZero() {
					minLeft = min(minLeft, st.ExpiresOn.Sub(clk.Now()))
				}
				clk.Advance(d)
				ch := make(chan time.Time, 1)
				if clk.Now().Sub(start) > 6*time.Hour {
					once.Do(func() { close(done) })
					return ch // never fires; ctx ends the loop
				}
				ch <- clk.Now()
				return ch
			}
			src.Start(ctx)
			<-done
			cancel()
			n := f.requests.Load()
			if n < tt.minReq || n > tt.maxReq {
				t.Fatalf("requests in 6 simulated hours = %d, want %d..%d", n, tt.minReq, tt.maxReq)
			}
			if !tt.fail && minLeft < 10*time.Minute {
				t.Fatalf("cached token fell to %v left, want >= 10m", minLeft)
			}
		})
	}
}

// TestExpiryCountsFromTheRequest: a token's expiry counts from when it was
// asked for, so a clock that moves while the request runs (a simulated
// clock jumping; a slow endpoint) never makes it look longer-lived than
// Entra made it. Before, it counted from the answer: a jump of 30 s during
// the request gave a token 30 s more than it had, and an AUTH presented it
// with less than min_token_lifetime left.
func TestExpiryCountsFromTheRequest(t *testing.T) {
	f := newFakeEntra(t)
	clk := newTestClock()
	asked := clk.Now()
	f.respond = func(int64, url.Values) (int, string) {
		clk.Advance(30 * time.Second) // the clock moves while Entra answers
		return 0, ""
	}
	src := newTestSource(t, f, secretSettings(f), Options{Now: clk.Now})
	tok, err := src.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if latest := asked.Add(time.Duration(f.expiresIn) * time.Second); tok.ExpiresOn.After(latest) {
		t.Fatalf("expires on %v, later than asked + expires_in = %v", tok.ExpiresOn, latest)
	}
}
