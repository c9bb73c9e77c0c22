package oauth

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"time"

	pkcs12 "software.sslmate.com/src/go-pkcs12"
)

// CertInfo describes a certificate the way an Entra administrator needs it.
type CertInfo struct {
	Subject   string
	NotBefore time.Time
	NotAfter  time.Time
	SHA1      string // uppercase hex thumbprint, as the Entra portal shows it
	SHA256    string // uppercase hex
	// KeyID is the manifest's keyId for the certificate: derived from its
	// SHA-256 thumbprint, so every command shows the same one.
	KeyID string
	// KeyCredentials is a ready-to-paste "keyCredentials" block for the app
	// manifest (customKeyIdentifier = base64 of the SHA-1 thumbprint,
	// keyId = KeyID, type AsymmetricX509Cert, usage Verify, value = base64
	// DER).
	KeyCredentials string
}

// keyID formats the first 16 bytes of a SHA-256 thumbprint as a GUID with
// the version and variant of an RFC 9562 custom (version 8) UUID: the same
// certificate always gets the same keyId, and two certificates never
// share one in practice.
func keyID(s256 [sha256.Size]byte) string {
	b := s256[:16]
	b[6] = b[6]&0x0f | 0x80 // version 8
	b[8] = b[8]&0x3f | 0x80 // RFC 9562 variant
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// Describe returns the facts about cert an administrator compares with the
// Entra portal.
func Describe(cert *x509.Certificate) CertInfo {
	s1 := sha1.Sum(cert.Raw)
	s256 := sha256.Sum256(cert.Raw)
	id := keyID(s256)
	kc := struct {
		KeyCredentials []map[string]string `json:"keyCredentials"`
	}{[]map[string]string{{
		"customKeyIdentifier": base64.StdEncoding.EncodeToString(s1[:]),
		"keyId":               id,
		"type":                "AsymmetricX509Cert",
		"usage":               "Verify",
		"value":               base64.StdEncoding.EncodeToString(cert.Raw),
	}}}
	js, _ := json.MarshalIndent(kc, "", "  ")
	// The manifest wants the member, not a whole object: drop the braces.
	block := strings.TrimSpace(string(js))
	block = strings.TrimSuffix(strings.TrimPrefix(block, "{"), "}")
	return CertInfo{
		Subject:        cert.Subject.String(),
		NotBefore:      cert.NotBefore,
		NotAfter:       cert.NotAfter,
		SHA1:           strings.ToUpper(hex.EncodeToString(s1[:])),
		SHA256:         strings.ToUpper(hex.EncodeToString(s256[:])),
		KeyID:          id,
		KeyCredentials: strings.TrimSpace(dedent(block)),
	}
}

// dedent removes the two-space indent MarshalIndent gave the inner lines.
func dedent(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = strings.TrimPrefix(l, "  ")
	}
	return strings.Join(lines, "\n")
}

// LoadCertificate reads a certificate and its private key from a PEM file
// (CERTIFICATE blocks plus an RSA PRIVATE KEY, PRIVATE KEY, legacy
// Proc-Type encrypted or PKCS#8 ENCRYPTED PRIVATE KEY block) or from a
// PKCS#12 file (.pfx/.p12, recognised by extension or content, including
// the AES-encrypted files current Windows and OpenSSL 3 export). The
// certificate matching the key comes first. It does not reject expired
// certificates; see [Describe] for dates.
func LoadCertificate(file, password string) ([]*x509.Certificate, crypto.PrivateKey, error) {
	certs, key, err := ReadCertificateFile(file, password)
	if err != nil {
		return nil, nil, err
	}
	fail := func(format string, a ...any) ([]*x509.Certificate, crypto.PrivateKey, error) {
		return nil, nil, fmt.Errorf("certificate file %s: "+format, append([]any{file}, a...)...)
	}
	if key == nil {
		return fail("no private key found (certificate_file needs the private key as well as the certificate: the .pem that 'oauthrelay cert new' wrote, not the .cer uploaded to Entra ID)")
	}
	rk, ok := key.(*rsa.PrivateKey)
	if !ok {
		return fail("the private key is %s; Entra client assertions need an RSA key", keyKind(key))
	}
	for i, c := range certs {
		if pub, ok := c.PublicKey.(*rsa.PublicKey); ok && pub.Equal(&rk.PublicKey) {
			certs[0], certs[i] = certs[i], certs[0]
			return certs, key, nil
		}
	}
	return fail("the private key does not match any certificate in the file")
}

