package oauth

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"log/slog"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	pkcs12 "software.sslmate.com/src/go-pkcs12"

	"github.com/oauthrelay/oauthrelay/internal/testkit"
)

var (
	keyOnce sync.Once
	testKey *rsa.PrivateKey
)

func rsaKey(t *testing.T) *rsa.PrivateKey {
	keyOnce.Do(func() {
		var err error
		testKey, err = rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
	})
	return testKey
}

func pemOf(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// encryptPKCS8 writes a PBES2 (PBKDF2-HMAC-SHA256, AES-256-CBC) encrypted
// key the way `openssl pkcs8 -topk8 -v2 aes256` does.
func encryptPKCS8(t *testing.T, der []byte, password string) []byte {
	t.Helper()
	salt, iv := make([]byte, 16), make([]byte, 16)
	_, _ = rand.Read(salt)
	_, _ = rand.Read(iv)
	k, _ := pbkdf2.Key(sha256.New, password, salt, 2048, 32)
	pad := 16 - len(der)%16
	pt := append(append([]byte{}, der...), bytes.Repeat([]byte{byte(pad)}, pad)...)
	block, _ := aes.NewCipher(k)
	ct := make([]byte, len(pt))
	cipher.NewCBCEncrypter(block, iv).CryptBlocks(ct, pt)
	kdfParams, _ := asn1.Marshal(pbkdf2Params{Salt: salt, Iter: 2048, PRF: pkix.AlgorithmIdentifier{Algorithm: oidHMACSHA256, Parameters: asn1.NullRawValue}})
	ivDER, _ := asn1.Marshal(iv)
	p, _ := asn1.Marshal(pbes2Params{
		KDF: pkix.AlgorithmIdentifier{Algorithm: oidPBKDF2, Parameters: asn1.RawValue{FullBytes: kdfParams}},
		Enc: pkix.AlgorithmIdentifier{Algorithm: oidAES256CBC, Parameters: asn1.RawValue{FullBytes: ivDER}},
	})
	out, err := asn1.Marshal(encryptedPrivateKeyInfo{Algo: pkix.AlgorithmIdentifier{Algorithm: oidPBES2, Parameters: asn1.RawValue{FullBytes: p}}, Data: ct})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestLoadCertificate(t *testing.T) {
	key := rsaKey(t)
	cert := testkit.SelfSigned(t, key, "relay")
	other, _ := rsa.GenerateKey(rand.Reader, 1024)
	otherCert := testkit.SelfSigned(t, other, "other")
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecCert := testkit.SelfSigned(t, ec, "ec")
	pkcs1 := x509.MarshalPKCS1PrivateKey(key)
	pkcs8, _ := x509.MarshalPKCS8PrivateKey(key)
	ecDER, _ := x509.MarshalECPrivateKey(ec)
	certPEM := pemOf("CERTIFICATE", cert.Raw)
	//nolint:staticcheck // legacy encrypted PEM is what we must read
	legacy, err := x509.EncryptPEMBlock(rand.Reader, "RSA PRIVATE KEY", pkcs1, []byte("pw"), x509.PEMCipherAES256)
	if err != nil {
		t.Fatal(err)
	}
	pfxModern, err := pkcs12.Modern2023.Encode(key, cert, []*x509.Certificate{otherCert}, "pfx-pw")
	if err != nil {
		t.Fatal(err)
	}
	pfxLegacy, err := pkcs12.LegacyDES.Encode(key, cert, nil, "pfx-pw")
	if err != nil {
		t.Fatal(err)
	}
	cat := func(b ...[]byte) []byte { return bytes.Join(b, nil) }
	tests := []struct {
		name, file, password string
		data                 []byte
		wantErr              string
	}{
		{"pkcs1", "a.pem", "", cat(pemOf("RSA PRIVATE KEY", pkcs1), certPEM), ""},
		{"pkcs8 cert first", "a.pem", "", cat(certPEM, pemOf("PRIVATE KEY", pkcs8)), ""},
		{"chain with matching cert last", "a.pem", "", cat(pemOf("CERTIFICATE", otherCert.Raw), certPEM, pemOf("PRIVATE KEY", pkcs8)), ""},
		{"legacy encrypted", "a.pem", "pw", cat(pem.EncodeToMemory(legacy), certPEM), ""},
		{"legacy encrypted wrong password", "a.pem", "nope", cat(pem.EncodeToMemory(legacy), certPEM), "wrong password"},
		{"legacy encrypted no password", "a.pem", "", cat(pem.EncodeToMemory(legacy), certPEM), "certificate_password_file"},
		{"pkcs8 encrypted", "a.pem", "s3cret", cat(certPEM, pemOf("ENCRYPTED PRIVATE KEY", encryptPKCS8(t, pkcs8, "s3cret"))), ""},
		{"pkcs8 encrypted wrong password", "a.pem", "nope", cat(certPEM, pemOf("ENCRYPTED PRIVATE KEY", encryptPKCS8(t, pkcs8, "s3cret"))), "wrong password"},
		{"pfx modern AES", "a.pfx", "pfx-pw", pfxModern, ""},
		{"pfx legacy 3DES", "a.p12", "pfx-pw", pfxLegacy, ""},
		{"pfx sniffed without extension", "a.bin", "pfx-pw", pfxModern, ""},
		{"pfx wrong password", "a.pfx", "nope", pfxModern, "wrong password"},
		{"pfx no password", "a.pfx", "", pfxModern, "certificate_password_file"},
		{"no key", "a.pem", "", certPEM, "no private key"},
		{"no cert", "a.pem", "", pemOf("PRIVATE KEY", pkcs8), "no certificate"},
		{"mismatch", "a.pem", "", cat(pemOf("CERTIFICATE", otherCert.Raw), pemOf("PRIVATE KEY", pkcs8)), "does not match"},
		{"ec key", "a.pem", "", cat(pemOf("CERTIFICATE", ecCert.Raw), pemOf("EC PRIVATE KEY", ecDER)), "RSA"},
		{"garbage", "a.pem", "", []byte("hello"), "neither PEM nor PKCS#12"},
	}
	dir := t.TempDir()
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sub := filepath.Join(dir, string(rune('a'+i)))
			_ = os.Mkdir(sub, 0o700)
			file := filepath.Join(sub, tt.file)
			if err := os.WriteFile(file, tt.data, 0o600); err != nil {
				t.Fatal(err)
			}
			certs, k, err := LoadCertificate(file, tt.password)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), file) {
					t.Fatalf("err = %v, want %q naming the file", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), tt.password) && tt.password != "" {
					t.Fatal("password in error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !certs[0].Equal(cert) || !k.(*rsa.PrivateKey).Equal(key) {
				t.Fatal("wrong cert/key returned")
			}
		})
	}
	if _, _, err := LoadCertificate(filepath.Join(dir, "missing.pem"), ""); err == nil || !strings.Contains(err.Error(), "missing.pem") {
		t.Fatalf("missing file: %v", err)
	}
}

