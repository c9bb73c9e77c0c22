package oauth

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/AzureAD/microsoft-authentication-library-for-go/apps/cache"

	"github.com/oauthrelay/oauthrelay/internal/egress"
)

// fetchTimeout bounds one token request (discovery + token POST).
const fetchTimeout = 60 * time.Second

// newHTTPClient builds the client for the token endpoint: TLS 1.2+ end to
// end with the given roots, over a connection from way (the relay's one
// way out to Microsoft: [upstream] proxy, the environment's, or directly)
// or, with proxyURL (the app's proxy_url), through that proxy instead.
// A nil way means the environment's proxy settings.
func newHTTPClient(proxyURL string, roots *x509.CertPool, way *egress.Dialer) (*http.Client, error) {
	if p := CheckProxyURL(proxyURL); p != nil {
		return nil, fmt.Errorf("%s", p)
	}
	var err error
	if way == nil {
		if way, err = egress.FromEnvironment(os.Getenv, roots, nil); err != nil {
			return nil, err
		}
	}
	if proxyURL != "" {
		if way, err = way.WithProxy(proxyURL, "proxy_url"); err != nil {
			return nil, err
		}
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots}
	// The dialer goes through the proxy itself (CONNECT or SOCKS5), so
	// that a refusal comes back as an *egress.Error naming the proxy.
	tr.Proxy = nil
	tr.DialContext = way.DialContext
	return &http.Client{Transport: tr, Timeout: fetchTimeout}, nil
}

// emptyCache makes MSAL start every call from an empty token cache, so each
// AcquireTokenByCredential really asks the endpoint and Source alone decides
// what is cached.
type emptyCache struct{}

func (emptyCache) Replace(_ context.Context, c cache.Unmarshaler, _ cache.ReplaceHints) error {
	return c.Unmarshal([]byte("{}"))
}

func (emptyCache) Export(context.Context, cache.Marshaler, cache.ExportHints) error { return nil }
