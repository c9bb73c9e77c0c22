//go:build windows

package oauth

import (
	"crypto"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"time"
	"unsafe"

	"golang.org/x/sys/windows"
)

// The Windows certificate store is read with crypt32 through
// golang.org/x/sys/windows; keys sign through CNG (ncrypt.dll), or through
// CryptoAPI (advapi32.dll) for a key a legacy CSP holds that CNG cannot
// open. See certstore_key_windows.go for the signing.

const (
	encodingX509 = windows.X509_ASN_ENCODING | windows.PKCS_7_ASN_ENCODING
	// certKeyProvInfoPropID is CERT_KEY_PROV_INFO_PROP_ID: present when
	// the certificate has a private key (in this machine's or user's key
	// storage).
	certKeyProvInfoPropID = 2
)

var (
	modcrypt32                            = windows.NewLazySystemDLL("crypt32.dll")
	procCertGetCertificateContextProperty = modcrypt32.NewProc("CertGetCertificateContextProperty")
	procCertSetCertificateContextProperty = modcrypt32.NewProc("CertSetCertificateContextProperty")
)

// openStore opens the personal store of the local machine or the current
// user, read-only unless write.
func openStore(name string, write bool) (windows.Handle, error) {
	// Reading needs the store to exist; 'cert new' creates it if a fresh
	// profile has none yet.
	flags := uint32(0)
	if !write {
		flags = windows.CERT_STORE_OPEN_EXISTING_FLAG | windows.CERT_STORE_READONLY_FLAG
	}
	if name == StoreLocalMachine {
		flags |= windows.CERT_SYSTEM_STORE_LOCAL_MACHINE
	} else {
		flags |= windows.CERT_SYSTEM_STORE_CURRENT_USER
	}
	my, _ := windows.UTF16PtrFromString("MY")
	h, err := windows.CertOpenStore(windows.CERT_STORE_PROV_SYSTEM, 0, 0, flags, uintptr(unsafe.Pointer(my)))
	if err != nil {
		fix := "check certificate_store"
		if errors.Is(err, windows.ERROR_ACCESS_DENIED) {
			fix = "run the relay as an account that may open " + name + " (LocalSystem, or an administrator for 'cert new')"
		}
		return 0, &SignError{Cause: fmt.Sprintf("cannot open the certificate store %s: %v", name, err), Fix: fix}
	}
	return h, nil
}

// hasPrivateKey reports whether the store links a private key to ctx.
func hasPrivateKey(ctx *windows.CertContext) bool {
	var n uint32
	r, _, _ := procCertGetCertificateContextProperty.Call(uintptr(unsafe.Pointer(ctx)), certKeyProvInfoPropID, 0, uintptr(unsafe.Pointer(&n)))
	return r != 0
}

// certFromContext copies the certificate out of a store context.
func certFromContext(ctx *windows.CertContext) (*x509.Certificate, error) {
	der := append([]byte(nil), unsafe.Slice(ctx.EncodedCert, ctx.Length)...)
	return x509.ParseCertificate(der)
}

// findInStore returns a duplicate of the store context of the certificate
// ref names (the caller frees it) and the parsed certificate.
func findInStore(store windows.Handle, ref StoreRef, now time.Time) (*windows.CertContext, *x509.Certificate, error) {
	var (
		ctxs  []*windows.CertContext
		certs []*x509.Certificate
		keys  []bool
	)
	defer func() {
		for _, c := range ctxs {
			windows.CertFreeCertificateContext(c)
		}
	}()
	var prev *windows.CertContext
	for {
		ctx, err := windows.CertEnumCertificatesInStore(store, prev)
		if err != nil || ctx == nil {
			break // CRYPT_E_NOT_FOUND ends the enumeration
		}
		prev = ctx
		c, err := certFromContext(ctx)
		if err != nil {
			continue
		}
		ctxs = append(ctxs, windows.CertDuplicateCertificateContext(ctx))
		certs = append(certs, c)
		keys = append(keys, hasPrivateKey(ctx))
	}
	pick := -1
	if ref.Thumbprint != "" {
		for i, c := range certs {
			if MatchesThumbprint(c, ref.Thumbprint) {
				pick = i
				break
			}
		}
		if pick >= 0 && !keys[pick] {
			return nil, nil, &SignError{Cause: ref.String() + " has no private key in this store",
				Fix: "import the .pfx that holds the key (Import-PfxCertificate), not the public .cer"}
		}
	} else {
		pick = pickBySubject(certs, keys, ref.Subject, now)
	}
	if pick < 0 {
		what := "no certificate with this thumbprint"
		if ref.Subject != "" {
			what = "no currently valid RSA certificate with this subject and a private key"
		}
		return nil, nil, &SignError{Cause: fmt.Sprintf("%s: %s", ref, what),
			Fix: "list the store with: Get-ChildItem Cert:\\" + ref.Store + " | Format-List Subject,Thumbprint,NotAfter,HasPrivateKey"}
	}
	return windows.CertDuplicateCertificateContext(ctxs[pick]), certs[pick], nil
}

// storeSigner is the Signer of a certificate in the Windows store. It
// finds the certificate again and opens its key for every assertion
// (about one an hour), so that no handle is held between token requests
// and a certificate renewed under the same subject is picked up.
type storeSigner struct {
	ref   StoreRef
	certs []*x509.Certificate // as found when the Source was built
	pss   bool
}

