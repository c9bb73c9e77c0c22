//go:build windows

package oauth

import (
	"crypto"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"strings"
	"unsafe"

	"golang.org/x/sys/windows"
)

var (
	modncrypt            = windows.NewLazySystemDLL("ncrypt.dll")
	procNCryptSignHash   = modncrypt.NewProc("NCryptSignHash")
	procNCryptFreeObject = modncrypt.NewProc("NCryptFreeObject")

	modadvapi32           = windows.NewLazySystemDLL("advapi32.dll")
	procCryptCreateHash   = modadvapi32.NewProc("CryptCreateHash")
	procCryptSetHashParam = modadvapi32.NewProc("CryptSetHashParam")
	procCryptSignHashW    = modadvapi32.NewProc("CryptSignHashW")
	procCryptDestroyHash  = modadvapi32.NewProc("CryptDestroyHash")
	procCryptGetProvParam = modadvapi32.NewProc("CryptGetProvParam")
)

const (
	bcryptPadPKCS1   = 0x2
	bcryptPadPSS     = 0x8
	ncryptSilentFlag = 0x40

	calgSHA256      = 0x800c // CALG_SHA_256
	hpHashVal       = 0x2    // HP_HASHVAL
	ppName          = 0x4    // PP_NAME
	ppContainer     = 0x6    // PP_CONTAINER
	provRSAAES      = 24     // PROV_RSA_AES
	cryptSilent     = 0x40   // CRYPT_SILENT
	cryptMachineKey = 0x20   // CRYPT_MACHINE_KEYSET
	nteBadAlgID     = 0x80090008
	msEnhRSAAESProv = "Microsoft Enhanced RSA and AES Cryptographic Provider"
)

type bcryptPKCS1PaddingInfo struct{ algID *uint16 }

type bcryptPSSPaddingInfo struct {
	algID *uint16
	salt  uint32
}

var sha256AlgID, _ = windows.UTF16PtrFromString("SHA256")

// storeKey is a private key acquired from the store for one use: a CNG
// (NCrypt) key handle, or a CryptoAPI provider handle and key spec for a
// key only a legacy CSP can open.
type storeKey struct {
	ref    StoreRef
	certs  []*x509.Certificate
	handle windows.Handle
	ncrypt bool
	spec   uint32 // AT_KEYEXCHANGE or AT_SIGNATURE for a CSP key
	pss    bool
	free   bool
}

// acquireKey opens the certificate's private key, preferring CNG: Windows
// opens the keys of Microsoft's own CSPs through CNG too, which then can
// sign RSA-PSS. A key of a third-party CSP comes back as a CryptoAPI
// handle (certtostore insists on CNG and cannot open those).
func acquireKey(ctx *windows.CertContext, ref StoreRef) (*storeKey, error) {
	k := &storeKey{ref: ref}
	err := windows.CryptAcquireCertificatePrivateKey(ctx,
		windows.CRYPT_ACQUIRE_SILENT_FLAG|windows.CRYPT_ACQUIRE_PREFER_NCRYPT_KEY_FLAG,
		nil, &k.handle, &k.spec, &k.free)
	if err != nil {
		// Open the container the certificate names ourselves: what
		// CryptAcquireCertificatePrivateKey does, for systems whose crypt32
		// lacks the CNG part of it (Wine).
		if k2, err2 := openProvInfoKey(ctx, ref); err2 == nil {
			return k2, nil
		}
		return nil, describeWinErr(ref, "opening the private key", err)
	}
	k.ncrypt = k.spec == windows.CERT_NCRYPT_KEY_SPEC
	return k, nil
}

// Close releases the key handle when this process owns it.
func (k *storeKey) Close() error {
	if !k.free || k.handle == 0 {
		return nil
	}
	h := k.handle
	k.handle = 0
	if k.ncrypt {
		procNCryptFreeObject.Call(uintptr(h))
		return nil
	}
	return windows.CryptReleaseContext(h, 0)
}

func (k *storeKey) Certificates() []*x509.Certificate { return k.certs }
func (k *storeKey) CanPSS() bool                      { return k.pss }
func (k *storeKey) Public() crypto.PublicKey          { return k.certs[0].PublicKey }

// Sign signs a SHA-256 digest: RSA-PSS when opts are *rsa.PSSOptions
// (CNG only), PKCS #1 v1.5 otherwise.
func (k *storeKey) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if opts.HashFunc() != crypto.SHA256 || len(digest) != 32 {
		return nil, errors.New("only SHA-256 digests are signed")
	}
	pss, isPSS := opts.(*rsa.PSSOptions)
	if k.ncrypt {
		return k.signNCrypt(digest, pss, isPSS)
	}
	if isPSS {
		return nil, &SignError{Cause: k.ref.String() + ": the key's legacy CryptoAPI provider cannot sign RSA-PSS",
			Fix: "none needed: the relay signs RS256 for such keys"}
	}
	return k.signCAPI(digest)
}