// TestLoadCertificateOpenSSL reads files made by the openssl CLI (encrypted
// PKCS#8 with OpenSSL 3 defaults, and an OpenSSL 3 default PFX), when present.
func TestLoadCertificateOpenSSL(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not installed")
	}
	dir := t.TempDir()
	run := func(args ...string) {
		t.Helper()
		cmd := exec.Command("openssl", args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Skipf("openssl %v: %v\n%s", args, err, out)
		}
	}
	run("req", "-x509", "-newkey", "rsa:2048", "-keyout", "key.pem", "-passout", "pass:pw1", "-out", "cert.pem", "-days", "2", "-subj", "/CN=openssl")
	run("pkcs12", "-export", "-inkey", "key.pem", "-passin", "pass:pw1", "-in", "cert.pem", "-out", "both.pfx", "-passout", "pass:pw2")
	keyPEM, _ := os.ReadFile(filepath.Join(dir, "key.pem"))
	certPEM, _ := os.ReadFile(filepath.Join(dir, "cert.pem"))
	_ = os.WriteFile(filepath.Join(dir, "both.pem"), append(keyPEM, certPEM...), 0o600)
	for file, pw := range map[string]string{"both.pem": "pw1", "both.pfx": "pw2"} {
		certs, _, err := LoadCertificate(filepath.Join(dir, file), pw)
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if certs[0].Subject.CommonName != "openssl" {
			t.Fatalf("%s: subject %v", file, certs[0].Subject)
		}
	}
}

