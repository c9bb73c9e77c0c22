package oauth

import (
	"crypto/sha256"
	"errors"
	"net/http"
	"os"
	"strings"
	"time"
)

// newPasswordGrant prepares the password grant of s, with the app's
// secret or certificate (signer, as NewSource loaded it) as the client
// credential.
func newPasswordGrant(s AppSettings, signer Signer, authority, scope string, hc *http.Client, now func() time.Time) (*passwordGrant, error) {
	g := &passwordGrant{hc: hc, tokenURL: authority + s.TenantID + "/oauth2/v2.0/token", clientID: s.ClientID,
		scope: scope, username: s.Username, password: s.Password, secret: s.ClientSecret, now: now, withChain: s.SendCertificateChain}
	switch {
	case s.Password == "":
		return nil, errors.New("username is set but the password is empty: set password_file")
	case s.ClientSecret != "":
	case signer != nil:
		g.signer = signer
	default:
		return nil, errors.New("the password grant needs the app's client_secret (or client_secret_file), certificate_file or certificate_store as well")
	}
	return g, nil
}

// credentialPoll is how often the files of a refused credential are
// looked at for a fix.
const credentialPoll = 2 * time.Second

// credentialFile is the file whose content is the credential itself (a
// certificate or a federated token), watched for replacement.
func credentialFile(s AppSettings) string {
	if s.CertificateFile != "" {
		return s.CertificateFile
	}
	return s.FederatedTokenFile
}

// FileDigest is the SHA-256 of a file's content, zero when there is no
// file or it cannot be read.
func FileDigest(file string) [32]byte {
	if file == "" {
		return [32]byte{}
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return [32]byte{}
	}
	return sha256.Sum256(b)
}

// credentialCodes are the AADSTS codes that say the credential itself is
// wrong or expired: the admin may already have fixed its file.
var credentialCodes = map[int]bool{
	7000215: true, 7000222: true, 700027: true, // secret wrong or expired, certificate not accepted
	50126: true, 50055: true, 50053: true, // service account's password wrong, expired, locked
	700024: true, 70021: true, 700211: true, 700212: true, 700213: true, // federated token expired or not trusted
}

// credentialFault reports whether err is Entra refusing the credential.
func credentialFault(err error) bool {
	var e *Error
	return errors.As(err, &e) && (credentialCodes[e.AADSTS] || e.fileFault)
}

// RereadCredential re-reads the credential's files (client_secret_file,
// password_file, certificate_file) and, when one changed, uses them from
// the next token request on, at once. It reports whether anything
// changed. The relay calls it on reload and when Entra refuses the
// credential; a federated token file needs neither, it is read every time.
func (s *Source) RereadCredential() bool {
	if !s.rereadCredential() {
		return false
	}
	s.mu.Lock()
	s.failures, s.retryAt = 0, time.Time{}
	s.notifyLocked()
	s.mu.Unlock()
	return true
}

func (s *Source) rereadCredential() bool {
	s.mu.Lock()
	st, digest := s.settings, s.credDigest
	s.mu.Unlock()
	var changed []string
	if f := st.ClientSecretFile; f != "" {
		if b, err := os.ReadFile(f); err == nil {
			if v := strings.TrimSpace(string(b)); v != "" && v != st.ClientSecret {
				st.ClientSecret, changed = v, append(changed, f)
			}
		}
	}
	if f := st.PasswordFile; f != "" {
		if b, err := os.ReadFile(f); err == nil {
			if v := strings.TrimRight(string(b), "\r\n"); v != "" && v != st.Password {
				st.Password, changed = v, append(changed, f)
			}
		}
	}
	if f := credentialFile(st); f != "" {
		if d := FileDigest(f); d != ([32]byte{}) && d != digest {
			changed = append(changed, f)
		}
	}
	if len(changed) == 0 {
		return false
	}
	ns, err := NewSource(st, s.opts)
	if err != nil {
		// err names files and keys, never their content.
		s.log.Warn("credential file changed but cannot be used; keeping the old one", "files", changed, "err", err.Error())
		return false
	}
	s.mu.Lock()
	s.settings, s.credDigest, s.acquire, s.secret = ns.settings, ns.credDigest, ns.acquire, ns.secret
	s.cert, s.certWarned = ns.cert, time.Time{}
	s.mu.Unlock()
	s.log.Info("credential file changed on disk; the next token request uses it", "files", changed)
	return true
}

// explainFor adjusts the fix of a token error to the app's kind of
// credential, where the same code means something else for it.
func explainFor(e *Error, st AppSettings) {
	switch {
	case e.AADSTS == 700024 && st.FederatedTokenFile != "":
		e.Cause = "the federated token in " + st.FederatedTokenFile + " has expired (or this host's clock is wrong)"
		e.Fix = "make sure the platform refreshes the file (Kubernetes projects a new token before the old one expires) and that this host's clock is right; the relay reads the file at every token request"
	case e.AADSTS == 700024 && st.ManagedIdentity:
		e.Fix = "fix this host's clock (enable NTP); the managed identity's token is fetched afresh"
	case e.AADSTS == 53003 && st.Username != "":
		e.Cause = "a Conditional Access policy blocks the service account's sign-in"
		e.Fix = "exclude the service account " + st.Username + " from the policy, or allow this host's address as a trusted named location; better, sign in as the app with a certificate (no username)"
	case e.AADSTS == 7000218 && st.Username != "":
		e.Fix = "the password grant needs the app's own credential as well: set client_secret_file or certificate_file next to username and password_file"
	}
	if st.Username != "" && (e.AADSTS == 7000215 || e.AADSTS == 7000222) {
		e.Fix += " (the password grant sends the app's secret as well as the service account's password)"
	}
}
