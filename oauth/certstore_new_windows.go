//go:build windows

package oauth

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"time"
	"unsafe"

	"golang.org/x/sys/windows"

	"github.com/oauthrelay/oauthrelay/internal/guid"
)

var (
	procNCryptOpenStorageProvider = modncrypt.NewProc("NCryptOpenStorageProvider")
	procNCryptCreatePersistedKey  = modncrypt.NewProc("NCryptCreatePersistedKey")
	procNCryptSetProperty         = modncrypt.NewProc("NCryptSetProperty")
	procNCryptFinalizeKey         = modncrypt.NewProc("NCryptFinalizeKey")
	procNCryptExportKey           = modncrypt.NewProc("NCryptExportKey")
	procNCryptDeleteKey           = modncrypt.NewProc("NCryptDeleteKey")
)

const (
	msSoftwareKSP        = "Microsoft Software Key Storage Provider"
	ncryptMachineKeyFlag = 0x20
	ncryptAllowSignFlag  = 0x2
	ncryptAllowDecrypt   = 0x1
	certStoreAddNew      = 1 // CERT_STORE_ADD_NEW
)

// ncryptKey signs with a CNG key handle this process created.
type ncryptKey struct {
	h   uintptr
	pub *rsa.PublicKey
}

func (k *ncryptKey) Public() crypto.PublicKey { return k.pub }

func (k *ncryptKey) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	sk := &storeKey{handle: windows.Handle(k.h), ncrypt: true}
	pss, isPSS := opts.(*rsa.PSSOptions)
	return sk.signNCrypt(digest, pss, isPSS)
}

// NewStoreCertificate creates a self-signed RSA 2048 certificate whose
// key is made by CNG in the Microsoft Software Key Storage Provider,
// non-exportable, and stores it in store (StoreLocalMachine needs an
// administrator), as New-SelfSignedCertificate does. It writes the public
// certificate to outDir/oauthrelay.cer for upload to Entra ID and returns
// its facts and that path.
func NewStoreCertificate(store, subject string, days int, outDir string) (CertInfo, string, error) {
	name, err := parseSubject(subject)
	if err != nil {
		return CertInfo{}, "", err
	}
	if days < 1 || days > 3650 {
		return CertInfo{}, "", fmt.Errorf("days must be between 1 and 3650, not %d", days)
	}
	cerPath := filepath.Join(outDir, CertPublicFile)
	if _, err := os.Lstat(cerPath); err == nil {
		return CertInfo{}, "", fmt.Errorf("%s already exists; refusing to overwrite it (choose another --out directory)", cerPath)
	}
	ref := StoreRef{Store: store}
	st, err := openStore(store, true)
	if err != nil {
		return CertInfo{}, "", err
	}
	defer windows.CertCloseStore(st, 0)

	container := "oauthrelay-" + guid.New()
	key, err := createKey(store, container)
	if err != nil {
		return CertInfo{}, "", err
	}
	ok := false
	defer func() {
		if !ok {
			procNCryptDeleteKey.Call(key.h, 0) // frees the handle too
		} else {
			procNCryptFreeObject.Call(key.h)
		}
	}()
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return CertInfo{}, "", err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               name,
		NotBefore:             now.Add(-5 * time.Minute),
		NotAfter:              now.Add(time.Duration(days) * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		SignatureAlgorithm:    x509.SHA256WithRSA,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.pub, key)
	if err != nil {
		return CertInfo{}, "", fmt.Errorf("signing the certificate with the new key: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return CertInfo{}, "", err
	}
	ctx, err := windows.CertCreateCertificateContext(encodingX509, &der[0], uint32(len(der)))
	if err != nil {
		return CertInfo{}, "", describeWinErr(ref, "CertCreateCertificateContext", err)
	}
	defer windows.CertFreeCertificateContext(ctx)
	info := cryptKeyProvInfo{container: utf16(container), provider: utf16(msSoftwareKSP)}
	if store == StoreLocalMachine {
		info.flags = ncryptMachineKeyFlag
	}
	if r, _, err := procCertSetCertificateContextProperty.Call(uintptr(unsafe.Pointer(ctx)), certKeyProvInfoPropID, 0, uintptr(unsafe.Pointer(&info))); r == 0 {
		return CertInfo{}, "", describeWinErr(ref, "linking the key to the certificate", err)
	}
	if err := windows.CertAddCertificateContextToStore(st, ctx, certStoreAddNew, nil); err != nil {
		return CertInfo{}, "", describeWinErr(ref, "adding the certificate to the store", err)
	}
	ok = true
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return Describe(cert), "", fmt.Errorf("the certificate is in %s, but %s cannot be created: %v", store, outDir, err)
	}
	if err := writeNew(cerPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return Describe(cert), "", fmt.Errorf("the certificate is in %s, but %v", store, err)
	}
	return Describe(cert), cerPath, nil
}