func TestNewCertificateAndDescribe(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "out")
	info, files, err := NewCertificate("CN=oauthrelay,O=Contoso", 730, dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 2 || filepath.Base(files[0]) != CertKeyFile || filepath.Base(files[1]) != CertPublicFile {
		t.Fatalf("files = %v", files)
	}
	if st, _ := os.Stat(files[0]); st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v", st.Mode())
	}
	certs, key, err := LoadCertificate(files[0], "")
	if err != nil {
		t.Fatal(err)
	}
	c := certs[0]
	if c.Subject.CommonName != "oauthrelay" || c.Subject.Organization[0] != "Contoso" || c.SignatureAlgorithm != x509.SHA256WithRSA || key.(*rsa.PrivateKey).N.BitLen() != 2048 {
		t.Fatalf("cert %v %v", c.Subject, c.SignatureAlgorithm)
	}
	if d := c.NotAfter.Sub(c.NotBefore); d < 729*24*time.Hour || d > 731*24*time.Hour {
		t.Fatalf("validity %v", d)
	}
	cer, _ := os.ReadFile(files[1])
	if b, _ := pem.Decode(cer); b == nil || !bytes.Equal(b.Bytes, c.Raw) || bytes.Contains(cer, []byte("PRIVATE")) {
		t.Fatal(".cer is not the public certificate")
	}
	s1 := sha1.Sum(c.Raw)
	s256 := sha256.Sum256(c.Raw)
	if info.SHA1 != strings.ToUpper(hex.EncodeToString(s1[:])) || info.SHA256 != strings.ToUpper(hex.EncodeToString(s256[:])) {
		t.Fatalf("thumbprints %s %s", info.SHA1, info.SHA256)
	}
	var kc struct {
		KeyCredentials []map[string]string `json:"keyCredentials"`
	}
	if err := json.Unmarshal([]byte("{"+info.KeyCredentials+"}"), &kc); err != nil {
		t.Fatalf("keyCredentials block is not pasteable JSON: %v\n%s", err, info.KeyCredentials)
	}
	k := kc.KeyCredentials[0]
	if k["customKeyIdentifier"] != base64.StdEncoding.EncodeToString(s1[:]) || k["type"] != "AsymmetricX509Cert" ||
		k["usage"] != "Verify" || k["value"] != base64.StdEncoding.EncodeToString(c.Raw) || k["keyId"] != info.KeyID {
		t.Fatalf("keyCredentials = %v", k)
	}
	if strings.Contains(info.KeyCredentials, "PRIVATE") {
		t.Fatal("key material in keyCredentials")
	}
	if _, _, err := NewCertificate("CN=oauthrelay", 730, dir); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("overwrite: %v", err)
	}
	for _, bad := range []string{"", "oauthrelay", "O=x", "CN=a,XX=b"} {
		if _, _, err := NewCertificate(bad, 30, t.TempDir()); err == nil {
			t.Errorf("subject %q accepted", bad)
		}
	}
}

