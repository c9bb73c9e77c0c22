package graph

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/oauthrelay/oauthrelay/config"
	"github.com/oauthrelay/oauthrelay/internal/egress"
	"github.com/oauthrelay/oauthrelay/oauth"
	"github.com/oauthrelay/oauthrelay/transport"
)

// newHTTPClient is the one client of a Transport: its pool keeps TLS
// connections (HTTP/2 where Graph offers it) across messages and Conns.
// Its connections come from the relay's way out (deps.Dialer: the proxy
// or directly), and TLS to Graph runs end to end over them.
func newHTTPClient(deps transport.Deps) *http.Client {
	if deps.HTTPClient != nil {
		return deps.HTTPClient
	}
	tr := &http.Transport{
		TLSClientConfig:       &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: deps.RootCAs},
		ForceAttemptHTTP2:     true,
		MaxIdleConnsPerHost:   32,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   30 * time.Second,
		ExpectContinueTimeout: time.Second,
		// The dialer speaks to the proxy itself, so that a refusal is a
		// transport.ProxyError naming the proxy.
		Proxy:       nil,
		DialContext: deps.Dialer(),
	}
	return &http.Client{Transport: tr}
}

// clientFor is the client of an app with its own proxy_url: the same
// settings, through that proxy.
func (t *Transport) clientFor(app *config.App) (*http.Client, error) {
	if t.deps.HTTPClient != nil {
		return t.deps.HTTPClient, nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if c := t.byProxy[app.ProxyURL]; c != nil {
		return c, nil
	}
	base := t.deps.Egress
	if base == nil {
		var err error
		if base, err = egress.New(egress.Settings{RootCAs: t.deps.RootCAs}, egress.DialFunc(t.deps.Dial)); err != nil {
			return nil, err
		}
	}
	way, err := base.WithProxy(app.ProxyURL, "[[app]] "+app.Name+" proxy_url")
	if err != nil {
		return nil, fmt.Errorf("app %s: proxy_url: %w", app.Name, err)
	}
	d := t.deps
	d.Dial = way.DialContext
	c := newHTTPClient(d)
	if t.byProxy == nil {
		t.byProxy = map[string]*http.Client{}
	}
	t.byProxy[app.ProxyURL] = c
	return c, nil
}

// call is one Graph request. body makes the request body afresh, so that a
// refused token can be replaced and the request sent again.
type call struct {
	op          string
	method, url string
	contentType string
	body        func() (io.ReadCloser, int64, error)
	// header adds headers (Content-Range for uploads).
	header map[string]string
	// anonymous requests (upload URLs) carry no Authorization header:
	// the URL itself is the credential.
	anonymous bool
	// draft marks the draft path, whose 403 needs Mail.ReadWrite.
	draft bool
}

// session is what one delivery attempt (or probe) needs for its requests.
type session struct {
	client  *http.Client
	tokens  transport.TokenSource
	app     transport.GraphApp
	mailbox string
	// user is the mailbox's URL: {graph}/v1.0/users/{mailbox}.
	user    string
	from    string
	timeout time.Duration
	now     func() time.Time
}

// maxErrorBody bounds what is read of an answer.
const maxErrorBody = 1 << 20

// do sends c and decodes a successful JSON answer into out (if not nil).
// It returns Graph's request-id. A token Graph refuses is replaced once.
func (s *session) do(ctx context.Context, c call, out any) (string, error) {
	for retried := false; ; retried = true {
		tok, err := s.token(ctx, c)
		if err != nil {
			return "", err
		}
		id, err := s.send(ctx, c, tok, out)
		var ge *transport.GraphError
		if !retried && !c.anonymous && errors.As(err, &ge) && transport.Classify(transport.StageGraph, ge, s.mailbox).RetryToken {
			s.tokens.Invalidate(tok)
			continue
		}
		return id, err
	}
}

// token gets the bearer token for c (none for an anonymous call) and
// learns the service principal's id from it, for fixes.
func (s *session) token(ctx context.Context, c call) (string, error) {
	if c.anonymous {
		return "", nil
	}
	t, err := s.tokens.Token(ctx)
	if err != nil {
		return "", err
	}
	if s.app.ObjectID == "" {
		if cl, err := oauth.ParseClaims(t.AccessToken); err == nil {
			s.app.ObjectID = cl.Oid
		}
	}
	return t.AccessToken, nil
}

func (s *session) send(ctx context.Context, c call, tok string, out any) (string, error) {
	if s.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.timeout)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, c.method, c.url, nil)
	if err != nil {
		return "", err
	}
	if c.body != nil {
		rc, n, err := c.body()
		if err != nil {
			return "", err
		}
		req.Body, req.ContentLength = rc, n
		if n == 0 {
			req.Body = http.NoBody
			rc.Close()
		}
		req.Header.Set("Content-Type", c.contentType)
	}
	for k, v := range c.header {
		req.Header.Set(k, v)
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			// An upload URL's query is its credential (authtoken).
			ue.URL = withoutQuery(ue.URL)
		}
		return "", err
	}
	defer resp.Body.Close()
	id := resp.Header.Get("request-id")
	if resp.StatusCode/100 == 2 {
		if out != nil {
			if err := json.NewDecoder(io.LimitReader(resp.Body, maxErrorBody)).Decode(out); err != nil {
				return id, &transport.GraphError{Op: c.op, Draft: c.draft, Status: resp.StatusCode, Message: "unreadable answer: " + err.Error(), RequestID: id, App: s.app}
			}
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody))
		return id, nil
	}
	return id, s.graphError(c, resp)
}

