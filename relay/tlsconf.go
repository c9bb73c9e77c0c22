package relay

import (
	"crypto/tls"
	"fmt"
	"strings"

	"github.com/oauthrelay/oauthrelay/config"
)

// legacySuites are the cipher suites TLS 1.0 and 1.1 clients can use (no
// GCM or ChaCha20 before TLS 1.2: only CBC with SHA-1). Old printers often
// know only RSA key exchange, which Go left out of its defaults in 1.22;
// listing the suites here is what enables them, and only when
// listen.min_tls_version asks for 1.0 or 1.1. 3DES is left out: every
// device that speaks TLS 1.0 knows AES (RFC 3268, 2002), and 3DES's 64-bit
// blocks are open to Sweet32.
var legacySuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA,
	tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA,
	tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA,
	tls.TLS_RSA_WITH_AES_128_CBC_SHA,
	tls.TLS_RSA_WITH_AES_256_CBC_SHA,
}

// modernSuites are Go's default TLS 1.2 suites: they must be listed too
// once CipherSuites is set, or TLS 1.2 clients would be held to the
// legacy ones. (TLS 1.3's suites are not configurable.)
var modernSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// tlsConfig is the listener's TLS configuration: its certificate, and
// listen.min_tls_version with the suites that version needs.
func tlsConfig(l *config.Listen) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(l.TLSCertFile, l.TLSKeyFile)
	if err != nil {
		return nil, fmt.Errorf("listen.tls_cert_file: %w", err)
	}
	c := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: l.TLSMinVersion()}
	if l.LegacyTLS() {
		c.CipherSuites = append(append([]uint16{}, modernSuites...), legacySuites...)
	}
	return c, nil
}

// tlsVersion names a negotiated version the way min_tls_version does:
// "1.0" for TLS 1.0.
func tlsVersion(v uint16) string {
	return strings.TrimPrefix(tls.VersionName(v), "TLS ")
}

// logTLS logs the version and cipher suite a session negotiated, and
// counts it: at info for TLS 1.0 and 1.1, so that an admin can find the
// devices that still need listen.min_tls_version below 1.2.
func (ss *session) logTLS(st tls.ConnectionState) {
	v := tlsVersion(st.Version)
	if h := ss.s.hooks.TLSSession; h != nil {
		h(v)
	}
	attrs := []any{"remote", ss.ip.String(), "tls_version", v, "cipher", tls.CipherSuiteName(st.CipherSuite)}
	if st.Version < tls.VersionTLS12 {
		ss.s.log.Info("legacy TLS session", append(attrs, "fix", "this device needs listen.min_tls_version \""+v+"\"; update its firmware to TLS 1.2 if it can, then raise min_tls_version")...)
		return
	}
	ss.s.log.Debug("TLS session", attrs...)
}

// tooOldClient returns a ClientHello hook that logs a client offering only
// TLS versions below min: its handshake then fails inside crypto/tls with
// nothing in the relay's log, and the admin would not learn which device
// needs listen.min_tls_version lowered (or its firmware updated).
func (s *Server) tooOldClient(min uint16) func(*tls.ClientHelloInfo) (*tls.Config, error) {
	return func(hi *tls.ClientHelloInfo) (*tls.Config, error) {
		best := uint16(0)
		for _, v := range hi.SupportedVersions {
			if v > best && v <= tls.VersionTLS13 {
				best = v
			}
		}
		if best != 0 && best < min {
			remote := ""
			if a := hi.Conn.RemoteAddr(); a != nil {
				remote = a.String()
			}
			s.log.Warn("refused: client offers only an old TLS version", "remote", remote,
				"client_max_tls_version", tlsVersion(best), "min_tls_version", tlsVersion(min),
				"fix", "update the device or application to TLS 1.2; if it cannot, set listen.min_tls_version = \""+tlsVersion(best)+"\" (and restart)")
		}
		return nil, nil
	}
}