// TestCertificateAssertion checks the client assertion that reaches the
// token endpoint: PS256 signature valid under the certificate's key,
// x5t#S256 header, aud = token URL, iss = sub = client id.
func TestCertificateAssertion(t *testing.T) {
	dir := t.TempDir()
	_, files, err := NewCertificate("CN=oauthrelay", 30, dir)
	if err != nil {
		t.Fatal(err)
	}
	certs, _, _ := LoadCertificate(files[0], "")
	cert := certs[0]
	for _, chain := range []bool{false, true} {
		f := newFakeEntra(t)
		s := secretSettings(f)
		s.ClientSecret = ""
		s.CertificateFile = files[0]
		s.SendCertificateChain = chain
		var logs bytes.Buffer
		src := newTestSource(t, f, s, Options{Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
		if _, err := src.Token(context.Background()); err != nil {
			t.Fatal(err)
		}
		form := f.lastForm()
		if form.Get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" || form.Get("client_secret") != "" {
			t.Fatalf("form %v", form)
		}
		tok, err := jwt.Parse(form.Get("client_assertion"), func(tok *jwt.Token) (any, error) { return cert.PublicKey, nil },
			jwt.WithValidMethods([]string{"PS256"}), jwt.WithAudience(f.tokenURL(s.TenantID)), jwt.WithIssuer(s.ClientID), jwt.WithSubject(s.ClientID))
		if err != nil {
			t.Fatalf("assertion does not verify: %v", err)
		}
		sum := sha256.Sum256(cert.Raw)
		if tok.Header["x5t#S256"] != base64.StdEncoding.EncodeToString(sum[:]) {
			t.Fatalf("x5t#S256 = %v", tok.Header["x5t#S256"])
		}
		if _, has := tok.Header["x5c"]; has != chain {
			t.Fatalf("x5c present = %v, want %v", has, chain)
		}
		if strings.Contains(logs.String(), form.Get("client_assertion")) || strings.Contains(logs.String(), "PRIVATE") {
			t.Fatal("assertion or key in logs")
		}
	}
}

// TestNoSecretsInLogs runs sources through success and failures with a
// debug-level logger and checks no secret, token or key material appears.
func TestNoSecretsInLogs(t *testing.T) {
	var logs bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	f := newFakeEntra(t)
	f.respond = func(n int64, _ url.Values) (int, string) {
		switch n {
		case 1:
			return 0, "" // success
		case 2:
			return 401, entraError("invalid_client", 7000215, "secret "+testSecret+" wrong")
		default:
			return 200, `{"access_token": "` + testSecret + `", "oops": ` // invalid JSON echoing the token
		}
	}
	clk := newTestClock()
	src := newTestSource(t, f, secretSettings(f), Options{Logger: log, Now: clk.Now})
	tok, err := src.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	src.Invalidate(tok.AccessToken)
	_, err2 := src.Token(context.Background())
	clk.Advance(time.Hour)
	_, err3 := src.Token(context.Background())
	if err2 == nil || err3 == nil {
		t.Fatalf("want errors, got %v %v", err2, err3)
	}
	log.Info("status", "status", src.Status(), "token", tok)

	keyPEM, _ := os.ReadFile(func() string {
		_, files, err := NewCertificate("CN=x", 2, t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		f2 := newFakeEntra(t)
		s := secretSettings(f2)
		s.ClientSecret, s.CertificateFile = "", files[0]
		cs := newTestSource(t, f2, s, Options{Logger: log})
		if _, err := cs.Token(context.Background()); err != nil {
			t.Fatal(err)
		}
		return files[0]
	}())
	block, _ := pem.Decode(keyPEM)
	keyB64 := base64.StdEncoding.EncodeToString(block.Bytes)

	out := logs.String() + err2.Error() + err3.Error()
	for _, bad := range []string{testSecret, tok.AccessToken, "eyJ", keyB64[10:50], "client_assertion="} {
		if strings.Contains(out, bad) {
			t.Fatalf("log/error contains %q:\n%s", bad, out)
		}
	}
	if !strings.Contains(logs.String(), "token acquired") || !strings.Contains(logs.String(), "token request failed") {
		t.Fatalf("expected log lines missing:\n%s", logs.String())
	}
}