// probePSS reports whether the key signs RSA-PSS, by signing a dummy
// digest: CNG software keys do, some smart-card and HSM providers and all
// legacy CSP keys do not. A key that cannot sign at all is an error.
func (k *storeKey) probePSS() (bool, error) {
	digest := make([]byte, 32)
	if k.ncrypt {
		pss := &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256}
		if _, err := k.signNCrypt(digest, pss, true); err == nil {
			return true, nil
		}
	}
	if _, err := k.Sign(nil, digest, crypto.SHA256); err != nil {
		return false, err
	}
	return false, nil
}

func (k *storeKey) signNCrypt(digest []byte, pss *rsa.PSSOptions, isPSS bool) ([]byte, error) {
	var pad unsafe.Pointer
	var flags uintptr = ncryptSilentFlag
	if isPSS {
		salt := pss.SaltLength
		if salt <= 0 {
			salt = 32 // PSSSaltLengthEqualsHash; Auto is not a length CNG takes
		}
		pad = unsafe.Pointer(&bcryptPSSPaddingInfo{algID: sha256AlgID, salt: uint32(salt)})
		flags |= bcryptPadPSS
	} else {
		pad = unsafe.Pointer(&bcryptPKCS1PaddingInfo{algID: sha256AlgID})
		flags |= bcryptPadPKCS1
	}
	var size uint32
	r, _, _ := procNCryptSignHash.Call(uintptr(k.handle), uintptr(pad), uintptr(unsafe.Pointer(&digest[0])), uintptr(len(digest)),
		0, 0, uintptr(unsafe.Pointer(&size)), flags)
	if r != 0 {
		return nil, describeWinErr(k.ref, "NCryptSignHash", windows.Errno(r))
	}
	sig := make([]byte, size)
	r, _, _ = procNCryptSignHash.Call(uintptr(k.handle), uintptr(pad), uintptr(unsafe.Pointer(&digest[0])), uintptr(len(digest)),
		uintptr(unsafe.Pointer(&sig[0])), uintptr(size), uintptr(unsafe.Pointer(&size)), flags)
	if r != 0 {
		return nil, describeWinErr(k.ref, "NCryptSignHash", windows.Errno(r))
	}
	return sig[:size], nil
}

// signCAPI signs a SHA-256 digest with PKCS #1 v1.5 through CryptoAPI.
// The base and strong Microsoft CSPs know no SHA-256; their keys are
// opened again through the RSA/AES provider, which reads the same
// container.
func (k *storeKey) signCAPI(digest []byte) ([]byte, error) {
	prov := k.handle
	var hash windows.Handle
	r, _, err := procCryptCreateHash.Call(uintptr(prov), calgSHA256, 0, 0, uintptr(unsafe.Pointer(&hash)))
	if r == 0 && errors.Is(err, windows.Errno(nteBadAlgID)) {
		aes, aerr := k.reopenAES()
		if aerr != nil {
			return nil, aerr
		}
		defer windows.CryptReleaseContext(aes, 0)
		prov = aes
		r, _, err = procCryptCreateHash.Call(uintptr(prov), calgSHA256, 0, 0, uintptr(unsafe.Pointer(&hash)))
	}
	if r == 0 {
		return nil, describeWinErr(k.ref, "CryptCreateHash(SHA-256)", err)
	}
	defer procCryptDestroyHash.Call(uintptr(hash))
	if r, _, err := procCryptSetHashParam.Call(uintptr(hash), hpHashVal, uintptr(unsafe.Pointer(&digest[0])), 0); r == 0 {
		return nil, describeWinErr(k.ref, "CryptSetHashParam", err)
	}
	var n uint32
	if r, _, err := procCryptSignHashW.Call(uintptr(hash), uintptr(k.spec), 0, 0, 0, uintptr(unsafe.Pointer(&n))); r == 0 {
		return nil, describeWinErr(k.ref, "CryptSignHash", err)
	}
	sig := make([]byte, n)
	if r, _, err := procCryptSignHashW.Call(uintptr(hash), uintptr(k.spec), 0, 0, uintptr(unsafe.Pointer(&sig[0])), uintptr(unsafe.Pointer(&n))); r == 0 {
		return nil, describeWinErr(k.ref, "CryptSignHash", err)
	}
	sig = sig[:n]
	// CryptoAPI returns the signature little-endian.
	for i, j := 0, len(sig)-1; i < j; i, j = i+1, j-1 {
		sig[i], sig[j] = sig[j], sig[i]
	}
	return sig, nil
}

