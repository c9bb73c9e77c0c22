package testkit

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// DefaultNames are the names a leaf certificate is for when none are given.
var DefaultNames = []string{"localhost", "127.0.0.1", "::1"}

// CA is a test certificate authority. Its key is ECDSA P-256, quick to
// make; it is valid from an hour ago for a day, by the real clock, since
// TLS checks validity with time.Now whatever clock the test fakes.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
	// PEM is Cert, PEM-encoded: what a ca_file holds.
	PEM []byte
}

// Leaf is a certificate issued by a CA, with its key.
type Leaf struct {
	Cert *x509.Certificate
	// TLS is the certificate and key for a tls.Config.
	TLS tls.Certificate
	// CertPEM and KeyPEM are the certificate and its PKCS #8 key, PEM.
	CertPEM, KeyPEM []byte
}

// NewCA makes a CA named "oauthrelay test CA".
func NewCA(t testing.TB) *CA {
	t.Helper()
	return newCA(t, ecKey(t))
}

// NewRSACA is NewCA with RSA 2048 keys for the CA and its leaves: what old
// TLS stacks (Mono's, printers') need, since they know no ECDSA.
func NewRSACA(t testing.TB) *CA {
	t.Helper()
	return newCA(t, rsaKey(t))
}

func newCA(t testing.TB, key crypto.Signer) *CA {
	t.Helper()
	tmpl := template("oauthrelay test CA")
	tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
	tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	cert := create(t, tmpl, tmpl, key.Public(), key)
	return &CA{Cert: cert, Key: key, PEM: pemCert(cert)}
}

// Leaf issues a server certificate for names, each a DNS name or an IP
// address; none means DefaultNames. The first name is the common name.
func (ca *CA) Leaf(t testing.TB, names ...string) *Leaf {
	t.Helper()
	if len(names) == 0 {
		names = DefaultNames
	}
	var key crypto.Signer = ecKey(t)
	tmpl := template(names[0])
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	if _, ok := ca.Key.(*rsa.PrivateKey); ok {
		// RSA key exchange (old TLS suites) encrypts to the key.
		key = rsaKey(t)
		tmpl.KeyUsage |= x509.KeyUsageKeyEncipherment
	}
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	cert := create(t, tmpl, ca.Cert, key.Public(), ca.Key)
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return &Leaf{
		Cert:    cert,
		TLS:     tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert},
		CertPEM: pemCert(cert),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}),
	}
}

// Pool returns a pool holding only the CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// ClientTLS returns a client configuration that trusts only the CA and
// expects serverName (a name or IP the leaf was issued for).
func (ca *CA) ClientTLS(serverName string) *tls.Config {
	return &tls.Config{RootCAs: ca.Pool(), ServerName: serverName}
}

// File writes the CA's PEM into t.TempDir() and returns its path.
func (ca *CA) File(t testing.TB) string {
	t.Helper()
	return WriteFile(t, "ca.pem", ca.PEM)
}

// ServerTLS returns a server configuration presenting the leaf.
func (l *Leaf) ServerTLS() *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{l.TLS}}
}

// Files writes the certificate and key PEM into t.TempDir() (mode 0600)
// and returns their paths, as tls_cert_file and tls_key_file take them.
func (l *Leaf) Files(t testing.TB) (certFile, keyFile string) {
	t.Helper()
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	for f, b := range map[string][]byte{certFile: l.CertPEM, keyFile: l.KeyPEM} {
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return certFile, keyFile
}

// ClientCert makes a self-signed RSA 2048 certificate named cn and its key:
// the shape of an Entra ID certificate credential (assertions are RS256).
func ClientCert(t testing.TB, cn string) (*x509.Certificate, *rsa.PrivateKey) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return SelfSigned(t, key, cn), key
}

// SelfSigned makes a self-signed certificate named cn for key.
func SelfSigned(t testing.TB, key crypto.Signer, cn string) *x509.Certificate {
	t.Helper()
	tmpl := template(cn)
	return create(t, tmpl, tmpl, key.Public(), key)
}

// ReadCertificate parses the first PEM certificate in file, such as the
// .cer an administrator uploads to Entra ID.
func ReadCertificate(t testing.TB, file string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			t.Fatalf("%s holds no PEM certificate", file)
		}
		if blk.Type == "CERTIFICATE" {
			cert, err := x509.ParseCertificate(blk.Bytes)
			if err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			return cert
		}
	}
}

// WriteFile writes b to name in a new t.TempDir() (mode 0600) and returns
// the path.
func WriteFile(t testing.TB, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func ecKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func rsaKey(t testing.TB) *rsa.PrivateKey {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func template(cn string) *x509.Certificate {
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	now := time.Now()
	return &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
	}
}

func create(t testing.TB, tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) *x509.Certificate {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func pemCert(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}