// createKey makes a persisted, non-exportable RSA 2048 signing key.
func createKey(store, container string) (*ncryptKey, error) {
	ref := StoreRef{Store: store}
	var prov uintptr
	if r, _, _ := procNCryptOpenStorageProvider.Call(uintptr(unsafe.Pointer(&prov)), uintptr(unsafe.Pointer(utf16(msSoftwareKSP))), 0); r != 0 {
		return nil, describeWinErr(ref, "NCryptOpenStorageProvider", windows.Errno(r))
	}
	defer procNCryptFreeObject.Call(prov)
	var flags uintptr
	if store == StoreLocalMachine {
		flags = ncryptMachineKeyFlag
	}
	var h uintptr
	if r, _, _ := procNCryptCreatePersistedKey.Call(prov, uintptr(unsafe.Pointer(&h)), uintptr(unsafe.Pointer(utf16("RSA"))),
		uintptr(unsafe.Pointer(utf16(container))), 0, flags); r != 0 {
		return nil, describeWinErr(ref, "NCryptCreatePersistedKey", windows.Errno(r))
	}
	set := func(prop string, v uint32) error {
		if r, _, _ := procNCryptSetProperty.Call(h, uintptr(unsafe.Pointer(utf16(prop))), uintptr(unsafe.Pointer(&v)), 4, 0); r != 0 {
			return describeWinErr(ref, "NCryptSetProperty("+prop+")", windows.Errno(r))
		}
		return nil
	}
	// "Export Policy" 0: the key never leaves the provider.
	for _, p := range []struct {
		name string
		v    uint32
	}{{"Length", 2048}, {"Export Policy", 0}, {"Key Usage", ncryptAllowSignFlag | ncryptAllowDecrypt}} {
		if err := set(p.name, p.v); err != nil {
			procNCryptFreeObject.Call(h)
			return nil, err
		}
	}
	if r, _, _ := procNCryptFinalizeKey.Call(h, ncryptSilentFlag); r != 0 {
		procNCryptFreeObject.Call(h)
		return nil, describeWinErr(ref, "NCryptFinalizeKey", windows.Errno(r))
	}
	pub, err := exportRSAPublic(h)
	if err != nil {
		procNCryptDeleteKey.Call(h, 0)
		return nil, describeWinErr(ref, "exporting the public key", err)
	}
	return &ncryptKey{h: h, pub: pub}, nil
}

// exportRSAPublic reads a CNG key's BCRYPT_RSAPUBLIC_BLOB: a
// BCRYPT_RSAKEY_BLOB header, then the exponent and the modulus,
// big-endian.
func exportRSAPublic(h uintptr) (*rsa.PublicKey, error) {
	blobType := utf16("RSAPUBLICBLOB")
	var n uint32
	if r, _, _ := procNCryptExportKey.Call(h, 0, uintptr(unsafe.Pointer(blobType)), 0, 0, 0, uintptr(unsafe.Pointer(&n)), 0); r != 0 {
		return nil, windows.Errno(r)
	}
	buf := make([]byte, n)
	if r, _, _ := procNCryptExportKey.Call(h, 0, uintptr(unsafe.Pointer(blobType)), 0, uintptr(unsafe.Pointer(&buf[0])), uintptr(n), uintptr(unsafe.Pointer(&n)), 0); r != 0 {
		return nil, windows.Errno(r)
	}
	return parseRSAPublicBlob(buf[:n])
}

func utf16(s string) *uint16 {
	p, _ := windows.UTF16PtrFromString(s)
	return p
}