// graphError reads Graph's error answer.
func (s *session) graphError(c call, resp *http.Response) *transport.GraphError {
	ge := &transport.GraphError{Op: c.op, Draft: c.draft, Status: resp.StatusCode, App: s.app, From: s.from,
		RequestID: resp.Header.Get("request-id"), RetryAfter: retryAfter(resp.Header.Get("Retry-After"), s.now())}
	var body struct {
		Error struct {
			Code, Message string
			InnerError    struct {
				RequestID string `json:"request-id"`
			}
		}
	}
	if json.NewDecoder(io.LimitReader(resp.Body, maxErrorBody)).Decode(&body) == nil {
		ge.Code, ge.Message = body.Error.Code, body.Error.Message
		if ge.RequestID == "" {
			ge.RequestID = body.Error.InnerError.RequestID
		}
	}
	if ge.Message == "" {
		ge.Message = http.StatusText(resp.StatusCode)
	}
	return ge
}

// withoutQuery is a URL fit for an error message.
func withoutQuery(s string) string {
	if i := strings.IndexByte(s, '?'); i >= 0 {
		return s[:i] + "?[redacted]"
	}
	return s
}

// retryAfter reads a Retry-After header: seconds or an HTTP date.
func retryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if n, err := strconv.Atoi(v); err == nil && n >= 0 {
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// base64Body streams what open gives, base64-encoded, with its length
// known in advance so that Graph sees a Content-Length.
func base64Body(open func() (io.ReadCloser, int64, error)) func() (io.ReadCloser, int64, error) {
	return func() (io.ReadCloser, int64, error) {
		src, n, err := open()
		if err != nil {
			return nil, 0, err
		}
		pr, pw := io.Pipe()
		go func() {
			enc := base64.NewEncoder(base64.StdEncoding, pw)
			_, err := io.Copy(enc, src)
			if err == nil {
				err = enc.Close()
			}
			src.Close()
			// The HTTP client closing pr ends this copy too.
			pw.CloseWithError(err)
		}()
		return pr, int64(base64.StdEncoding.EncodedLen(int(n))), nil
	}
}

// bytesBody is a request body held in memory (JSON, a draft, a chunk).
func bytesBody(b []byte) func() (io.ReadCloser, int64, error) {
	return func() (io.ReadCloser, int64, error) {
		return io.NopCloser(bytes.NewReader(b)), int64(len(b)), nil
	}
}

// jsonBody is a small JSON request body.
func jsonBody(v any) func() (io.ReadCloser, int64, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return func() (io.ReadCloser, int64, error) { return nil, 0, err }
	}
	return bytesBody(b)
}
