package oauth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"math/big"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestParseThumbprint(t *testing.T) {
	const sha1Hex = "3A1F0B2C4D5E6F708192A3B4C5D6E7F8091A2B3C"
	const sha256Hex = "00112233445566778899AABBCCDDEEFF00112233445566778899AABBCCDDEEFF"
	for _, in := range []string{
		sha1Hex,
		strings.ToLower(sha1Hex),
		"3a 1f 0b 2c 4d 5e 6f 70 81 92 a3 b4 c5 d6 e7 f8 09 1a 2b 3c", // the certificate dialog
		"3A:1F:0B:2C:4D:5E:6F:70:81:92:A3:B4:C5:D6:E7:F8:09:1A:2B:3C", // openssl -fingerprint
		"\u200e3a1f0b2c4d5e6f708192a3b4c5d6e7f8091a2b3c",              // copied with its left-to-right mark
		"  " + sha1Hex + "\t",
	} {
		got, err := ParseThumbprint(in)
		if err != nil || got != sha1Hex {
			t.Errorf("ParseThumbprint(%q) = %q, %v", in, got, err)
		}
	}
	if got, err := ParseThumbprint(strings.ToLower(sha256Hex)); err != nil || got != sha256Hex {
		t.Errorf("SHA-256: %q, %v", got, err)
	}
	for _, bad := range []string{"", sha1Hex[:39], sha1Hex + "00", "3A1F-0B2C", "ZZ" + sha1Hex[2:], "CN=oauthrelay"} {
		if _, err := ParseThumbprint(bad); err == nil || !strings.Contains(err.Error(), "40 hex digits") {
			t.Errorf("ParseThumbprint(%q) accepted or unhelpful: %v", bad, err)
		}
	}
}