// OpenStoreSigner finds the certificate ref names in the Windows
// certificate store, checks that its private key signs, and returns its
// Signer. PS256 is used when the key can sign RSA-PSS (CNG keys), RS256
// otherwise (legacy CSP keys).
func OpenStoreSigner(ref StoreRef) (Signer, error) {
	k, err := openStoreKey(ref)
	if err != nil {
		return nil, err
	}
	defer k.Close()
	pss, err := k.probePSS()
	if err != nil {
		return nil, err
	}
	return &storeSigner{ref: ref, certs: k.certs, pss: pss}, nil
}

func (s *storeSigner) Certificates() []*x509.Certificate { return s.certs }
func (s *storeSigner) CanPSS() bool                      { return s.pss }
func (s *storeSigner) Public() crypto.PublicKey          { return s.certs[0].PublicKey }

// Sign signs with the key as it is in the store now.
func (s *storeSigner) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	k, err := openStoreKey(s.ref)
	if err != nil {
		return nil, err
	}
	defer k.Close()
	return k.Sign(r, digest, opts)
}

// Resolve opens the key for one assertion; BuildAssertion closes it.
func (s *storeSigner) Resolve() (Signer, error) {
	k, err := openStoreKey(s.ref)
	if err != nil {
		return nil, err
	}
	k.pss = s.pss && k.ncrypt
	return k, nil
}

// openStoreKey finds the certificate and acquires its private key.
func openStoreKey(ref StoreRef) (*storeKey, error) {
	store, err := openStore(ref.Store, false)
	if err != nil {
		return nil, err
	}
	defer windows.CertCloseStore(store, 0)
	ctx, cert, err := findInStore(store, ref, time.Now())
	if err != nil {
		return nil, err
	}
	defer windows.CertFreeCertificateContext(ctx)
	if _, ok := cert.PublicKey.(*rsa.PublicKey); !ok {
		return nil, &SignError{Cause: ref.String() + " has a " + cert.PublicKeyAlgorithm.String() + " key",
			Fix: "Entra client assertions need an RSA certificate: create one with 'oauthrelay cert new --store " + ref.Store + "'"}
	}
	k, err := acquireKey(ctx, ref)
	if err != nil {
		return nil, err
	}
	// The chain is sent as x5c with send_certificate_chain (subject
	// name and issuer authentication).
	k.certs = append([]*x509.Certificate{cert}, chainOf(ctx)...)
	return k, nil
}

// describeWinErr turns the errors a key lookup or signature meets in
// practice into a cause and a fix an administrator can act on.
func describeWinErr(ref StoreRef, op string, err error) *SignError {
	cause := fmt.Sprintf("%s: %s failed: %v", ref, op, err)
	var code windows.Errno
	if errors.As(err, &code) {
		switch uint32(code) {
		case 0x80090016, 0x80090010, uint32(windows.ERROR_ACCESS_DENIED): // NTE_BAD_KEYSET, NTE_PERM
			return &SignError{Cause: cause + " (the relay's account may not use the private key)",
				Fix: "grant the relay's service account Read on the key: certlm.msc → Personal → Certificates → the certificate → All Tasks → Manage Private Keys"}
		case 0x8009200B: // CRYPT_E_NO_KEY_PROPERTY
			return &SignError{Cause: cause + " (no private key is linked to the certificate)",
				Fix: "import the .pfx that holds the key (Import-PfxCertificate), not the public .cer"}
		case 0x80090022, 0x80100069: // NTE_SILENT_CONTEXT, SCARD_W_CARD_NOT_AUTHENTICATED
			return &SignError{Cause: cause + " (the key asks for a PIN or a confirmation, which a service cannot give)",
				Fix: "import the certificate again without strong private key protection, or use a key that needs no PIN"}
		}
	}
	return &SignError{Cause: cause, Fix: "check the certificate and its private key in certlm.msc"}
}

// Chain building flags: no network, no revocation check; the chain is only
// sent (x5c), Entra ID judges it.
const (
	certChainCacheOnlyURLRetrieval = 0x00000004
	certChainDisableAIA            = 0x00002000
)

// chainOf returns the certificates that issued ctx's certificate, as
// Windows builds the chain from its stores (without the certificate
// itself), or nil when no chain can be built.
func chainOf(ctx *windows.CertContext) []*x509.Certificate {
	para := windows.CertChainPara{}
	para.Size = uint32(unsafe.Sizeof(para))
	var chain *windows.CertChainContext
	if err := windows.CertGetCertificateChain(0, ctx, nil, ctx.Store, &para,
		certChainCacheOnlyURLRetrieval|certChainDisableAIA, 0, &chain); err != nil || chain == nil {
		return nil
	}
	defer windows.CertFreeCertificateChain(chain)
	if chain.ChainCount == 0 {
		return nil
	}
	simple := unsafe.Slice(chain.Chains, chain.ChainCount)[0]
	var out []*x509.Certificate
	for i, el := range unsafe.Slice(simple.Elements, simple.NumElements) {
		if i == 0 {
			continue // the certificate itself
		}
		if c, err := certFromContext(el.CertContext); err == nil {
			out = append(out, c)
		}
	}
	return out
}