// ReadCertificateFile reads the certificates of a file and its private
// key when it holds one (nil otherwise): a PEM file, a PKCS#12 file
// (.pfx/.p12) or a single DER certificate (a .cer as Windows exports it).
// It checks nothing about the key; [LoadCertificate] does.
func ReadCertificateFile(file, password string) ([]*x509.Certificate, crypto.PrivateKey, error) {
	fail := func(format string, a ...any) ([]*x509.Certificate, crypto.PrivateKey, error) {
		return nil, nil, fmt.Errorf("certificate file %s: "+format, append([]any{file}, a...)...)
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return fail("cannot read it: %v", errors.Unwrap(err))
	}
	ext := strings.ToLower(filepath.Ext(file))
	var (
		certs []*x509.Certificate
		key   crypto.PrivateKey
	)
	der := !bytes.Contains(data, []byte("-----BEGIN")) && len(data) > 0 && data[0] == 0x30
	switch {
	case ext == ".pfx" || ext == ".p12":
		certs, key, err = loadPFX(data, password)
	case der:
		if c, cerr := x509.ParseCertificate(data); cerr == nil {
			certs = []*x509.Certificate{c}
		} else {
			certs, key, err = loadPFX(data, password)
		}
	default:
		certs, key, err = loadPEM(data, password)
	}
	if err != nil {
		return fail("%v", err)
	}
	if len(certs) == 0 {
		return fail("no certificate found (a PEM file needs a -----BEGIN CERTIFICATE----- block next to the key)")
	}
	return certs, key, nil
}

func keyKind(k crypto.PrivateKey) string {
	switch k.(type) {
	case *ecdsa.PrivateKey:
		return "an ECDSA key"
	case ed25519.PrivateKey:
		return "an Ed25519 key"
	}
	return fmt.Sprintf("a %T", k)
}

func loadPFX(data []byte, password string) ([]*x509.Certificate, crypto.PrivateKey, error) {
	key, cert, chain, err := pkcs12.DecodeChain(data, password)
	if err != nil {
		if errors.Is(err, pkcs12.ErrIncorrectPassword) || errors.Is(err, pkcs12.ErrDecryption) {
			if password == "" {
				return nil, nil, errors.New("the PKCS#12 file is password-protected: set certificate_password_file")
			}
			return nil, nil, errors.New("wrong password for the PKCS#12 file")
		}
		return nil, nil, fmt.Errorf("not a readable PKCS#12 (.pfx/.p12) file: %v", err)
	}
	return append([]*x509.Certificate{cert}, chain...), key, nil
}

func loadPEM(data []byte, password string) ([]*x509.Certificate, crypto.PrivateKey, error) {
	var (
		certs []*x509.Certificate
		key   crypto.PrivateKey
		seen  bool
	)
	setKey := func(k crypto.PrivateKey) error {
		if key != nil {
			return errors.New("more than one private key in the file")
		}
		key = k
		return nil
	}
	for {
		block, rest := pem.Decode(data)
		if block == nil {
			break
		}
		seen = true
		data = rest
		var (
			k   crypto.PrivateKey
			err error
		)
		switch block.Type {
		case "CERTIFICATE":
			c, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				return nil, nil, fmt.Errorf("a CERTIFICATE block cannot be parsed: %v", err)
			}
			certs = append(certs, c)
			continue
		case "RSA PRIVATE KEY", "EC PRIVATE KEY":
			der := block.Bytes
			//lint:ignore SA1019 legacy encrypted PEM is still what older tools write
			if x509.IsEncryptedPEMBlock(block) { //nolint:staticcheck
				if password == "" {
					return nil, nil, errors.New("the private key is encrypted: set certificate_password_file")
				}
				der, err = x509.DecryptPEMBlock(block, []byte(password)) //nolint:staticcheck
				if err != nil {
					return nil, nil, errors.New("wrong password for the encrypted private key")
				}
			}
			if block.Type == "EC PRIVATE KEY" {
				k, err = x509.ParseECPrivateKey(der)
			} else {
				k, err = x509.ParsePKCS1PrivateKey(der)
			}
		case "PRIVATE KEY":
			k, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "ENCRYPTED PRIVATE KEY":
			if password == "" {
				return nil, nil, errors.New("the private key is encrypted: set certificate_password_file")
			}
			var der []byte
			der, err = decryptPKCS8(block.Bytes, password)
			if err != nil {
				return nil, nil, err
			}
			k, err = x509.ParsePKCS8PrivateKey(der)
		default:
			continue
		}
		if err != nil {
			return nil, nil, fmt.Errorf("the %s block cannot be parsed: %v", block.Type, err)
		}
		if err := setKey(k); err != nil {
			return nil, nil, err
		}
	}
	if !seen {
		return nil, nil, errors.New("neither PEM nor PKCS#12 (.pfx/.p12) data")
	}
	return certs, key, nil
}

// File names written by NewCertificate.
const (
	CertKeyFile    = "oauthrelay.pem" // private key + certificate, for certificate_file
	CertPublicFile = "oauthrelay.cer" // public certificate to upload to Entra
)

