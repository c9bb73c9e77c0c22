package msemu

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// assertionSkew is the clock skew Entra tolerates on nbf and exp.
const assertionSkew = 5 * time.Minute

const certDocs = "Review the documentation at https://docs.microsoft.com/en-us/azure/active-directory/develop/active-directory-certificate-credentials ."

// verifyAssertion checks a client assertion the way Entra ID does, and as
// leniently as it does about the variants MSAL libraries send: PS256 or
// RS256, x5t#S256 or x5t (or x5c) in base64url or standard base64,
// numeric or string times, no nbf, reused jti.
func (e *Emulator) verifyAssertion(app App, host, tenantPath, assertion string) *aadError {
	malformed := invalidRequest(50027, "JWT token is invalid or malformed.")
	parts := strings.Split(assertion, ".")
	if len(parts) != 3 {
		return malformed
	}
	var hdr struct {
		Alg     string   `json:"alg"`
		X5t     string   `json:"x5t"`
		X5tS256 string   `json:"x5t#S256"`
		X5c     []string `json:"x5c"`
	}
	hb, err1 := decodeB64(parts[0])
	pb, err2 := decodeB64(parts[1])
	sig, err3 := decodeB64(parts[2])
	if err1 != nil || err2 != nil || err3 != nil || json.Unmarshal(hb, &hdr) != nil {
		return malformed
	}
	dec := json.NewDecoder(bytes.NewReader(pb))
	dec.UseNumber()
	var claims map[string]any
	if dec.Decode(&claims) != nil {
		return malformed
	}

	// Find the uploaded certificate the client says it used.
	var cert *x509.Certificate
	var thumb []byte
	switch {
	case hdr.X5tS256 != "":
		thumb, _ = decodeB64(hdr.X5tS256)
		for _, c := range app.Certificates {
			if s := sha256.Sum256(c.Raw); bytes.Equal(s[:], thumb) {
				cert = c
			}
		}
	case hdr.X5t != "":
		thumb, _ = decodeB64(hdr.X5t)
		for _, c := range app.Certificates {
			if s := sha1.Sum(c.Raw); bytes.Equal(s[:], thumb) {
				cert = c
			}
		}
	case len(hdr.X5c) > 0:
		der, _ := base64.StdEncoding.DecodeString(hdr.X5c[0])
		s := sha1.Sum(der)
		thumb = s[:]
		for _, c := range app.Certificates {
			if bytes.Equal(c.Raw, der) {
				cert = c
			}
		}
	}
	thumbHex := strings.ToUpper(hex.EncodeToString(thumb))
	if cert == nil {
		return invalidClient(700027, "The certificate with identifier used to sign the client assertion is not registered on application. [Reason - The key was not found., Thumbprint of key used by client: '%s', Please visit the Azure Portal, Graph Explorer or directly use MS Graph to see configured keys for app Id '%s'. Review the documentation at https://docs.microsoft.com/en-us/graph/deployments to determine the corresponding service endpoint and https://docs.microsoft.com/en-us/graph/api/application-get?view=graph-rest-1.0&tabs=http to build a query request URL, such as 'https://graph.microsoft.com/beta/applications/%s']", thumbHex, app.ClientID, app.ClientID)
	}
	now := e.now()
	keyRange := fmt.Sprintf("Found key 'Start=%s, End=%s'", cert.NotBefore.UTC().Format("01/02/2006 15:04:05"), cert.NotAfter.UTC().Format("01/02/2006 15:04:05"))
	if now.After(cert.NotAfter) {
		return invalidClient(700027, "Client assertion contains an invalid signature. [Reason - The key used is expired., Thumbprint of key used by client: '%s', %s]", thumbHex, keyRange)
	}
	badSig := invalidClient(700027, "Client assertion contains an invalid signature. [Reason - The provided signature value did not match the expected signature value., Thumbprint of key used by client: '%s', %s]", thumbHex, keyRange)
	pub, ok := cert.PublicKey.(*rsa.PublicKey)
	if !ok {
		return badSig
	}
	digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	switch hdr.Alg {
	case "RS256":
		err1 = rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest[:], sig)
	case "PS256":
		err1 = rsa.VerifyPSS(pub, crypto.SHA256, digest[:], sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto})
	default:
		return badSig
	}
	if err1 != nil {
		return badSig
	}

	// Claims.
	iss, _ := claims["iss"].(string)
	sub, _ := claims["sub"].(string)
	if !strings.EqualFold(iss, app.ClientID) || !strings.EqualFold(sub, app.ClientID) {
		return invalidClient(700021, "Client assertion application identifier doesn't match 'client_id' parameter. %s", certDocs)
	}
	if !audienceOK(claims["aud"], host, tenantPath, app.TenantID) {
		return invalidClient(700023, "Client assertion audience claim does not match Realm issuer. %s", certDocs)
	}
	exp, expOK := numericTime(claims["exp"])
	nbf, nbfOK := numericTime(claims["nbf"])
	if !nbfOK {
		nbf = time.Unix(0, 0) // MSAL Python sends no nbf
	}
	if !expOK || now.Add(assertionSkew).Before(nbf) || now.Add(-assertionSkew).After(exp) {
		const f = "2006-01-02T15:04:05.0000000Z"
		return &aadError{400, "invalid_client", 700024, fmt.Sprintf(
			"Client assertion is not within its valid time range. Current time: %s, assertion valid from %s, expiry time of assertion %s. %s",
			now.UTC().Format(f), nbf.UTC().Format(f), exp.UTC().Format(f), certDocs)}
	}
	// jti is deliberately not tracked: Entra accepts a reused assertion.
	return nil
}

// audienceOK accepts the token endpoint URL the client called, with the
// tenant as it appears in the path or as the tenant ID, v2 or v1.
func audienceOK(v any, host, tenantPath, tenantID string) bool {
	var auds []string
	switch a := v.(type) {
	case string:
		auds = []string{a}
	case []any:
		for _, x := range a {
			if s, ok := x.(string); ok {
				auds = append(auds, s)
			}
		}
	}
	for _, aud := range auds {
		for _, t := range []string{tenantPath, tenantID} {
			for _, p := range []string{"/oauth2/v2.0/token", "/oauth2/token"} {
				if strings.EqualFold(aud, "https://"+host+"/"+t+p) {
					return true
				}
			}
		}
	}
	return false
}

// numericTime reads a JWT NumericDate given as a number or, as MSAL.NET
// does, a string.
func numericTime(v any) (time.Time, bool) {
	var f float64
	var err error
	switch x := v.(type) {
	case json.Number:
		f, err = x.Float64()
	case string:
		f, err = strconv.ParseFloat(x, 64)
	default:
		return time.Time{}, false
	}
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return time.Time{}, false
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)), true
}

// decodeB64 decodes base64url or standard base64, padded or not.
func decodeB64(s string) ([]byte, error) {
	s = strings.TrimRight(s, "=")
	if strings.ContainsAny(s, "+/") {
		return base64.RawStdEncoding.DecodeString(s)
	}
	return base64.RawURLEncoding.DecodeString(s)
}

func randB64(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
