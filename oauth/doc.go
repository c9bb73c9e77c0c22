// Package oauth gets OAuth2 client-credentials access tokens from Microsoft
// Entra ID for the relay's upstream AUTH XOAUTH2, and explains the failures
// in words an administrator can act on.
//
// One [Source] per [[app]] registration owns a single cached token. Token
// returns it while it has at least MinTokenLifetime left (Exchange refuses
// tokens about to expire); otherwise exactly one request goes to the token
// endpoint however many goroutines ask at once (single flight). MSAL Go does
// the protocol work (discovery, client assertion, form post), but its own
// token cache is disabled (see emptyCache) so that the minimum-lifetime and
// invalidation rules here are the only caching rules.
//
// # Client assertion (certificate credential)
//
// Read from MSAL Go v1.10.1 (apps/internal/oauth/ops/accesstokens): for an
// Entra (AAD) authority MSAL signs the assertion with PS256 (RSA-PSS,
// SHA-256) and sets the header {"alg":"PS256","typ":"JWT","x5t#S256":T}
// where T is the SHA-256 of the certificate DER in standard base64 (with
// padding, not base64url). With send_certificate_chain the header also
// carries "x5c" (the chain, signing certificate first, standard base64 DER).
// Claims: aud = the token_endpoint from OIDC discovery (for Entra that is
// Authority + tenant + "/oauth2/v2.0/token"), iss = sub = client id, jti = a
// random UUID, nbf = now and exp = now + 10 minutes (JSON numbers). Only
// ADFS/dSTS authorities get RS256 with an SHA-1 "x5t". MSAL requires an RSA
// key.
//
// The relay now builds this assertion itself ([BuildAssertion], handed to
// MSAL through its assertion callback) in the same form, so that a key
// MSAL cannot hold in memory signs it too: a [Signer] in the Windows
// certificate store (CNG or a legacy CSP, often non-exportable). A key
// that cannot sign RSA-PSS (a legacy CSP) gets RS256 with an SHA-1 "x5t",
// the older form Entra ID still accepts.
//
// # Retry and backoff rule
//
// After a failed token request the Source remembers the error and a retry
// time. Until then Token returns the remembered error at once without
// contacting the endpoint, so neither many callers nor a loop can hammer
// Entra. The n-th consecutive failure waits
//
//   - transient errors (network, HTTP 5xx/429, temporarily_unavailable,
//     AADSTS90024): 1s·2^(n-1), capped at 5 minutes;
//   - permanent errors (configuration faults such as a wrong secret):
//     1m·2^(n-1), capped at 30 minutes;
//
// each shortened by a random 0–20% (jitter) so that many relays do not
// retry in step. A success resets the count. Invalidate does not clear the
// backoff. The background refresher started by [Source.Start] follows the
// same schedule.
package oauth