// NewCertificate creates a self-signed RSA 2048 / SHA256WithRSA certificate
// valid for days days and writes DIR/oauthrelay.pem (PKCS#8 key +
// certificate, mode 0600) and DIR/oauthrelay.cer (the public certificate,
// PEM-encoded: the Entra portal accepts .cer/.pem/.crt in PEM or DER). It
// refuses to overwrite existing files. subject is like "CN=oauthrelay" or
// "CN=relay,O=Contoso".
func NewCertificate(subject string, days int, outDir string) (CertInfo, []string, error) {
	name, err := parseSubject(subject)
	if err != nil {
		return CertInfo{}, nil, err
	}
	if days < 1 || days > 3650 {
		return CertInfo{}, nil, fmt.Errorf("days must be between 1 and 3650, not %d", days)
	}
	keyPath := filepath.Join(outDir, CertKeyFile)
	cerPath := filepath.Join(outDir, CertPublicFile)
	for _, p := range []string{keyPath, cerPath} {
		if _, err := os.Lstat(p); err == nil {
			return CertInfo{}, nil, fmt.Errorf("%s already exists; refusing to overwrite it (choose another --out directory)", p)
		}
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return CertInfo{}, nil, fmt.Errorf("cannot create %s: %v", outDir, err)
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return CertInfo{}, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return CertInfo{}, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               name,
		NotBefore:             now.Add(-5 * time.Minute), // tolerate small clock skew
		NotAfter:              now.Add(time.Duration(days) * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		SignatureAlgorithm:    x509.SHA256WithRSA,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return CertInfo{}, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return CertInfo{}, nil, err
	}
	pk8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return CertInfo{}, nil, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := append(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pk8}), certPEM...)
	if err := writeNew(keyPath, keyPEM, 0o600); err != nil {
		return CertInfo{}, nil, err
	}
	if err := writeNew(cerPath, certPEM, 0o644); err != nil {
		_ = os.Remove(keyPath)
		return CertInfo{}, nil, err
	}
	return Describe(cert), []string{keyPath, cerPath}, nil
}

// writeNew creates path exclusively (never overwrites) and syncs it.
func writeNew(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("cannot create %s: %v", path, err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(path)
		return fmt.Errorf("cannot write %s: %v", path, err)
	}
	return nil
}

// parseSubject reads "CN=x,O=y,OU=z,C=AU,L=...,ST=..." into a pkix.Name.
func parseSubject(s string) (pkix.Name, error) {
	var n pkix.Name
	s = strings.TrimSpace(s)
	if s == "" {
		return n, errors.New(`subject is empty; use a form like "CN=oauthrelay"`)
	}
	for _, part := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		k, v = strings.ToUpper(strings.TrimSpace(k)), strings.TrimSpace(v)
		if !ok || v == "" {
			return n, fmt.Errorf(`subject %q: %q is not KEY=VALUE; use a form like "CN=oauthrelay,O=Contoso"`, s, part)
		}
		switch k {
		case "CN":
			n.CommonName = v
		case "O":
			n.Organization = append(n.Organization, v)
		case "OU":
			n.OrganizationalUnit = append(n.OrganizationalUnit, v)
		case "C":
			n.Country = append(n.Country, v)
		case "L":
			n.Locality = append(n.Locality, v)
		case "ST", "S":
			n.Province = append(n.Province, v)
		default:
			return n, fmt.Errorf("subject %q: unsupported attribute %q (use CN, O, OU, C, L, ST)", s, k)
		}
	}
	if n.CommonName == "" {
		return n, fmt.Errorf(`subject %q has no CN=`, s)
	}
	return n, nil
}

// ExpiryWarning is the admin's warning for a certificate that has expired
// or expires within 30 days at now, and "" otherwise. Days are rounded,
// so a certificate made for 10 days says 10 and not 9 a second later; the
// last 12 hours are counted in hours. Every command that shows a
// certificate says it the same way.
func (c CertInfo) ExpiryWarning(now time.Time) string {
	switch left := c.NotAfter.Sub(now); {
	case left <= 0:
		return fmt.Sprintf("this certificate EXPIRED on %s; Entra ID refuses it (AADSTS700027). Create a new one with 'oauthrelay cert new', upload it, then switch certificate_file.", c.NotAfter.Format("2006-01-02"))
	case left < 30*24*time.Hour:
		when := fmt.Sprintf("in %d day(s)", int(math.Round(left.Hours()/24)))
		if left < 12*time.Hour {
			when = fmt.Sprintf("in %d hour(s)", int(math.Ceil(left.Hours())))
		}
		return fmt.Sprintf("this certificate expires %s, on %s. Create a new one with 'oauthrelay cert new', upload it, then switch certificate_file.", when, c.NotAfter.Format("2006-01-02"))
	}
	return ""
}
