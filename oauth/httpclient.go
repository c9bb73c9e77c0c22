package oauth

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/AzureAD/microsoft-authentication-library-for-go/apps/cache"
)

// fetchTimeout bounds one token request (discovery + token POST).
const fetchTimeout = 60 * time.Second

// newHTTPClient builds the client for the token endpoint: TLS 1.2+, the
// given roots, and an explicit proxy or the environment's.
func newHTTPClient(proxyURL string, roots *x509.CertPool) (*http.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots}
	tr.Proxy = http.ProxyFromEnvironment
	if proxyURL != "" {
		if p := CheckProxyURL(proxyURL); p != nil {
			return nil, fmt.Errorf("%s", p)
		}
		pu, _ := url.Parse(proxyURL) // CheckProxyURL parsed it
		tr.Proxy = http.ProxyURL(pu)
	}
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