// reopenAES opens the key's container with Microsoft's RSA/AES provider,
// which signs SHA-256. Only Microsoft's software CSPs share containers
// with it.
func (k *storeKey) reopenAES() (windows.Handle, error) {
	name, err := provParam(k.handle, ppName)
	if err != nil {
		return 0, describeWinErr(k.ref, "CryptGetProvParam(PP_NAME)", err)
	}
	if !strings.HasPrefix(name, "Microsoft") {
		return 0, &SignError{Cause: fmt.Sprintf("%s: the key's provider %q cannot sign SHA-256", k.ref, name),
			Fix: "import the certificate and key again into a CNG provider: Import-PfxCertificate puts the key in the Microsoft Software Key Storage Provider"}
	}
	container, err := provParam(k.handle, ppContainer)
	if err != nil {
		return 0, describeWinErr(k.ref, "CryptGetProvParam(PP_CONTAINER)", err)
	}
	flags := uint32(cryptSilent)
	if k.ref.Store == StoreLocalMachine {
		flags |= cryptMachineKey
	}
	c, _ := windows.UTF16PtrFromString(container)
	p, _ := windows.UTF16PtrFromString(msEnhRSAAESProv)
	var h windows.Handle
	if err := windows.CryptAcquireContext(&h, c, p, provRSAAES, flags); err != nil {
		return 0, describeWinErr(k.ref, "CryptAcquireContext("+msEnhRSAAESProv+")", err)
	}
	return h, nil
}

// provParam reads a string parameter of a CryptoAPI provider handle (an
// ANSI string, as CryptGetProvParam returns them).
func provParam(h windows.Handle, param uint32) (string, error) {
	var n uint32
	if r, _, err := procCryptGetProvParam.Call(uintptr(h), uintptr(param), 0, uintptr(unsafe.Pointer(&n)), 0); r == 0 {
		return "", err
	}
	buf := make([]byte, n)
	if r, _, err := procCryptGetProvParam.Call(uintptr(h), uintptr(param), uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&n)), 0); r == 0 {
		return "", err
	}
	return strings.TrimRight(string(buf[:n]), "\x00"), nil
}

// cryptKeyProvInfo is CRYPT_KEY_PROV_INFO: links a certificate in the
// store to its key container.
type cryptKeyProvInfo struct {
	container *uint16
	provider  *uint16
	provType  uint32
	flags     uint32
	nParams   uint32
	params    uintptr
	keySpec   uint32
}

var procNCryptOpenKey = modncrypt.NewProc("NCryptOpenKey")

// openProvInfoKey opens the key named by the certificate's
// CERT_KEY_PROV_INFO: a CNG key (provider type 0) with NCryptOpenKey, a
// CSP key with CryptAcquireContext.
func openProvInfoKey(ctx *windows.CertContext, ref StoreRef) (*storeKey, error) {
	var n uint32
	if r, _, err := procCertGetCertificateContextProperty.Call(uintptr(unsafe.Pointer(ctx)), certKeyProvInfoPropID, 0, uintptr(unsafe.Pointer(&n))); r == 0 {
		return nil, err
	}
	buf := make([]byte, n)
	if r, _, err := procCertGetCertificateContextProperty.Call(uintptr(unsafe.Pointer(ctx)), certKeyProvInfoPropID, uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&n))); r == 0 {
		return nil, err
	}
	info := (*cryptKeyProvInfo)(unsafe.Pointer(&buf[0]))
	k := &storeKey{ref: ref, free: true}
	if info.provType == 0 {
		var prov uintptr
		if r, _, _ := procNCryptOpenStorageProvider.Call(uintptr(unsafe.Pointer(&prov)), uintptr(unsafe.Pointer(info.provider)), 0); r != 0 {
			return nil, windows.Errno(r)
		}
		defer procNCryptFreeObject.Call(prov)
		var h uintptr
		flags := uintptr(info.flags&ncryptMachineKeyFlag) | ncryptSilentFlag
		if r, _, _ := procNCryptOpenKey.Call(prov, uintptr(unsafe.Pointer(&h)), uintptr(unsafe.Pointer(info.container)), uintptr(info.keySpec), flags); r != 0 {
			return nil, windows.Errno(r)
		}
		k.handle, k.ncrypt = windows.Handle(h), true
		return k, nil
	}
	flags := info.flags&cryptMachineKey | cryptSilent
	if err := windows.CryptAcquireContext(&k.handle, info.container, info.provider, info.provType, flags); err != nil {
		return nil, err
	}
	k.spec = info.keySpec
	return k, nil
}