func TestParseStoreName(t *testing.T) {
	for in, want := range map[string]string{
		`LocalMachine\My`: StoreLocalMachine, `localmachine\my`: StoreLocalMachine, `Cert:\LocalMachine\My`: StoreLocalMachine,
		`LocalMachine/My`: StoreLocalMachine, `CurrentUser\My`: StoreCurrentUser, ` currentuser\MY `: StoreCurrentUser,
	} {
		if got, err := ParseStoreName(in); err != nil || got != want {
			t.Errorf("ParseStoreName(%q) = %q, %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "My", `LocalMachine\Root`, `LocalMachineMy`} {
		if _, err := ParseStoreName(bad); err == nil || !strings.Contains(err.Error(), `LocalMachine\\My`) {
			t.Errorf("ParseStoreName(%q): %v", bad, err)
		}
	}
}

func selfSigned(t *testing.T, subject pkix.Name, from, to time.Time, ec bool) *x509.Certificate {
	t.Helper()
	var pub, priv any
	if ec {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		pub, priv = &k.PublicKey, k
	} else {
		k, _ := rsa.GenerateKey(rand.Reader, 1024)
		pub, priv = &k.PublicKey, k
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(from.UnixNano()), Subject: subject, NotBefore: from, NotAfter: to}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, priv)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c
}

// The subject picks the newest currently valid RSA certificate with a key.
func TestPickBySubject(t *testing.T) {
	now := time.Now()
	day := 24 * time.Hour
	relay := pkix.Name{CommonName: "oauthrelay", Organization: []string{"Contoso"}}
	certs := []*x509.Certificate{
		selfSigned(t, relay, now.Add(-300*day), now.Add(60*day), false),         // 0 older, valid
		selfSigned(t, relay, now.Add(-10*day), now.Add(300*day), false),         // 1 newest valid: wins
		selfSigned(t, relay, now.Add(-5*day), now.Add(300*day), false),          // 2 newer, but no key
		selfSigned(t, relay, now.Add(-2*day), now.Add(-1*day), false),           // 3 expired
		selfSigned(t, relay, now.Add(1*day), now.Add(300*day), false),           // 4 not yet valid
		selfSigned(t, relay, now.Add(-1*day), now.Add(300*day), true),           // 5 ECDSA
		selfSigned(t, pkix.Name{CommonName: "other"}, now, now.Add(day), false), // 6 another subject
	}
	keys := []bool{true, true, false, true, true, true, true}
	for _, subject := range []string{"CN=oauthrelay, O=Contoso", "cn=OAUTHRELAY,o=contoso", "oauthrelay", "O=Contoso,CN=oauthrelay"} {
		if got := pickBySubject(certs, keys, subject, now); got != 1 {
			t.Errorf("subject %q picked %d, want 1", subject, got)
		}
	}
	for _, subject := range []string{"CN=oauthrelay", "CN=relay, O=Contoso", "nobody"} {
		if got := pickBySubject(certs, keys, subject, now); got != -1 {
			t.Errorf("subject %q picked %d, want none", subject, got)
		}
	}
	if !MatchesThumbprint(certs[1], Describe(certs[1]).SHA1) || !MatchesThumbprint(certs[1], Describe(certs[1]).SHA256) || MatchesThumbprint(certs[0], Describe(certs[1]).SHA1) {
		t.Error("MatchesThumbprint")
	}
}

// On other systems the store is refused with the export instruction.
func TestStoreOnOtherSystems(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("the Windows store exists here")
	}
	ref := StoreRef{Store: StoreLocalMachine, Thumbprint: "3A1F0B2C4D5E6F708192A3B4C5D6E7F8091A2B3C"}
	_, err := OpenStoreSigner(ref)
	se, ok := err.(*SignError)
	if !ok {
		t.Fatalf("OpenStoreSigner: %v", err)
	}
	for _, want := range []string{`Export-PfxCertificate -Cert Cert:\LocalMachine\My\3A1F0B2C4D5E6F708192A3B4C5D6E7F8091A2B3C`,
		"certutil -exportPFX", "certificate_file", "certificate_password_file", "non-exportable", "oauthrelay cert new"} {
		if !strings.Contains(se.Fix, want) {
			t.Errorf("fix lacks %q: %s", want, se.Fix)
		}
	}
	if h := StoreExportHint(StoreRef{Store: StoreCurrentUser, Subject: "CN=x"}); !strings.Contains(h, `Cert:\CurrentUser\My\<thumbprint>`) || !strings.Contains(h, "certutil -user -exportPFX") {
		t.Errorf("CurrentUser hint: %s", h)
	}
	if _, _, err := NewStoreCertificate(StoreLocalMachine, "CN=x", 30, t.TempDir()); err == nil || !strings.Contains(err.Error(), "needs Windows") {
		t.Errorf("NewStoreCertificate: %v", err)
	}
}

// The public key 'cert new --store' reads back from CNG.
func TestParseRSAPublicBlob(t *testing.T) {
	k, _ := rsa.GenerateKey(rand.Reader, 1024)
	e := big.NewInt(int64(k.E)).Bytes()
	n := k.N.Bytes()
	blob := make([]byte, 24, 24+len(e)+len(n))
	binary.LittleEndian.PutUint32(blob[0:], 0x31415352) // "RSA1"
	binary.LittleEndian.PutUint32(blob[4:], 1024)
	binary.LittleEndian.PutUint32(blob[8:], uint32(len(e)))
	binary.LittleEndian.PutUint32(blob[12:], uint32(len(n)))
	blob = append(append(blob, e...), n...)
	pub, err := parseRSAPublicBlob(blob)
	if err != nil || !pub.Equal(&k.PublicKey) {
		t.Fatalf("parsed %v, %v", pub, err)
	}
	if _, err := parseRSAPublicBlob(blob[:len(blob)-1]); err == nil {
		t.Error("short blob accepted")
	}
	blob[0] = 'X'
	if _, err := parseRSAPublicBlob(blob); err == nil {
		t.Error("wrong magic accepted")
	}
}
