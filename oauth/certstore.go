package oauth

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"runtime"
	"strings"
	"time"
)

// The Windows certificate stores certificate_store accepts. Only the
// personal ("My") stores hold certificates with private keys.
const (
	StoreLocalMachine = `LocalMachine\My`
	StoreCurrentUser  = `CurrentUser\My`
)

// StoreRef names a certificate in the Windows certificate store: the
// store, and either its thumbprint (SHA-1 or SHA-256 bytes) or a subject.
type StoreRef struct {
	Store      string // StoreLocalMachine or StoreCurrentUser
	Thumbprint string // uppercase hex of the SHA-1 or SHA-256 thumbprint (ParseThumbprint); "" when Subject is set
	Subject    string // e.g. "CN=oauthrelay"; the newest currently valid match wins
}

// String describes the reference for logs and errors.
func (r StoreRef) String() string {
	if r.Thumbprint != "" {
		return r.Store + " thumbprint " + r.Thumbprint
	}
	return fmt.Sprintf("%s subject %q", r.Store, r.Subject)
}

// ParseStoreName returns the canonical name of a certificate store as
// certificate_store or --store write it ("LocalMachine\My",
// "Cert:\CurrentUser\My", any case, / or \), or an error that lists the
// accepted names.
func ParseStoreName(s string) (string, error) {
	// Quotes typed in cmd.exe reach the program.
	n := strings.ToLower(strings.ReplaceAll(strings.Trim(strings.TrimSpace(s), `'"`), "/", `\`))
	n = strings.TrimPrefix(n, `cert:\`)
	switch n {
	case `localmachine\my`:
		return StoreLocalMachine, nil
	case `currentuser\my`:
		return StoreCurrentUser, nil
	}
	return "", fmt.Errorf(`%q is not a certificate store the relay reads; use "LocalMachine\\My" (the computer's personal store, for a service) or "CurrentUser\\My"`, s)
}

// ParseThumbprint reads a certificate thumbprint as Windows shows it: 40
// hex digits (SHA-1) or 64 (SHA-256), any case, with spaces or colons
// between them ignored (the certificate dialog shows "3a 1f …"; a copy
// from it often starts with an invisible left-to-right mark, ignored
// too). It returns the thumbprint in uppercase hex.
func ParseThumbprint(s string) (string, error) {
	clean := strings.Map(func(r rune) rune {
		switch r {
		case ' ', ':', '\t', '\u200e', '\u200f', '\ufeff', '\u00a0':
			return -1
		}
		return r
	}, s)
	b, err := hex.DecodeString(clean)
	if err != nil || (len(b) != 20 && len(b) != 32) {
		return "", fmt.Errorf("%q is not a certificate thumbprint: write the 40 hex digits of the SHA-1 thumbprint (as certlm.msc or Get-ChildItem Cert:\\LocalMachine\\My shows it) or the 64 of the SHA-256 one", s)
	}
	return strings.ToUpper(hex.EncodeToString(b)), nil
}

// MatchesThumbprint reports whether cert has the SHA-1 or SHA-256
// thumbprint t (uppercase hex, as ParseThumbprint returns it).
func MatchesThumbprint(cert *x509.Certificate, t string) bool {
	info := Describe(cert)
	return t == info.SHA1 || t == info.SHA256
}

// subjectMatches reports whether cert's subject is subject: the full
// distinguished name compared without regard to case or spaces after
// commas ("CN=oauthrelay, O=Contoso" = "cn=oauthrelay,o=contoso"), or the
// common name alone when subject has no "=".
func subjectMatches(cert *x509.Certificate, subject string) bool {
	norm := func(s string) string {
		parts := strings.Split(s, ",")
		for i, p := range parts {
			k, v, _ := strings.Cut(strings.TrimSpace(p), "=")
			parts[i] = strings.ToUpper(strings.TrimSpace(k)) + "=" + strings.TrimSpace(v)
		}
		return strings.ToLower(strings.Join(parts, ","))
	}
	if !strings.Contains(subject, "=") {
		return strings.EqualFold(cert.Subject.CommonName, strings.TrimSpace(subject))
	}
	want := norm(subject)
	// Windows shows the subject most specific first (CN=…, O=…), Go's
	// String the other way round for multi-attribute names.
	if norm(cert.Subject.String()) == want {
		return true
	}
	return norm(reverseRDN(cert.Subject.String())) == want
}

// reverseRDN reverses the comma-separated parts of a distinguished name.
func reverseRDN(s string) string {
	parts := strings.Split(s, ",")
	for i, j := 0, len(parts)-1; i < j; i, j = i+1, j-1 {
		parts[i], parts[j] = parts[j], parts[i]
	}
	return strings.Join(parts, ",")
}

// pickBySubject returns the index of the newest (latest NotBefore)
// certificate among certs that matches subject, is valid at now and has
// an RSA key, or -1. hasKey tells which have a private key.
func pickBySubject(certs []*x509.Certificate, hasKey []bool, subject string, now time.Time) int {
	best := -1
	for i, c := range certs {
		if !hasKey[i] || !subjectMatches(c, subject) || now.Before(c.NotBefore) || now.After(c.NotAfter) {
			continue
		}
		if _, ok := c.PublicKey.(*rsa.PublicKey); !ok {
			continue
		}
		if best < 0 || c.NotBefore.After(certs[best].NotBefore) {
			best = i
		}
	}
	return best
}

// StoreSupported reports whether this build can read the Windows
// certificate store.
const StoreSupported = runtime.GOOS == "windows"

// StoreExportHint is the sentence that tells an administrator on a system
// without a Windows certificate store how to use a certificate kept in
// one: export it to a PFX on Windows, copy it here, and name it with
// certificate_file and certificate_password_file.
func StoreExportHint(ref StoreRef) string {
	sel := `<thumbprint>`
	if ref.Thumbprint != "" {
		sel = ref.Thumbprint
	}
	store, user := ref.Store, ""
	if store == "" {
		store = StoreLocalMachine
	}
	if store == StoreCurrentUser {
		user = " -user"
	}
	return fmt.Sprintf(`on the Windows machine, export the certificate with its key: in PowerShell, `+
		`$pw = Read-Host -AsSecureString; Export-PfxCertificate -Cert Cert:\%s\%s -FilePath oauthrelay.pfx -Password $pw `+
		`(or: certutil%s -exportPFX -p PASSWORD My %s oauthrelay.pfx); a key marked non-exportable cannot be exported, so create a new certificate here with 'oauthrelay cert new' instead. `+
		`Copy oauthrelay.pfx to this host (chmod 0600), write the password into a file, and in the [[app]] replace certificate_store and certificate_thumbprint/certificate_subject with `+
		`certificate_file = "/etc/oauthrelay/oauthrelay.pfx" and certificate_password_file = "/etc/oauthrelay/oauthrelay.pfx.password"`,
		store, sel, user, sel)
}

// BCRYPT_RSAKEY_BLOB's magic for a public key ("RSA1") and its header
// size: Magic, BitLength, cbPublicExp, cbModulus, cbPrime1, cbPrime2.
const (
	bcryptRSAPublicMagic  = 0x31415352
	bcryptRSAKeyBlobBytes = 24
)

// parseRSAPublicBlob decodes a BCRYPT_RSAPUBLIC_BLOB.
func parseRSAPublicBlob(b []byte) (*rsa.PublicKey, error) {
	if len(b) < bcryptRSAKeyBlobBytes || binary.LittleEndian.Uint32(b) != bcryptRSAPublicMagic {
		return nil, errors.New("not an RSA public key blob")
	}
	expLen := int(binary.LittleEndian.Uint32(b[8:]))
	modLen := int(binary.LittleEndian.Uint32(b[12:]))
	if len(b) < bcryptRSAKeyBlobBytes+expLen+modLen || expLen > 8 {
		return nil, errors.New("short RSA public key blob")
	}
	e := new(big.Int).SetBytes(b[bcryptRSAKeyBlobBytes : bcryptRSAKeyBlobBytes+expLen])
	n := new(big.Int).SetBytes(b[bcryptRSAKeyBlobBytes+expLen : bcryptRSAKeyBlobBytes+expLen+modLen])
	return &rsa.PublicKey{N: n, E: int(e.Int64())}, nil
}
