//go:build !windows

package oauth

// OpenStoreSigner finds the certificate ref names in the Windows
// certificate store. On this system there is no such store: it says how
// to export the certificate to a PFX file instead.
func OpenStoreSigner(ref StoreRef) (Signer, error) {
	return nil, &SignError{Cause: "certificate_store: " + ref.String() + " cannot be read here", Fix: StoreExportHint(ref)}
}

// NewStoreCertificate creates a certificate whose key never leaves the
// Windows certificate store. On this system there is no such store.
func NewStoreCertificate(store, subject string, days int, outDir string) (CertInfo, string, error) {
	return CertInfo{}, "", &SignError{Cause: "--store needs Windows: this system has no Windows certificate store",
		Fix: "run 'oauthrelay cert new --out DIR' to write oauthrelay.pem (use it as certificate_file) and oauthrelay.cer (upload it to Entra ID)"}
}
